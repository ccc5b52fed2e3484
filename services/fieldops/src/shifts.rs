//! `crm.fieldops.v1.ShiftService` and `TimeOffPeriodService`: when each technician works (and
//! where), and when they are away. A technician's shifts never overlap (an exclusion
//! constraint); booking capacity is computed from shifts minus time off and booked work.

use chrono::{DateTime, Duration, Utc};
use crm_auth::{MethodPolicy, permission};
use crm_db::OrgId;
use crm_platform::ApiError;
use crm_platform::api::names::child_name;
use crm_platform::api::time::timestamp;
use crm_proto::fieldops_v1::{
    CreateShiftRequest, CreateTimeOffPeriodRequest, DeleteShiftRequest, DeleteTimeOffPeriodRequest,
    GetShiftRequest, GetTimeOffPeriodRequest, ListShiftsRequest, ListShiftsResponse,
    ListTimeOffPeriodsRequest, ListTimeOffPeriodsResponse, Shift, TimeOffPeriod,
    UndeleteShiftRequest, UndeleteTimeOffPeriodRequest, UpdateShiftRequest,
    UpdateTimeOffPeriodRequest,
};
use crm_resource::{BoxFuture, Field, Resource, Row};
use diesel::prelude::*;
use diesel_async::AsyncPgConnection;
use uuid::Uuid;

use crate::schema::shifts::{self, dsl as s};
use crate::schema::time_off_periods::{self, dsl as o};
use crate::technicians::{Technicians, zone};

/// The permission of every RPC of both services.
#[must_use]
pub fn policy() -> MethodPolicy {
    let (read, write) = (permission::TECHNICIANS_READ, permission::TECHNICIANS_WRITE);
    ShiftApi::policy(read, write, write).merge(&TimeOffPeriodApi::policy(read, write, write))
}

/// The longest shift.
pub const MAX_SHIFT: Duration = Duration::hours(16);
/// The longest absence.
pub const MAX_TIME_OFF: Duration = Duration::days(366);

/// Fails unless `start < end <= start + max`, naming `field`'s `end_time`.
fn check_window(
    field: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    max: Duration,
) -> Result<(), ApiError> {
    if end <= start || end - start > max {
        return Err(ApiError::invalid(
            format!("{field}.end_time"),
            "INVALID_WINDOW",
            format!(
                "after the start time, at most {} hours later",
                max.num_hours()
            ),
        ));
    }
    Ok(())
}

/// Fails unless the technician `id` exists and is not deleted.
async fn require_technician(
    conn: &AsyncPgConnection,
    org: OrgId,
    id: Uuid,
) -> Result<(), ApiError> {
    let name = child_name(org.uuid(), "technicians", id);
    crm_resource::require_live::<Technicians>(conn, org, id, &name).await
}

/// The columns of `fieldops.shifts` besides the standard ones.
#[derive(Debug, Clone, Default, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = shifts, treat_none_as_null = true)]
pub struct ShiftFields {
    pub technician_id: Uuid,
    pub start_time: DateTime<Utc>,
    pub end_time: DateTime<Utc>,
    pub zone: String,
    pub notes: String,
}

/// The shift resource.
#[derive(Debug)]
pub struct Shifts;

impl Resource for Shifts {
    type Proto = Shift;
    type Fields = ShiftFields;
    type Table = shifts::table;
    const RESOURCE_TYPE: &'static str = "fieldops.crm/Shift";
    const COLLECTION: &'static str = "shifts";
    const FIELD: &'static str = "shift";
    const TEXT_ORDER: &'static str = "zone";
    const FIELDS: &'static [Field<Self>] = &[
        Field::<Self>::create_only("technician", |i, x, f| {
            if let Some(id) = i.reference(&x.technician, "technicians") {
                f.technician_id = id;
            }
        })
        .filter(|n, op, v| {
            crm_resource::filter_reference!(s::technician_id, n, op, v, "technicians")
        }),
        Field::<Self>::updatable("start_time", |i, x, f| {
            if let Some(t) = i.required_time(x.start_time.as_ref(), "the shift's start") {
                f.start_time = t;
            }
        })
        .filter(|n, op, v| crm_db::filter_time!(s::start_time, n, op, v)),
        Field::<Self>::updatable("end_time", |i, x, f| {
            if let Some(t) = i.required_time(x.end_time.as_ref(), "the shift's end") {
                f.end_time = t;
            }
        })
        .filter(|n, op, v| crm_db::filter_time!(s::end_time, n, op, v)),
        Field::<Self>::updatable("zone", |i, x, f| f.zone = zone(i, &x.zone))
            .filter(|n, op, v| crm_db::filter_text!(s::zone, n, op, v)),
        Field::<Self>::updatable("notes", |i, x, f| f.notes = i.text(&x.notes, 1_000)),
    ];

    fn to_proto(org: Uuid, f: ShiftFields) -> Shift {
        Shift {
            technician: child_name(org, "technicians", f.technician_id),
            start_time: Some(timestamp(f.start_time)),
            end_time: Some(timestamp(f.end_time)),
            zone: f.zone,
            notes: f.notes,
            ..Shift::default()
        }
    }
    fn order_text(f: &ShiftFields) -> &str {
        &f.zone
    }
    fn before_write<'a>(
        conn: &'a AsyncPgConnection,
        org: OrgId,
        current: Option<&'a Row<ShiftFields>>,
        next: &'a mut ShiftFields,
        _paths: &'a [&'static str],
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            check_window("shift", next.start_time, next.end_time, MAX_SHIFT)?;
            if current.is_none() {
                require_technician(conn, org, next.technician_id).await?;
            }
            Ok(())
        })
    }
}

crm_resource::standard_store!(Shifts, table = shifts, time = create_time, text = zone);

crm_resource::standard_service! {
    service = "crm.fieldops.v1.ShiftService",
    server = crm_proto::fieldops_v1::shift_service_server::ShiftService,
    resource = Shifts,
    api = ShiftApi,
    field = shift;
    create = create_shift(CreateShiftRequest, id = shift_id);
    get = get_shift(GetShiftRequest, full = |_| false);
    list = list_shifts(ListShiftsRequest, full = |_| false) -> ListShiftsResponse.shifts;
    update = update_shift(UpdateShiftRequest);
    delete = delete_shift(DeleteShiftRequest);
    undelete = undelete_shift(UndeleteShiftRequest);
}

/// The columns of `fieldops.time_off_periods` besides the standard ones.
#[derive(Debug, Clone, Default, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = time_off_periods, treat_none_as_null = true)]
pub struct TimeOffFields {
    pub technician_id: Uuid,
    pub start_time: DateTime<Utc>,
    pub end_time: DateTime<Utc>,
    pub reason: String,
}

/// The time-off period resource.
#[derive(Debug)]
pub struct TimeOffPeriods;

impl Resource for TimeOffPeriods {
    type Proto = TimeOffPeriod;
    type Fields = TimeOffFields;
    type Table = time_off_periods::table;
    const RESOURCE_TYPE: &'static str = "fieldops.crm/TimeOffPeriod";
    const COLLECTION: &'static str = "timeOffPeriods";
    const FIELD: &'static str = "time_off_period";
    const TEXT_ORDER: &'static str = "reason";
    const FIELDS: &'static [Field<Self>] = &[
        Field::<Self>::create_only("technician", |i, x, f| {
            if let Some(id) = i.reference(&x.technician, "technicians") {
                f.technician_id = id;
            }
        })
        .filter(|n, op, v| {
            crm_resource::filter_reference!(o::technician_id, n, op, v, "technicians")
        }),
        Field::<Self>::updatable("start_time", |i, x, f| {
            if let Some(t) = i.required_time(x.start_time.as_ref(), "the absence's start") {
                f.start_time = t;
            }
        })
        .filter(|n, op, v| crm_db::filter_time!(o::start_time, n, op, v)),
        Field::<Self>::updatable("end_time", |i, x, f| {
            if let Some(t) = i.required_time(x.end_time.as_ref(), "the absence's end") {
                f.end_time = t;
            }
        })
        .filter(|n, op, v| crm_db::filter_time!(o::end_time, n, op, v)),
        Field::<Self>::updatable("reason", |i, x, f| {
            f.reason = i.required_text(&x.reason, 200);
        })
        .filter(|n, op, v| crm_db::filter_text!(o::reason, n, op, v)),
    ];

    fn to_proto(org: Uuid, f: TimeOffFields) -> TimeOffPeriod {
        TimeOffPeriod {
            technician: child_name(org, "technicians", f.technician_id),
            start_time: Some(timestamp(f.start_time)),
            end_time: Some(timestamp(f.end_time)),
            reason: f.reason,
            ..TimeOffPeriod::default()
        }
    }
    fn order_text(f: &TimeOffFields) -> &str {
        &f.reason
    }
    fn before_write<'a>(
        conn: &'a AsyncPgConnection,
        org: OrgId,
        current: Option<&'a Row<TimeOffFields>>,
        next: &'a mut TimeOffFields,
        _paths: &'a [&'static str],
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            check_window(
                "time_off_period",
                next.start_time,
                next.end_time,
                MAX_TIME_OFF,
            )?;
            if current.is_none() {
                require_technician(conn, org, next.technician_id).await?;
            }
            Ok(())
        })
    }
}

crm_resource::standard_store!(
    TimeOffPeriods,
    table = time_off_periods,
    time = create_time,
    text = reason
);

crm_resource::standard_service! {
    service = "crm.fieldops.v1.TimeOffPeriodService",
    server = crm_proto::fieldops_v1::time_off_period_service_server::TimeOffPeriodService,
    resource = TimeOffPeriods,
    api = TimeOffPeriodApi,
    field = time_off_period;
    create = create_time_off_period(CreateTimeOffPeriodRequest, id = time_off_period_id);
    get = get_time_off_period(GetTimeOffPeriodRequest, full = |_| false);
    list = list_time_off_periods(ListTimeOffPeriodsRequest, full = |_| false)
        -> ListTimeOffPeriodsResponse.time_off_periods;
    update = update_time_off_period(UpdateTimeOffPeriodRequest);
    delete = delete_time_off_period(DeleteTimeOffPeriodRequest);
    undelete = undelete_time_off_period(UndeleteTimeOffPeriodRequest);
}
