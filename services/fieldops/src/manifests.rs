//! `crm.fieldops.v1.WasteManifestService`: the chain of custody of each hauled load. A
//! manifest names its work order (whose customer and property are the generator), the truck,
//! driver and license that hauled it and the facility that took it. Once `RecordDisposal`
//! stamps the disposal it is final — the service refuses changes and a restrictive policy
//! makes the database refuse them too; a correction is a new manifest naming the old one.

use chrono::{DateTime, Utc};
use crm_auth::{MethodPolicy, Requirement, permission};
use crm_db::OrgId;
use crm_platform::ApiError;
use crm_platform::api::names::{self, child_name};
use crm_platform::api::time::{optional_timestamp, timestamp};
use crm_platform::api::validate::{self, Violations};
use crm_platform::mutation::{self, IdempotencyKey};
use crm_proto::common_v1::GeoPoint;
use crm_proto::fieldops_v1::{
    CreateWasteManifestRequest, DeleteWasteManifestRequest, GetWasteManifestRequest,
    ListWasteManifestsRequest, ListWasteManifestsResponse, RecordDisposalRequest,
    UndeleteWasteManifestRequest, UpdateWasteManifestRequest, WasteKind, WasteManifest,
};
use crm_resource::{BoxFuture, Call, Context, Field, Input, Resource, Row, Store, Write};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::schema::disposal_facilities::dsl as d;
use crate::schema::licenses::dsl as l;
use crate::schema::trucks::dsl as tr;
use crate::schema::waste_manifests::{self, dsl as m};
use crate::technicians::Technicians;
use crate::work_orders::WorkOrders;

const SERVICE: &str = "crm.fieldops.v1.WasteManifestService";

/// The permission of every RPC.
#[must_use]
pub fn policy() -> MethodPolicy {
    let write = permission::MANIFESTS_WRITE;
    WasteManifestApi::policy(permission::COMPLIANCE_READ, write, write).with(
        SERVICE,
        "RecordDisposal",
        Requirement::Permission(write),
    )
}

/// The columns of `fieldops.waste_manifests` besides the standard ones.
#[derive(Debug, Clone, Default, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = waste_manifests, treat_none_as_null = true)]
pub struct ManifestFields {
    pub work_order_id: Uuid,
    pub generator_customer_id: Uuid,
    pub generator_property_id: Uuid,
    pub truck_id: Uuid,
    pub technician_id: Uuid,
    pub license_id: Option<Uuid>,
    pub disposal_facility_id: Uuid,
    pub waste_kind: i16,
    pub gallons: i32,
    pub ticket_number: String,
    pub pickup_time: DateTime<Utc>,
    pub pickup_latitude: Option<f64>,
    pub pickup_longitude: Option<f64>,
    pub disposal_time: Option<DateTime<Utc>>,
    pub corrects_id: Option<Uuid>,
}

fn refused(reason: &'static str, message: String) -> ApiError {
    ApiError::FailedPrecondition { reason, message }
}

fn recorded_is_final() -> ApiError {
    refused(
        "MANIFEST_RECORDED",
        "a manifest whose disposal is recorded is final; record a correction that names it"
            .to_owned(),
    )
}

/// The waste manifest resource.
#[derive(Debug)]
pub struct WasteManifests;

impl Resource for WasteManifests {
    type Proto = WasteManifest;
    type Fields = ManifestFields;
    type Table = waste_manifests::table;
    const RESOURCE_TYPE: &'static str = "fieldops.crm/WasteManifest";
    const COLLECTION: &'static str = "wasteManifests";
    const FIELD: &'static str = "waste_manifest";
    const TEXT_ORDER: &'static str = "ticket_number";
    const FIELDS: &'static [Field<Self>] = &[
        Field::<Self>::create_only("work_order", |i, x, f| {
            if let Some(id) = i.reference(&x.work_order, "workOrders") {
                f.work_order_id = id;
            }
        })
        .filter(|n, op, v| {
            crm_resource::filter_reference!(m::work_order_id, n, op, v, "workOrders")
        }),
        Field::<Self>::updatable("truck", |i, x, f| {
            if let Some(id) = i.reference(&x.truck, "trucks") {
                f.truck_id = id;
            }
        })
        .filter(|n, op, v| crm_resource::filter_reference!(m::truck_id, n, op, v, "trucks")),
        Field::<Self>::updatable("technician", |i, x, f| {
            if let Some(id) = i.reference(&x.technician, "technicians") {
                f.technician_id = id;
            }
        })
        .filter(|n, op, v| {
            crm_resource::filter_reference!(m::technician_id, n, op, v, "technicians")
        }),
        Field::<Self>::updatable("license", |i, x, f| {
            f.license_id = if x.license.is_empty() {
                None
            } else {
                i.reference(&x.license, "licenses")
            };
        }),
        Field::<Self>::updatable("disposal_facility", |i, x, f| {
            if let Some(id) = i.reference(&x.disposal_facility, "disposalFacilities") {
                f.disposal_facility_id = id;
            }
        })
        .filter(|n, op, v| {
            crm_resource::filter_reference!(m::disposal_facility_id, n, op, v, "disposalFacilities")
        }),
        Field::<Self>::updatable("waste_kind", |i, x, f| {
            let message = "a waste kind such as WASTE_KIND_GREASE";
            if let Some(k) = i.specified::<WasteKind>(x.waste_kind, "INVALID_WASTE_KIND", message) {
                f.waste_kind = k;
            }
        })
        .filter(|n, op, v| {
            let number = crm_db::filter::enum_number(v, "WASTE_KIND_", WasteKind::from_str_name)?;
            crm_db::filter_enum!(m::waste_kind, n, op, number)
        }),
        Field::<Self>::updatable("gallons", |i, x, f| {
            f.gallons = i.in_range(x.gallons, 1..=20_000, "1 to 20,000 gallons");
        }),
        Field::<Self>::updatable("ticket_number", |i, x, f| {
            f.ticket_number = i.trimmed(&x.ticket_number, 100);
        })
        .filter(|n, op, v| crm_db::filter_text!(m::ticket_number, n, op, v)),
        Field::<Self>::updatable("pickup_time", |i, x, f| {
            if let Some(t) = i.required_time(x.pickup_time.as_ref(), "when the load was picked up")
            {
                f.pickup_time = t;
            }
        })
        .filter(|n, op, v| crm_db::filter_time!(m::pickup_time, n, op, v)),
        Field::<Self>::updatable("pickup_location", |i, x, f| {
            let point = i.geo(x.pickup_location.as_ref());
            f.pickup_latitude = point.map(|p| p.0);
            f.pickup_longitude = point.map(|p| p.1);
        }),
        Field::<Self>::output("disposal_time")
            .filter(|n, op, v| crm_db::filter_time!(m::disposal_time.assume_not_null(), n, op, v)),
        Field::<Self>::create_only("corrects", |i, x, f| {
            f.corrects_id = if x.corrects.is_empty() {
                None
            } else {
                i.reference(&x.corrects, "wasteManifests")
            };
        }),
        Field::<Self>::output("generator_customer"),
        Field::<Self>::output("generator_property"),
    ];

    fn to_proto(org: Uuid, f: ManifestFields) -> WasteManifest {
        WasteManifest {
            work_order: child_name(org, "workOrders", f.work_order_id),
            generator_customer: child_name(org, "customers", f.generator_customer_id),
            generator_property: child_name(org, "properties", f.generator_property_id),
            truck: child_name(org, "trucks", f.truck_id),
            technician: child_name(org, "technicians", f.technician_id),
            license: f
                .license_id
                .map(|id| child_name(org, "licenses", id))
                .unwrap_or_default(),
            disposal_facility: child_name(org, "disposalFacilities", f.disposal_facility_id),
            waste_kind: i32::from(f.waste_kind),
            gallons: f.gallons,
            ticket_number: f.ticket_number,
            pickup_time: Some(timestamp(f.pickup_time)),
            pickup_location: f.pickup_latitude.zip(f.pickup_longitude).map(
                |(latitude, longitude)| GeoPoint {
                    latitude,
                    longitude,
                },
            ),
            disposal_time: optional_timestamp(f.disposal_time),
            corrects: f
                .corrects_id
                .map(|id| child_name(org, "wasteManifests", id))
                .unwrap_or_default(),
            ..WasteManifest::default()
        }
    }
    fn order_text(f: &ManifestFields) -> &str {
        &f.ticket_number
    }
    fn check_deletion(current: &Row<ManifestFields>, _delete: bool) -> Result<(), ApiError> {
        if current.fields.disposal_time.is_some() {
            return Err(recorded_is_final());
        }
        Ok(())
    }
    fn before_write<'a>(
        conn: &'a AsyncPgConnection,
        org: OrgId,
        current: Option<&'a Row<ManifestFields>>,
        next: &'a mut ManifestFields,
        _paths: &'a [&'static str],
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if current.is_some_and(|c| c.fields.disposal_time.is_some()) {
                return Err(recorded_is_final());
            }
            if current.is_none() {
                let name = child_name(org.uuid(), "workOrders", next.work_order_id);
                let wo = WorkOrders::find(conn, org, next.work_order_id, false)
                    .await?
                    .filter(|w| !w.std.deleted())
                    .ok_or_else(|| {
                        refused("REFERENCE_NOT_FOUND", format!("{name} does not exist"))
                    })?;
                next.generator_customer_id = wo.fields.customer_id;
                next.generator_property_id = wo.fields.property_id;
                if let Some(old) = next.corrects_id {
                    check_correction(conn, org, old, next.work_order_id).await?;
                }
            }
            check_hauler(conn, org, next).await
        })
    }
}

/// A license's expiry, holders and deletion.
type LicenseRow = (
    DateTime<Utc>,
    Option<Uuid>,
    Option<Uuid>,
    Option<DateTime<Utc>>,
);

/// The truck, driver, license and facility of a manifest can take this load.
async fn check_hauler(
    conn: &AsyncPgConnection,
    org: OrgId,
    next: &ManifestFields,
) -> Result<(), ApiError> {
    let truck = child_name(org.uuid(), "trucks", next.truck_id);
    let capacity: Option<(i32, bool, Option<DateTime<Utc>>)> = tr::trucks
        .filter(tr::organization_id.eq(org))
        .filter(tr::id.eq(next.truck_id))
        .select((tr::tank_capacity_gallons, tr::active, tr::delete_time))
        .first(&mut { conn })
        .await
        .optional()?;
    match capacity {
        None | Some((_, _, Some(_))) => {
            return Err(refused(
                "REFERENCE_NOT_FOUND",
                format!("{truck} does not exist"),
            ));
        }
        Some((_, false, None)) => {
            return Err(refused(
                "TRUCK_NOT_ACTIVE",
                format!("{truck} is out of service"),
            ));
        }
        Some((cap, true, None)) if next.gallons > cap => {
            return Err(refused(
                "OVER_TANK_CAPACITY",
                format!(
                    "{} gallons do not fit {truck}'s {cap}-gallon tank",
                    next.gallons
                ),
            ));
        }
        Some(_) => {}
    }
    let technician = child_name(org.uuid(), "technicians", next.technician_id);
    crm_resource::require_live::<Technicians>(conn, org, next.technician_id, &technician).await?;
    if let Some(license) = next.license_id {
        let name = child_name(org.uuid(), "licenses", license);
        let found: Option<LicenseRow> = l::licenses
            .filter(l::organization_id.eq(org))
            .filter(l::id.eq(license))
            .select((
                l::expire_time,
                l::truck_id,
                l::technician_id,
                l::delete_time,
            ))
            .first(&mut { conn })
            .await
            .optional()?;
        match found {
            None | Some((_, _, _, Some(_))) => {
                return Err(refused(
                    "REFERENCE_NOT_FOUND",
                    format!("{name} does not exist"),
                ));
            }
            Some((expires, _, _, None)) if expires <= next.pickup_time => {
                return Err(refused(
                    "LICENSE_EXPIRED",
                    format!("{name} had expired at pickup"),
                ));
            }
            Some((_, truck_id, tech_id, None))
                if truck_id.is_some_and(|t| t != next.truck_id)
                    || tech_id.is_some_and(|t| t != next.technician_id) =>
            {
                return Err(refused(
                    "LICENSE_OF_ANOTHER_HAULER",
                    format!("{name} is another truck's or technician's"),
                ));
            }
            Some(_) => {}
        }
    }
    let facility = child_name(org.uuid(), "disposalFacilities", next.disposal_facility_id);
    let found: Option<(Vec<i16>, bool, Option<DateTime<Utc>>)> = d::disposal_facilities
        .filter(d::organization_id.eq(org))
        .filter(d::id.eq(next.disposal_facility_id))
        .select((d::accepted_waste_kinds, d::active, d::delete_time))
        .first(&mut { conn })
        .await
        .optional()?;
    match found {
        None | Some((_, _, Some(_))) => Err(refused(
            "REFERENCE_NOT_FOUND",
            format!("{facility} does not exist"),
        )),
        Some((_, false, None)) => Err(refused(
            "FACILITY_NOT_ACTIVE",
            format!("{facility} does not take loads now"),
        )),
        Some((kinds, true, None)) if !kinds.contains(&next.waste_kind) => Err(refused(
            "WASTE_KIND_NOT_ACCEPTED",
            format!("{facility} does not accept this waste kind"),
        )),
        Some(_) => Ok(()),
    }
}

/// A correction names a recorded manifest of the same work order that no live manifest
/// corrects yet.
async fn check_correction(
    conn: &AsyncPgConnection,
    org: OrgId,
    old: Uuid,
    work_order: Uuid,
) -> Result<(), ApiError> {
    let name = child_name(org.uuid(), "wasteManifests", old);
    let original = WasteManifests::find(conn, org, old, true)
        .await?
        .ok_or_else(|| refused("REFERENCE_NOT_FOUND", format!("{name} does not exist")))?;
    if original.fields.work_order_id != work_order {
        return Err(refused(
            "CORRECTION_OF_ANOTHER_JOB",
            format!("{name} is another work order's manifest"),
        ));
    }
    if original.fields.disposal_time.is_none() {
        return Err(refused(
            "CORRECTION_OF_UNRECORDED",
            format!("{name} is not recorded yet: update it instead"),
        ));
    }
    let corrected: i64 = m::waste_manifests
        .filter(m::organization_id.eq(org))
        .filter(m::corrects_id.eq(old))
        .filter(m::delete_time.is_null())
        .count()
        .get_result(&mut { conn })
        .await?;
    if corrected > 0 {
        return Err(refused(
            "ALREADY_CORRECTED",
            format!("{name} already has a correction: correct that one"),
        ));
    }
    Ok(())
}

/// Serves RecordDisposal.
async fn record_disposal(
    ctx: &Context,
    call: Call,
    body: RecordDisposalRequest,
) -> Result<WasteManifest, ApiError> {
    let mut v = Violations::new();
    let parsed = crm_resource::parse_name::<WasteManifests>(&mut v, &body.name, "name");
    validate::optional_text(&mut v, "ticket_number", &body.ticket_number, 100);
    let disposed = Input::new(&mut v, None, "disposal_time".to_owned())
        .required_time(body.disposal_time.as_ref(), "when the load was disposed of");
    if disposed.is_some_and(|t| t > Utc::now() + chrono::Duration::minutes(5)) {
        v.push(
            "disposal_time",
            "IN_THE_FUTURE",
            "must not be in the future",
        );
    }
    let mut fingerprint = body.clone();
    fingerprint.request_id.clear();
    let key = IdempotencyKey::from_request(&mut v, &call.method, &body.request_id, &fingerprint);
    v.finish()?;
    let ((org, id), Some(disposed)) = (
        parsed.ok_or_else(|| ApiError::Internal("name parsed without violation".into()))?,
        disposed,
    ) else {
        return Err(ApiError::Internal("time parsed without violation".into()));
    };
    names::require_same_organization(&call.principal, org)?;
    let deadline = call.deadline;
    let write = mutation::idempotent(ctx.pool.clone(), org, key, move |conn| {
        Box::pin(async move {
            let w = Write {
                org: OrgId(org),
                call: &call,
                request_id: &body.request_id,
            };
            let current = crm_resource::lock::<WasteManifests>(
                conn, w.org, id, &body.name, &body.etag, "etag",
            )
            .await?;
            if current.std.deleted() {
                return Err(refused(
                    "RESOURCE_DELETED",
                    "a deleted manifest cannot be recorded".to_owned(),
                ));
            }
            if current.fields.disposal_time.is_some() {
                return Err(recorded_is_final());
            }
            let mut next = current.fields.clone();
            if !body.ticket_number.trim().is_empty() {
                next.ticket_number = body.ticket_number.trim().to_owned();
            }
            if next.ticket_number.is_empty() {
                return Err(ApiError::invalid(
                    "ticket_number",
                    "REQUIRED",
                    "the facility's ticket number is required to record the disposal",
                ));
            }
            if disposed < next.pickup_time {
                return Err(ApiError::invalid(
                    "disposal_time",
                    "BEFORE_PICKUP",
                    "the disposal comes after the pickup",
                ));
            }
            next.disposal_time = Some(disposed);
            check_hauler(conn, w.org, &next).await?;
            let before = crm_resource::to_proto::<WasteManifests>(current);
            let row = WasteManifests::update(conn, w.org, id, &next, w.call.actor()).await?;
            let after = crm_resource::to_proto::<WasteManifests>(row);
            let mask = prost_types::FieldMask {
                paths: vec!["ticket_number".to_owned(), "disposal_time".to_owned()],
            };
            let shown = crm_resource::for_event::<WasteManifests>(&after);
            crm_resource::emit(conn, w, "disposal_recorded", &shown, &body.name, Some(mask))
                .await?;
            crm_resource::audit::record_change::<WasteManifests>(
                conn,
                w.org,
                w.entry(
                    &body.name,
                    crm_resource::audit::Action::Custom("record_disposal"),
                ),
                Some(&before),
                &after,
                &["ticket_number", "disposal_time"],
            )
            .await?;
            Ok(after)
        })
    });
    ctx.commit(deadline, write).await
}

crm_resource::standard_store!(
    WasteManifests,
    table = waste_manifests,
    time = create_time,
    text = ticket_number
);

crm_resource::standard_service! {
    service = "crm.fieldops.v1.WasteManifestService",
    server = crm_proto::fieldops_v1::waste_manifest_service_server::WasteManifestService,
    resource = WasteManifests,
    api = WasteManifestApi,
    field = waste_manifest;
    create = create_waste_manifest(CreateWasteManifestRequest, id = waste_manifest_id);
    get = get_waste_manifest(GetWasteManifestRequest, full = |_| false);
    list = list_waste_manifests(ListWasteManifestsRequest, full = |_| false)
        -> ListWasteManifestsResponse.waste_manifests;
    update = update_waste_manifest(UpdateWasteManifestRequest);
    delete = delete_waste_manifest(DeleteWasteManifestRequest);
    undelete = undelete_waste_manifest(UndeleteWasteManifestRequest);

    async fn record_disposal(
        &self,
        req: tonic::Request<RecordDisposalRequest>,
    ) -> Result<tonic::Response<WasteManifest>, tonic::Status> {
        let call = Call::of(&req, SERVICE, "record_disposal")?;
        record_disposal(&self.ctx, call, req.into_inner())
            .await
            .map(tonic::Response::new)
            .map_err(|e| self.ctx.status(e))
    }
}
