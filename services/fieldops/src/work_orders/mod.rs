//! `crm.fieldops.v1.WorkOrderService`: work orders on the resource engine, their bookings
//! ([`bookings`]), their state machine and history ([`transitions`]).
//!
//! A work order names core's customer, property and equipment: they are checked with core when
//! it is created (with the caller's credentials), and cannot change afterwards. A principal
//! whose only field role is `fieldops.technician` sees and changes only the work orders they
//! are assigned to ([`WorkOrders::scope`]), in the query and by a restrictive policy.

pub mod bookings;
pub mod transitions;

use chrono::{DateTime, Utc};
use crm_auth::principal::role_grants;
use crm_auth::{MethodPolicy, Principal, Requirement, permission};
use crm_db::OrgId;
use crm_db::filter::{Filter, Op, Value};
use crm_platform::ApiError;
use crm_platform::api::names::child_name;
use crm_platform::api::time::optional_timestamp;
use crm_proto::fieldops_v1::{
    CreateWorkOrderRequest, DeleteWorkOrderRequest, GetWorkOrderRequest,
    GetWorkOrderTransitionTableRequest, JobType, LineItem, ListWorkOrderEventsRequest,
    ListWorkOrderEventsResponse, ListWorkOrdersRequest, ListWorkOrdersResponse,
    TransitionWorkOrderRequest, UndeleteWorkOrderRequest, UpdateWorkOrderRequest, WorkOrder,
    WorkOrderPriority, WorkOrderStatus, WorkOrderTransitionTable,
};
use crm_resource::input::Amount;
use crm_resource::{BoxFuture, Call, Context, Field, Input, Resource, Row, Scope, Write};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::peers::{Peers, Site};
use crate::schema::certifications::dsl as c;
use crate::schema::technicians::dsl as t;
use crate::schema::work_orders::{self, dsl as w};

const SERVICE: &str = "crm.fieldops.v1.WorkOrderService";
/// At most this many technicians on one job.
pub const MAX_TECHNICIANS: usize = 5;
/// At most this many line items.
pub const MAX_LINES: usize = 50;

/// The permission of every RPC.
#[must_use]
pub fn policy() -> MethodPolicy {
    let (read, write) = (permission::WORK_ORDERS_READ, permission::WORK_ORDERS_WRITE);
    WorkOrderApi::policy(read, write, write)
        .with(
            SERVICE,
            "TransitionWorkOrder",
            Requirement::Permission(permission::WORK_ORDERS_TRANSITION),
        )
        .with(
            SERVICE,
            "ListWorkOrderEvents",
            Requirement::Permission(read),
        )
        .with(
            SERVICE,
            "GetWorkOrderTransitionTable",
            Requirement::Permission(read),
        )
}

/// The columns of `fieldops.work_orders` besides the standard ones.
#[derive(Debug, Clone, Default, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = work_orders, treat_none_as_null = true)]
pub struct WorkOrderFields {
    pub job_type: i16,
    pub priority: i16,
    pub status: i16,
    pub summary: String,
    pub customer_id: Uuid,
    pub property_id: Uuid,
    pub equipment_id: Option<Uuid>,
    pub technician_ids: Vec<Uuid>,
    pub technician_user_ids: Vec<Uuid>,
    pub scheduled_start_time: Option<DateTime<Utc>>,
    pub scheduled_end_time: Option<DateTime<Utc>>,
    pub estimated_minutes: i32,
    pub line_currency: Option<String>,
    pub line_descriptions: Vec<String>,
    pub line_quantities: Vec<i32>,
    pub line_unit_price_nanos: Vec<i64>,
    pub gallons_pumped: i32,
    pub notes: String,
    pub follow_up_of: Option<Uuid>,
}

/// The column value of a status.
#[must_use]
pub fn status(s: WorkOrderStatus) -> i16 {
    i16::try_from(s as i32).unwrap_or_default()
}

/// The usual time on site of a job type, in minutes.
#[must_use]
pub fn usual_minutes(job_type: i16) -> i32 {
    match JobType::try_from(i32::from(job_type)) {
        Ok(JobType::Inspection | JobType::Maintenance) => 60,
        Ok(JobType::CameraInspection | JobType::Repair) => 90,
        Ok(JobType::Installation) => 240,
        Ok(JobType::Pumping | JobType::GreaseTrap | JobType::Emergency | JobType::Unspecified)
        | Err(_) => 120,
    }
}

/// The certification a job type needs of its technicians, if any.
#[must_use]
pub fn required_certification(job_type: i16) -> Option<i16> {
    use crm_proto::fieldops_v1::CertificationKind as K;
    let kind = match JobType::try_from(i32::from(job_type)) {
        Ok(JobType::Inspection) => K::Inspection,
        Ok(JobType::CameraInspection) => K::CameraInspection,
        Ok(_) | Err(_) => return None,
    };
    i16::try_from(kind as i32).ok()
}

fn set_technicians(i: &mut Input<'_>, names: &[String], f: &mut WorkOrderFields) {
    f.technician_ids.clear();
    if names.len() > MAX_TECHNICIANS {
        i.push("TOO_MANY", format!("at most {MAX_TECHNICIANS} technicians"));
        return;
    }
    for name in names {
        if let Some(id) = i.reference(name, "technicians") {
            if f.technician_ids.contains(&id) {
                i.push("DUPLICATE", "each technician at most once");
            } else {
                f.technician_ids.push(id);
            }
        }
    }
}

fn set_lines(i: &mut Input<'_>, lines: &[LineItem], f: &mut WorkOrderFields) {
    f.line_descriptions.clear();
    f.line_quantities.clear();
    f.line_unit_price_nanos.clear();
    f.line_currency = None;
    if lines.len() > MAX_LINES {
        i.push("TOO_MANY", format!("at most {MAX_LINES} line items"));
        return;
    }
    for (n, line) in lines.iter().enumerate() {
        let mut at = i.sub(&format!("[{n}]"));
        let description = at.sub(".description").required_text(&line.description, 200);
        if !(1..=100_000).contains(&line.quantity) {
            at.push_at("quantity", "OUT_OF_RANGE", "1 to 100,000");
        }
        let price = at.sub(".unit_price").money(line.unit_price.as_ref(), false);
        let Some(price) = price else {
            at.push_at("unit_price", "REQUIRED", "each line needs a unit price");
            continue;
        };
        match &f.line_currency {
            Some(cur) if *cur != price.currency => {
                at.push_at(
                    "unit_price",
                    "MIXED_CURRENCIES",
                    "every line in one currency",
                );
            }
            Some(_) => {}
            None => f.line_currency = Some(price.currency.clone()),
        }
        f.line_descriptions.push(description);
        f.line_quantities.push(line.quantity);
        f.line_unit_price_nanos.push(price.nanos);
    }
}

fn enum_filter<E>(
    column: fn(i16) -> crm_db::filter::BoxedPredicate<work_orders::table>,
    prefix: &str,
    from_name: fn(&str) -> Option<E>,
    field: &str,
    op: Op,
    v: &Value,
) -> Result<crm_db::filter::BoxedPredicate<work_orders::table>, crm_db::filter::FilterError>
where
    E: Into<i32>,
{
    let number = crm_db::filter::enum_number(v, prefix, from_name)?;
    match op {
        Op::Eq => Ok(column(number)),
        Op::Ne | Op::Lt | Op::Le | Op::Gt | Op::Ge | Op::Has => {
            Err(crm_db::filter::unsupported_op(field, op))
        }
    }
}

/// The work order resource.
#[derive(Debug)]
pub struct WorkOrders;

impl Resource for WorkOrders {
    type Proto = WorkOrder;
    type Fields = WorkOrderFields;
    type Table = work_orders::table;
    const RESOURCE_TYPE: &'static str = "fieldops.crm/WorkOrder";
    const COLLECTION: &'static str = "workOrders";
    const FIELD: &'static str = "work_order";
    const TEXT_ORDER: &'static str = "summary";
    const FIELDS: &'static [Field<Self>] = &[
        Field::<Self>::create_only("job_type", |i, x, f| {
            let message = "a job type such as JOB_TYPE_PUMPING";
            if let Some(n) = i.specified::<JobType>(x.job_type, "INVALID_JOB_TYPE", message) {
                f.job_type = n;
            }
        })
        .filter(|n, op, v| {
            enum_filter(
                |k| Box::new(w::job_type.eq(k)),
                "JOB_TYPE_",
                JobType::from_str_name,
                n,
                op,
                v,
            )
        }),
        Field::<Self>::updatable("priority", |i, x, f| {
            if let Some(n) = i.enumeration_or(x.priority, WorkOrderPriority::Normal) {
                f.priority = n;
            }
        })
        .filter(|n, op, v| {
            let from = WorkOrderPriority::from_str_name;
            enum_filter(
                |k| Box::new(w::priority.eq(k)),
                "WORK_ORDER_PRIORITY_",
                from,
                n,
                op,
                v,
            )
        }),
        Field::<Self>::output("status").filter(|n, op, v| {
            let from = WorkOrderStatus::from_str_name;
            enum_filter(
                |k| Box::new(w::status.eq(k)),
                "WORK_ORDER_STATUS_",
                from,
                n,
                op,
                v,
            )
        }),
        Field::<Self>::updatable("summary", |i, x, f| {
            f.summary = i.required_text(&x.summary, 200);
        })
        .filter(|n, op, v| crm_db::filter_text!(w::summary, n, op, v)),
        Field::<Self>::create_only("customer", |i, x, f| {
            if let Some(id) = i.reference(&x.customer, "customers") {
                f.customer_id = id;
            }
        })
        .filter(|n, op, v| crm_resource::filter_reference!(w::customer_id, n, op, v, "customers")),
        Field::<Self>::create_only("property", |i, x, f| {
            if let Some(id) = i.reference(&x.property, "properties") {
                f.property_id = id;
            }
        })
        .filter(|n, op, v| crm_resource::filter_reference!(w::property_id, n, op, v, "properties")),
        Field::<Self>::create_only("equipment", |i, x, f| {
            f.equipment_id = if x.equipment.is_empty() {
                None
            } else {
                i.reference(&x.equipment, "equipment")
            };
        }),
        Field::<Self>::updatable("technicians", |i, x, f| {
            set_technicians(i, &x.technicians, f);
        }),
        Field::<Self>::filter_only("technician", |n, op, v| {
            let id = crm_resource::store::reference_value(n, v, "technicians")?;
            match op {
                Op::Has | Op::Eq => Ok(Box::new(w::technician_ids.contains(vec![id]))),
                Op::Ne | Op::Lt | Op::Le | Op::Gt | Op::Ge => {
                    Err(crm_db::filter::unsupported_op(n, op))
                }
            }
        }),
        // The technician view's filter (see `scope`): the work orders a user is assigned to.
        Field::<Self>::filter_only("assigned_user", |n, op, v| {
            let id = crm_resource::store::user_value(n, v)?;
            match op {
                Op::Has | Op::Eq => Ok(Box::new(w::technician_user_ids.contains(vec![id]))),
                Op::Ne | Op::Lt | Op::Le | Op::Gt | Op::Ge => {
                    Err(crm_db::filter::unsupported_op(n, op))
                }
            }
        }),
        Field::<Self>::updatable("scheduled_start_time", |i, x, f| {
            f.scheduled_start_time = i.optional_time(x.scheduled_start_time.as_ref());
        })
        .filter(|n, op, v| {
            crm_db::filter_time!(w::scheduled_start_time.assume_not_null(), n, op, v)
        }),
        Field::<Self>::updatable("scheduled_end_time", |i, x, f| {
            f.scheduled_end_time = i.optional_time(x.scheduled_end_time.as_ref());
        }),
        Field::<Self>::updatable("estimated_duration", |i, x, f| {
            f.estimated_minutes = match &x.estimated_duration {
                None => 0,
                Some(d)
                    if d.nanos == 0
                        && d.seconds % 60 == 0
                        && (60..=86_400).contains(&d.seconds) =>
                {
                    i32::try_from(d.seconds / 60).unwrap_or_default()
                }
                Some(_) => {
                    i.push("INVALID_DURATION", "whole minutes, 1 minute to 24 hours");
                    0
                }
            };
        }),
        Field::<Self>::updatable("line_items", |i, x, f| set_lines(i, &x.line_items, f)),
        Field::<Self>::updatable("gallons_pumped", |i, x, f| {
            f.gallons_pumped = i.in_range(x.gallons_pumped, 0..=100_000, "0 to 100,000 gallons");
        }),
        Field::<Self>::updatable("notes", |i, x, f| f.notes = i.text(&x.notes, 5_000)),
        Field::<Self>::output("follow_up_of"),
    ];

    fn to_proto(org: Uuid, f: WorkOrderFields) -> WorkOrder {
        let currency = f.line_currency.clone().unwrap_or_default();
        let line_items = f
            .line_descriptions
            .into_iter()
            .zip(f.line_quantities)
            .zip(f.line_unit_price_nanos)
            .map(|((description, quantity), nanos)| LineItem {
                description,
                quantity,
                unit_price: Some(
                    Amount {
                        currency: currency.clone(),
                        nanos,
                    }
                    .to_proto(),
                ),
            })
            .collect();
        WorkOrder {
            job_type: i32::from(f.job_type),
            priority: i32::from(f.priority),
            status: i32::from(f.status),
            summary: f.summary,
            customer: child_name(org, "customers", f.customer_id),
            property: child_name(org, "properties", f.property_id),
            equipment: f
                .equipment_id
                .map(|id| child_name(org, "equipment", id))
                .unwrap_or_default(),
            technicians: f
                .technician_ids
                .iter()
                .map(|id| child_name(org, "technicians", *id))
                .collect(),
            scheduled_start_time: optional_timestamp(f.scheduled_start_time),
            scheduled_end_time: optional_timestamp(f.scheduled_end_time),
            estimated_duration: Some(prost_types::Duration {
                seconds: i64::from(f.estimated_minutes) * 60,
                nanos: 0,
            }),
            line_items,
            gallons_pumped: f.gallons_pumped,
            notes: f.notes,
            follow_up_of: f
                .follow_up_of
                .map(|id| child_name(org, "workOrders", id))
                .unwrap_or_default(),
            ..WorkOrder::default()
        }
    }
    fn order_text(f: &WorkOrderFields) -> &str {
        &f.summary
    }
    fn scope(principal: &Principal) -> Option<Scope> {
        technician_view(principal)
    }
    fn check_remote<'a>(
        ctx: &'a Context,
        call: &'a Call,
        fields: &'a WorkOrderFields,
        paths: &'a [&'static str],
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if !paths.contains(&"customer") {
                return Ok(());
            }
            let site = Site {
                org: call.principal.organization,
                customer: fields.customer_id,
                property: fields.property_id,
                equipment: fields.equipment_id,
            };
            ctx.peers::<Peers>()?.require_site(call, site).await
        })
    }
    fn before_write<'a>(
        conn: &'a AsyncPgConnection,
        org: OrgId,
        current: Option<&'a Row<WorkOrderFields>>,
        next: &'a mut WorkOrderFields,
        _paths: &'a [&'static str],
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            match current {
                None => next.status = status(WorkOrderStatus::Draft),
                Some(c) if transitions::is_closed(c.fields.status) => {
                    return Err(ApiError::FailedPrecondition {
                        reason: "WORK_ORDER_CLOSED",
                        message: "a completed, canceled or followed-up work order cannot change"
                            .to_owned(),
                    });
                }
                Some(_) => {}
            }
            if next.estimated_minutes == 0 {
                next.estimated_minutes = usual_minutes(next.job_type);
            }
            check_window(next)?;
            next.technician_user_ids = technician_users(conn, org, &next.technician_ids).await?;
            if let Some(kind) = required_certification(next.job_type) {
                let until = next.scheduled_end_time.unwrap_or_else(Utc::now);
                require_certified(conn, org, &next.technician_ids, kind, until).await?;
            }
            Ok(())
        })
    }
    fn after_write<'a>(
        conn: &'a AsyncPgConnection,
        wr: Write<'a>,
        before: Option<&'a Row<WorkOrderFields>>,
        after: &'a Row<WorkOrderFields>,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            let id = after.std.id;
            bookings::sync(conn, wr.org, id, &after.fields, after.std.deleted()).await?;
            if before.is_none() {
                let created = transitions::Step {
                    from: 0,
                    to: after.fields.status,
                    actor: wr.call.actor(),
                    reason: "",
                    position: None,
                    technicians: &[],
                    follow_up: None,
                };
                transitions::record(conn, wr.org, id, &created).await?;
            }
            Ok(())
        })
    }
}

/// The technician view: a user whose field roles stop at `fieldops.technician` sees only the
/// work orders they are assigned to.
#[must_use]
pub fn technician_view(principal: &Principal) -> Option<Scope> {
    const TECHNICIAN: &str = "fieldops.technician";
    if !principal.roles.iter().any(|r| r == TECHNICIAN) {
        return None;
    }
    let sees_all = principal
        .roles
        .iter()
        .filter(|r| *r != TECHNICIAN)
        .any(|r| role_grants(r, permission::WORK_ORDERS_READ));
    if sees_all {
        return None;
    }
    let viewer = principal
        .subject
        .strip_prefix("users/")
        .and_then(|id| Uuid::parse_str(id).ok())
        // A non-user holding only the technician role sees nothing: no user is assigned.
        .unwrap_or(Uuid::nil());
    Some(Scope {
        filter: Filter::Compare {
            field: "assigned_user".to_owned(),
            op: Op::Eq,
            value: Value::Quoted(format!("users/{viewer}")),
        },
        viewer,
    })
}

/// Both ends of the window or neither; the end after the start, at most 24 hours later.
fn check_window(f: &WorkOrderFields) -> Result<(), ApiError> {
    match (f.scheduled_start_time, f.scheduled_end_time) {
        (None, None) => Ok(()),
        (Some(s), Some(e)) if e > s && e - s <= chrono::Duration::hours(24) => Ok(()),
        (Some(_), Some(_)) => Err(ApiError::invalid(
            "work_order.scheduled_end_time",
            "INVALID_WINDOW",
            "after the start, at most 24 hours later",
        )),
        (None, Some(_)) | (Some(_), None) => Err(ApiError::invalid(
            "work_order.scheduled_start_time",
            "INCOMPLETE_WINDOW",
            "a window has both a start and an end",
        )),
    }
}

/// The users of `technicians`, each of which must exist, be live and take work.
async fn technician_users(
    conn: &AsyncPgConnection,
    org: OrgId,
    technicians: &[Uuid],
) -> Result<Vec<Uuid>, ApiError> {
    if technicians.is_empty() {
        return Ok(Vec::new());
    }
    let found: Vec<(Uuid, Uuid, i16, Option<DateTime<Utc>>)> = t::technicians
        .filter(t::organization_id.eq(org))
        .filter(t::id.eq_any(technicians))
        .select((t::id, t::user_id, t::status, t::delete_time))
        .load(&mut { conn })
        .await?;
    let mut users = Vec::new();
    for id in technicians {
        let name = child_name(org.uuid(), "technicians", *id);
        match found.iter().find(|f| f.0 == *id) {
            None => {
                return Err(ApiError::FailedPrecondition {
                    reason: "REFERENCE_NOT_FOUND",
                    message: format!("{name} does not exist"),
                });
            }
            Some((_, _, _, Some(_))) => {
                return Err(ApiError::FailedPrecondition {
                    reason: "REFERENCE_DELETED",
                    message: format!("{name} is deleted"),
                });
            }
            Some((_, _, s, None)) if *s != 1 => {
                return Err(ApiError::FailedPrecondition {
                    reason: "TECHNICIAN_NOT_ACTIVE",
                    message: format!("{name} does not take work now"),
                });
            }
            Some((_, user, _, None)) => users.push(*user),
        }
    }
    Ok(users)
}

/// Fails unless each of `technicians` holds a live certification of `kind` valid past `until`.
async fn require_certified(
    conn: &AsyncPgConnection,
    org: OrgId,
    technicians: &[Uuid],
    kind: i16,
    until: DateTime<Utc>,
) -> Result<(), ApiError> {
    let certified: Vec<Uuid> = c::certifications
        .filter(c::organization_id.eq(org))
        .filter(c::technician_id.eq_any(technicians))
        .filter(c::kind.eq(kind))
        .filter(c::delete_time.is_null())
        .filter(c::expire_time.gt(until))
        .select(c::technician_id)
        .load(&mut { conn })
        .await?;
    let kind_name = crm_proto::fieldops_v1::CertificationKind::try_from(i32::from(kind))
        .map_or("the required", |k| k.as_str_name());
    match technicians.iter().find(|id| !certified.contains(id)) {
        None => Ok(()),
        Some(id) => Err(ApiError::FailedPrecondition {
            reason: "CERTIFICATION_REQUIRED",
            message: format!(
                "{} holds no {kind_name} certification valid until {}",
                child_name(org.uuid(), "technicians", *id),
                until.to_rfc3339()
            ),
        }),
    }
}

crm_resource::standard_store!(
    WorkOrders,
    table = work_orders,
    time = create_time,
    text = summary
);

crm_resource::standard_service! {
    service = "crm.fieldops.v1.WorkOrderService",
    server = crm_proto::fieldops_v1::work_order_service_server::WorkOrderService,
    resource = WorkOrders,
    api = WorkOrderApi,
    field = work_order;
    create = create_work_order(CreateWorkOrderRequest, id = work_order_id);
    get = get_work_order(GetWorkOrderRequest, full = |_| false);
    list = list_work_orders(ListWorkOrdersRequest, full = |_| false)
        -> ListWorkOrdersResponse.work_orders;
    update = update_work_order(UpdateWorkOrderRequest);
    delete = delete_work_order(DeleteWorkOrderRequest);
    undelete = undelete_work_order(UndeleteWorkOrderRequest);

    async fn transition_work_order(
        &self,
        req: tonic::Request<TransitionWorkOrderRequest>,
    ) -> Result<tonic::Response<WorkOrder>, tonic::Status> {
        let call = Call::of(&req, SERVICE, "transition_work_order")?;
        transitions::transition(&self.ctx, call, req.into_inner())
            .await
            .map(tonic::Response::new)
            .map_err(|e| self.ctx.status(e))
    }

    async fn list_work_order_events(
        &self,
        req: tonic::Request<ListWorkOrderEventsRequest>,
    ) -> Result<tonic::Response<ListWorkOrderEventsResponse>, tonic::Status> {
        let principal = crm_auth::layer::principal_of(&req)?;
        transitions::list_events(&self.ctx, &principal, &req.into_inner())
            .await
            .map(tonic::Response::new)
            .map_err(|e| self.ctx.status(e))
    }

    async fn get_work_order_transition_table(
        &self,
        req: tonic::Request<GetWorkOrderTransitionTableRequest>,
    ) -> Result<tonic::Response<WorkOrderTransitionTable>, tonic::Status> {
        let principal = crm_auth::layer::principal_of(&req)?;
        let name = req.into_inner().name;
        let org = name
            .strip_suffix("/workOrderTransitionTable")
            .ok_or_else(|| {
                ApiError::invalid(
                    "name",
                    "INVALID_NAME",
                    "organizations/{organization}/workOrderTransitionTable",
                )
            })
            .and_then(|parent| crm_platform::api::names::parse_organization(parent, "name"))
            .map_err(|e| self.ctx.status(e))?;
        crm_platform::api::names::require_same_organization(&principal, org)
            .map_err(|e| self.ctx.status(e))?;
        Ok(tonic::Response::new(WorkOrderTransitionTable {
            name,
            transitions: transitions::table(),
        }))
    }
}
