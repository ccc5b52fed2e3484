//! `crm.core.v1.SyncLogService`: one record per integration run (system, direction, cursor,
//! counts, errors, start and finish), written by the integration services as the run goes.

use chrono::{DateTime, Duration, Utc};
use crm_auth::{MethodPolicy, permission};
use crm_db::OrgId;
use crm_platform::ApiError;
use crm_platform::api::time::{optional_timestamp, timestamp};
use crm_platform::api::validate;
use crm_proto::core_v1::{
    CreateSyncLogRequest, DeleteSyncLogRequest, GetSyncLogRequest, ListSyncLogsRequest,
    ListSyncLogsResponse, SyncDirection, SyncLog, SyncStatus, UndeleteSyncLogRequest,
    UpdateSyncLogRequest,
};
use crm_resource::{BoxFuture, Field, Input, Resource, Row};
use diesel::prelude::*;
use diesel_async::AsyncPgConnection;
use uuid::Uuid;

use crate::schema::sync_logs::{self, dsl as s};

const MAX_ERRORS: usize = 100;

/// The permission of every RPC.
#[must_use]
pub fn policy() -> MethodPolicy {
    let (read, write) = (permission::SYNC_READ, permission::SYNC_WRITE);
    SyncLogApi::policy(read, write, write)
}

/// The columns of `core.sync_logs` besides the standard ones.
#[derive(Debug, Clone, Default, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = sync_logs, treat_none_as_null = true)]
pub struct SyncLogFields {
    pub system: String,
    pub direction: i16,
    pub status: i16,
    pub cursor: String,
    pub records_read: i64,
    pub records_written: i64,
    pub records_failed: i64,
    pub errors: Vec<String>,
    pub start_time: DateTime<Utc>,
    pub finish_time: Option<DateTime<Utc>>,
}

/// A time that is valid and not in the future.
fn past(i: &mut Input<'_>, t: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    if t.is_some_and(|t| t > Utc::now() + Duration::minutes(5)) {
        i.push("TIME_IN_FUTURE", "the time is in the future");
    }
    t
}

/// A record count, not negative.
fn count(i: &mut Input<'_>, n: i64) -> i64 {
    if n < 0 {
        i.push("NEGATIVE_COUNT", "counts are not negative");
    }
    n
}

/// The sync log resource.
#[derive(Debug)]
pub struct SyncLogs;

impl Resource for SyncLogs {
    type Proto = SyncLog;
    type Fields = SyncLogFields;
    type Table = sync_logs::table;
    const RESOURCE_TYPE: &'static str = "core.crm/SyncLog";
    const COLLECTION: &'static str = "syncLogs";
    const FIELD: &'static str = "sync_log";
    const TEXT_ORDER: &'static str = "system";
    const TIME_ORDER: &'static str = "start_time";
    const DEFAULT_DESC: bool = true;
    const FIELDS: &'static [Field<Self>] = &[
        Field::<Self>::create_only("system", |i, x, f| {
            if !validate::is_slug(&x.system) {
                let message = "lower-case letters, digits and '-', e.g. quickbooks";
                i.push("INVALID_SYSTEM", message);
            }
            f.system.clone_from(&x.system);
        })
        .filter(|n, op, v| crm_db::filter_text!(s::system, n, op, v)),
        Field::<Self>::create_only("direction", |i, x, f| {
            let message = "IMPORT, EXPORT or BIDIRECTIONAL";
            if let Some(d) = i.specified::<SyncDirection>(x.direction, "INVALID_DIRECTION", message)
            {
                f.direction = d;
            }
        })
        .filter(|n, op, v| {
            let number =
                crm_db::filter::enum_number(v, "SYNC_DIRECTION_", SyncDirection::from_str_name)?;
            crm_db::filter_enum!(s::direction, n, op, number)
        }),
        Field::<Self>::create_only("start_time", |i, x, f| {
            let at = i.required_time(x.start_time.as_ref(), "when the run started");
            f.start_time = past(i, at).unwrap_or_default();
        })
        .filter(|n, op, v| crm_db::filter_time!(s::start_time, n, op, v)),
        Field::<Self>::updatable("status", |i, x, f| {
            let message = "RUNNING, SUCCEEDED, PARTIAL or FAILED";
            if let Some(n) = i.specified::<SyncStatus>(x.status, "INVALID_STATUS", message) {
                f.status = n;
            }
        })
        .filter(|n, op, v| {
            let number = crm_db::filter::enum_number(v, "SYNC_STATUS_", SyncStatus::from_str_name)?;
            crm_db::filter_enum!(s::status, n, op, number)
        }),
        Field::<Self>::updatable("cursor", |i, x, f| f.cursor = i.text(&x.cursor, 1_000)),
        Field::<Self>::updatable("records_read", |i, x, f| {
            f.records_read = count(i, x.records_read);
        }),
        Field::<Self>::updatable("records_written", |i, x, f| {
            f.records_written = count(i, x.records_written);
        }),
        Field::<Self>::updatable("records_failed", |i, x, f| {
            f.records_failed = count(i, x.records_failed);
        }),
        Field::<Self>::updatable("errors", |i, x, f| {
            if x.errors.len() > MAX_ERRORS || x.errors.iter().any(|e| e.len() > 1_000) {
                let message = "at most 100 messages of 1,000 characters";
                i.push("TOO_MANY_ERRORS", message);
            }
            f.errors.clone_from(&x.errors);
        }),
        Field::<Self>::updatable("finish_time", |i, x, f| {
            let at = i.optional_time(x.finish_time.as_ref());
            f.finish_time = past(i, at);
        }),
    ];

    fn to_proto(_org: Uuid, f: SyncLogFields) -> SyncLog {
        SyncLog {
            system: f.system,
            direction: i32::from(f.direction),
            status: i32::from(f.status),
            cursor: f.cursor,
            records_read: f.records_read,
            records_written: f.records_written,
            records_failed: f.records_failed,
            errors: f.errors,
            start_time: Some(timestamp(f.start_time)),
            finish_time: optional_timestamp(f.finish_time),
            ..SyncLog::default()
        }
    }
    fn order_text(f: &SyncLogFields) -> &str {
        &f.system
    }
    fn order_time(row: &Row<SyncLogFields>) -> DateTime<Utc> {
        row.fields.start_time
    }
    fn before_write<'a>(
        _conn: &'a AsyncPgConnection,
        _org: OrgId,
        _current: Option<&'a Row<SyncLogFields>>,
        next: &'a mut SyncLogFields,
        _paths: &'a [&'static str],
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            // The run as it will be after this write.
            let running = i32::from(next.status) == SyncStatus::Running as i32;
            if !running && next.finish_time.is_none() {
                return Err(ApiError::invalid(
                    "sync_log.finish_time",
                    "REQUIRED",
                    "a finished run needs its finish time",
                ));
            }
            if next.finish_time.is_some_and(|f| f < next.start_time) {
                return Err(ApiError::invalid(
                    "sync_log.finish_time",
                    "BEFORE_START",
                    "the run cannot finish before it started",
                ));
            }
            Ok(())
        })
    }
}

crm_resource::standard_store!(
    SyncLogs,
    table = sync_logs,
    time = start_time,
    text = system
);

crm_resource::standard_service! {
    service = "crm.core.v1.SyncLogService",
    server = crm_proto::core_v1::sync_log_service_server::SyncLogService,
    resource = SyncLogs,
    api = SyncLogApi,
    field = sync_log;
    create = create_sync_log(CreateSyncLogRequest, id = sync_log_id);
    get = get_sync_log(GetSyncLogRequest, full = |_| false);
    list = list_sync_logs(ListSyncLogsRequest, full = |_| false) -> ListSyncLogsResponse.sync_logs;
    update = update_sync_log(UpdateSyncLogRequest);
    delete = delete_sync_log(DeleteSyncLogRequest);
    undelete = undelete_sync_log(UndeleteSyncLogRequest);
}
