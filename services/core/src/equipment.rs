//! `crm.core.v1.EquipmentService`: tanks, traps, pumps and lift stations at a property, and
//! their readings (solids and grease depth), which are recorded, never edited.

use chrono::{DateTime, NaiveDate, Utc};
use crm_auth::layer::principal_of;
use crm_auth::{MethodPolicy, permission};
use crm_db::filter::{self, BoxedPredicate, Filter, FilterError, Op, Value};
use crm_platform::ApiError;
use crm_platform::api::names::{self, child_name};
use crm_platform::api::time::{optional_timestamp, timestamp};
use crm_platform::api::validate::{self, Violations};
use crm_platform::mutation::{self, IdempotencyKey};
use crm_proto::core_v1::{
    CreateEquipmentRequest, DeleteEquipmentRequest, Equipment as EquipmentProto, EquipmentKind,
    EquipmentReading, GetEquipmentRequest, ListEquipmentReadingsRequest,
    ListEquipmentReadingsResponse, ListEquipmentRequest, ListEquipmentResponse,
    RecordEquipmentReadingRequest, UndeleteEquipmentRequest, UpdateEquipmentRequest,
};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::properties::Properties;
use crate::schema::equipment::{self, dsl as e};
use crate::schema::equipment_readings::dsl as r;
use crate::status;
use crm_resource::id_in;
use crm_resource::{
    BoxFuture, Call, Meta, Order, OrderField, Resource, Store, Write, not_found, reference,
    require_live,
};

const SERVICE: &str = "crm.core.v1.EquipmentService";

/// The permission of every RPC.
#[must_use]
pub fn policy() -> MethodPolicy {
    crm_resource::policy(
        SERVICE,
        &[
            ("CreateEquipment", permission::CUSTOMERS_WRITE),
            ("GetEquipment", permission::CUSTOMERS_READ),
            ("ListEquipment", permission::CUSTOMERS_READ),
            ("UpdateEquipment", permission::CUSTOMERS_WRITE),
            ("DeleteEquipment", permission::CUSTOMERS_DELETE),
            ("UndeleteEquipment", permission::CUSTOMERS_DELETE),
            ("RecordEquipmentReading", permission::CUSTOMERS_WRITE),
            ("ListEquipmentReadings", permission::CUSTOMERS_READ),
        ],
    )
}

/// A row of `core.equipment`.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = equipment)]
pub struct EquipmentRow {
    pub organization_id: Uuid,
    pub id: Uuid,
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
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
    pub delete_time: Option<DateTime<Utc>>,
    pub purge_time: Option<DateTime<Utc>>,
    pub revision: i64,
    pub created_by: String,
    pub updated_by: String,
}

/// Equipment to insert.
#[derive(Debug, Insertable)]
#[diesel(table_name = equipment)]
pub struct NewEquipment {
    organization_id: Uuid,
    id: Uuid,
    property_id: Uuid,
    kind: i16,
    display_name: String,
    capacity_gallons: i32,
    compartments: i32,
    install_date: Option<NaiveDate>,
    last_service_date: Option<NaiveDate>,
    notes: String,
    created_by: String,
    updated_by: String,
}

/// Changes to equipment.
#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = equipment)]
pub struct EquipmentChanges {
    property_id: Option<Uuid>,
    kind: Option<i16>,
    display_name: Option<String>,
    capacity_gallons: Option<i32>,
    compartments: Option<i32>,
    install_date: Option<Option<NaiveDate>>,
    last_service_date: Option<Option<NaiveDate>>,
    notes: Option<String>,
}

fn date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

fn kind(k: i32) -> i16 {
    i16::try_from(k).unwrap_or(0)
}

impl NewEquipment {
    fn from_proto(org: Uuid, id: Uuid, x: &EquipmentProto, actor: &str) -> Self {
        Self {
            organization_id: org,
            id,
            property_id: id_in(&x.property, "properties"),
            kind: kind(x.kind),
            display_name: x.display_name.trim().to_owned(),
            capacity_gallons: x.capacity_gallons,
            compartments: x.compartments,
            install_date: date(&x.install_date),
            last_service_date: date(&x.last_service_date),
            notes: x.notes.clone(),
            created_by: actor.to_owned(),
            updated_by: actor.to_owned(),
        }
    }
}

impl EquipmentChanges {
    fn from_mask(x: &EquipmentProto, paths: &[&str]) -> Self {
        let mut ch = Self::default();
        for path in paths {
            match *path {
                "property" => ch.property_id = Some(id_in(&x.property, "properties")),
                "kind" => ch.kind = Some(kind(x.kind)),
                "display_name" => ch.display_name = Some(x.display_name.trim().to_owned()),
                "capacity_gallons" => ch.capacity_gallons = Some(x.capacity_gallons),
                "compartments" => ch.compartments = Some(x.compartments),
                "install_date" => ch.install_date = Some(date(&x.install_date)),
                "last_service_date" => ch.last_service_date = Some(date(&x.last_service_date)),
                "notes" => ch.notes = Some(x.notes.clone()),
                _ => {}
            }
        }
        ch
    }
}

/// The equipment resource.
#[derive(Debug)]
pub struct Equipment;

const FILTER_FIELDS: &[&str] = &[
    "property",
    "kind",
    "display_name",
    "create_time",
    "update_time",
];

fn leaf(
    field: &str,
    op: Op,
    value: &Value,
) -> Result<BoxedPredicate<equipment::table>, FilterError> {
    match field {
        "property" => {
            crm_resource::filter_reference!(e::property_id, field, op, value, "properties")
        }
        "kind" => crm_db::filter_enum!(
            e::kind,
            field,
            op,
            crm_db::filter::enum_number(value, "EQUIPMENT_KIND_", EquipmentKind::from_str_name)?
        ),
        "display_name" => crm_db::filter_text!(e::display_name, field, op, value),
        "create_time" => crm_db::filter_time!(e::create_time, field, op, value),
        "update_time" => crm_db::filter_time!(e::update_time, field, op, value),
        other => Err(filter::unknown_field(other, FILTER_FIELDS)),
    }
}

fn validate_date(v: &mut Violations, field: &str, value: &str) {
    if value.is_empty() {
        return;
    }
    match date(value) {
        None => v.push(field, "INVALID_DATE", "a date as YYYY-MM-DD"),
        Some(d) if d > Utc::now().date_naive() => {
            v.push(field, "DATE_IN_FUTURE", "the date is in the future");
        }
        Some(_) => {}
    }
}

impl Resource for Equipment {
    type Proto = EquipmentProto;
    type Row = EquipmentRow;
    const RESOURCE_TYPE: &'static str = "core.crm/Equipment";
    const COLLECTION: &'static str = "equipment";
    const FIELD: &'static str = "equipment";
    const UPDATABLE: &'static [&'static str] = &[
        "property",
        "kind",
        "display_name",
        "capacity_gallons",
        "compartments",
        "install_date",
        "last_service_date",
        "notes",
    ];
    const OUTPUT_ONLY: &'static [&'static str] = &[
        "name",
        "latest_reading",
        "create_time",
        "update_time",
        "delete_time",
        "purge_time",
        "etag",
        "creator",
        "last_modifier",
    ];

    fn name(x: &EquipmentProto) -> &str {
        &x.name
    }
    fn etag(x: &EquipmentProto) -> &str {
        &x.etag
    }
    fn meta(row: &EquipmentRow) -> Meta {
        Meta {
            revision: row.revision,
            deleted: row.delete_time.is_some(),
        }
    }
    fn sort_key(row: &EquipmentRow, field: OrderField) -> Vec<String> {
        let value = match field {
            OrderField::CreateTime => row.create_time.to_rfc3339(),
            OrderField::UpdateTime => row.update_time.to_rfc3339(),
            OrderField::DisplayName => row.display_name.clone(),
        };
        Order::key(value, row.id)
    }
    fn to_proto(row: EquipmentRow) -> EquipmentProto {
        let EquipmentRow {
            organization_id,
            id,
            property_id,
            kind,
            display_name,
            capacity_gallons,
            compartments,
            install_date,
            last_service_date,
            notes,
            latest_solids_depth_inches,
            latest_grease_depth_inches,
            latest_read_time,
            latest_recorder,
            latest_reading_notes,
            create_time,
            update_time,
            delete_time,
            purge_time,
            revision,
            created_by,
            updated_by,
        } = row;
        EquipmentProto {
            name: child_name(organization_id, "equipment", id),
            property: child_name(organization_id, "properties", property_id),
            kind: i32::from(kind),
            display_name,
            capacity_gallons,
            compartments,
            install_date: install_date.map(|d| d.to_string()).unwrap_or_default(),
            last_service_date: last_service_date.map(|d| d.to_string()).unwrap_or_default(),
            notes,
            latest_reading: latest_read_time.map(|t| EquipmentReading {
                solids_depth_inches: latest_solids_depth_inches.unwrap_or_default(),
                grease_depth_inches: latest_grease_depth_inches.unwrap_or_default(),
                read_time: Some(timestamp(t)),
                recorder: latest_recorder.unwrap_or_default(),
                notes: latest_reading_notes.unwrap_or_default(),
            }),
            create_time: Some(timestamp(create_time)),
            update_time: Some(timestamp(update_time)),
            delete_time: optional_timestamp(delete_time),
            purge_time: optional_timestamp(purge_time),
            etag: crm_db::etag::from_revision(revision),
            creator: created_by,
            last_modifier: updated_by,
        }
    }
    fn validate(v: &mut Violations, org: Option<Uuid>, x: &EquipmentProto, paths: &[&str]) {
        for path in paths {
            let field = format!("equipment.{path}");
            match *path {
                "property" => {
                    reference(v, org, &field, &x.property, "properties");
                }
                "kind" => match EquipmentKind::try_from(x.kind) {
                    Ok(EquipmentKind::Unspecified) => {
                        v.push(field, "REQUIRED", "the kind of equipment is required");
                    }
                    Err(_) => v.push(
                        field,
                        "UNKNOWN_ENUM_VALUE",
                        format!("{} is not an EquipmentKind", x.kind),
                    ),
                    Ok(_) => {}
                },
                "display_name" => validate::optional_text(v, &field, &x.display_name, 200),
                "capacity_gallons" if !(0..=1_000_000).contains(&x.capacity_gallons) => {
                    v.push(field, "OUT_OF_RANGE", "0 to 1,000,000 gallons");
                }
                "compartments" if !(0..=20).contains(&x.compartments) => {
                    v.push(field, "OUT_OF_RANGE", "0 to 20 compartments");
                }
                "install_date" => validate_date(v, &field, &x.install_date),
                "last_service_date" => validate_date(v, &field, &x.last_service_date),
                "notes" => validate::optional_text(v, &field, &x.notes, 10_000),
                _ => {}
            }
        }
    }
    fn check_filter(f: &Filter) -> Result<(), FilterError> {
        filter::compile(f, &leaf).map(|_| ())
    }
    fn before_write<'a>(
        conn: &'a AsyncPgConnection,
        org: Uuid,
        _current: Option<&'a EquipmentRow>,
        x: &'a EquipmentProto,
        paths: &'a [&'static str],
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if paths.contains(&"property") {
                require_live::<Properties>(
                    conn,
                    org,
                    id_in(&x.property, "properties"),
                    &x.property,
                )
                .await?;
            }
            Ok(())
        })
    }
}

crm_resource::standard_store!(
    Equipment,
    equipment,
    create_time,
    display_name,
    EquipmentRow,
    NewEquipment,
    EquipmentChanges,
    leaf
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
            let current = crm_resource::lock::<Equipment>(conn, org, id, &name, "", "etag").await?;
            if current.delete_time.is_some() {
                return Err(ApiError::FailedPrecondition {
                    reason: "RESOURCE_DELETED",
                    message: "readings cannot be recorded on deleted equipment".into(),
                });
            }
            let before = Equipment::to_proto(current.clone());
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
            if current.latest_read_time.is_none_or(|t| t <= read_time) {
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
                org,
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
    let mut rows = crm_db::tenant::transaction(&api.ctx.pool, org, move |conn| {
        Box::pin(async move {
            if Equipment::find(conn, org, id, false).await?.is_none() {
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
    crm_proto::core_v1::equipment_service_server::EquipmentService, Equipment => EquipmentApi,
    "crm.core.v1.EquipmentService", equipment;
    create_equipment(CreateEquipmentRequest, equipment_id);
    get_equipment(GetEquipmentRequest, |_| false);
    list_equipment(ListEquipmentRequest, |_| false) -> ListEquipmentResponse.equipment;
    update_equipment(UpdateEquipmentRequest);
    delete_equipment(DeleteEquipmentRequest);
    undelete_equipment(UndeleteEquipmentRequest);

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
