//! The marketing scheduler. Each tick it finds the organizations with active workflows or due
//! enrollments (a read-only discovery policy), and inside each organization's own tenant
//! transactions:
//!
//! - **intake**: reads the organization's outbox after its workflow cursor (the cursor row
//!   locked `FOR UPDATE SKIP LOCKED`, so one replica reads it at a time) and enrolls the
//!   customer of each event matching an active workflow's trigger, once per workflow at a time;
//! - **advance**: claims one due enrollment at a time `FOR UPDATE SKIP LOCKED` and runs its
//!   step in the same transaction that moves it on, so a step runs at most once however many
//!   replicas tick, and a crash before the commit leaves it due for the next tick.
//!
//! Every send passes CheckConsent: marketing in quiet hours waits until they end; a refusal is
//! recorded (the message as REFUSED, the consent history, the audit log) and the enrollment
//! moves on.

use std::time::Duration;

use chrono::Utc;
use crm_db::outbox::{self, Cursor};
use crm_db::{DbPool, OrgId};
use crm_platform::ApiError;
use crm_platform::api::names::{self, child_name};
use crm_proto::core_v1::workflow_step::Action;
use crm_proto::core_v1::{
    Channel, Enrollment, EnrollmentStatus, EnrollmentStep, MessagePurpose, TicketPriority,
    TicketStatus, WorkflowStep,
};
use crm_resource::{Call, Store, Write};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use prost::Message as _;
use uuid::Uuid;

use super::{EnrollmentRow, MessageTemplates, Workflows, delay_of, enroll, render, steps_of};
use crate::consent::{self, Refusal};
use crate::customers::Customers;
use crate::messages::{self, Outgoing};
use crate::schema::enrollments::dsl as en;
use crate::schema::workflow_cursors::dsl as wc;
use crate::schema::workflows::dsl as wf;
use crate::tickets::{TicketFields, Tickets};

/// Who the scheduler's writes are recorded as.
pub const ACTOR: &str = "services/marketing-scheduler";
/// Events read per organization per tick.
const EVENTS_PER_TICK: i32 = 500;

/// What one tick did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tick {
    /// Customers enrolled by events.
    pub enrolled: usize,
    /// Steps run (or postponed for quiet hours).
    pub advanced: usize,
    /// The oldest position among organizations whose events were not all read this tick
    /// (the occur time of the last event read there); `None` when every outbox was read to
    /// its end.
    pub behind_at: Option<chrono::DateTime<Utc>>,
}

/// Runs one tick; at most `steps` enrollment steps per organization.
///
/// # Errors
/// A pool or database failure (work already committed stays done).
pub async fn tick(pool: &DbPool, steps: usize) -> Result<Tick, ApiError> {
    let mut out = Tick::default();
    for org in discover(pool).await? {
        let (enrolled, behind_at) = intake(pool, org).await?;
        out.enrolled += enrolled;
        out.behind_at = match (out.behind_at, behind_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        for _ in 0..steps {
            if !advance_one(pool, org).await? {
                break;
            }
            out.advanced += 1;
        }
    }
    Ok(out)
}

/// Ticks every `every` until the handle is dropped.
#[must_use]
pub fn spawn(pool: DbPool, every: Duration) -> tokio::task::JoinHandle<()> {
    let lag =
        crm_platform::metrics::ConsumerLag::new("core.marketing-scheduler", "core.outbox", every);
    crate::spawn_every(pool, every, "marketing scheduler", move |pool| {
        let lag = lag.clone();
        async move {
            let done = tick(&pool, 100).await?;
            match done.behind_at {
                Some(at) => lag.behind(at.into()),
                None => lag.caught_up(),
            }
            Ok(done)
        }
    })
}

async fn discover(pool: &DbPool) -> Result<Vec<Uuid>, ApiError> {
    let mut conn = pool.get().await.map_err(crm_db::DbError::from)?;
    let orgs = diesel_async::AsyncConnection::transaction::<_, diesel::result::Error, _>(
        &mut *conn,
        async |conn| {
            diesel::sql_query("SELECT set_config('app.scheduler', 'on', true)")
                .execute(conn)
                .await?;
            let mut orgs: Vec<Uuid> = wf::workflows
                .select(wf::organization_id)
                .distinct()
                .load(conn)
                .await?;
            let due: Vec<Uuid> = en::enrollments
                .filter(en::next_run_time.le(Utc::now()))
                .select(en::organization_id)
                .distinct()
                .load(conn)
                .await?;
            orgs.extend(due);
            orgs.sort_unstable();
            orgs.dedup();
            Ok(orgs)
        },
    )
    .await?;
    Ok(orgs)
}

fn scheduler_call(org: Uuid) -> Call {
    crate::background_call(org, ACTOR, "crm.core.v1.WorkflowService/Scheduler")
}

/// The customer an event is about: its resource, or the resource's `customer` field.
fn customer_of(org: Uuid, e: &outbox::StoredEvent) -> Option<Uuid> {
    if let Ok((o, id)) = names::parse_child(&e.resource, "customers", "")
        && o == org
    {
        return Some(id);
    }
    let changed = crm_proto::common_v1::ResourceChanged::decode(e.payload.as_slice()).ok()?;
    let any = changed.resource?;
    let pool = crm_proto::json::pool()?;
    let message = pool.get_message_by_name(any.type_url.rsplit('/').next()?)?;
    let value = prost_reflect::DynamicMessage::decode(message, any.value.as_slice()).ok()?;
    let field = value.get_field_by_name("customer")?;
    let (o, id) = names::parse_child(field.as_str()?, "customers", "").ok()?;
    (o == org).then_some(id)
}

/// Enrolls the customers of `org`'s new events in the workflows they trigger; with the
/// occur time of the last event read when more are waiting.
async fn intake(
    pool: &DbPool,
    org: Uuid,
) -> Result<(usize, Option<chrono::DateTime<Utc>>), ApiError> {
    crm_db::tenant::transaction(pool, org, move |conn| {
        Box::pin(async move {
            diesel::insert_into(wc::workflow_cursors)
                .values(wc::organization_id.eq(org))
                .on_conflict_do_nothing()
                .execute(&mut { conn })
                .await?;
            let cursor: Option<String> = wc::workflow_cursors
                .filter(wc::organization_id.eq(org))
                .select(wc::cursor)
                .for_update()
                .skip_locked()
                .first(&mut { conn })
                .await
                .optional()?;
            // Another replica is reading this organization's events.
            let Some(cursor) = cursor else {
                return Ok((0, None));
            };
            let flows: Vec<(Uuid, String, Vec<u8>, chrono::DateTime<Utc>)> = wf::workflows
                .filter(wf::organization_id.eq(org))
                .filter(wf::active)
                .filter(wf::delete_time.is_null())
                .select((wf::id, wf::trigger_event_type, wf::steps, wf::update_time))
                .load(&mut { conn })
                .await?;
            if flows.is_empty() {
                return Ok((0, None));
            }
            let mut types: Vec<String> = flows.iter().map(|f| f.1.clone()).collect();
            types.sort_unstable();
            types.dedup();
            let after = Cursor::decode(&cursor).unwrap_or_default();
            let events = outbox::read_after(conn, org, after, &types, EVENTS_PER_TICK).await?;
            let mut enrolled = 0;
            for e in &events {
                // The scheduler's own changes (a tag it added) trigger nothing.
                if e.actor == ACTOR {
                    continue;
                }
                let Some(customer) = customer_of(org, e) else {
                    continue;
                };
                // A workflow sees the events after it last changed (not the history before).
                for (id, _, steps, _) in flows
                    .iter()
                    .filter(|f| f.1 == e.event_type && e.occur_time >= f.3)
                {
                    let steps = steps_of(steps);
                    let live = Customers::find(conn, OrgId(org), customer, false)
                        .await?
                        .is_some_and(|r| !r.std.deleted());
                    if live
                        && enroll(conn, org, (*id, &steps), customer, &e.event_id.to_string())
                            .await?
                            .is_some()
                    {
                        enrolled += 1;
                    }
                }
            }
            if let Some(last) = events.last() {
                diesel::update(wc::workflow_cursors)
                    .filter(wc::organization_id.eq(org))
                    .set(wc::cursor.eq(last.cursor().encode()))
                    .execute(&mut { conn })
                    .await?;
            }
            let full = events.len() >= usize::try_from(EVENTS_PER_TICK).unwrap_or(usize::MAX);
            let behind_at = events.last().filter(|_| full).map(|e| e.occur_time);
            Ok::<_, ApiError>((enrolled, behind_at))
        })
    })
    .await
}

/// What a step did.
struct Outcome {
    outcome: &'static str,
    detail: String,
    /// Not run yet: due again at this time (quiet hours).
    postpone: Option<chrono::DateTime<Utc>>,
    /// The enrollment cannot go on.
    stop: bool,
}

impl Outcome {
    fn done(outcome: &'static str, detail: impl Into<String>) -> Self {
        Self {
            outcome,
            detail: detail.into(),
            postpone: None,
            stop: false,
        }
    }
    fn stopped(detail: impl Into<String>) -> Self {
        Self {
            stop: true,
            ..Self::done("stopped", detail)
        }
    }
}

/// Claims one due enrollment of `org` and runs its step; `false` when none is due.
async fn advance_one(pool: &DbPool, org: Uuid) -> Result<bool, ApiError> {
    crm_db::tenant::transaction(pool, org, move |conn| {
        Box::pin(async move {
            let now = Utc::now();
            let row: Option<EnrollmentRow> = en::enrollments
                .filter(en::organization_id.eq(org))
                .filter(en::status.eq(EnrollmentStatus::Active as i16))
                .filter(en::next_run_time.le(now))
                .order(en::next_run_time.asc())
                .limit(1)
                .select(EnrollmentRow::as_select())
                .for_update()
                .skip_locked()
                .first(&mut { conn })
                .await
                .optional()?;
            let Some(mut row) = row else {
                return Ok(false);
            };
            let call = scheduler_call(org);
            let w = Write {
                org: OrgId(org),
                call: &call,
                request_id: "",
            };
            let steps = steps_for(conn, &row).await?;
            let n = usize::try_from(row.position).unwrap_or(usize::MAX);
            let outcome = match steps.as_ref().and_then(|s| s.get(n)) {
                None if steps.is_none() => Outcome::stopped("the workflow or campaign is gone"),
                None => Outcome::done("completed", ""),
                Some(step) => run(conn, w, &row, step).await?,
            };
            if let Some(at) = outcome.postpone {
                row.next_run_time = at;
            } else {
                let mut history = Enrollment::decode(row.history.as_slice())
                    .map(|e| e.history)
                    .unwrap_or_default();
                history.push(EnrollmentStep {
                    step: row.position,
                    run_time: Some(crm_platform::api::time::timestamp(now)),
                    outcome: outcome.outcome.to_owned(),
                    detail: outcome.detail.clone(),
                });
                row.history = Enrollment {
                    history,
                    ..Enrollment::default()
                }
                .encode_to_vec();
                let steps = steps.unwrap_or_default();
                row.position += 1;
                let done = usize::try_from(row.position).unwrap_or(usize::MAX) >= steps.len();
                row.status = if outcome.stop {
                    EnrollmentStatus::Stopped as i16
                } else if done {
                    EnrollmentStatus::Completed as i16
                } else {
                    row.next_run_time = now + delay_of(&steps, n + 1);
                    EnrollmentStatus::Active as i16
                };
            }
            diesel::update(en::enrollments)
                .filter(en::organization_id.eq(org))
                .filter(en::id.eq(row.id))
                .set((
                    en::position.eq(row.position),
                    en::status.eq(row.status),
                    en::next_run_time.eq(row.next_run_time),
                    en::history.eq(&row.history),
                    en::update_time.eq(now),
                ))
                .execute(&mut { conn })
                .await?;
            Ok::<_, ApiError>(true)
        })
    })
    .await
}

/// The steps of the enrollment's workflow, or its campaign's one send; `None` when that is
/// gone.
async fn steps_for(
    conn: &AsyncPgConnection,
    row: &EnrollmentRow,
) -> Result<Option<Vec<WorkflowStep>>, ApiError> {
    let org = OrgId(row.organization_id);
    if let Some(id) = row.workflow_id {
        return Ok(Workflows::find(conn, org, id, false)
            .await?
            .filter(|r| !r.std.deleted())
            .map(|r| steps_of(&r.fields.steps)));
    }
    let Some(id) = row.campaign_id else {
        return Ok(None);
    };
    let template = super::Campaigns::find(conn, org, id, false)
        .await?
        .filter(|r| !r.std.deleted())
        .map(|r| r.fields.template_id);
    Ok(template.map(|t| {
        vec![WorkflowStep {
            delay: None,
            action: Some(Action::SendTemplate(child_name(
                row.organization_id,
                "messageTemplates",
                t,
            ))),
        }]
    }))
}

async fn run(
    conn: &AsyncPgConnection,
    w: Write<'_>,
    row: &EnrollmentRow,
    step: &WorkflowStep,
) -> Result<Outcome, ApiError> {
    let Some(customer) = Customers::find(conn, w.org, row.customer_id, false)
        .await?
        .filter(|r| !r.std.deleted())
    else {
        return Ok(Outcome::stopped("the customer is deleted"));
    };
    match &step.action {
        None => Ok(Outcome::done("skipped", "no action")),
        Some(Action::SendTemplate(t)) => send(conn, w, &customer, t).await,
        Some(Action::AddTag(tag)) => {
            if customer.fields.tags.contains(tag) {
                return Ok(Outcome::done("tagged", "already tagged"));
            }
            let mut proto = crm_resource::to_proto::<Customers>(customer.clone());
            proto.tags.push(tag.clone());
            proto.etag.clear();
            crm_resource::update_in::<Customers>(conn, w, row.customer_id, &proto, &["tags"])
                .await?;
            Ok(Outcome::done("tagged", tag.clone()))
        }
        Some(Action::CreateTask(subject)) => {
            let id = Uuid::now_v7();
            let fields = TicketFields {
                customer_id: row.customer_id,
                subject: subject.clone(),
                description: format!("Opened by the workflow of {}", row.to_proto().name),
                status: TicketStatus::Open as i16,
                priority: TicketPriority::Normal as i16,
                ..TicketFields::default()
            };
            let ticket = crm_resource::create_in::<Tickets>(conn, w, id, fields).await?;
            Ok(Outcome::done("task_created", ticket.name))
        }
    }
}

async fn send(
    conn: &AsyncPgConnection,
    w: Write<'_>,
    customer: &crm_resource::Row<crate::customers::CustomerFields>,
    template: &str,
) -> Result<Outcome, ApiError> {
    let (_, id) = names::parse_child(template, "messageTemplates", "send_template")?;
    let Some(t) = MessageTemplates::find(conn, w.org, id, false)
        .await?
        .filter(|r| !r.std.deleted())
    else {
        return Ok(Outcome::stopped("the template is deleted"));
    };
    let c = &customer.fields;
    let channel = if t.fields.channel == Channel::Email as i16 {
        Channel::Email
    } else {
        Channel::Sms
    };
    let address = match channel {
        Channel::Email => c.email.clone(),
        Channel::Sms | Channel::Chat | Channel::Unspecified => c.phone.clone(),
    };
    let Some(address) = address.filter(|a| !a.is_empty()) else {
        return Ok(Outcome::done(
            "skipped",
            "the customer has no address on the channel",
        ));
    };
    // Marketing consent is recorded per phone number: an email needs the customer's too.
    let Some(phone) = c.phone.clone().filter(|p| !p.is_empty()) else {
        return Ok(Outcome::done(
            "refused",
            format!(
                "{}: the customer has no phone with consent",
                Refusal::ConsentMissing.reason()
            ),
        ));
    };
    let decision = consent::check(
        conn,
        w.org.uuid(),
        &phone,
        MessagePurpose::Marketing,
        Utc::now(),
    )
    .await?;
    if decision.refusal == Some(Refusal::QuietHours) {
        return Ok(Outcome {
            postpone: decision.next_allowed,
            ..Outcome::done("postponed", "")
        });
    }
    let mut body = render(&t.fields.body, c);
    if channel == Channel::Email && !t.fields.subject.is_empty() {
        body = format!("Subject: {}\n\n{body}", render(&t.fields.subject, c));
    }
    let message = messages::send_to(
        conn,
        w,
        customer.std.id,
        (channel, &address),
        Outgoing {
            id: None,
            purpose: MessagePurpose::Marketing,
            body: &body,
            attachment_uris: &[],
            consent_phone: Some(&phone),
        },
    )
    .await?;
    Ok(match messages::refused(&message) {
        Some(_) => Outcome::done(
            "refused",
            format!("{}: {}", message.status_reason, message.name),
        ),
        None => Outcome::done("sent", message.name),
    })
}
