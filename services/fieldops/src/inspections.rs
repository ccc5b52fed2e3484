//! `crm.fieldops.v1.InspectionService`: inspections of properties' systems with their results,
//! findings, reports and inspector. The property is core's, checked with core (the caller's
//! credentials) when the inspection is recorded.

use chrono::{DateTime, Utc};
use crm_auth::{MethodPolicy, permission};
use crm_db::OrgId;
use crm_platform::ApiError;
use crm_platform::api::names::child_name;
use crm_platform::api::time::timestamp;
use crm_proto::common_v1::GeoPoint;
use crm_proto::fieldops_v1::{
    CreateInspectionRequest, DeleteInspectionRequest, GetInspectionRequest, Inspection,
    InspectionKind, InspectionResult, ListInspectionsRequest, ListInspectionsResponse,
    UndeleteInspectionRequest, UpdateInspectionRequest,
};
use crm_resource::{BoxFuture, Call, Context, Field, Resource, Row, Store};
use diesel::prelude::*;
use diesel_async::AsyncPgConnection;
use uuid::Uuid;

use crate::peers::Peers;
use crate::schema::inspections::{self, dsl as n};
use crate::technicians::Technicians;
use crate::work_orders::WorkOrders;

/// The permission of every RPC.
#[must_use]
pub fn policy() -> MethodPolicy {
    let write = permission::COMPLIANCE_WRITE;
    InspectionApi::policy(permission::COMPLIANCE_READ, write, write)
}

/// The columns of `fieldops.inspections` besides the standard ones.
#[derive(Debug, Clone, Default, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = inspections, treat_none_as_null = true)]
pub struct InspectionFields {
    pub property_id: Uuid,
    pub work_order_id: Option<Uuid>,
    pub kind: i16,
    pub result: i16,
    pub findings: String,
    pub report_reference: String,
    pub inspector_id: Uuid,
    pub inspect_time: DateTime<Utc>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
}

/// The inspection resource.
#[derive(Debug)]
pub struct Inspections;

impl Resource for Inspections {
    type Proto = Inspection;
    type Fields = InspectionFields;
    type Table = inspections::table;
    const RESOURCE_TYPE: &'static str = "fieldops.crm/Inspection";
    const COLLECTION: &'static str = "inspections";
    const FIELD: &'static str = "inspection";
    const TEXT_ORDER: &'static str = "report_reference";
    const FIELDS: &'static [Field<Self>] = &[
        Field::<Self>::create_only("property", |i, x, f| {
            if let Some(id) = i.reference(&x.property, "properties") {
                f.property_id = id;
            }
        })
        .filter(|n, op, v| crm_resource::filter_reference!(n::property_id, n, op, v, "properties")),
        Field::<Self>::create_only("work_order", |i, x, f| {
            f.work_order_id = if x.work_order.is_empty() {
                None
            } else {
                i.reference(&x.work_order, "workOrders")
            };
        }),
        Field::<Self>::updatable("kind", |i, x, f| {
            let message = "a kind such as INSPECTION_KIND_SEPTIC_SYSTEM";
            if let Some(k) = i.specified::<InspectionKind>(x.kind, "INVALID_KIND", message) {
                f.kind = k;
            }
        })
        .filter(|n, op, v| {
            let number =
                crm_db::filter::enum_number(v, "INSPECTION_KIND_", InspectionKind::from_str_name)?;
            crm_db::filter_enum!(n::kind, n, op, number)
        }),
        Field::<Self>::updatable("result", |i, x, f| {
            let message = "INSPECTION_RESULT_PASS, _FAIL or _CONDITIONAL";
            if let Some(r) = i.specified::<InspectionResult>(x.result, "INVALID_RESULT", message) {
                f.result = r;
            }
        })
        .filter(|n, op, v| {
            let number = crm_db::filter::enum_number(
                v,
                "INSPECTION_RESULT_",
                InspectionResult::from_str_name,
            )?;
            crm_db::filter_enum!(n::result, n, op, number)
        }),
        Field::<Self>::updatable("findings", |i, x, f| {
            f.findings = i.text(&x.findings, 10_000);
        }),
        Field::<Self>::updatable("report_reference", |i, x, f| {
            f.report_reference = i.trimmed(&x.report_reference, 2_000);
        })
        .filter(|n, op, v| crm_db::filter_text!(n::report_reference, n, op, v)),
        Field::<Self>::updatable("inspector", |i, x, f| {
            if let Some(id) = i.reference(&x.inspector, "technicians") {
                f.inspector_id = id;
            }
        })
        .filter(|n, op, v| {
            crm_resource::filter_reference!(n::inspector_id, n, op, v, "technicians")
        }),
        Field::<Self>::updatable("inspect_time", |i, x, f| {
            if let Some(t) = i.required_time(x.inspect_time.as_ref(), "when it was done") {
                if t > Utc::now() + chrono::Duration::minutes(5) {
                    i.push("IN_THE_FUTURE", "must not be in the future");
                }
                f.inspect_time = t;
            }
        })
        .filter(|n, op, v| crm_db::filter_time!(n::inspect_time, n, op, v)),
        Field::<Self>::updatable("location", |i, x, f| {
            let point = i.geo(x.location.as_ref());
            f.latitude = point.map(|p| p.0);
            f.longitude = point.map(|p| p.1);
        }),
    ];

    fn to_proto(org: Uuid, f: InspectionFields) -> Inspection {
        Inspection {
            property: child_name(org, "properties", f.property_id),
            work_order: f
                .work_order_id
                .map(|id| child_name(org, "workOrders", id))
                .unwrap_or_default(),
            kind: i32::from(f.kind),
            result: i32::from(f.result),
            findings: f.findings,
            report_reference: f.report_reference,
            inspector: child_name(org, "technicians", f.inspector_id),
            inspect_time: Some(timestamp(f.inspect_time)),
            location: f
                .latitude
                .zip(f.longitude)
                .map(|(latitude, longitude)| GeoPoint {
                    latitude,
                    longitude,
                }),
            ..Inspection::default()
        }
    }
    fn order_text(f: &InspectionFields) -> &str {
        &f.report_reference
    }
    fn check_remote<'a>(
        ctx: &'a Context,
        call: &'a Call,
        fields: &'a InspectionFields,
        paths: &'a [&'static str],
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if paths.contains(&"property") {
                let org = call.principal.organization;
                ctx.peers::<Peers>()?
                    .property_zone(call, org, fields.property_id)
                    .await?;
            }
            Ok(())
        })
    }
    fn before_write<'a>(
        conn: &'a AsyncPgConnection,
        org: OrgId,
        current: Option<&'a Row<InspectionFields>>,
        next: &'a mut InspectionFields,
        _paths: &'a [&'static str],
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            let passed = i32::from(next.result) == InspectionResult::Pass as i32;
            if !passed && next.findings.trim().is_empty() {
                return Err(ApiError::invalid(
                    "inspection.findings",
                    "REQUIRED",
                    "a failed or conditional inspection says what was found",
                ));
            }
            let inspector = child_name(org.uuid(), "technicians", next.inspector_id);
            crm_resource::require_live::<Technicians>(conn, org, next.inspector_id, &inspector)
                .await?;
            if let (None, Some(wo)) = (current, next.work_order_id) {
                let name = child_name(org.uuid(), "workOrders", wo);
                let found = WorkOrders::find(conn, org, wo, false)
                    .await?
                    .filter(|w| !w.std.deleted())
                    .ok_or_else(|| ApiError::FailedPrecondition {
                        reason: "REFERENCE_NOT_FOUND",
                        message: format!("{name} does not exist"),
                    })?;
                if found.fields.property_id != next.property_id {
                    return Err(ApiError::FailedPrecondition {
                        reason: "WORK_ORDER_AT_ANOTHER_PROPERTY",
                        message: format!("{name} is at another property"),
                    });
                }
            }
            Ok(())
        })
    }
}

crm_resource::standard_store!(
    Inspections,
    table = inspections,
    time = create_time,
    text = report_reference
);

crm_resource::standard_service! {
    service = "crm.fieldops.v1.InspectionService",
    server = crm_proto::fieldops_v1::inspection_service_server::InspectionService,
    resource = Inspections,
    api = InspectionApi,
    field = inspection;
    create = create_inspection(CreateInspectionRequest, id = inspection_id);
    get = get_inspection(GetInspectionRequest, full = |_| false);
    list = list_inspections(ListInspectionsRequest, full = |_| false)
        -> ListInspectionsResponse.inspections;
    update = update_inspection(UpdateInspectionRequest);
    delete = delete_inspection(DeleteInspectionRequest);
    undelete = undelete_inspection(UndeleteInspectionRequest);
}
