//! `crm.core.v1.CallDispositionService`: the outcome codes an organization uses for calls.

use chrono::{DateTime, Utc};
use crm_auth::{MethodPolicy, permission};
use crm_db::OrgId;
use crm_platform::ApiError;
use crm_platform::api::validate;
use crm_proto::core_v1::{
    CallDisposition, CreateCallDispositionRequest, DeleteCallDispositionRequest,
    GetCallDispositionRequest, ListCallDispositionsRequest, ListCallDispositionsResponse,
    UndeleteCallDispositionRequest, UpdateCallDispositionRequest,
};
use crm_resource::{Field, Resource};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::schema::call_dispositions::{self, dsl as d};

/// The permission of every RPC.
#[must_use]
pub fn policy() -> MethodPolicy {
    let write = permission::CORE_SETTINGS_WRITE;
    CallDispositionApi::policy(permission::CUSTOMERS_READ, write, write)
}

/// The columns of `core.call_dispositions` besides the standard ones.
#[derive(Debug, Clone, Default, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = call_dispositions, treat_none_as_null = true)]
pub struct DispositionFields {
    pub code: String,
    pub display_name: String,
    pub description: String,
    pub active: bool,
}

/// The call disposition resource.
#[derive(Debug)]
pub struct CallDispositions;

impl Resource for CallDispositions {
    type Proto = CallDisposition;
    type Fields = DispositionFields;
    type Table = call_dispositions::table;
    const RESOURCE_TYPE: &'static str = "core.crm/CallDisposition";
    const COLLECTION: &'static str = "callDispositions";
    const FIELD: &'static str = "call_disposition";
    const FIELDS: &'static [Field<Self>] = &[
        Field::<Self>::create_only("code", |i, x, f| {
            if !validate::is_slug(&x.code) {
                let message = "lower-case letters, digits and '-', at most 40 characters";
                i.push("INVALID_CODE", message);
            }
            f.code.clone_from(&x.code);
        })
        .filter(|n, op, v| crm_db::filter_text!(d::code, n, op, v)),
        Field::<Self>::updatable("display_name", |i, x, f| {
            f.display_name = i.required_text(&x.display_name, 200);
        })
        .filter(|n, op, v| crm_db::filter_text!(d::display_name, n, op, v)),
        Field::<Self>::updatable("description", |i, x, f| {
            f.description = i.text(&x.description, 1_000);
        }),
        Field::<Self>::updatable("active", |_, x, f| f.active = x.active)
            .filter(|n, op, v| crm_resource::filter_bool!(d::active, n, op, v)),
    ];

    fn to_proto(_org: Uuid, f: DispositionFields) -> CallDisposition {
        CallDisposition {
            code: f.code,
            display_name: f.display_name,
            description: f.description,
            active: f.active,
            ..CallDisposition::default()
        }
    }
    fn order_text(f: &DispositionFields) -> &str {
        &f.display_name
    }
}

/// Fails unless `code` is one of the organization's live, active dispositions.
///
/// # Errors
/// FAILED_PRECONDITION naming the code.
pub async fn require_active(
    conn: &AsyncPgConnection,
    org: OrgId,
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
    table = call_dispositions,
    time = create_time,
    text = display_name
);

crm_resource::standard_service! {
    service = "crm.core.v1.CallDispositionService",
    server = crm_proto::core_v1::call_disposition_service_server::CallDispositionService,
    resource = CallDispositions,
    api = CallDispositionApi,
    field = call_disposition;
    create = create_call_disposition(CreateCallDispositionRequest, id = call_disposition_id);
    get = get_call_disposition(GetCallDispositionRequest, full = |_| false);
    list = list_call_dispositions(ListCallDispositionsRequest, full = |_| false)
        -> ListCallDispositionsResponse.call_dispositions;
    update = update_call_disposition(UpdateCallDispositionRequest);
    delete = delete_call_disposition(DeleteCallDispositionRequest);
    undelete = undelete_call_disposition(UndeleteCallDispositionRequest);
}
