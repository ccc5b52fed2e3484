//! `crm.core.v1.CallLogService`: calls with customers, with an organization-defined
//! disposition, newest first.

use chrono::{DateTime, Duration, Utc};
use crm_auth::{MethodPolicy, permission};
use crm_db::OrgId;
use crm_platform::ApiError;
use crm_platform::api::names::child_name;
use crm_platform::api::time::timestamp;
use crm_proto::core_v1::{
    CallLog, CreateCallLogRequest, DeleteCallLogRequest, Direction, GetCallLogRequest,
    ListCallLogsRequest, ListCallLogsResponse, UndeleteCallLogRequest, UpdateCallLogRequest,
};
use crm_resource::{BoxFuture, Field, Resource, Row};
use diesel::prelude::*;
use diesel_async::AsyncPgConnection;
use uuid::Uuid;

use crate::schema::call_logs::{self, dsl as c};

/// The permission of every RPC.
#[must_use]
pub fn policy() -> MethodPolicy {
    CallLogApi::policy(
        permission::CUSTOMERS_READ,
        permission::CUSTOMERS_WRITE,
        permission::CUSTOMERS_DELETE,
    )
}

/// The columns of `core.call_logs` besides the standard ones.
#[derive(Debug, Clone, Default, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = call_logs, treat_none_as_null = true)]
pub struct CallLogFields {
    pub customer_id: Uuid,
    pub direction: i16,
    pub phone: String,
    pub agent: String,
    pub start_time: DateTime<Utc>,
    pub duration_seconds: i32,
    pub disposition: String,
    pub notes: String,
    pub recording_uri: String,
}

/// The call log resource.
#[derive(Debug)]
pub struct CallLogs;

impl Resource for CallLogs {
    type Proto = CallLog;
    type Fields = CallLogFields;
    type Table = call_logs::table;
    const RESOURCE_TYPE: &'static str = "core.crm/CallLog";
    const COLLECTION: &'static str = "callLogs";
    const FIELD: &'static str = "call_log";
    const TEXT_ORDER: &'static str = "phone";
    const TIME_ORDER: &'static str = "start_time";
    const DEFAULT_DESC: bool = true;
    const FIELDS: &'static [Field<Self>] = &[
        Field::<Self>::updatable("customer", |i, x, f| {
            if let Some(id) = i.reference(&x.customer, "customers") {
                f.customer_id = id;
            }
        })
        .filter(|n, op, v| crm_resource::filter_reference!(c::customer_id, n, op, v, "customers")),
        Field::<Self>::updatable("direction", |i, x, f| {
            let message = "INBOUND or OUTBOUND";
            if let Some(d) = i.specified::<Direction>(x.direction, "INVALID_DIRECTION", message) {
                f.direction = d;
            }
        })
        .filter(|n, op, v| {
            let number = crm_db::filter::enum_number(v, "DIRECTION_", Direction::from_str_name)?;
            crm_db::filter_enum!(c::direction, n, op, number)
        }),
        Field::<Self>::updatable("phone", |i, x, f| {
            f.phone = i.required_phone(&x.phone, "the customer's number");
        })
        .filter(|n, op, v| crm_db::filter_text!(c::phone, n, op, v)),
        Field::<Self>::updatable("agent", |i, x, f| {
            f.agent = i.user(&x.agent, "INVALID_AGENT");
        })
        .filter(|n, op, v| crm_db::filter_text!(c::agent, n, op, v)),
        Field::<Self>::updatable("start_time", |i, x, f| {
            let at = i.required_time(x.start_time.as_ref(), "when the call started");
            if at.is_some_and(|t| t > Utc::now() + Duration::minutes(5)) {
                i.push("TIME_IN_FUTURE", "the call has not happened yet");
            }
            f.start_time = at.unwrap_or_default();
        })
        .filter(|n, op, v| crm_db::filter_time!(c::start_time, n, op, v)),
        Field::<Self>::updatable("duration_seconds", |i, x, f| {
            f.duration_seconds = i.in_range(x.duration_seconds, 0..=86_400, "0 to 86,400 seconds");
        }),
        Field::<Self>::updatable("disposition", |i, x, f| {
            f.disposition = i.slug(&x.disposition, "INVALID_CODE", "a disposition code");
        })
        .filter(|n, op, v| crm_db::filter_text!(c::disposition, n, op, v)),
        Field::<Self>::updatable("notes", |i, x, f| f.notes = i.text(&x.notes, 10_000)),
        Field::<Self>::updatable("recording_uri", |i, x, f| {
            f.recording_uri = i.https_uri(&x.recording_uri);
        }),
    ];

    fn to_proto(org: Uuid, f: CallLogFields) -> CallLog {
        CallLog {
            customer: child_name(org, "customers", f.customer_id),
            direction: i32::from(f.direction),
            phone: f.phone,
            agent: f.agent,
            start_time: Some(timestamp(f.start_time)),
            duration_seconds: f.duration_seconds,
            disposition: f.disposition,
            notes: f.notes,
            recording_uri: f.recording_uri,
            ..CallLog::default()
        }
    }
    fn order_text(f: &CallLogFields) -> &str {
        &f.phone
    }
    fn order_time(row: &Row<CallLogFields>) -> DateTime<Utc> {
        row.fields.start_time
    }
    fn before_write<'a>(
        conn: &'a AsyncPgConnection,
        org: OrgId,
        _current: Option<&'a Row<CallLogFields>>,
        next: &'a mut CallLogFields,
        paths: &'a [&'static str],
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if paths.contains(&"customer") {
                crate::customers::require_live(conn, org, next.customer_id).await?;
            }
            if paths.contains(&"disposition") && !next.disposition.is_empty() {
                crate::call_dispositions::require_active(conn, org, &next.disposition).await?;
            }
            Ok(())
        })
    }
}

crm_resource::standard_store!(CallLogs, table = call_logs, time = start_time, text = phone);

crm_resource::standard_service! {
    service = "crm.core.v1.CallLogService",
    server = crm_proto::core_v1::call_log_service_server::CallLogService,
    resource = CallLogs,
    api = CallLogApi,
    field = call_log;
    create = create_call_log(CreateCallLogRequest, id = call_log_id);
    get = get_call_log(GetCallLogRequest, full = |_| false);
    list = list_call_logs(ListCallLogsRequest, full = |_| false) -> ListCallLogsResponse.call_logs;
    update = update_call_log(UpdateCallLogRequest);
    delete = delete_call_log(DeleteCallLogRequest);
    undelete = undelete_call_log(UndeleteCallLogRequest);
}
