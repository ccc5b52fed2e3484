//! Queries of `core.customers`. Every function runs inside the caller's tenant transaction and
//! also filters on `organization_id` explicitly (the index leads with it; RLS is the second wall).

use chrono::{DateTime, Utc};
use crm_db::filter::{self, BoxedPredicate, Filter, FilterError, Op, Value};
use crm_platform::ApiError;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::model::{CustomerChanges, CustomerRow, NewCustomer};
use crate::schema::customers::{self, dsl as c};

/// Inserts a customer.
///
/// # Errors
/// The database error (a duplicate id is a unique violation).
pub async fn insert(conn: &AsyncPgConnection, new: &NewCustomer<'_>) -> QueryResult<CustomerRow> {
    diesel::insert_into(customers::table)
        .values(new)
        .returning(CustomerRow::as_returning())
        .get_result(&mut { conn })
        .await
}

/// Reads one customer, locking it for the rest of the transaction when `for_update`.
///
/// # Errors
/// The database error.
pub async fn find(
    conn: &AsyncPgConnection,
    org: Uuid,
    id: Uuid,
    for_update: bool,
) -> QueryResult<Option<CustomerRow>> {
    let query = customers::table
        .filter(c::organization_id.eq(org))
        .filter(c::id.eq(id))
        .select(CustomerRow::as_select());
    if for_update {
        query.for_update().first(&mut { conn }).await.optional()
    } else {
        query.first(&mut { conn }).await.optional()
    }
}

/// Applies `changes`, bumps the revision and stamps the modifier.
///
/// # Errors
/// The database error.
pub async fn update(
    conn: &AsyncPgConnection,
    org: Uuid,
    id: Uuid,
    changes: &CustomerChanges,
    actor: &str,
) -> QueryResult<CustomerRow> {
    diesel::update(customers::table)
        .filter(c::organization_id.eq(org))
        .filter(c::id.eq(id))
        .set((
            changes,
            c::revision.eq(c::revision + 1),
            c::update_time.eq(diesel::dsl::now),
            c::updated_by.eq(actor),
        ))
        .returning(CustomerRow::as_returning())
        .get_result(&mut { conn })
        .await
}

/// Soft-deletes (`purge_after` = Some) or restores (`None`) a customer.
///
/// # Errors
/// The database error.
pub async fn set_deleted(
    conn: &AsyncPgConnection,
    org: Uuid,
    id: Uuid,
    purge_after: Option<chrono::Duration>,
    actor: &str,
) -> QueryResult<CustomerRow> {
    let now = Utc::now();
    let (delete_time, purge_time) = match purge_after {
        Some(d) => (Some(now), Some(now + d)),
        None => (None, None),
    };
    diesel::update(customers::table)
        .filter(c::organization_id.eq(org))
        .filter(c::id.eq(id))
        .set((
            c::delete_time.eq(delete_time),
            c::purge_time.eq(purge_time),
            c::revision.eq(c::revision + 1),
            c::update_time.eq(now),
            c::updated_by.eq(actor),
        ))
        .returning(CustomerRow::as_returning())
        .get_result(&mut { conn })
        .await
}

pub use crm_resource::{After, ListQuery, Order, OrderField};

/// Fields a filter may name.
pub const FILTER_FIELDS: &[&str] = &[
    "display_name",
    "email",
    "phone",
    "kind",
    "notes",
    "lifecycle_stage",
    "source",
    "tier",
    "tags",
    "create_time",
    "update_time",
];

/// The page-token key of a customer under `order`.
#[must_use]
pub fn key_of(order: Order, row: &CustomerRow) -> Vec<String> {
    let value = match order.field {
        OrderField::CreateTime => row.create_time.to_rfc3339(),
        OrderField::UpdateTime => row.update_time.to_rfc3339(),
        OrderField::DisplayName => row.display_name.clone(),
    };
    Order::key(value, row.id)
}

fn leaf(
    field: &str,
    op: Op,
    value: &Value,
) -> Result<BoxedPredicate<customers::table>, FilterError> {
    match field {
        "display_name" => crm_db::filter_text!(c::display_name, field, op, value),
        "notes" => crm_db::filter_text!(c::notes, field, op, value),
        "email" => crm_db::filter_text!(c::email.assume_not_null(), field, op, value),
        "phone" => crm_db::filter_text!(c::phone.assume_not_null(), field, op, value),
        "kind" => crm_db::filter_enum!(
            c::kind,
            field,
            op,
            crm_db::filter::enum_number(
                value,
                "CUSTOMER_KIND_",
                crm_proto::core_v1::CustomerKind::from_str_name
            )?
        ),
        "lifecycle_stage" => {
            crm_db::filter_enum!(
                c::lifecycle_stage,
                field,
                op,
                crm_db::filter::enum_number(
                    value,
                    "LIFECYCLE_STAGE_",
                    crm_proto::core_v1::LifecycleStage::from_str_name
                )?
            )
        }
        "source" => crm_db::filter_text!(c::source, field, op, value),
        "tier" => crm_db::filter_text!(c::tier, field, op, value),
        "tags" => match op {
            // `tags:vip` (or `tags = vip`): the customer has the tag.
            Op::Has | Op::Eq => Ok(Box::new(c::tags.contains(vec![value.text().to_owned()]))),
            Op::Ne | Op::Lt | Op::Le | Op::Gt | Op::Ge => Err(filter::unsupported_op(field, op)),
        },
        "create_time" => crm_db::filter_time!(c::create_time, field, op, value),
        "update_time" => crm_db::filter_time!(c::update_time, field, op, value),
        other => Err(filter::unknown_field(other, FILTER_FIELDS)),
    }
}

/// Checks a filter against the allow-list without running it.
///
/// # Errors
/// The filter's first problem.
pub fn check_filter(f: &Filter) -> Result<(), FilterError> {
    filter::compile(f, &leaf).map(|_| ())
}

/// Runs a List query.
///
/// # Errors
/// The database error, or a filter error.
pub async fn list(
    conn: &AsyncPgConnection,
    org: Uuid,
    q: &ListQuery,
) -> Result<Vec<CustomerRow>, crm_platform::ApiError> {
    let mut query = customers::table
        .filter(c::organization_id.eq(org))
        .select(CustomerRow::as_select())
        .limit(q.limit)
        .into_boxed();
    if !q.show_deleted {
        query = query.filter(c::delete_time.is_null());
    }
    if let Some(f) = &q.filter {
        query = query.filter(filter::compile(f, &leaf)?);
    }
    let query = crm_resource::keyset_page!(query, customers, create_time, display_name, q);
    Ok(query.load(&mut { conn }).await?)
}

/// Fails unless customer `id` of `org` exists and is live (for resources that reference one).
///
/// # Errors
/// FAILED_PRECONDITION `CUSTOMER_NOT_FOUND` / `CUSTOMER_DELETED` naming the customer.
pub async fn require_live(conn: &AsyncPgConnection, org: Uuid, id: Uuid) -> Result<(), ApiError> {
    let deleted: Option<Option<DateTime<Utc>>> = c::customers
        .filter(c::organization_id.eq(org))
        .filter(c::id.eq(id))
        .select(c::delete_time)
        .first(&mut { conn })
        .await
        .optional()?;
    let name = crm_platform::api::names::child_name(org, "customers", id);
    match deleted {
        Some(None) => Ok(()),
        Some(Some(_)) => Err(ApiError::FailedPrecondition {
            reason: "CUSTOMER_DELETED",
            message: format!("customer {name} is deleted"),
        }),
        None => Err(ApiError::FailedPrecondition {
            reason: "CUSTOMER_NOT_FOUND",
            message: format!("customer {name} does not exist"),
        }),
    }
}
