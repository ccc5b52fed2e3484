//! `crm.core.v1.CustomerService`: the people and businesses an organization serves, with their
//! lifecycle (lead → prospect → active → inactive → churned) as a table of allowed moves.

pub mod lifecycle;

use crm_auth::{MethodPolicy, permission};
use crm_db::OrgId;
use crm_db::filter::{self, Op};
use crm_platform::ApiError;
use crm_platform::api::validate::{self, Violations};
use crm_proto::core_v1::{
    CreateCustomerRequest, Customer, CustomerKind, DeleteCustomerRequest, GetCustomerRequest,
    LifecycleStage, ListCustomersRequest, ListCustomersResponse, UndeleteCustomerRequest,
    UpdateCustomerRequest,
};
use crm_resource::{BoxFuture, Field, Input, Resource, Row, Store};
use diesel::prelude::*;
use diesel_async::AsyncPgConnection;
use uuid::Uuid;

use crate::schema::customers::{self, dsl as c};

/// The permission of every RPC.
#[must_use]
pub fn policy() -> MethodPolicy {
    CustomerApi::policy(
        permission::CUSTOMERS_READ,
        permission::CUSTOMERS_WRITE,
        permission::CUSTOMERS_DELETE,
    )
}

/// The columns of `core.customers` besides the standard ones.
#[derive(
    Debug, Clone, Default, Queryable, QueryableByName, Selectable, Insertable, AsChangeset,
)]
#[diesel(table_name = customers, treat_none_as_null = true)]
pub struct CustomerFields {
    pub display_name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub kind: i16,
    pub notes: String,
    pub lifecycle_stage: i16,
    pub source: String,
    pub tier: String,
    pub tags: Vec<String>,
    pub time_zone: String,
}

/// An optional slug (`source`, `tier`).
fn slug(i: &mut Input<'_>, value: &str) -> String {
    let message = "lower-case letters, digits and '-', at most 40 characters";
    i.slug(value, "INVALID_SLUG", message)
}

/// At most 20 distinct slugs.
fn set_tags(i: &mut Input<'_>, x: &Customer, f: &mut CustomerFields) {
    if x.tags.len() > 20 {
        i.push("TOO_MANY_TAGS", "at most 20 tags");
    }
    if x.tags.iter().any(|t| !validate::is_slug(t)) {
        let message = "tags are lower-case letters, digits and '-', at most 40 characters";
        i.push("INVALID_TAG", message);
    }
    let mut unique = x.tags.clone();
    unique.sort();
    unique.dedup();
    if unique.len() != x.tags.len() {
        i.push("DUPLICATE_TAG", "each tag once");
    }
    f.tags.clone_from(&x.tags);
}

fn stage(n: i16) -> LifecycleStage {
    LifecycleStage::try_from(i32::from(n)).unwrap_or(LifecycleStage::Unspecified)
}

/// The customer resource.
#[derive(Debug)]
pub struct Customers;

impl Resource for Customers {
    type Proto = Customer;
    type Fields = CustomerFields;
    type Table = customers::table;
    const RESOURCE_TYPE: &'static str = "core.crm/Customer";
    const COLLECTION: &'static str = "customers";
    const FIELD: &'static str = "customer";
    const FIELDS: &'static [Field<Self>] = &[
        Field::<Self>::updatable("display_name", |i, x, f| {
            f.display_name = i.required_text(&x.display_name, 200);
        })
        .filter(|n, op, v| crm_db::filter_text!(c::display_name, n, op, v)),
        Field::<Self>::updatable("email", |i, x, f| f.email = i.email(&x.email))
            .filter(|n, op, v| crm_db::filter_text!(c::email.assume_not_null(), n, op, v)),
        Field::<Self>::updatable("phone", |i, x, f| f.phone = i.phone(&x.phone))
            .filter(|n, op, v| crm_db::filter_text!(c::phone.assume_not_null(), n, op, v)),
        Field::<Self>::updatable("kind", |i, x, f| {
            if let Some(k) = i.enumeration::<CustomerKind>(x.kind) {
                f.kind = k;
            }
        })
        .filter(|n, op, v| {
            let number = filter::enum_number(v, "CUSTOMER_KIND_", CustomerKind::from_str_name)?;
            crm_db::filter_enum!(c::kind, n, op, number)
        }),
        Field::<Self>::updatable("notes", |i, x, f| f.notes = i.text(&x.notes, 10_000))
            .filter(|n, op, v| crm_db::filter_text!(c::notes, n, op, v)),
        Field::<Self>::updatable("lifecycle_stage", |i, x, f| {
            if let Some(s) = i.enumeration::<LifecycleStage>(x.lifecycle_stage) {
                f.lifecycle_stage = s;
            }
        })
        .filter(|n, op, v| {
            let number = filter::enum_number(v, "LIFECYCLE_STAGE_", LifecycleStage::from_str_name)?;
            crm_db::filter_enum!(c::lifecycle_stage, n, op, number)
        }),
        Field::<Self>::updatable("source", |i, x, f| f.source = slug(i, &x.source))
            .filter(|n, op, v| crm_db::filter_text!(c::source, n, op, v)),
        Field::<Self>::updatable("tier", |i, x, f| f.tier = slug(i, &x.tier))
            .filter(|n, op, v| crm_db::filter_text!(c::tier, n, op, v)),
        Field::<Self>::updatable("tags", set_tags).filter(|n, op, v| match op {
            // `tags:vip` (or `tags = vip`): the customer has the tag.
            Op::Has | Op::Eq => Ok(Box::new(c::tags.contains(vec![v.text().to_owned()]))),
            Op::Ne | Op::Lt | Op::Le | Op::Gt | Op::Ge => Err(filter::unsupported_op(n, op)),
        }),
        Field::<Self>::updatable("time_zone", |i, x, f| {
            if !x.time_zone.is_empty() && x.time_zone.parse::<chrono_tz::Tz>().is_err() {
                let message = "an IANA time zone such as America/Chicago";
                i.push("UNKNOWN_TIME_ZONE", message);
            }
            f.time_zone.clone_from(&x.time_zone);
        }),
    ];

    fn to_proto(_org: Uuid, f: CustomerFields) -> Customer {
        Customer {
            display_name: f.display_name,
            email: f.email.unwrap_or_default(),
            phone: f.phone.unwrap_or_default(),
            kind: i32::from(f.kind),
            notes: f.notes,
            lifecycle_stage: i32::from(f.lifecycle_stage),
            source: f.source,
            tier: f.tier,
            tags: f.tags,
            time_zone: f.time_zone,
            ..Customer::default()
        }
    }
    fn order_text(f: &CustomerFields) -> &str {
        &f.display_name
    }
    fn validate_new(v: &mut Violations, f: &CustomerFields) {
        let initial = stage(f.lifecycle_stage);
        if initial != LifecycleStage::Unspecified && !lifecycle::allowed_initially(initial) {
            let message = "a new customer is a lead, a prospect or active";
            v.push("customer.lifecycle_stage", "INVALID_INITIAL_STAGE", message);
        }
    }
    fn before_write<'a>(
        _conn: &'a AsyncPgConnection,
        _org: OrgId,
        current: Option<&'a Row<CustomerFields>>,
        next: &'a mut CustomerFields,
        paths: &'a [&'static str],
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            let Some(current) = current else {
                if next.lifecycle_stage == LifecycleStage::Unspecified as i16 {
                    next.lifecycle_stage = LifecycleStage::Lead as i16;
                }
                return Ok(());
            };
            let (from, to) = (
                stage(current.fields.lifecycle_stage),
                stage(next.lifecycle_stage),
            );
            if paths.contains(&"lifecycle_stage") && !lifecycle::allowed(from, to) {
                return Err(ApiError::FailedPrecondition {
                    reason: "LIFECYCLE_TRANSITION_NOT_ALLOWED",
                    message: format!(
                        "a customer cannot move from {} to {}",
                        from.as_str_name(),
                        to.as_str_name()
                    ),
                });
            }
            Ok(())
        })
    }
}

crm_resource::standard_store!(
    Customers,
    table = customers,
    time = create_time,
    text = display_name
);

crm_resource::standard_service! {
    service = "crm.core.v1.CustomerService",
    server = crm_proto::core_v1::customer_service_server::CustomerService,
    resource = Customers,
    api = CustomerApi,
    field = customer;
    create = create_customer(CreateCustomerRequest, id = customer_id);
    get = get_customer(GetCustomerRequest, full = |_| false);
    list = list_customers(ListCustomersRequest, full = |_| false) -> ListCustomersResponse.customers;
    update = update_customer(UpdateCustomerRequest);
    delete = delete_customer(DeleteCustomerRequest);
    undelete = undelete_customer(UndeleteCustomerRequest);
}

/// Fails unless customer `id` of `org` exists and is live (for resources that reference one).
///
/// # Errors
/// FAILED_PRECONDITION `CUSTOMER_NOT_FOUND` / `CUSTOMER_DELETED` naming the customer.
pub async fn require_live(conn: &AsyncPgConnection, org: OrgId, id: Uuid) -> Result<(), ApiError> {
    let name = crm_platform::api::names::child_name(org.uuid(), "customers", id);
    match Customers::find(conn, org, id, false).await? {
        Some(row) if !row.std.deleted() => Ok(()),
        Some(_) => Err(ApiError::FailedPrecondition {
            reason: "CUSTOMER_DELETED",
            message: format!("customer {name} is deleted"),
        }),
        None => Err(ApiError::FailedPrecondition {
            reason: "CUSTOMER_NOT_FOUND",
            message: format!("customer {name} does not exist"),
        }),
    }
}
