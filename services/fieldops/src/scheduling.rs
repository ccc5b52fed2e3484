//! `crm.fieldops.v1.SchedulingService`: booking capacity. A slot is a window of a job type's
//! duration, starting on the organization's step from a shift's start, in which the shift's
//! technician (active, skilled for the job, certified when it needs it, working in the zone)
//! has no booked work and no time off — and, unless the job is urgent or an emergency, which
//! leaves the shift's emergency buffer free. `BookWorkOrder` re-checks the slot under a
//! per-technician lock, so a slot taken a moment before is refused cleanly.

use chrono::{DateTime, Duration, Utc};
use crm_auth::{MethodPolicy, Principal, permission};
use crm_db::OrgId;
use crm_platform::ApiError;
use crm_platform::api::listing::Listing;
use crm_platform::api::mask;
use crm_platform::api::names::{self, child_name};
use crm_platform::api::time::{optional_timestamp, timestamp};
use crm_platform::api::validate::Violations;
use crm_platform::mutation::{self, IdempotencyKey};
use crm_proto::fieldops_v1::{
    BookWorkOrderRequest, GetSchedulingSettingsRequest, JobType, ListAvailableSlotsRequest,
    ListAvailableSlotsResponse, SchedulingSettings, Slot, UpdateSchedulingSettingsRequest,
    WorkOrder, WorkOrderPriority, WorkOrderStatus,
};
use crm_resource::{Call, Context, Input, Resource, Store, Write};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::peers::Peers;
use crate::schema::certifications::dsl as c;
use crate::schema::scheduling_settings::{self, dsl as ss};
use crate::schema::shifts::dsl as sh;
use crate::schema::technicians::dsl as t;
use crate::schema::time_off_periods::dsl as o;
use crate::schema::work_order_assignments::dsl as a;
use crate::work_orders::{self, WorkOrders, bookings, transitions};

const SERVICE: &str = "crm.fieldops.v1.SchedulingService";
/// The widest range ListAvailableSlots searches.
const MAX_RANGE: Duration = Duration::days(31);

/// The permission of every RPC.
#[must_use]
pub fn policy() -> MethodPolicy {
    crm_resource::policy(
        SERVICE,
        &[
            ("ListAvailableSlots", permission::WORK_ORDERS_READ),
            ("BookWorkOrder", permission::WORK_ORDERS_WRITE),
            ("GetSchedulingSettings", permission::WORK_ORDERS_READ),
            (
                "UpdateSchedulingSettings",
                permission::FIELDOPS_SETTINGS_WRITE,
            ),
        ],
    )
}

/// An organization's scheduling settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Percent of each shift held back for urgent and emergency jobs.
    pub buffer_percent: i64,
    /// Minutes between slot starts.
    pub step_minutes: i64,
    /// Revision (0 while the defaults apply).
    pub revision: i64,
    /// Last change.
    pub update_time: Option<DateTime<Utc>>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            buffer_percent: 15,
            step_minutes: 60,
            revision: 0,
            update_time: None,
        }
    }
}

/// The settings of `org` (the defaults when never changed).
///
/// # Errors
/// The database error.
pub async fn settings(conn: &AsyncPgConnection, org: OrgId) -> Result<Settings, ApiError> {
    let row: Option<(i16, i16, i64, DateTime<Utc>)> = ss::scheduling_settings
        .filter(ss::organization_id.eq(org))
        .select((
            ss::emergency_buffer_percent,
            ss::slot_step_minutes,
            ss::revision,
            ss::update_time,
        ))
        .first(&mut { conn })
        .await
        .optional()?;
    Ok(
        row.map_or_else(Settings::default, |(b, s, revision, time)| Settings {
            buffer_percent: i64::from(b),
            step_minutes: i64::from(s),
            revision,
            update_time: Some(time),
        }),
    )
}

/// What slots are searched for.
#[derive(Debug, Clone)]
pub struct SlotQuery {
    /// The job type (skills, certification).
    pub job_type: i16,
    /// Minutes the job takes.
    pub minutes: i64,
    /// The zone; empty for any.
    pub zone: String,
    /// Whether the job may use the emergency buffer.
    pub urgent: bool,
    /// The range.
    pub start: DateTime<Utc>,
    /// The range's end.
    pub end: DateTime<Utc>,
    /// Only this technician's.
    pub technician: Option<Uuid>,
    /// A work order whose own booking does not count (the one being booked).
    pub excluding: Option<Uuid>,
}

/// One bookable window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundSlot {
    /// The technician.
    pub technician: Uuid,
    /// Start.
    pub start: DateTime<Utc>,
    /// End.
    pub end: DateTime<Utc>,
    /// The shift's zone.
    pub zone: String,
    /// Uses the emergency buffer.
    pub buffer: bool,
}

fn minutes_between(a: DateTime<Utc>, b: DateTime<Utc>) -> i64 {
    (b - a).num_minutes().max(0)
}

fn overlap(a: (DateTime<Utc>, DateTime<Utc>), b: (DateTime<Utc>, DateTime<Utc>)) -> i64 {
    minutes_between(a.0.max(b.0), a.1.min(b.1))
}

/// The bookable windows for `q`, soonest first, then by technician.
///
/// # Errors
/// The database error.
#[allow(
    clippy::too_many_lines,
    reason = "one pass over shifts, bookings and absences"
)]
pub async fn find(
    conn: &AsyncPgConnection,
    org: OrgId,
    q: &SlotQuery,
    settings: Settings,
) -> Result<Vec<FoundSlot>, ApiError> {
    let mut techs = t::technicians
        .filter(t::organization_id.eq(org))
        .filter(t::delete_time.is_null())
        .filter(t::status.eq(1))
        .filter(t::skills.contains(vec![q.job_type]))
        .select((t::id, t::home_zone))
        .into_boxed();
    if let Some(id) = q.technician {
        techs = techs.filter(t::id.eq(id));
    }
    let techs: Vec<(Uuid, String)> = techs.load(&mut { conn }).await?;
    if techs.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = techs.iter().map(|t| t.0).collect();
    let certified: Option<Vec<(Uuid, DateTime<Utc>)>> =
        match work_orders::required_certification(q.job_type) {
            None => None,
            Some(kind) => Some(
                c::certifications
                    .filter(c::organization_id.eq(org))
                    .filter(c::technician_id.eq_any(&ids))
                    .filter(c::kind.eq(kind))
                    .filter(c::delete_time.is_null())
                    .select((c::technician_id, c::expire_time))
                    .load(&mut { conn })
                    .await?,
            ),
        };
    let shifts: Vec<(Uuid, DateTime<Utc>, DateTime<Utc>, String)> = sh::shifts
        .filter(sh::organization_id.eq(org))
        .filter(sh::technician_id.eq_any(&ids))
        .filter(sh::delete_time.is_null())
        .filter(sh::start_time.lt(q.end))
        .filter(sh::end_time.gt(q.start))
        .order(sh::start_time.asc())
        .select((sh::technician_id, sh::start_time, sh::end_time, sh::zone))
        .load(&mut { conn })
        .await?;
    let (Some(span_start), Some(span_end)) = (
        shifts.iter().map(|s| s.1).min(),
        shifts.iter().map(|s| s.2).max(),
    ) else {
        return Ok(Vec::new());
    };
    let mut busy_q = a::work_order_assignments
        .filter(a::organization_id.eq(org))
        .filter(a::technician_id.eq_any(&ids))
        .filter(a::active.eq(true))
        .filter(a::start_time.lt(span_end))
        .filter(a::end_time.gt(span_start))
        .select((
            a::technician_id,
            a::start_time.assume_not_null(),
            a::end_time.assume_not_null(),
        ))
        .into_boxed();
    if let Some(excluded) = q.excluding {
        busy_q = busy_q.filter(a::work_order_id.ne(excluded));
    }
    let busy: Vec<(Uuid, DateTime<Utc>, DateTime<Utc>)> = busy_q.load(&mut { conn }).await?;
    let away: Vec<(Uuid, DateTime<Utc>, DateTime<Utc>)> = o::time_off_periods
        .filter(o::organization_id.eq(org))
        .filter(o::technician_id.eq_any(&ids))
        .filter(o::delete_time.is_null())
        .filter(o::start_time.lt(span_end))
        .filter(o::end_time.gt(span_start))
        .select((o::technician_id, o::start_time, o::end_time))
        .load(&mut { conn })
        .await?;
    let now = Utc::now();
    let step = Duration::minutes(settings.step_minutes.max(1));
    let length = Duration::minutes(q.minutes);
    let mut out = Vec::new();
    for (tech, start, end, shift_zone) in shifts {
        let home = techs
            .iter()
            .find(|t| t.0 == tech)
            .map(|t| t.1.as_str())
            .unwrap_or_default();
        let zone = if shift_zone.is_empty() {
            home.to_owned()
        } else {
            shift_zone
        };
        if !q.zone.is_empty() && zone != q.zone {
            continue;
        }
        let shift_minutes = minutes_between(start, end);
        let booked: i64 = busy
            .iter()
            .filter(|b| b.0 == tech)
            .map(|b| overlap((b.1, b.2), (start, end)))
            .sum();
        let normal_capacity = shift_minutes * (100 - settings.buffer_percent) / 100;
        let fits_normal = booked + q.minutes <= normal_capacity;
        if booked + q.minutes > shift_minutes || (!fits_normal && !q.urgent) {
            continue;
        }
        let mut s = start;
        while s + length <= end {
            let e = s + length;
            let free = s >= q.start
                && e <= q.end
                && s >= now
                && !busy
                    .iter()
                    .chain(&away)
                    .any(|b| b.0 == tech && b.1 < e && b.2 > s);
            let qualified = certified
                .as_ref()
                .is_none_or(|certs| certs.iter().any(|(ct, exp)| *ct == tech && *exp > e));
            if free && qualified {
                out.push(FoundSlot {
                    technician: tech,
                    start: s,
                    end: e,
                    zone: zone.clone(),
                    buffer: !fits_normal,
                });
            }
            s += step;
        }
    }
    out.sort_by_key(|x| (x.start, x.technician));
    Ok(out)
}

/// Whether a job of this type and priority may use the emergency buffer.
fn urgent(job_type: i16, priority: i16) -> bool {
    i32::from(job_type) == JobType::Emergency as i32
        || [WorkOrderPriority::Urgent, WorkOrderPriority::Emergency]
            .iter()
            .any(|p| *p as i32 == i32::from(priority))
}

fn settings_name(org: Uuid) -> String {
    format!("organizations/{org}/schedulingSettings")
}

fn settings_org(name: &str) -> Result<Uuid, ApiError> {
    name.strip_suffix("/schedulingSettings")
        .ok_or_else(|| {
            ApiError::invalid(
                "name",
                "INVALID_NAME",
                "organizations/{organization}/schedulingSettings",
            )
        })
        .and_then(|parent| names::parse_organization(parent, "name"))
}

fn settings_proto(org: Uuid, s: Settings) -> SchedulingSettings {
    SchedulingSettings {
        name: settings_name(org),
        emergency_buffer_percent: i32::try_from(s.buffer_percent).unwrap_or_default(),
        slot_step_minutes: i32::try_from(s.step_minutes).unwrap_or_default(),
        update_time: optional_timestamp(s.update_time),
        etag: crm_db::etag::from_revision(s.revision),
    }
}

/// The handlers.
#[derive(Debug, Clone)]
pub struct SchedulingApi {
    ctx: Context,
}

impl SchedulingApi {
    /// Handlers over `ctx`.
    #[must_use]
    pub fn new(ctx: Context) -> Self {
        Self { ctx }
    }

    async fn list(
        &self,
        call: &Call,
        body: ListAvailableSlotsRequest,
    ) -> Result<ListAvailableSlotsResponse, ApiError> {
        let principal: &Principal = &call.principal;
        let mut v = Violations::new();
        let org = names::parse_organization(&body.parent, "parent")
            .map_err(|e| v.absorb(e))
            .ok();
        let message = "a job type such as JOB_TYPE_GREASE_TRAP";
        let job_type = Input::new(&mut v, org, "job_type".to_owned()).specified::<JobType>(
            body.job_type,
            "INVALID_JOB_TYPE",
            message,
        );
        let priority = Input::new(&mut v, org, "priority".to_owned())
            .enumeration_or(body.priority, WorkOrderPriority::Normal);
        let zone =
            crate::technicians::zone(&mut Input::new(&mut v, org, "zone".to_owned()), &body.zone);
        let property = if body.property.is_empty() {
            None
        } else {
            Input::new(&mut v, org, "property".to_owned()).reference(&body.property, "properties")
        };
        if !body.zone.is_empty() && !body.property.is_empty() {
            v.push(
                "property",
                "ZONE_AND_PROPERTY",
                "give a zone or a property, not both",
            );
        }
        let start = Input::new(&mut v, org, "start_time".to_owned())
            .required_time(body.start_time.as_ref(), "where the search starts");
        let end = Input::new(&mut v, org, "end_time".to_owned())
            .required_time(body.end_time.as_ref(), "where the search ends");
        if let (Some(s), Some(e)) = (start, end)
            && (e <= s || e - s > MAX_RANGE)
        {
            v.push(
                "end_time",
                "INVALID_RANGE",
                "after the start, at most 31 days later",
            );
        }
        if body.page_size > 500 {
            v.push("page_size", "OUT_OF_RANGE", "at most 500");
        }
        v.finish()?;
        let (Some(org), Some(job_type), Some(priority), Some(start), Some(end)) =
            (org, job_type, priority, start, end)
        else {
            return Err(ApiError::Internal("parsed without violation".into()));
        };
        names::require_same_organization(principal, org)?;
        let scope = [
            body.job_type.to_string(),
            body.zone.clone(),
            body.property.clone(),
            start.to_rfc3339(),
            end.to_rfc3339(),
            body.priority.to_string(),
        ];
        let scope_refs: Vec<&str> = scope.iter().map(String::as_str).collect();
        let listing = Listing::begin(
            principal,
            &self.ctx.page_tokens,
            "ListAvailableSlots",
            &body.parent,
            body.page_size,
            &body.page_token,
            &scope_refs,
            50,
            500,
        )?;
        let after = listing.after_time_id()?;
        let zone = match property {
            Some(p) => {
                self.ctx
                    .peers::<Peers>()?
                    .property_zone(call, org, p)
                    .await?
            }
            None => zone,
        };
        let query = SlotQuery {
            job_type,
            minutes: i64::from(work_orders::usual_minutes(job_type)),
            zone,
            urgent: urgent(job_type, priority),
            start,
            end,
            technician: None,
            excluding: None,
        };
        let limit = usize::try_from(listing.limit()).unwrap_or(usize::MAX);
        let mut slots = crm_db::tenant::read(&self.ctx.pool, org, move |conn| {
            Box::pin(async move {
                let s = settings(conn, OrgId(org)).await?;
                find(conn, OrgId(org), &query, s).await
            })
        })
        .await?;
        slots.retain(|s| after.is_none_or(|a| (s.start, s.technician) > a));
        slots.truncate(limit);
        let next_page_token = listing.finish(&self.ctx.page_tokens, &mut slots, |s| {
            vec![s.start.to_rfc3339(), s.technician.to_string()]
        });
        Ok(ListAvailableSlotsResponse {
            slots: slots
                .into_iter()
                .map(|s| Slot {
                    technician: child_name(org, "technicians", s.technician),
                    start_time: Some(timestamp(s.start)),
                    end_time: Some(timestamp(s.end)),
                    zone: s.zone,
                    uses_emergency_buffer: s.buffer,
                })
                .collect(),
            next_page_token,
        })
    }

    async fn book(&self, call: Call, body: BookWorkOrderRequest) -> Result<WorkOrder, ApiError> {
        let mut v = Violations::new();
        let parsed = crm_resource::parse_name::<WorkOrders>(&mut v, &body.name, "name");
        let org = parsed.map(|p| p.0);
        let tech = Input::new(&mut v, org, "technician".to_owned())
            .reference(&body.technician, "technicians");
        let start = Input::new(&mut v, org, "start_time".to_owned())
            .required_time(body.start_time.as_ref(), "the slot's start");
        let mut fingerprint = body.clone();
        fingerprint.request_id.clear();
        let key =
            IdempotencyKey::from_request(&mut v, &call.method, &body.request_id, &fingerprint);
        v.finish()?;
        let (Some((org, id)), Some(tech), Some(start)) = (parsed, tech, start) else {
            return Err(ApiError::Internal("parsed without violation".into()));
        };
        names::require_same_organization(&call.principal, org)?;
        // The property's zone comes from core, before the transaction.
        let current = crm_db::tenant::read(&self.ctx.pool, org, move |conn| {
            Box::pin(async move { WorkOrders::find(conn, OrgId(org), id, false).await })
        })
        .await?
        .ok_or_else(|| crm_resource::not_found::<WorkOrders>(&body.name))?;
        let zone = self
            .ctx
            .peers::<Peers>()?
            .property_zone(&call, org, current.fields.property_id)
            .await?;
        let deadline = call.deadline;
        let write = mutation::idempotent(self.ctx.pool.clone(), org, key, move |conn| {
            Box::pin(async move {
                let w = Write {
                    org: OrgId(org),
                    call: &call,
                    request_id: &body.request_id,
                };
                book_in(conn, w, (id, &body.name, &body.etag), tech, start, zone).await
            })
        });
        self.ctx.commit(deadline, write).await
    }
}

/// Books work order `id` for `tech` from `start`, in its transaction.
async fn book_in(
    conn: &AsyncPgConnection,
    w: Write<'_>,
    (id, name, etag): (Uuid, &str, &str),
    tech: Uuid,
    start: DateTime<Utc>,
    zone: String,
) -> Result<WorkOrder, ApiError> {
    let current = crm_resource::lock::<WorkOrders>(conn, w.org, id, name, etag, "etag").await?;
    if current.std.deleted() || current.fields.status != work_orders::status(WorkOrderStatus::Draft)
    {
        return Err(ApiError::FailedPrecondition {
            reason: "NOT_A_DRAFT",
            message:
                "only a live draft work order is booked; move a booked one with UpdateWorkOrder"
                    .to_owned(),
        });
    }
    // One booking of a technician at a time: the capacity check and the write are one step.
    diesel::sql_query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind::<diesel::sql_types::Text, _>(format!("fieldops-booking:{}:{tech}", w.org.uuid()))
        .execute(&mut { conn })
        .await?;
    let minutes = i64::from(current.fields.estimated_minutes);
    let query = SlotQuery {
        job_type: current.fields.job_type,
        minutes,
        zone,
        urgent: urgent(current.fields.job_type, current.fields.priority),
        start,
        end: start + Duration::minutes(minutes),
        technician: Some(tech),
        excluding: Some(id),
    };
    let s = settings(conn, w.org).await?;
    let offered = find(conn, w.org, &query, s).await?;
    if !offered
        .iter()
        .any(|f| f.start == start && f.technician == tech)
    {
        return Err(ApiError::FailedPrecondition {
            reason: "SLOT_TAKEN",
            message: format!(
                "{} has no free slot at {} for this job (booked, away, off shift or in the emergency buffer)",
                child_name(w.org.uuid(), "technicians", tech),
                start.to_rfc3339()
            ),
        });
    }
    let mut next = current.fields.clone();
    next.technician_ids = vec![tech];
    next.scheduled_start_time = Some(start);
    next.scheduled_end_time = Some(start + Duration::minutes(minutes));
    let paths = ["technicians", "scheduled_start_time", "scheduled_end_time"];
    WorkOrders::before_write(conn, w.org, Some(&current), &mut next, &paths).await?;
    next.status = work_orders::status(WorkOrderStatus::Scheduled);
    let before = crm_resource::to_proto::<WorkOrders>(current.clone());
    let row = WorkOrders::update(conn, w.org, id, &next, w.call.actor()).await?;
    bookings::sync(conn, w.org, id, &row.fields, false).await?;
    let step = transitions::Step {
        from: current.fields.status,
        to: row.fields.status,
        actor: w.call.actor(),
        reason: "booked",
        position: None,
        technicians: &[],
        follow_up: None,
    };
    transitions::record(conn, w.org, id, &step).await?;
    let after = crm_resource::to_proto::<WorkOrders>(row);
    let fields = [
        "status",
        "technicians",
        "scheduled_start_time",
        "scheduled_end_time",
    ];
    transitions::announce(
        conn,
        w,
        name,
        (&before, &after),
        "scheduled",
        ("book", &fields),
    )
    .await?;
    Ok(after)
}

async fn update_settings(
    ctx: &Context,
    call: Call,
    body: UpdateSchedulingSettingsRequest,
) -> Result<SchedulingSettings, ApiError> {
    let mut v = Violations::new();
    let given = body.scheduling_settings.clone().unwrap_or_default();
    let org = settings_org(&given.name).map_err(|e| v.absorb(e)).ok();
    let paths = mask::resolve(
        body.update_mask.as_ref(),
        &["emergency_buffer_percent", "slot_step_minutes"],
        &["name", "update_time", "etag"],
    )
    .map_err(|e| v.absorb(e))
    .unwrap_or_default();
    if paths.contains(&"emergency_buffer_percent")
        && !(0..=50).contains(&given.emergency_buffer_percent)
    {
        v.push(
            "scheduling_settings.emergency_buffer_percent",
            "OUT_OF_RANGE",
            "0 to 50",
        );
    }
    if paths.contains(&"slot_step_minutes") && !(15..=240).contains(&given.slot_step_minutes) {
        v.push(
            "scheduling_settings.slot_step_minutes",
            "OUT_OF_RANGE",
            "15 to 240",
        );
    }
    let mut fingerprint = body.clone();
    fingerprint.request_id.clear();
    let key = IdempotencyKey::from_request(&mut v, &call.method, &body.request_id, &fingerprint);
    v.finish()?;
    let org = org.ok_or_else(|| ApiError::Internal("name parsed without violation".into()))?;
    names::require_same_organization(&call.principal, org)?;
    let deadline = call.deadline;
    let write = mutation::idempotent(ctx.pool.clone(), org, key, move |conn| {
        Box::pin(async move {
            let current = settings(conn, OrgId(org)).await?;
            crm_db::etag::check(&given.etag, current.revision)
                .map_err(|e| crm_platform::error::etag_error("scheduling_settings.etag", e))?;
            let mut next = current;
            if paths.contains(&"emergency_buffer_percent") {
                next.buffer_percent = i64::from(given.emergency_buffer_percent);
            }
            if paths.contains(&"slot_step_minutes") {
                next.step_minutes = i64::from(given.slot_step_minutes);
            }
            let (buffer, step) = (
                i16::try_from(next.buffer_percent).unwrap_or_default(),
                i16::try_from(next.step_minutes).unwrap_or_default(),
            );
            diesel::insert_into(scheduling_settings::table)
                .values((
                    ss::organization_id.eq(OrgId(org)),
                    ss::emergency_buffer_percent.eq(buffer),
                    ss::slot_step_minutes.eq(step),
                    ss::updated_by.eq(call.actor()),
                ))
                .on_conflict(ss::organization_id)
                .do_update()
                .set((
                    ss::emergency_buffer_percent.eq(buffer),
                    ss::slot_step_minutes.eq(step),
                    ss::revision.eq(ss::revision + 1),
                    ss::update_time.eq(diesel::dsl::now),
                    ss::updated_by.eq(call.actor()),
                ))
                .execute(&mut { conn })
                .await?;
            let after = settings_proto(org, settings(conn, OrgId(org)).await?);
            let before = settings_proto(org, current);
            let w = Write {
                org: OrgId(org),
                call: &call,
                request_id: &body.request_id,
            };
            let name = settings_name(org);
            let mask = prost_types::FieldMask {
                paths: paths.iter().map(|p| (*p).to_owned()).collect(),
            };
            crm_resource::emit(conn, w, "updated", &after, &name, Some(mask)).await?;
            crm_resource::audit::record_diff(
                conn,
                w.org,
                w.entry(&name, crm_resource::audit::Action::Update),
                Some(&before),
                &after,
                &paths,
                &[],
            )
            .await?;
            Ok(after)
        })
    });
    ctx.commit(deadline, write).await
}

#[tonic::async_trait]
impl crm_proto::fieldops_v1::scheduling_service_server::SchedulingService for SchedulingApi {
    async fn list_available_slots(
        &self,
        req: tonic::Request<ListAvailableSlotsRequest>,
    ) -> Result<tonic::Response<ListAvailableSlotsResponse>, tonic::Status> {
        let call = Call::of(&req, SERVICE, "list_available_slots")?;
        self.list(&call, req.into_inner())
            .await
            .map(tonic::Response::new)
            .map_err(|e| self.ctx.status(e))
    }

    async fn book_work_order(
        &self,
        req: tonic::Request<BookWorkOrderRequest>,
    ) -> Result<tonic::Response<WorkOrder>, tonic::Status> {
        let call = Call::of(&req, SERVICE, "book_work_order")?;
        self.book(call, req.into_inner())
            .await
            .map(tonic::Response::new)
            .map_err(|e| self.ctx.status(e))
    }

    async fn get_scheduling_settings(
        &self,
        req: tonic::Request<GetSchedulingSettingsRequest>,
    ) -> Result<tonic::Response<SchedulingSettings>, tonic::Status> {
        let principal = crm_auth::layer::principal_of(&req)?;
        let status = |e| self.ctx.status(e);
        let org = settings_org(&req.into_inner().name).map_err(status)?;
        names::require_same_organization(&principal, org).map_err(status)?;
        let s = crm_db::tenant::read(&self.ctx.pool, org, move |conn| {
            Box::pin(async move { settings(conn, OrgId(org)).await })
        })
        .await
        .map_err(status)?;
        Ok(tonic::Response::new(settings_proto(org, s)))
    }

    async fn update_scheduling_settings(
        &self,
        req: tonic::Request<UpdateSchedulingSettingsRequest>,
    ) -> Result<tonic::Response<SchedulingSettings>, tonic::Status> {
        let call = Call::of(&req, SERVICE, "update_scheduling_settings")?;
        update_settings(&self.ctx, call, req.into_inner())
            .await
            .map(tonic::Response::new)
            .map_err(|e| self.ctx.status(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_counts_shared_minutes_only() {
        let t = |h: i64| DateTime::<Utc>::UNIX_EPOCH + Duration::hours(h);
        assert_eq!(overlap((t(8), t(10)), (t(9), t(12))), 60);
        assert_eq!(overlap((t(8), t(10)), (t(10), t(12))), 0);
        assert_eq!(overlap((t(8), t(16)), (t(9), t(10))), 60);
    }

    #[test]
    fn urgent_and_emergency_jobs_may_use_the_buffer() {
        let normal = i16::try_from(WorkOrderPriority::Normal as i32).unwrap_or_default();
        let urgent_p = i16::try_from(WorkOrderPriority::Urgent as i32).unwrap_or_default();
        let pumping = i16::try_from(JobType::Pumping as i32).unwrap_or_default();
        let emergency = i16::try_from(JobType::Emergency as i32).unwrap_or_default();
        assert!(!urgent(pumping, normal));
        assert!(urgent(pumping, urgent_p));
        assert!(urgent(emergency, normal));
    }
}
