//! `crm.core.v1.SyncLogService`: one record per integration run (system, direction, cursor,
//! counts, errors, start and finish), written by the integration services as the run goes.

use chrono::{DateTime, Duration, Utc};
use crm_auth::{MethodPolicy, permission};
use crm_db::filter::{self, BoxedPredicate, Filter, FilterError, Op, Value};
use crm_platform::ApiError;
use crm_platform::api::names::child_name;
use crm_platform::api::time::{from_timestamp, optional_timestamp, timestamp};
use crm_platform::api::validate::{self, Violations};
use crm_proto::core_v1::{
    CreateSyncLogRequest, DeleteSyncLogRequest, GetSyncLogRequest, ListSyncLogsRequest,
    ListSyncLogsResponse, SyncDirection, SyncLog, SyncStatus, UndeleteSyncLogRequest,
    UpdateSyncLogRequest,
};
use diesel::prelude::*;
use diesel_async::AsyncPgConnection;
use uuid::Uuid;

use crate::schema::sync_logs::{self, dsl as s};
use crm_resource::small;
use crm_resource::{BoxFuture, Meta, Order, OrderField, Resource};

const SERVICE: &str = "crm.core.v1.SyncLogService";
const MAX_ERRORS: usize = 100;

/// The permission of every RPC.
#[must_use]
pub fn policy() -> MethodPolicy {
    crm_resource::policy(
        SERVICE,
        &[
            ("CreateSyncLog", permission::SYNC_WRITE),
            ("GetSyncLog", permission::SYNC_READ),
            ("ListSyncLogs", permission::SYNC_READ),
            ("UpdateSyncLog", permission::SYNC_WRITE),
            ("DeleteSyncLog", permission::SYNC_WRITE),
            ("UndeleteSyncLog", permission::SYNC_WRITE),
        ],
    )
}

/// A row of `core.sync_logs`.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = sync_logs)]
pub struct SyncLogRow {
    pub organization_id: Uuid,
    pub id: Uuid,
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
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
    pub delete_time: Option<DateTime<Utc>>,
    pub purge_time: Option<DateTime<Utc>>,
    pub revision: i64,
    pub created_by: String,
    pub updated_by: String,
}

/// A sync log to insert.
#[derive(Debug, Insertable)]
#[diesel(table_name = sync_logs)]
pub struct NewSyncLog {
    organization_id: Uuid,
    id: Uuid,
    system: String,
    direction: i16,
    status: i16,
    cursor: String,
    records_read: i64,
    records_written: i64,
    records_failed: i64,
    errors: Vec<String>,
    start_time: DateTime<Utc>,
    finish_time: Option<DateTime<Utc>>,
    created_by: String,
    updated_by: String,
}

/// Changes to a sync log (progress of the run).
#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = sync_logs)]
pub struct SyncLogChanges {
    status: Option<i16>,
    cursor: Option<String>,
    records_read: Option<i64>,
    records_written: Option<i64>,
    records_failed: Option<i64>,
    errors: Option<Vec<String>>,
    finish_time: Option<Option<DateTime<Utc>>>,
}

fn time(t: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    t.and_then(from_timestamp)
}

impl NewSyncLog {
    fn from_proto(org: Uuid, id: Uuid, x: &SyncLog, actor: &str) -> Self {
        Self {
            organization_id: org,
            id,
            system: x.system.clone(),
            direction: small(x.direction),
            status: small(x.status),
            cursor: x.cursor.clone(),
            records_read: x.records_read,
            records_written: x.records_written,
            records_failed: x.records_failed,
            errors: x.errors.clone(),
            start_time: time(x.start_time.as_ref()).unwrap_or_else(Utc::now),
            finish_time: time(x.finish_time.as_ref()),
            created_by: actor.to_owned(),
            updated_by: actor.to_owned(),
        }
    }
}

impl SyncLogChanges {
    fn from_mask(x: &SyncLog, paths: &[&str]) -> Self {
        let mut ch = Self::default();
        for path in paths {
            match *path {
                "status" => ch.status = Some(small(x.status)),
                "cursor" => ch.cursor = Some(x.cursor.clone()),
                "records_read" => ch.records_read = Some(x.records_read),
                "records_written" => ch.records_written = Some(x.records_written),
                "records_failed" => ch.records_failed = Some(x.records_failed),
                "errors" => ch.errors = Some(x.errors.clone()),
                "finish_time" => ch.finish_time = Some(time(x.finish_time.as_ref())),
                _ => {}
            }
        }
        ch
    }
}

/// The sync log resource.
#[derive(Debug)]
pub struct SyncLogs;

const FILTER_FIELDS: &[&str] = &["system", "direction", "status", "start_time", "create_time"];

fn leaf(
    field: &str,
    op: Op,
    value: &Value,
) -> Result<BoxedPredicate<sync_logs::table>, FilterError> {
    match field {
        "system" => crm_db::filter_text!(s::system, field, op, value),
        "direction" => crm_db::filter_enum!(
            s::direction,
            field,
            op,
            crm_db::filter::enum_number(value, "SYNC_DIRECTION_", SyncDirection::from_str_name)?
        ),
        "status" => crm_db::filter_enum!(
            s::status,
            field,
            op,
            crm_db::filter::enum_number(value, "SYNC_STATUS_", SyncStatus::from_str_name)?
        ),
        "start_time" => crm_db::filter_time!(s::start_time, field, op, value),
        "create_time" => crm_db::filter_time!(s::create_time, field, op, value),
        other => Err(filter::unknown_field(other, FILTER_FIELDS)),
    }
}

fn validate_time(v: &mut Violations, field: &str, t: Option<&prost_types::Timestamp>) {
    match t.map(from_timestamp) {
        Some(None) => v.push(field, "INVALID_TIME", "not a valid time"),
        Some(Some(t)) if t > Utc::now() + Duration::minutes(5) => {
            v.push(field, "TIME_IN_FUTURE", "the time is in the future");
        }
        None | Some(Some(_)) => {}
    }
}

impl Resource for SyncLogs {
    type Proto = SyncLog;
    type Row = SyncLogRow;
    const RESOURCE_TYPE: &'static str = "core.crm/SyncLog";
    const COLLECTION: &'static str = "syncLogs";
    const FIELD: &'static str = "sync_log";
    const UPDATABLE: &'static [&'static str] = &[
        "status",
        "cursor",
        "records_read",
        "records_written",
        "records_failed",
        "errors",
        "finish_time",
    ];
    const CREATE_ONLY: &'static [&'static str] = &["system", "direction", "start_time"];
    const OUTPUT_ONLY: &'static [&'static str] = crm_resource::STANDARD_OUTPUT_ONLY;
    const TEXT_ORDER: &'static str = "system";
    const TIME_ORDER: &'static str = "start_time";
    const DEFAULT_DESC: bool = true;

    fn name(x: &SyncLog) -> &str {
        &x.name
    }
    fn etag(x: &SyncLog) -> &str {
        &x.etag
    }
    fn meta(row: &SyncLogRow) -> Meta {
        Meta {
            revision: row.revision,
            deleted: row.delete_time.is_some(),
        }
    }
    fn sort_key(row: &SyncLogRow, field: OrderField) -> Vec<String> {
        let value = match field {
            OrderField::CreateTime => row.start_time.to_rfc3339(),
            OrderField::UpdateTime => row.update_time.to_rfc3339(),
            OrderField::DisplayName => row.system.clone(),
        };
        Order::key(value, row.id)
    }
    fn to_proto(row: SyncLogRow) -> SyncLog {
        let SyncLogRow {
            organization_id,
            id,
            system,
            direction,
            status,
            cursor,
            records_read,
            records_written,
            records_failed,
            errors,
            start_time,
            finish_time,
            create_time,
            update_time,
            delete_time,
            purge_time,
            revision,
            created_by,
            updated_by,
        } = row;
        SyncLog {
            name: child_name(organization_id, "syncLogs", id),
            system,
            direction: i32::from(direction),
            status: i32::from(status),
            cursor,
            records_read,
            records_written,
            records_failed,
            errors,
            start_time: Some(timestamp(start_time)),
            finish_time: optional_timestamp(finish_time),
            create_time: Some(timestamp(create_time)),
            update_time: Some(timestamp(update_time)),
            delete_time: optional_timestamp(delete_time),
            purge_time: optional_timestamp(purge_time),
            etag: crm_db::etag::from_revision(revision),
            creator: created_by,
            last_modifier: updated_by,
        }
    }
    fn validate(v: &mut Violations, _org: Option<Uuid>, x: &SyncLog, paths: &[&str]) {
        for path in paths {
            let field = format!("sync_log.{path}");
            match *path {
                "system" if !validate::is_slug(&x.system) => v.push(
                    field,
                    "INVALID_SYSTEM",
                    "lower-case letters, digits and '-', e.g. quickbooks",
                ),
                "direction" => match SyncDirection::try_from(x.direction) {
                    Ok(SyncDirection::Unspecified) | Err(_) => {
                        v.push(
                            field,
                            "INVALID_DIRECTION",
                            "IMPORT, EXPORT or BIDIRECTIONAL",
                        );
                    }
                    Ok(_) => {}
                },
                "status" => match SyncStatus::try_from(x.status) {
                    Ok(SyncStatus::Unspecified) | Err(_) => {
                        v.push(
                            field,
                            "INVALID_STATUS",
                            "RUNNING, SUCCEEDED, PARTIAL or FAILED",
                        );
                    }
                    Ok(_) => {}
                },
                "cursor" => validate::optional_text(v, &field, &x.cursor, 1_000),
                "records_read" | "records_written" | "records_failed" => {
                    let n = match *path {
                        "records_read" => x.records_read,
                        "records_written" => x.records_written,
                        _ => x.records_failed,
                    };
                    if n < 0 {
                        v.push(field, "NEGATIVE_COUNT", "counts are not negative");
                    }
                }
                "errors"
                    if x.errors.len() > MAX_ERRORS || x.errors.iter().any(|e| e.len() > 1_000) =>
                {
                    v.push(
                        field,
                        "TOO_MANY_ERRORS",
                        "at most 100 messages of 1,000 characters",
                    );
                }
                "start_time" if x.start_time.is_none() => {
                    v.push(field, "REQUIRED", "when the run started");
                }
                "start_time" => validate_time(v, &field, x.start_time.as_ref()),
                "finish_time" => validate_time(v, &field, x.finish_time.as_ref()),
                _ => {}
            }
        }
    }
    fn check_filter(f: &Filter) -> Result<(), FilterError> {
        filter::compile(f, &leaf).map(|_| ())
    }
    fn before_write<'a>(
        _conn: &'a AsyncPgConnection,
        _org: Uuid,
        current: Option<&'a SyncLogRow>,
        x: &'a SyncLog,
        paths: &'a [&'static str],
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            // The run as it will be after this write.
            let status = if paths.contains(&"status") {
                x.status
            } else {
                current.map_or(0, |c| i32::from(c.status))
            };
            let finish = if paths.contains(&"finish_time") {
                time(x.finish_time.as_ref())
            } else {
                current.and_then(|c| c.finish_time)
            };
            let start = current.map_or_else(|| time(x.start_time.as_ref()), |c| Some(c.start_time));
            if status != SyncStatus::Running as i32 && finish.is_none() {
                return Err(ApiError::invalid(
                    "sync_log.finish_time",
                    "REQUIRED",
                    "a finished run needs its finish time",
                ));
            }
            if let (Some(f), Some(s)) = (finish, start)
                && f < s
            {
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
    sync_logs,
    start_time,
    system,
    SyncLogRow,
    NewSyncLog,
    SyncLogChanges,
    leaf
);

crm_resource::standard_service! {
    crm_proto::core_v1::sync_log_service_server::SyncLogService, SyncLogs => SyncLogApi,
    "crm.core.v1.SyncLogService", sync_log;
    create_sync_log(CreateSyncLogRequest, sync_log_id);
    get_sync_log(GetSyncLogRequest, |_| false);
    list_sync_logs(ListSyncLogsRequest, |_| false) -> ListSyncLogsResponse.sync_logs;
    update_sync_log(UpdateSyncLogRequest);
    delete_sync_log(DeleteSyncLogRequest);
    undelete_sync_log(UndeleteSyncLogRequest);
}
