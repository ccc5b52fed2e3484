//! The work order state machine as a table: each allowed move, who may make it and the
//! evidence it needs. `TransitionWorkOrder` follows it, records the step in the work order's
//! append-only history with the actor, the time, each technician's own time and the position,
//! and emits the move as an event (`crm.fieldops.v1.WorkOrder.completed`, …).

use chrono::{DateTime, Utc};
use crm_auth::{Principal, permission};
use crm_db::OrgId;
use crm_platform::ApiError;
use crm_platform::api::listing::Listing;
use crm_platform::api::names::{self, child_name};
use crm_platform::api::time::timestamp;
use crm_platform::api::validate::{self, Violations};
use crm_platform::mutation::{self, IdempotencyKey};
use crm_proto::common_v1::GeoPoint;
use crm_proto::fieldops_v1::{
    JobType, ListWorkOrderEventsRequest, ListWorkOrderEventsResponse, TechnicianTime,
    TransitionWorkOrderRequest, WorkOrder, WorkOrderEvent, WorkOrderStatus, WorkOrderTransition,
};
use crm_resource::audit::{self, Action};
use crm_resource::{Call, Context, Input, Resource, Store, Write, emit, for_event, lock_in};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::bookings::{self, Step as Stamp};
use super::{WorkOrderFields, WorkOrders, status};
use crate::schema::technicians::dsl as t;
use crate::schema::waste_manifests::dsl as m;
use crate::schema::work_order_events::{self, dsl as e};

use WorkOrderStatus as S;

/// Who may make a move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    /// `fieldops.workorders.write` (dispatchers, administrators).
    Dispatcher,
    /// An assigned technician (or a dispatcher).
    Technician,
}

/// What a move needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Evidence {
    /// A scheduled window and at least one technician.
    WindowAndTechnician,
    /// A reason.
    Reason,
    /// For pumping and grease-trap jobs: a waste manifest whose disposal is recorded.
    WasteManifest,
    /// Creates the linked follow-up work order.
    FollowUp,
}

impl Evidence {
    fn name(self) -> &'static str {
        match self {
            Self::WindowAndTechnician => "window_and_technician",
            Self::Reason => "reason",
            Self::WasteManifest => "waste_manifest",
            Self::FollowUp => "follow_up",
        }
    }
}

struct Rule {
    from: &'static [S],
    to: S,
    who: Who,
    evidence: &'static [Evidence],
}

const BOOKED: &[S] = &[S::Scheduled, S::Confirmed];
const WORKING: &[S] = &[S::InProgress];

/// The transition table.
const RULES: &[Rule] = &[
    Rule {
        from: &[S::Draft],
        to: S::Scheduled,
        who: Who::Dispatcher,
        evidence: &[Evidence::WindowAndTechnician],
    },
    Rule {
        from: &[S::Scheduled],
        to: S::Confirmed,
        who: Who::Dispatcher,
        evidence: &[],
    },
    Rule {
        from: BOOKED,
        to: S::Draft,
        who: Who::Dispatcher,
        evidence: &[Evidence::Reason],
    },
    Rule {
        from: BOOKED,
        to: S::Enroute,
        who: Who::Technician,
        evidence: &[],
    },
    Rule {
        from: &[S::Enroute],
        to: S::OnSite,
        who: Who::Technician,
        evidence: &[],
    },
    Rule {
        from: &[S::OnSite, S::OnHold],
        to: S::InProgress,
        who: Who::Technician,
        evidence: &[],
    },
    Rule {
        from: &[S::OnSite, S::InProgress],
        to: S::OnHold,
        who: Who::Technician,
        evidence: &[Evidence::Reason],
    },
    Rule {
        from: WORKING,
        to: S::Completed,
        who: Who::Technician,
        evidence: &[Evidence::WasteManifest],
    },
    Rule {
        from: &[S::OnSite, S::InProgress],
        to: S::RequiresFollowup,
        who: Who::Technician,
        evidence: &[Evidence::Reason, Evidence::FollowUp],
    },
    Rule {
        from: &[S::Draft, S::Scheduled, S::Confirmed, S::Enroute, S::OnHold],
        to: S::Canceled,
        who: Who::Dispatcher,
        evidence: &[Evidence::Reason],
    },
];

/// The steps a further assigned technician checks in to when the work order is already there.
const CHECK_INS: &[S] = &[S::Enroute, S::OnSite, S::InProgress];

/// Whether a work order in `status` is closed (no more changes).
#[must_use]
pub fn is_closed(status: i16) -> bool {
    [S::Completed, S::Canceled, S::RequiresFollowup]
        .iter()
        .any(|s| super::status(*s) == status)
}

/// The transition table as the API shows it.
#[must_use]
pub fn table() -> Vec<WorkOrderTransition> {
    RULES
        .iter()
        .flat_map(|r| {
            r.from.iter().map(move |from| WorkOrderTransition {
                from_status: *from as i32,
                to_status: r.to as i32,
                roles: match r.who {
                    Who::Dispatcher => vec!["fieldops.dispatcher".to_owned()],
                    Who::Technician => {
                        vec![
                            "fieldops.dispatcher".to_owned(),
                            "fieldops.technician".to_owned(),
                        ]
                    }
                },
                evidence: r.evidence.iter().map(|e| e.name().to_owned()).collect(),
            })
        })
        .collect()
}

fn status_of(n: i16) -> S {
    S::try_from(i32::from(n)).unwrap_or(S::Unspecified)
}

fn not_allowed(from: S, to: S) -> ApiError {
    let targets: Vec<&str> = RULES
        .iter()
        .filter(|r| r.from.contains(&from))
        .map(|r| r.to.as_str_name())
        .collect();
    ApiError::FailedPrecondition {
        reason: "TRANSITION_NOT_ALLOWED",
        message: format!(
            "no transition from {} to {}; from {} the table allows {}",
            from.as_str_name(),
            to.as_str_name(),
            from.as_str_name(),
            if targets.is_empty() {
                "nothing (it is closed)".to_owned()
            } else {
                targets.join(", ")
            }
        ),
    }
}

fn missing(evidence: Evidence, rule: &str, message: &str) -> ApiError {
    ApiError::FailedPrecondition {
        reason: match evidence {
            Evidence::WindowAndTechnician => "WINDOW_AND_TECHNICIAN_REQUIRED",
            Evidence::Reason => "REASON_REQUIRED",
            Evidence::WasteManifest => "WASTE_MANIFEST_REQUIRED",
            Evidence::FollowUp => "FOLLOW_UP_REQUIRED",
        },
        message: format!("{rule} needs {}: {message}", evidence.name()),
    }
}

/// One step of a work order's history, as recorded.
#[derive(Debug)]
pub struct Step<'a> {
    /// Status before (0 at creation).
    pub from: i16,
    /// Status after.
    pub to: i16,
    /// Who.
    pub actor: &'a str,
    /// Why.
    pub reason: &'a str,
    /// Where the actor was.
    pub position: Option<(f64, f64)>,
    /// The technicians it was recorded for, with their times.
    pub technicians: &'a [(Uuid, DateTime<Utc>)],
    /// The follow-up work order it created.
    pub follow_up: Option<Uuid>,
}

/// Appends `step` to the history of work order `id` (whose row the caller holds locked or has
/// just created).
///
/// # Errors
/// The database error.
pub async fn record(
    conn: &AsyncPgConnection,
    org: OrgId,
    id: Uuid,
    step: &Step<'_>,
) -> Result<(), ApiError> {
    let last: Option<i64> = e::work_order_events
        .filter(e::organization_id.eq(org))
        .filter(e::work_order_id.eq(id))
        .select(diesel::dsl::max(e::seq))
        .first(&mut { conn })
        .await?;
    diesel::insert_into(work_order_events::table)
        .values((
            e::organization_id.eq(org),
            e::work_order_id.eq(id),
            e::seq.eq(last.unwrap_or(0) + 1),
            e::from_status.eq(step.from),
            e::to_status.eq(step.to),
            e::actor.eq(step.actor),
            e::reason.eq(step.reason),
            e::latitude.eq(step.position.map(|p| p.0)),
            e::longitude.eq(step.position.map(|p| p.1)),
            e::technician_ids.eq(step.technicians.iter().map(|t| t.0).collect::<Vec<_>>()),
            e::technician_times.eq(step.technicians.iter().map(|t| t.1).collect::<Vec<_>>()),
            e::follow_up_id.eq(step.follow_up),
        ))
        .execute(&mut { conn })
        .await?;
    Ok(())
}

/// The validated parts of a TransitionWorkOrder request.
struct Move {
    org: Uuid,
    id: Uuid,
    name: String,
    to: S,
    reason: String,
    position: Option<(f64, f64)>,
    etag: String,
    request_id: String,
}

fn parse(
    call: &Call,
    body: &TransitionWorkOrderRequest,
) -> Result<(Move, Option<IdempotencyKey>), ApiError> {
    let mut v = Violations::new();
    let parsed = crm_resource::parse_name::<WorkOrders>(&mut v, &body.name, "name");
    let to = match S::try_from(body.to_status) {
        Ok(S::Unspecified) | Err(_) => {
            v.push(
                "to_status",
                "INVALID_STATUS",
                "a status such as WORK_ORDER_STATUS_ENROUTE",
            );
            S::Unspecified
        }
        Ok(s) => s,
    };
    validate::optional_text(&mut v, "reason", &body.reason, 1_000);
    let position = Input::new(&mut v, None, "position".to_owned()).geo(body.position.as_ref());
    let mut fingerprint = body.clone();
    fingerprint.request_id.clear();
    let key = IdempotencyKey::from_request(&mut v, &call.method, &body.request_id, &fingerprint);
    v.finish()?;
    let (org, id) =
        parsed.ok_or_else(|| ApiError::Internal("name parsed without violation".into()))?;
    names::require_same_organization(&call.principal, org)?;
    Ok((
        Move {
            org,
            id,
            name: body.name.clone(),
            to,
            reason: body.reason.trim().to_owned(),
            position,
            etag: body.etag.clone(),
            request_id: body.request_id.clone(),
        },
        key,
    ))
}

/// Serves TransitionWorkOrder.
///
/// # Errors
/// INVALID_ARGUMENT, NOT_FOUND (also outside the technician view), ABORTED for a stale etag,
/// PERMISSION_DENIED for a move the caller's role may not make, FAILED_PRECONDITION naming the
/// rule or the missing evidence, or a double booking.
pub async fn transition(
    ctx: &Context,
    call: Call,
    body: TransitionWorkOrderRequest,
) -> Result<WorkOrder, ApiError> {
    let (mv, key) = parse(&call, &body)?;
    let scope = WorkOrders::scope(&call.principal);
    let viewer = scope.as_ref().map(|s| s.viewer);
    let deadline = call.deadline;
    let org = mv.org;
    let write = mutation::idempotent_as(ctx.pool.clone(), org, viewer, key, move |conn| {
        Box::pin(async move {
            let w = Write {
                org: OrgId(org),
                call: &call,
                request_id: &mv.request_id,
            };
            let filter = scope.as_ref().map(|s| &s.filter);
            let current =
                lock_in::<WorkOrders>(conn, w.org, mv.id, &mv.name, (&mv.etag, "etag"), filter)
                    .await?;
            apply(conn, w, &mv, current).await
        })
    });
    ctx.commit(deadline, write).await
}

/// The caller's own technician record, if they have one.
async fn own_technician(
    conn: &AsyncPgConnection,
    org: OrgId,
    principal: &Principal,
) -> Result<Option<Uuid>, ApiError> {
    let Some(user) = principal
        .subject
        .strip_prefix("users/")
        .and_then(|id| Uuid::parse_str(id).ok())
    else {
        return Ok(None);
    };
    Ok(t::technicians
        .filter(t::organization_id.eq(org))
        .filter(t::user_id.eq(user))
        .filter(t::delete_time.is_null())
        .select(t::id)
        .first(&mut { conn })
        .await
        .optional()?)
}

/// Gallons on the work order's recorded manifests that no recorded correction replaced.
async fn manifested_gallons(
    conn: &AsyncPgConnection,
    org: OrgId,
    id: Uuid,
) -> Result<Option<i64>, ApiError> {
    let recorded: Vec<(Uuid, Option<Uuid>, i32)> = m::waste_manifests
        .filter(m::organization_id.eq(org))
        .filter(m::work_order_id.eq(id))
        .filter(m::delete_time.is_null())
        .filter(m::disposal_time.is_not_null())
        .select((m::id, m::corrects_id, m::gallons))
        .load(&mut { conn })
        .await?;
    if recorded.is_empty() {
        return Ok(None);
    }
    let replaced: Vec<Uuid> = recorded.iter().filter_map(|r| r.1).collect();
    Ok(Some(
        recorded
            .iter()
            .filter(|r| !replaced.contains(&r.0))
            .map(|r| i64::from(r.2))
            .sum(),
    ))
}

async fn apply(
    conn: &AsyncPgConnection,
    w: Write<'_>,
    mv: &Move,
    current: crm_resource::Row<WorkOrderFields>,
) -> Result<WorkOrder, ApiError> {
    if current.std.deleted() {
        return Err(ApiError::FailedPrecondition {
            reason: "RESOURCE_DELETED",
            message: "a deleted work order cannot change; undelete it first".to_owned(),
        });
    }
    let from = status_of(current.fields.status);
    let principal = &w.call.principal;
    let dispatcher = principal.has_permission(permission::WORK_ORDERS_WRITE);
    let own = own_technician(conn, w.org, principal).await?;
    let assigned = own.filter(|t| current.fields.technician_ids.contains(t));
    let check_in = from == mv.to && CHECK_INS.contains(&mv.to);
    let rule = if check_in {
        None
    } else {
        Some(
            RULES
                .iter()
                .find(|r| r.to == mv.to && r.from.contains(&from))
                .ok_or_else(|| not_allowed(from, mv.to))?,
        )
    };
    let rule_name = format!("{} → {}", from.as_str_name(), mv.to.as_str_name());
    let may = match rule.map(|r| r.who) {
        Some(Who::Dispatcher) => dispatcher,
        Some(Who::Technician) | None => dispatcher || assigned.is_some(),
    };
    if !may {
        return Err(ApiError::PermissionDenied {
            reason: "TRANSITION_ROLE",
            message: format!(
                "{rule_name} is for {}",
                if rule.map(|r| r.who) == Some(Who::Dispatcher) {
                    "dispatchers"
                } else {
                    "dispatchers and the assigned technicians"
                }
            ),
        });
    }
    let mut next = current.fields.clone();
    let evidence = rule.map_or(&[][..], |r| r.evidence);
    let mut follow_up = None;
    for ev in evidence {
        match ev {
            Evidence::WindowAndTechnician => {
                if next.scheduled_start_time.is_none() || next.technician_ids.is_empty() {
                    let message = "set scheduled_start_time, scheduled_end_time and technicians";
                    return Err(missing(*ev, &rule_name, message));
                }
            }
            Evidence::Reason => {
                if mv.reason.is_empty() {
                    return Err(missing(*ev, &rule_name, "give a reason"));
                }
            }
            Evidence::WasteManifest => {
                let hauls = [JobType::Pumping, JobType::GreaseTrap]
                    .iter()
                    .any(|j| *j as i32 == i32::from(next.job_type));
                let gallons = manifested_gallons(conn, w.org, current.std.id).await?;
                match (hauls, gallons) {
                    (true, None) => {
                        let message = "a pumping or grease-trap job completes only with a waste manifest whose disposal is recorded";
                        return Err(missing(*ev, &rule_name, message));
                    }
                    (true, Some(g)) if next.gallons_pumped == 0 => {
                        next.gallons_pumped = i32::try_from(g).unwrap_or(i32::MAX).min(100_000);
                    }
                    (true | false, _) => {}
                }
            }
            Evidence::FollowUp => follow_up = Some(Uuid::now_v7()),
        }
    }
    next.status = status(mv.to);
    let now = Utc::now();
    let before = crm_resource::to_proto::<WorkOrders>(current.clone());
    let row = if check_in {
        current.clone()
    } else {
        let row = WorkOrders::update(conn, w.org, current.std.id, &next, w.call.actor()).await?;
        bookings::sync(conn, w.org, row.std.id, &row.fields, false).await?;
        row
    };
    // Each technician's own time: the caller's when they are assigned, else every assigned
    // technician's that has none yet.
    let whose: Vec<Uuid> = match assigned {
        Some(t) => vec![t],
        None => next.technician_ids.clone(),
    };
    let stamp = match mv.to {
        S::Enroute => Some(Stamp::Enroute),
        S::OnSite => Some(Stamp::Arrive),
        S::InProgress => Some(Stamp::Start),
        S::Completed | S::RequiresFollowup => Some(Stamp::Finish),
        S::Unspecified | S::Draft | S::Scheduled | S::Confirmed | S::OnHold | S::Canceled => None,
    };
    let stamped = match stamp {
        Some(step) => bookings::stamp(conn, w.org, current.std.id, &whose, step, now).await?,
        None => Vec::new(),
    };
    if check_in && stamped.is_empty() {
        return Err(not_allowed(from, mv.to));
    }
    if let Some(id) = follow_up {
        let fields = WorkOrderFields {
            status: 0,
            summary: follow_summary(&next.summary),
            technician_ids: Vec::new(),
            technician_user_ids: Vec::new(),
            scheduled_start_time: None,
            scheduled_end_time: None,
            estimated_minutes: 0,
            line_currency: None,
            line_descriptions: Vec::new(),
            line_quantities: Vec::new(),
            line_unit_price_nanos: Vec::new(),
            gallons_pumped: 0,
            notes: mv.reason.clone(),
            follow_up_of: Some(current.std.id),
            ..next.clone()
        };
        crm_resource::create_in::<WorkOrders>(conn, w, id, fields).await?;
    }
    let times: Vec<(Uuid, DateTime<Utc>)> = stamped.iter().map(|t| (*t, now)).collect();
    let step = Step {
        from: current.fields.status,
        to: next.status,
        actor: w.call.actor(),
        reason: &mv.reason,
        position: mv.position,
        technicians: &times,
        follow_up,
    };
    record(conn, w.org, current.std.id, &step).await?;
    let after = if check_in {
        crm_resource::to_proto::<WorkOrders>(
            WorkOrders::touch(conn, w.org, current.std.id, w.call.actor()).await?,
        )
    } else {
        crm_resource::to_proto::<WorkOrders>(row)
    };
    let change = mv
        .to
        .as_str_name()
        .trim_start_matches("WORK_ORDER_STATUS_")
        .to_ascii_lowercase();
    let fields = ["status", "gallons_pumped"];
    announce(
        conn,
        w,
        &mv.name,
        (&before, &after),
        &change,
        ("transition", &fields),
    )
    .await?;
    Ok(after)
}

/// Emits a work order's move as `change` (`crm.fieldops.v1.WorkOrder.<change>`) and audits it
/// as `verb` over `fields`.
///
/// # Errors
/// The database error.
pub async fn announce(
    conn: &AsyncPgConnection,
    w: Write<'_>,
    name: &str,
    (before, after): (&WorkOrder, &WorkOrder),
    change: &str,
    (verb, fields): (&'static str, &[&str]),
) -> Result<(), ApiError> {
    let mask = prost_types::FieldMask {
        paths: fields.iter().map(|f| (*f).to_owned()).collect(),
    };
    emit(
        conn,
        w,
        change,
        &for_event::<WorkOrders>(after),
        name,
        Some(mask),
    )
    .await?;
    audit::record_change::<WorkOrders>(
        conn,
        w.org,
        w.entry(name, Action::Custom(verb)),
        Some(before),
        after,
        fields,
    )
    .await
}

fn follow_summary(summary: &str) -> String {
    let mut out = format!("Follow-up: {summary}");
    while out.chars().count() > 200 {
        out.pop();
    }
    out
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = work_order_events)]
struct EventRow {
    seq: i64,
    from_status: i16,
    to_status: i16,
    actor: String,
    reason: String,
    latitude: Option<f64>,
    longitude: Option<f64>,
    technician_ids: Vec<Uuid>,
    technician_times: Vec<DateTime<Utc>>,
    follow_up_id: Option<Uuid>,
    create_time: DateTime<Utc>,
}

/// Serves ListWorkOrderEvents: the history of a work order the caller can see, oldest first.
///
/// # Errors
/// INVALID_ARGUMENT for a bad parent or page token, PERMISSION_DENIED for another
/// organization, NOT_FOUND for a work order the caller cannot see.
pub async fn list_events(
    ctx: &Context,
    principal: &Principal,
    body: &ListWorkOrderEventsRequest,
) -> Result<ListWorkOrderEventsResponse, ApiError> {
    let (org, id) = names::parse_child(&body.parent, WorkOrders::COLLECTION, "parent")?;
    names::require_same_organization(principal, org)?;
    let listing = Listing::begin(
        principal,
        &ctx.page_tokens,
        "ListWorkOrderEvents",
        &format!("organizations/{org}"),
        body.page_size,
        &body.page_token,
        &[&body.parent],
        50,
        crm_platform::api::listing::MAX_PAGE_SIZE,
    )?;
    let after = listing.after_i64()?.unwrap_or(0);
    let limit = listing.limit();
    let scope = WorkOrders::scope(principal);
    let viewer = scope.as_ref().map(|s| s.viewer);
    let parent = body.parent.clone();
    let mut rows: Vec<EventRow> = crm_db::tenant::read_as(&ctx.pool, org, viewer, move |conn| {
        Box::pin(async move {
            let filter = scope.as_ref().map(|s| &s.filter);
            if WorkOrders::find_in(conn, OrgId(org), id, false, filter)
                .await?
                .is_none()
            {
                return Err(crm_resource::not_found::<WorkOrders>(&parent));
            }
            Ok::<_, ApiError>(
                e::work_order_events
                    .filter(e::organization_id.eq(org))
                    .filter(e::work_order_id.eq(id))
                    .filter(e::seq.gt(after))
                    .order(e::seq.asc())
                    .limit(limit)
                    .select(EventRow::as_select())
                    .load(&mut { conn })
                    .await?,
            )
        })
    })
    .await?;
    let next_page_token = listing.finish(&ctx.page_tokens, &mut rows, |r| vec![r.seq.to_string()]);
    let work_order_events = rows
        .into_iter()
        .map(|r| WorkOrderEvent {
            name: format!("{}/events/{}", body.parent, r.seq),
            sequence: r.seq,
            from_status: i32::from(r.from_status),
            to_status: i32::from(r.to_status),
            actor: r.actor,
            reason: r.reason,
            position: r
                .latitude
                .zip(r.longitude)
                .map(|(latitude, longitude)| GeoPoint {
                    latitude,
                    longitude,
                }),
            technician_times: r
                .technician_ids
                .iter()
                .zip(&r.technician_times)
                .map(|(t, time)| TechnicianTime {
                    technician: child_name(org, "technicians", *t),
                    time: Some(timestamp(*time)),
                })
                .collect(),
            create_time: Some(timestamp(r.create_time)),
            follow_up: r
                .follow_up_id
                .map(|f| child_name(org, "workOrders", f))
                .unwrap_or_default(),
        })
        .collect();
    Ok(ListWorkOrderEventsResponse {
        work_order_events,
        next_page_token,
    })
}
