//! `crm.core.v1.CallDispositionService`: the outcome codes an organization uses for calls.

use chrono::{DateTime, Utc};
use crm_auth::{MethodPolicy, permission};
use crm_db::filter::{self, BoxedPredicate, Filter, FilterError, Op, Value};
use crm_platform::ApiError;
use crm_platform::api::names::child_name;
use crm_platform::api::time::{optional_timestamp, timestamp};
use crm_platform::api::validate::{self, Violations};
use crm_proto::core_v1::{
    CallDisposition, CreateCallDispositionRequest, DeleteCallDispositionRequest,
    GetCallDispositionRequest, ListCallDispositionsRequest, ListCallDispositionsResponse,
    UndeleteCallDispositionRequest, UpdateCallDispositionRequest,
};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::schema::call_dispositions::{self, dsl as d};
use crm_resource::{Meta, Order, OrderField, Resource};

const SERVICE: &str = "crm.core.v1.CallDispositionService";

/// The permission of every RPC.
#[must_use]
pub fn policy() -> MethodPolicy {
    crm_resource::policy(
        SERVICE,
        &[
            ("CreateCallDisposition", permission::CORE_SETTINGS_WRITE),
            ("GetCallDisposition", permission::CUSTOMERS_READ),
            ("ListCallDispositions", permission::CUSTOMERS_READ),
            ("UpdateCallDisposition", permission::CORE_SETTINGS_WRITE),
            ("DeleteCallDisposition", permission::CORE_SETTINGS_WRITE),
            ("UndeleteCallDisposition", permission::CORE_SETTINGS_WRITE),
        ],
    )
}

/// A row of `core.call_dispositions`.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = call_dispositions)]
pub struct DispositionRow {
    pub organization_id: Uuid,
    pub id: Uuid,
    pub code: String,
    pub display_name: String,
    pub description: String,
    pub active: bool,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
    pub delete_time: Option<DateTime<Utc>>,
    pub purge_time: Option<DateTime<Utc>>,
    pub revision: i64,
    pub created_by: String,
    pub updated_by: String,
}

/// A disposition to insert.
#[derive(Debug, Insertable)]
#[diesel(table_name = call_dispositions)]
pub struct NewDisposition {
    organization_id: Uuid,
    id: Uuid,
    code: String,
    display_name: String,
    description: String,
    active: bool,
    created_by: String,
    updated_by: String,
}

/// Changes to a disposition (its code is fixed).
#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = call_dispositions)]
pub struct DispositionChanges {
    display_name: Option<String>,
    description: Option<String>,
    active: Option<bool>,
}

impl NewDisposition {
    fn from_proto(org: Uuid, id: Uuid, x: &CallDisposition, actor: &str) -> Self {
        Self {
            organization_id: org,
            id,
            code: x.code.clone(),
            display_name: x.display_name.trim().to_owned(),
            description: x.description.clone(),
            active: x.active,
            created_by: actor.to_owned(),
            updated_by: actor.to_owned(),
        }
    }
}

impl DispositionChanges {
    fn from_mask(x: &CallDisposition, paths: &[&str]) -> Self {
        let mut ch = Self::default();
        for path in paths {
            match *path {
                "display_name" => ch.display_name = Some(x.display_name.trim().to_owned()),
                "description" => ch.description = Some(x.description.clone()),
                "active" => ch.active = Some(x.active),
                _ => {}
            }
        }
        ch
    }
}

/// The call disposition resource.
#[derive(Debug)]
pub struct CallDispositions;

const FILTER_FIELDS: &[&str] = &["code", "display_name", "active"];

fn leaf(
    field: &str,
    op: Op,
    value: &Value,
) -> Result<BoxedPredicate<call_dispositions::table>, FilterError> {
    match field {
        "code" => crm_db::filter_text!(d::code, field, op, value),
        "display_name" => crm_db::filter_text!(d::display_name, field, op, value),
        "active" => {
            let flag = crm_resource::store::bool_value(field, value)?;
            match op {
                Op::Eq => Ok(Box::new(d::active.eq(flag))),
                Op::Ne => Ok(Box::new(d::active.ne(flag))),
                Op::Lt | Op::Le | Op::Gt | Op::Ge | Op::Has => {
                    Err(filter::unsupported_op(field, op))
                }
            }
        }
        other => Err(filter::unknown_field(other, FILTER_FIELDS)),
    }
}

impl Resource for CallDispositions {
    type Proto = CallDisposition;
    type Row = DispositionRow;
    const RESOURCE_TYPE: &'static str = "core.crm/CallDisposition";
    const COLLECTION: &'static str = "callDispositions";
    const FIELD: &'static str = "call_disposition";
    const UPDATABLE: &'static [&'static str] = &["display_name", "description", "active"];
    const CREATE_ONLY: &'static [&'static str] = &["code"];
    const OUTPUT_ONLY: &'static [&'static str] = crm_resource::STANDARD_OUTPUT_ONLY;

    fn name(x: &CallDisposition) -> &str {
        &x.name
    }
    fn etag(x: &CallDisposition) -> &str {
        &x.etag
    }
    fn meta(row: &DispositionRow) -> Meta {
        Meta {
            revision: row.revision,
            deleted: row.delete_time.is_some(),
        }
    }
    fn sort_key(row: &DispositionRow, field: OrderField) -> Vec<String> {
        let value = match field {
            OrderField::CreateTime => row.create_time.to_rfc3339(),
            OrderField::UpdateTime => row.update_time.to_rfc3339(),
            OrderField::DisplayName => row.display_name.clone(),
        };
        Order::key(value, row.id)
    }
    fn to_proto(row: DispositionRow) -> CallDisposition {
        let DispositionRow {
            organization_id,
            id,
            code,
            display_name,
            description,
            active,
            create_time,
            update_time,
            delete_time,
            purge_time,
            revision,
            created_by,
            updated_by,
        } = row;
        CallDisposition {
            name: child_name(organization_id, "callDispositions", id),
            code,
            display_name,
            description,
            active,
            create_time: Some(timestamp(create_time)),
            update_time: Some(timestamp(update_time)),
            delete_time: optional_timestamp(delete_time),
            purge_time: optional_timestamp(purge_time),
            etag: crm_db::etag::from_revision(revision),
            creator: created_by,
            last_modifier: updated_by,
        }
    }
    fn validate(v: &mut Violations, _org: Option<Uuid>, x: &CallDisposition, paths: &[&str]) {
        for path in paths {
            let field = format!("call_disposition.{path}");
            match *path {
                "code" if !validate::is_slug(&x.code) => v.push(
                    field,
                    "INVALID_CODE",
                    "lower-case letters, digits and '-', at most 40 characters",
                ),
                "display_name" => validate::required_text(v, &field, &x.display_name, 200),
                "description" => validate::optional_text(v, &field, &x.description, 1_000),
                _ => {}
            }
        }
    }
    fn check_filter(f: &Filter) -> Result<(), FilterError> {
        filter::compile(f, &leaf).map(|_| ())
    }
}

/// Fails unless `code` is one of the organization's live, active dispositions.
///
/// # Errors
/// FAILED_PRECONDITION naming the code.
pub async fn require_active(
    conn: &AsyncPgConnection,
    org: Uuid,
    code: &str,
) -> Result<(), ApiError> {
    let found: Option<(bool, Option<DateTime<Utc>>)> = d::call_dispositions
        .filter(d::organization_id.eq(org))
        .filter(d::code.eq(code))
        .select((d::active, d::delete_time))
        .first(&mut { conn })
        .await
        .optional()?;
    match found {
        Some((true, None)) => Ok(()),
        Some(_) => Err(ApiError::FailedPrecondition {
            reason: "DISPOSITION_INACTIVE",
            message: format!("call disposition {code:?} is not active"),
        }),
        None => Err(ApiError::FailedPrecondition {
            reason: "DISPOSITION_NOT_FOUND",
            message: format!("the organization has no call disposition {code:?}"),
        }),
    }
}

crm_resource::standard_store!(
    CallDispositions,
    call_dispositions,
    create_time,
    display_name,
    DispositionRow,
    NewDisposition,
    DispositionChanges,
    leaf
);

crm_resource::standard_service! {
    crm_proto::core_v1::call_disposition_service_server::CallDispositionService, CallDispositions => CallDispositionApi,
    "crm.core.v1.CallDispositionService", call_disposition;
    create_call_disposition(CreateCallDispositionRequest, call_disposition_id);
    get_call_disposition(GetCallDispositionRequest, |_| false);
    list_call_dispositions(ListCallDispositionsRequest, |_| false)
        -> ListCallDispositionsResponse.call_dispositions;
    update_call_disposition(UpdateCallDispositionRequest);
    delete_call_disposition(DeleteCallDispositionRequest);
    undelete_call_disposition(UndeleteCallDispositionRequest);
}
