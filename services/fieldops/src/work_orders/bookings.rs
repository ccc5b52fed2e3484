//! A work order's bookings: one row per assigned technician with the window it holds them for
//! while the work order is booked. The exclusion constraint `work_order_assignments_no_overlap`
//! makes double booking impossible even under concurrent writes; a conflict is answered
//! FAILED_PRECONDITION naming the other work order.

use chrono::{DateTime, Utc};
use crm_db::OrgId;
use crm_platform::ApiError;
use crm_platform::api::names::child_name;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::upsert::excluded;
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use uuid::Uuid;

use super::WorkOrderFields;
use crate::schema::work_order_assignments::{self, dsl as a};

/// The statuses in which a work order holds its technicians' time.
pub const BOOKED: [i16; 6] = [2, 3, 4, 5, 6, 7];

/// Whether a work order in this state holds its technicians' time.
#[must_use]
pub fn holds_time(fields: &WorkOrderFields, deleted: bool) -> bool {
    !deleted && BOOKED.contains(&fields.status) && fields.scheduled_start_time.is_some()
}

/// Another booked work order of one of `technicians` overlapping `start..end`, if any.
async fn conflict(
    conn: &AsyncPgConnection,
    org: OrgId,
    work_order: Uuid,
    technicians: &[Uuid],
    (start, end): (DateTime<Utc>, DateTime<Utc>),
) -> Result<Option<(Uuid, Uuid)>, ApiError> {
    // Overlap of half-open ranges: the other starts before this ends and ends after it starts.
    Ok(a::work_order_assignments
        .filter(a::organization_id.eq(org))
        .filter(a::technician_id.eq_any(technicians))
        .filter(a::work_order_id.ne(work_order))
        .filter(a::active.eq(true))
        .filter(a::start_time.lt(end))
        .filter(a::end_time.gt(start))
        .select((a::work_order_id, a::technician_id))
        .first(&mut { conn })
        .await
        .optional()?)
}

fn double_booked(org: OrgId, (other, technician): (Uuid, Uuid)) -> ApiError {
    ApiError::FailedPrecondition {
        reason: "TECHNICIAN_DOUBLE_BOOKED",
        message: format!(
            "{} is already booked then on {}",
            child_name(org.uuid(), "technicians", technician),
            child_name(org.uuid(), "workOrders", other)
        ),
    }
}

/// Makes the bookings of work order `id` match its `fields` (`deleted`: it is soft-deleted):
/// its technicians' rows hold the window while it is booked, and only its current technicians
/// have rows (their times on the job are kept).
///
/// # Errors
/// FAILED_PRECONDITION `TECHNICIAN_DOUBLE_BOOKED` naming the other work order; the database
/// error.
pub async fn sync(
    conn: &AsyncPgConnection,
    org: OrgId,
    id: Uuid,
    fields: &WorkOrderFields,
    deleted: bool,
) -> Result<(), ApiError> {
    let active = holds_time(fields, deleted);
    let window = fields.scheduled_start_time.zip(fields.scheduled_end_time);
    if let (true, Some(window)) = (active, window)
        && let Some(found) = conflict(conn, org, id, &fields.technician_ids, window).await?
    {
        return Err(double_booked(org, found));
    }
    // A concurrent booking the check above could not see yet makes the write below wait for
    // it and then fail on the constraint: roll back to here and name it (it has committed).
    let mut c = conn;
    c.batch_execute("SAVEPOINT bookings").await?;
    match write(conn, org, id, fields, active).await {
        Ok(()) => {
            c.batch_execute("RELEASE SAVEPOINT bookings").await?;
            Ok(())
        }
        Err(DieselError::DatabaseError(DatabaseErrorKind::ExclusionViolation, _)) => {
            c.batch_execute("ROLLBACK TO SAVEPOINT bookings").await?;
            let window =
                window.ok_or_else(|| ApiError::Internal("booked without a window".into()))?;
            match conflict(conn, org, id, &fields.technician_ids, window).await? {
                Some(found) => Err(double_booked(org, found)),
                None => Err(ApiError::Aborted {
                    reason: "CONCURRENT_BOOKING",
                    message: "a concurrent booking of the same technician conflicted; retry"
                        .to_owned(),
                }),
            }
        }
        Err(e) => Err(e.into()),
    }
}

async fn write(
    conn: &AsyncPgConnection,
    org: OrgId,
    id: Uuid,
    fields: &WorkOrderFields,
    active: bool,
) -> Result<(), DieselError> {
    diesel::delete(
        a::work_order_assignments
            .filter(a::organization_id.eq(org))
            .filter(a::work_order_id.eq(id))
            .filter(a::technician_id.ne_all(&fields.technician_ids)),
    )
    .execute(&mut { conn })
    .await?;
    if fields.technician_ids.is_empty() {
        return Ok(());
    }
    let rows: Vec<_> = fields
        .technician_ids
        .iter()
        .map(|t| {
            (
                a::organization_id.eq(org),
                a::work_order_id.eq(id),
                a::technician_id.eq(*t),
                a::start_time.eq(fields.scheduled_start_time),
                a::end_time.eq(fields.scheduled_end_time),
                a::active.eq(active),
            )
        })
        .collect();
    diesel::insert_into(work_order_assignments::table)
        .values(rows)
        .on_conflict((a::organization_id, a::work_order_id, a::technician_id))
        .do_update()
        .set((
            a::start_time.eq(excluded(a::start_time)),
            a::end_time.eq(excluded(a::end_time)),
            a::active.eq(excluded(a::active)),
        ))
        .execute(&mut { conn })
        .await?;
    Ok(())
}

/// Stamps the time of `step` (enroute, on site, work start, finish) on the bookings of
/// `technicians` that have none yet; answers the technicians stamped.
///
/// # Errors
/// The database error.
pub async fn stamp(
    conn: &AsyncPgConnection,
    org: OrgId,
    id: Uuid,
    technicians: &[Uuid],
    step: Step,
    now: DateTime<Utc>,
) -> Result<Vec<Uuid>, ApiError> {
    let base = a::work_order_assignments
        .filter(a::organization_id.eq(org))
        .filter(a::work_order_id.eq(id))
        .filter(a::technician_id.eq_any(technicians));
    let stamped = match step {
        Step::Enroute => {
            diesel::update(base.filter(a::enroute_time.is_null()))
                .set(a::enroute_time.eq(now))
                .returning(a::technician_id)
                .get_results(&mut { conn })
                .await?
        }
        Step::Arrive => {
            diesel::update(base.filter(a::arrive_time.is_null()))
                .set(a::arrive_time.eq(now))
                .returning(a::technician_id)
                .get_results(&mut { conn })
                .await?
        }
        Step::Start => {
            diesel::update(base.filter(a::work_start_time.is_null()))
                .set(a::work_start_time.eq(now))
                .returning(a::technician_id)
                .get_results(&mut { conn })
                .await?
        }
        Step::Finish => {
            diesel::update(base.filter(a::finish_time.is_null()))
                .set(a::finish_time.eq(now))
                .returning(a::technician_id)
                .get_results(&mut { conn })
                .await?
        }
    };
    Ok(stamped)
}

/// The steps each technician's own time is kept for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Left for the site.
    Enroute,
    /// Arrived.
    Arrive,
    /// Started working.
    Start,
    /// Finished.
    Finish,
}
