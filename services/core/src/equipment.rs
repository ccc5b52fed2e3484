//! `crm.core.v1.EquipmentService`: tanks, traps, pumps and lift stations at a property, and
//! their readings (solids and grease depth), which are recorded, never edited.

use chrono::{DateTime, NaiveDate, Utc};
use crm_auth::layer::principal_of;
use crm_auth::{MethodPolicy, Requirement, permission};
use crm_db::OrgId;
use crm_platform::ApiError;
use crm_platform::api::names::{self, child_name};
use crm_platform::api::time::timestamp;
use crm_platform::api::validate::{self, Violations};
use crm_platform::mutation::{self, IdempotencyKey};
use crm_proto::core_v1::{
    CreateEquipmentRequest, DeleteEquipmentRequest, Equipment as EquipmentProto, EquipmentKind,
    EquipmentReading, GetEquipmentRequest, ListEquipmentReadingsRequest,
    ListEquipmentReadingsResponse, ListEquipmentRequest, ListEquipmentResponse,
    RecordEquipmentReadingRequest, UndeleteEquipmentRequest, UpdateEquipmentRequest,
};
use crm_resource::{
    BoxFuture, Call, Field, Input, Resource, Row, Store, Write, not_found, require_live,
};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::properties::Properties;
use crate::schema::equipment::{self, dsl as e};
use crate::schema::equipment_readings::dsl as r;
use crate::status;

const SERVICE: &str = "crm.core.v1.EquipmentService";

/// The permission of every RPC.
#[must_use]
pub fn policy() -> MethodPolicy {
    let (read, write) = (permission::CUSTOMERS_READ, permission::CUSTOMERS_WRITE);
    EquipmentApi::policy(read, write, permission::CUSTOMERS_DELETE)
        .with(
            SERVICE,
            "RecordEquipmentReading",
            Requirement::Permission(write),
        )
        .with(
            SERVICE,
            "ListEquipmentReadings",
            Requirement::Permission(read),
        )
}

/// The columns of `core.equipment` besides the standard ones (the latest reading is kept by
/// RecordEquipmentReading).
#[derive(Debug, Clone, Default, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = equipment, treat_none_as_null = true)]
pub struct EquipmentFields {
    pub property_id: Uuid,
    pub kind: i16,
    pub display_name: String,
    pub capacity_gallons: i32,
    pub compartments: i32,
    pub install_date: Option<NaiveDate>,
    pub last_service_date: Option<NaiveDate>,
    pub notes: String,
    pub latest_solids_depth_inches: Option<f64>,
    pub latest_grease_depth_inches: Option<f64>,
    pub latest_read_time: Option<DateTime<Utc>>,
    pub latest_recorder: Option<String>,
    pub latest_reading_notes: Option<String>,
}

/// An optional past date (`YYYY-MM-DD`).
fn past_date(i: &mut Input<'_>, value: &str) -> Option<NaiveDate> {
    if value.is_empty() {
        return None;
    }
    match NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        Err(_) => {
            i.push("INVALID_DATE", "a date as YYYY-MM-DD");
            None
        }
        Ok(d) if d > Utc::now().date_naive() => {
            i.push("DATE_IN_FUTURE", "the date is in the future");
            None
        }
        Ok(d) => Some(d),
    }
}

/// The equipment resource.
#[derive(Debug)]
pub struct Equipment;

impl Resource for Equipment {
    type Proto = EquipmentProto;
    type Fields = EquipmentFields;
    type Table = equipment::table;
    const RESOURCE_TYPE: &'static str = "core.crm/Equipment";
    const COLLECTION: &'static str = "equipment";
    const FIELD: &'static str = "equipment";
    const FIELDS: &'static [Field<Self>] = &[
        Field::<Self>::updatable("property", |i, x, f| {
            if let Some(id) = i.reference(&x.property, "properties") {
                f.property_id = id;
            }
        })
        .filter(|n, op, v| crm_resource::filter_reference!(e::property_id, n, op, v, "properties")),
        Field::<Self>::updatable("kind", |i, x, f| {
            if x.kind == EquipmentKind::Unspecified as i32 {
                i.push("REQUIRED", "the kind of equipment is required");
            } else if let Some(k) = i.enumeration::<EquipmentKind>(x.kind) {
                f.kind = k;
            }
        })
        .filter(|n, op, v| {
            let number =
                crm_db::filter::enum_number(v, "EQUIPMENT_KIND_", EquipmentKind::from_str_name)?;
            crm_db::filter_enum!(e::kind, n, op, number)
        }),
        Field::<Self>::updatable("display_name", |i, x, f| {
            f.display_name = i.trimmed(&x.display_name, 200);
        })
        .filter(|n, op, v| crm_db::filter_text!(e::display_name, n, op, v)),
        Field::<Self>::updatable("capacity_gallons", |i, x, f| {
            let message = "0 to 1,000,000 gallons";
            f.capacity_gallons = i.in_range(x.capacity_gallons, 0..=1_000_000, message);
        }),
        Field::<Self>::updatable("compartments", |i, x, f| {
            f.compartments = i.in_range(x.compartments, 0..=20, "0 to 20 compartments");
        }),
        Field::<Self>::updatable("install_date", |i, x, f| {
            f.install_date = past_date(i, &x.install_date);
        }),
        Field::<Self>::updatable("last_service_date", |i, x, f| {
            f.last_service_date = past_date(i, &x.last_service_date);
        }),
        Field::<Self>::updatable("notes", |i, x, f| f.notes = i.text(&x.notes, 10_000)),
        Field::<Self>::output("latest_reading"),
    ];

    fn to_proto(org: Uuid, f: EquipmentFields) -> EquipmentProto {
        EquipmentProto {
            property: child_name(org, "properties", f.property_id),
            kind: i32::from(f.kind),
            display_name: f.display_name,
            capacity_gallons: f.capacity_gallons,
            compartments: f.compartments,
            install_date: f.install_date.map(|d| d.to_string()).unwrap_or_default(),
            last_service_date: f
                .last_service_date
                .map(|d| d.to_string())
                .unwrap_or_default(),
            notes: f.notes,
            latest_reading: f.latest_read_time.map(|t| EquipmentReading {
                solids_depth_inches: f.latest_solids_depth_inches.unwrap_or_default(),
                grease_depth_inches: f.latest_grease_depth_inches.unwrap_or_default(),
                read_time: Some(timestamp(t)),
                recorder: f.latest_recorder.unwrap_or_default(),
                notes: f.latest_reading_notes.unwrap_or_default(),
            }),
            ..EquipmentProto::default()
        }
    }
    fn order_text(f: &EquipmentFields) -> &str {
        &f.display_name
    }
    fn before_write<'a>(
        conn: &'a AsyncPgConnection,
        org: OrgId,
        _current: Option<&'a Row<EquipmentFields>>,
        next: &'a mut EquipmentFields,
        paths: &'a [&'static str],
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if paths.contains(&"property") {
                let name = child_name(org.uuid(), "properties", next.property_id);
                require_live::<Properties>(conn, org, next.property_id, &name).await?;
            }
            Ok(())
        })
    }
}

crm_resource::standard_store!(
    Equipment,
    table = equipment,
    time = create_time,
    text = display_name
);

fn validate_reading(v: &mut Violations, reading: Option<&EquipmentReading>) {
    let Some(x) = reading else {
        v.push("reading", "REQUIRED", "the reading is required");
        return;
    };
    for (field, value) in [
        ("reading.solids_depth_inches", x.solids_depth_inches),
        ("reading.grease_depth_inches", x.grease_depth_inches),
    ] {
        if !value.is_finite() || !(0.0..=1000.0).contains(&value) {
            v.push(field, "OUT_OF_RANGE", "0 to 1,000 inches");
        }
    }
    match x
        .read_time
        .as_ref()
        .map(crm_platform::api::time::from_timestamp)
    {
        None => v.push("reading.read_time", "REQUIRED", "when it was measured"),
        Some(None) => v.push("reading.read_time", "INVALID_TIME", "not a valid time"),
        Some(Some(t)) if t > Utc::now() + chrono::Duration::minutes(5) => {
            v.push(
                "reading.read_time",
                "TIME_IN_FUTURE",
                "the time is in the future",
            );
        }
        Some(Some(_)) => {}
    }
    validate::optional_text(v, "reading.notes", &x.notes, 2_000);
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = crate::schema::equipment_readings)]
struct ReadingRow {
    id: Uuid,
    solids_depth_inches: f64,
    grease_depth_inches: f64,
    read_time: DateTime<Utc>,
    recorder: String,
    notes: String,
}

impl From<ReadingRow> for EquipmentReading {
    fn from(x: ReadingRow) -> Self {
        Self {
            solids_depth_inches: x.solids_depth_inches,
            grease_depth_inches: x.grease_depth_inches,
            read_time: Some(timestamp(x.read_time)),
            recorder: x.recorder,
            notes: x.notes,
        }
    }
}

/// Records a reading: the history row, the equipment's latest reading (when it is the newest),
/// the event and the audit entry, in one transaction.
async fn record_reading(
    api: &EquipmentApi,
    call: Call,
    body: RecordEquipmentReadingRequest,
) -> Result<EquipmentProto, ApiError> {
    let mut v = Violations::new();
    let parsed = crm_resource::parse_name::<Equipment>(&mut v, &body.name, "name");
    validate_reading(&mut v, body.reading.as_ref());
    let mut fingerprint = body.clone();
    fingerprint.request_id.clear();
    let key = IdempotencyKey::from_request(&mut v, &call.method, &body.request_id, &fingerprint);
    v.finish()?;
    let (org, id) =
        parsed.ok_or_else(|| ApiError::Internal("name parsed without violation".into()))?;
    names::require_same_organization(&call.principal, org)?;
    let reading = body.reading.unwrap_or_default();
    let read_time = reading
        .read_time
        .as_ref()
        .and_then(crm_platform::api::time::from_timestamp)
        .unwrap_or_else(Utc::now);
    let (name, request_id) = (body.name, body.request_id);
    let deadline = call.deadline;
    let write = mutation::idempotent(api.ctx.pool.clone(), org, key, move |conn| {
        Box::pin(async move {
            let current =
                crm_resource::lock::<Equipment>(conn, OrgId(org), id, &name, "", "etag").await?;
            if current.std.deleted() {
                return Err(ApiError::FailedPrecondition {
                    reason: "RESOURCE_DELETED",
                    message: "readings cannot be recorded on deleted equipment".into(),
                });
            }
            let before = crm_resource::to_proto::<Equipment>(current.clone());
            diesel::insert_into(r::equipment_readings)
                .values((
                    r::organization_id.eq(org),
                    r::id.eq(Uuid::now_v7()),
                    r::equipment_id.eq(id),
                    r::solids_depth_inches.eq(reading.solids_depth_inches),
                    r::grease_depth_inches.eq(reading.grease_depth_inches),
                    r::read_time.eq(read_time),
                    r::recorder.eq(call.actor()),
                    r::notes.eq(&reading.notes),
                ))
                .execute(&mut { conn })
                .await?;
            // A reading taken earlier than the latest one (entered late) joins the history only.
            if current
                .fields
                .latest_read_time
                .is_none_or(|t| t <= read_time)
            {
                diesel::update(e::equipment)
                    .filter(e::organization_id.eq(org))
                    .filter(e::id.eq(id))
                    .set((
                        e::latest_solids_depth_inches.eq(reading.solids_depth_inches),
                        e::latest_grease_depth_inches.eq(reading.grease_depth_inches),
                        e::latest_read_time.eq(read_time),
                        e::latest_recorder.eq(call.actor()),
                        e::latest_reading_notes.eq(&reading.notes),
                    ))
                    .execute(&mut { conn })
                    .await?;
            }
            let w = Write {
                org: OrgId(org),
                call: &call,
                request_id: &request_id,
            };
            crm_resource::changed_in::<Equipment>(
                conn,
                w,
                id,
                &before,
                "reading_recorded",
                "record_reading",
                &["latest_reading"],
            )
            .await
        })
    });
    api.ctx.commit(deadline, write).await
}

async fn list_readings(
    api: &EquipmentApi,
    principal: &crm_auth::Principal,
    body: &ListEquipmentReadingsRequest,
) -> Result<ListEquipmentReadingsResponse, ApiError> {
    let (org, id) = names::parse_child(&body.parent, "equipment", "parent")?;
    let listing = crm_platform::api::listing::Listing::begin(
        principal,
        &api.ctx.page_tokens,
        "ListEquipmentReadings",
        &names::organization_name(org),
        body.page_size,
        &body.page_token,
        &[&body.parent],
        50,
        crm_platform::api::listing::MAX_PAGE_SIZE,
    )?;
    let after = match &listing.after {
        None => None,
        Some(key) => match key.as_slice() {
            [t, rid] => DateTime::parse_from_rfc3339(t)
                .ok()
                .zip(Uuid::parse_str(rid).ok())
                .map(|(t, rid)| (t.with_timezone(&Utc), rid)),
            _ => None,
        }
        .map(Some)
        .ok_or_else(|| {
            ApiError::invalid(
                "page_token",
                "INVALID_PAGE_TOKEN",
                "page_token is malformed",
            )
        })?,
    };
    let limit = listing.limit();
    let parent = body.parent.clone();
    let mut rows = crm_db::tenant::read(&api.ctx.pool, org, move |conn| {
        Box::pin(async move {
            if Equipment::find(conn, OrgId(org), id, false)
                .await?
                .is_none()
            {
                return Err(not_found::<Equipment>(&parent));
            }
            let mut q = r::equipment_readings
                .filter(r::organization_id.eq(org))
                .filter(r::equipment_id.eq(id))
                .order_by(r::read_time.desc())
                .then_order_by(r::id.desc())
                .limit(limit)
                .select(ReadingRow::as_select())
                .into_boxed();
            if let Some((t, rid)) = after {
                q = q.filter(r::read_time.lt(t).or(r::read_time.eq(t).and(r::id.lt(rid))));
            }
            Ok(q.load(&mut { conn }).await?)
        })
    })
    .await?;
    let next_page_token = listing.finish(&api.ctx.page_tokens, &mut rows, |x| {
        vec![x.read_time.to_rfc3339(), x.id.to_string()]
    });
    Ok(ListEquipmentReadingsResponse {
        readings: rows.into_iter().map(EquipmentReading::from).collect(),
        next_page_token,
    })
}

crm_resource::standard_service! {
    service = "crm.core.v1.EquipmentService",
    server = crm_proto::core_v1::equipment_service_server::EquipmentService,
    resource = Equipment,
    api = EquipmentApi,
    field = equipment;
    create = create_equipment(CreateEquipmentRequest, id = equipment_id);
    get = get_equipment(GetEquipmentRequest, full = |_| false);
    list = list_equipment(ListEquipmentRequest, full = |_| false) -> ListEquipmentResponse.equipment;
    update = update_equipment(UpdateEquipmentRequest);
    delete = delete_equipment(DeleteEquipmentRequest);
    undelete = undelete_equipment(UndeleteEquipmentRequest);

    async fn record_equipment_reading(
        &self,
        req: tonic::Request<RecordEquipmentReadingRequest>,
    ) -> Result<tonic::Response<EquipmentProto>, tonic::Status> {
        let call = Call::of(&req, SERVICE, "record_equipment_reading")?;
        record_reading(self, call, req.into_inner())
            .await
            .map(tonic::Response::new)
            .map_err(status)
    }

    async fn list_equipment_readings(
        &self,
        req: tonic::Request<ListEquipmentReadingsRequest>,
    ) -> Result<tonic::Response<ListEquipmentReadingsResponse>, tonic::Status> {
        let principal = principal_of(&req)?;
        list_readings(self, &principal, req.get_ref())
            .await
            .map(tonic::Response::new)
            .map_err(status)
    }
}
