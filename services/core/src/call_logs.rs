//! `crm.core.v1.CallLogService`: calls with customers, with an organization-defined
//! disposition, newest first.

use chrono::{DateTime, Duration, Utc};
use crm_auth::{MethodPolicy, permission};
use crm_db::filter::{self, BoxedPredicate, Filter, FilterError, Op, Value};
use crm_platform::ApiError;
use crm_platform::api::names::child_name;
use crm_platform::api::time::{from_timestamp, optional_timestamp, timestamp};
use crm_platform::api::validate::{self, Violations};
use crm_proto::core_v1::{
    CallLog, CreateCallLogRequest, DeleteCallLogRequest, Direction, GetCallLogRequest,
    ListCallLogsRequest, ListCallLogsResponse, UndeleteCallLogRequest, UpdateCallLogRequest,
};
use diesel::prelude::*;
use diesel_async::AsyncPgConnection;
use uuid::Uuid;

use crate::contacts::require_live_customer;
use crate::schema::call_logs::{self, dsl as c};
use crm_resource::id_in;
use crm_resource::{BoxFuture, Meta, Order, OrderField, Resource, reference};

const SERVICE: &str = "crm.core.v1.CallLogService";

/// The permission of every RPC.
#[must_use]
pub fn policy() -> MethodPolicy {
    crm_resource::policy(
        SERVICE,
        &[
            ("CreateCallLog", permission::CUSTOMERS_WRITE),
            ("GetCallLog", permission::CUSTOMERS_READ),
            ("ListCallLogs", permission::CUSTOMERS_READ),
            ("UpdateCallLog", permission::CUSTOMERS_WRITE),
            ("DeleteCallLog", permission::CUSTOMERS_DELETE),
            ("UndeleteCallLog", permission::CUSTOMERS_DELETE),
        ],
    )
}

/// A row of `core.call_logs`.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = call_logs)]
pub struct CallLogRow {
    pub organization_id: Uuid,
    pub id: Uuid,
    pub customer_id: Uuid,
    pub direction: i16,
    pub phone: String,
    pub agent: String,
    pub start_time: DateTime<Utc>,
    pub duration_seconds: i32,
    pub disposition: String,
    pub notes: String,
    pub recording_uri: String,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
    pub delete_time: Option<DateTime<Utc>>,
    pub purge_time: Option<DateTime<Utc>>,
    pub revision: i64,
    pub created_by: String,
    pub updated_by: String,
}

/// A call log to insert.
#[derive(Debug, Insertable)]
#[diesel(table_name = call_logs)]
pub struct NewCallLog {
    organization_id: Uuid,
    id: Uuid,
    customer_id: Uuid,
    direction: i16,
    phone: String,
    agent: String,
    start_time: DateTime<Utc>,
    duration_seconds: i32,
    disposition: String,
    notes: String,
    recording_uri: String,
    created_by: String,
    updated_by: String,
}

/// Changes to a call log.
#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = call_logs)]
pub struct CallLogChanges {
    customer_id: Option<Uuid>,
    direction: Option<i16>,
    phone: Option<String>,
    agent: Option<String>,
    start_time: Option<DateTime<Utc>>,
    duration_seconds: Option<i32>,
    disposition: Option<String>,
    notes: Option<String>,
    recording_uri: Option<String>,
}

fn start(x: &CallLog) -> DateTime<Utc> {
    x.start_time
        .as_ref()
        .and_then(from_timestamp)
        .unwrap_or_else(Utc::now)
}

impl NewCallLog {
    fn from_proto(org: Uuid, id: Uuid, x: &CallLog, actor: &str) -> Self {
        Self {
            organization_id: org,
            id,
            customer_id: id_in(&x.customer, "customers"),
            direction: i16::try_from(x.direction).unwrap_or(0),
            phone: x.phone.clone(),
            agent: x.agent.clone(),
            start_time: start(x),
            duration_seconds: x.duration_seconds,
            disposition: x.disposition.clone(),
            notes: x.notes.clone(),
            recording_uri: x.recording_uri.clone(),
            created_by: actor.to_owned(),
            updated_by: actor.to_owned(),
        }
    }
}

impl CallLogChanges {
    fn from_mask(x: &CallLog, paths: &[&str]) -> Self {
        let mut ch = Self::default();
        for path in paths {
            match *path {
                "customer" => ch.customer_id = Some(id_in(&x.customer, "customers")),
                "direction" => ch.direction = Some(i16::try_from(x.direction).unwrap_or(0)),
                "phone" => ch.phone = Some(x.phone.clone()),
                "agent" => ch.agent = Some(x.agent.clone()),
                "start_time" => ch.start_time = Some(start(x)),
                "duration_seconds" => ch.duration_seconds = Some(x.duration_seconds),
                "disposition" => ch.disposition = Some(x.disposition.clone()),
                "notes" => ch.notes = Some(x.notes.clone()),
                "recording_uri" => ch.recording_uri = Some(x.recording_uri.clone()),
                _ => {}
            }
        }
        ch
    }
}

/// The call log resource.
#[derive(Debug)]
pub struct CallLogs;

const FILTER_FIELDS: &[&str] = &[
    "customer",
    "direction",
    "phone",
    "agent",
    "disposition",
    "start_time",
    "create_time",
];

fn leaf(
    field: &str,
    op: Op,
    value: &Value,
) -> Result<BoxedPredicate<call_logs::table>, FilterError> {
    match field {
        "customer" => {
            crm_resource::filter_reference!(c::customer_id, field, op, value, "customers")
        }
        "direction" => crm_db::filter_enum!(
            c::direction,
            field,
            op,
            crm_db::filter::enum_number(value, "DIRECTION_", Direction::from_str_name)?
        ),
        "phone" => crm_db::filter_text!(c::phone, field, op, value),
        "agent" => crm_db::filter_text!(c::agent, field, op, value),
        "disposition" => crm_db::filter_text!(c::disposition, field, op, value),
        "start_time" => crm_db::filter_time!(c::start_time, field, op, value),
        "create_time" => crm_db::filter_time!(c::create_time, field, op, value),
        other => Err(filter::unknown_field(other, FILTER_FIELDS)),
    }
}

impl Resource for CallLogs {
    type Proto = CallLog;
    type Row = CallLogRow;
    const RESOURCE_TYPE: &'static str = "core.crm/CallLog";
    const COLLECTION: &'static str = "callLogs";
    const FIELD: &'static str = "call_log";
    const UPDATABLE: &'static [&'static str] = &[
        "customer",
        "direction",
        "phone",
        "agent",
        "start_time",
        "duration_seconds",
        "disposition",
        "notes",
        "recording_uri",
    ];
    const OUTPUT_ONLY: &'static [&'static str] = crm_resource::STANDARD_OUTPUT_ONLY;
    const TEXT_ORDER: &'static str = "phone";
    const TIME_ORDER: &'static str = "start_time";
    const DEFAULT_DESC: bool = true;

    fn name(x: &CallLog) -> &str {
        &x.name
    }
    fn etag(x: &CallLog) -> &str {
        &x.etag
    }
    fn meta(row: &CallLogRow) -> Meta {
        Meta {
            revision: row.revision,
            deleted: row.delete_time.is_some(),
        }
    }
    fn sort_key(row: &CallLogRow, field: OrderField) -> Vec<String> {
        let value = match field {
            OrderField::CreateTime => row.start_time.to_rfc3339(),
            OrderField::UpdateTime => row.update_time.to_rfc3339(),
            OrderField::DisplayName => row.phone.clone(),
        };
        Order::key(value, row.id)
    }
    fn to_proto(row: CallLogRow) -> CallLog {
        let CallLogRow {
            organization_id,
            id,
            customer_id,
            direction,
            phone,
            agent,
            start_time,
            duration_seconds,
            disposition,
            notes,
            recording_uri,
            create_time,
            update_time,
            delete_time,
            purge_time,
            revision,
            created_by,
            updated_by,
        } = row;
        CallLog {
            name: child_name(organization_id, "callLogs", id),
            customer: child_name(organization_id, "customers", customer_id),
            direction: i32::from(direction),
            phone,
            agent,
            start_time: Some(timestamp(start_time)),
            duration_seconds,
            disposition,
            notes,
            recording_uri,
            create_time: Some(timestamp(create_time)),
            update_time: Some(timestamp(update_time)),
            delete_time: optional_timestamp(delete_time),
            purge_time: optional_timestamp(purge_time),
            etag: crm_db::etag::from_revision(revision),
            creator: created_by,
            last_modifier: updated_by,
        }
    }
    fn validate(v: &mut Violations, org: Option<Uuid>, x: &CallLog, paths: &[&str]) {
        for path in paths {
            let field = format!("call_log.{path}");
            match *path {
                "customer" => {
                    reference(v, org, &field, &x.customer, "customers");
                }
                "direction" => match Direction::try_from(x.direction) {
                    Ok(Direction::Unspecified) | Err(_) => {
                        v.push(field, "INVALID_DIRECTION", "INBOUND or OUTBOUND");
                    }
                    Ok(_) => {}
                },
                "phone" if x.phone.is_empty() => v.push(field, "REQUIRED", "the customer's number"),
                "phone" => validate::optional_phone(v, &field, &x.phone),
                "agent" if !x.agent.is_empty() && !validate::is_user_name(&x.agent) => {
                    v.push(field, "INVALID_AGENT", "a user resource name: users/{uuid}");
                }
                "start_time" => match x.start_time.as_ref().map(from_timestamp) {
                    None => v.push(field, "REQUIRED", "when the call started"),
                    Some(None) => v.push(field, "INVALID_TIME", "not a valid time"),
                    Some(Some(t)) if t > Utc::now() + Duration::minutes(5) => {
                        v.push(field, "TIME_IN_FUTURE", "the call has not happened yet");
                    }
                    Some(Some(_)) => {}
                },
                "duration_seconds" if !(0..=86_400).contains(&x.duration_seconds) => {
                    v.push(field, "OUT_OF_RANGE", "0 to 86,400 seconds");
                }
                "disposition"
                    if !x.disposition.is_empty() && !validate::is_slug(&x.disposition) =>
                {
                    v.push(field, "INVALID_CODE", "a disposition code");
                }
                "notes" => validate::optional_text(v, &field, &x.notes, 10_000),
                "recording_uri"
                    if !x.recording_uri.is_empty()
                        && (!x.recording_uri.starts_with("https://")
                            || x.recording_uri.len() > 2_000) =>
                {
                    v.push(field, "INVALID_URI", "an https URI");
                }
                _ => {}
            }
        }
    }
    fn check_filter(f: &Filter) -> Result<(), FilterError> {
        filter::compile(f, &leaf).map(|_| ())
    }
    fn before_write<'a>(
        conn: &'a AsyncPgConnection,
        org: Uuid,
        _current: Option<&'a CallLogRow>,
        x: &'a CallLog,
        paths: &'a [&'static str],
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if paths.contains(&"customer") {
                require_live_customer(conn, org, id_in(&x.customer, "customers"), &x.customer)
                    .await?;
            }
            if paths.contains(&"disposition") && !x.disposition.is_empty() {
                crate::call_dispositions::require_active(conn, org, &x.disposition).await?;
            }
            Ok(())
        })
    }
}

crm_resource::standard_store!(
    CallLogs,
    call_logs,
    start_time,
    phone,
    CallLogRow,
    NewCallLog,
    CallLogChanges,
    leaf
);

crm_resource::standard_service! {
    crm_proto::core_v1::call_log_service_server::CallLogService, CallLogs => CallLogApi,
    "crm.core.v1.CallLogService", call_log;
    create_call_log(CreateCallLogRequest, call_log_id);
    get_call_log(GetCallLogRequest, |_| false);
    list_call_logs(ListCallLogsRequest, |_| false) -> ListCallLogsResponse.call_logs;
    update_call_log(UpdateCallLogRequest);
    delete_call_log(DeleteCallLogRequest);
    undelete_call_log(UndeleteCallLogRequest);
}
