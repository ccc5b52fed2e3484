//! `crm.core.v1.ContactService`: people at a customer, at most one of them primary.

use chrono::{DateTime, Utc};
use crm_auth::{MethodPolicy, permission};
use crm_db::filter::{self, BoxedPredicate, Filter, FilterError, Op, Value};
use crm_platform::ApiError;
use crm_platform::api::names::child_name;
use crm_platform::api::time::{optional_timestamp, timestamp};
use crm_platform::api::validate::{self, Violations};
use crm_proto::core_v1::{
    Contact, CreateContactRequest, DeleteContactRequest, GetContactRequest, ListContactsRequest,
    ListContactsResponse, UndeleteContactRequest, UpdateContactRequest,
};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::schema::contacts::{self, dsl as c};
use crate::schema::customers::dsl as cu;
use crm_resource::id_in;
use crm_resource::{BoxFuture, Meta, Order, OrderField, Resource, reference};

const SERVICE: &str = "crm.core.v1.ContactService";

/// The permission of every RPC.
#[must_use]
pub fn policy() -> MethodPolicy {
    crm_resource::policy(
        SERVICE,
        &[
            ("CreateContact", permission::CUSTOMERS_WRITE),
            ("GetContact", permission::CUSTOMERS_READ),
            ("ListContacts", permission::CUSTOMERS_READ),
            ("UpdateContact", permission::CUSTOMERS_WRITE),
            ("DeleteContact", permission::CUSTOMERS_DELETE),
            ("UndeleteContact", permission::CUSTOMERS_DELETE),
        ],
    )
}

/// A row of `core.contacts`.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = contacts)]
pub struct ContactRow {
    pub organization_id: Uuid,
    pub id: Uuid,
    pub customer_id: Uuid,
    pub display_name: String,
    pub title: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub is_primary: bool,
    pub notes: String,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
    pub delete_time: Option<DateTime<Utc>>,
    pub purge_time: Option<DateTime<Utc>>,
    pub revision: i64,
    pub created_by: String,
    pub updated_by: String,
}

/// A contact to insert.
#[derive(Debug, Insertable)]
#[diesel(table_name = contacts)]
pub struct NewContact {
    organization_id: Uuid,
    id: Uuid,
    customer_id: Uuid,
    display_name: String,
    title: String,
    email: Option<String>,
    phone: Option<String>,
    is_primary: bool,
    notes: String,
    created_by: String,
    updated_by: String,
}

/// Changes to a contact; `None` leaves a column alone.
#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = contacts)]
pub struct ContactChanges {
    customer_id: Option<Uuid>,
    display_name: Option<String>,
    title: Option<String>,
    email: Option<Option<String>>,
    phone: Option<Option<String>>,
    is_primary: Option<bool>,
    notes: Option<String>,
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

impl NewContact {
    fn from_proto(org: Uuid, id: Uuid, p: &Contact, actor: &str) -> Self {
        Self {
            organization_id: org,
            id,
            customer_id: id_in(&p.customer, "customers"),
            display_name: p.display_name.trim().to_owned(),
            title: p.title.trim().to_owned(),
            email: non_empty(&p.email),
            phone: non_empty(&p.phone),
            is_primary: p.primary,
            notes: p.notes.clone(),
            created_by: actor.to_owned(),
            updated_by: actor.to_owned(),
        }
    }
}

impl ContactChanges {
    fn from_mask(p: &Contact, paths: &[&str]) -> Self {
        let mut ch = Self::default();
        for path in paths {
            match *path {
                "customer" => ch.customer_id = Some(id_in(&p.customer, "customers")),
                "display_name" => ch.display_name = Some(p.display_name.trim().to_owned()),
                "title" => ch.title = Some(p.title.trim().to_owned()),
                "email" => ch.email = Some(non_empty(&p.email)),
                "phone" => ch.phone = Some(non_empty(&p.phone)),
                "primary" => ch.is_primary = Some(p.primary),
                "notes" => ch.notes = Some(p.notes.clone()),
                _ => {}
            }
        }
        ch
    }
}

/// The contact resource.
#[derive(Debug)]
pub struct Contacts;

const FILTER_FIELDS: &[&str] = &[
    "customer",
    "display_name",
    "title",
    "email",
    "phone",
    "primary",
    "create_time",
    "update_time",
];

fn leaf(
    field: &str,
    op: Op,
    value: &Value,
) -> Result<BoxedPredicate<contacts::table>, FilterError> {
    match field {
        "customer" => {
            crm_resource::filter_reference!(c::customer_id, field, op, value, "customers")
        }
        "display_name" => crm_db::filter_text!(c::display_name, field, op, value),
        "title" => crm_db::filter_text!(c::title, field, op, value),
        "email" => crm_db::filter_text!(c::email.assume_not_null(), field, op, value),
        "phone" => crm_db::filter_text!(c::phone.assume_not_null(), field, op, value),
        "primary" => {
            let flag = crm_resource::store::bool_value(field, value)?;
            match op {
                Op::Eq => Ok(Box::new(c::is_primary.eq(flag))),
                Op::Ne => Ok(Box::new(c::is_primary.ne(flag))),
                Op::Lt | Op::Le | Op::Gt | Op::Ge | Op::Has => {
                    Err(filter::unsupported_op(field, op))
                }
            }
        }
        "create_time" => crm_db::filter_time!(c::create_time, field, op, value),
        "update_time" => crm_db::filter_time!(c::update_time, field, op, value),
        other => Err(filter::unknown_field(other, FILTER_FIELDS)),
    }
}

/// Fails unless the customer exists, is live, and is this organization's.
///
/// # Errors
/// FAILED_PRECONDITION naming the customer.
pub async fn require_live_customer(
    conn: &AsyncPgConnection,
    org: Uuid,
    id: Uuid,
    name: &str,
) -> Result<(), ApiError> {
    let deleted: Option<Option<DateTime<Utc>>> = cu::customers
        .filter(cu::organization_id.eq(org))
        .filter(cu::id.eq(id))
        .select(cu::delete_time)
        .first(&mut { conn })
        .await
        .optional()?;
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

impl Resource for Contacts {
    type Proto = Contact;
    type Row = ContactRow;
    const RESOURCE_TYPE: &'static str = "core.crm/Contact";
    const COLLECTION: &'static str = "contacts";
    const FIELD: &'static str = "contact";
    const UPDATABLE: &'static [&'static str] = &[
        "customer",
        "display_name",
        "title",
        "email",
        "phone",
        "primary",
        "notes",
    ];
    const OUTPUT_ONLY: &'static [&'static str] = crm_resource::STANDARD_OUTPUT_ONLY;

    fn name(p: &Contact) -> &str {
        &p.name
    }
    fn etag(p: &Contact) -> &str {
        &p.etag
    }
    fn meta(row: &ContactRow) -> Meta {
        Meta {
            revision: row.revision,
            deleted: row.delete_time.is_some(),
        }
    }
    fn sort_key(row: &ContactRow, field: OrderField) -> Vec<String> {
        let value = match field {
            OrderField::CreateTime => row.create_time.to_rfc3339(),
            OrderField::UpdateTime => row.update_time.to_rfc3339(),
            OrderField::DisplayName => row.display_name.clone(),
        };
        Order::key(value, row.id)
    }
    fn to_proto(row: ContactRow) -> Contact {
        let ContactRow {
            organization_id,
            id,
            customer_id,
            display_name,
            title,
            email,
            phone,
            is_primary,
            notes,
            create_time,
            update_time,
            delete_time,
            purge_time,
            revision,
            created_by,
            updated_by,
        } = row;
        Contact {
            name: child_name(organization_id, "contacts", id),
            customer: child_name(organization_id, "customers", customer_id),
            display_name,
            title,
            email: email.unwrap_or_default(),
            phone: phone.unwrap_or_default(),
            primary: is_primary,
            notes,
            create_time: Some(timestamp(create_time)),
            update_time: Some(timestamp(update_time)),
            delete_time: optional_timestamp(delete_time),
            purge_time: optional_timestamp(purge_time),
            etag: crm_db::etag::from_revision(revision),
            creator: created_by,
            last_modifier: updated_by,
        }
    }
    fn validate(v: &mut Violations, org: Option<Uuid>, p: &Contact, paths: &[&str]) {
        for path in paths {
            let field = format!("contact.{path}");
            match *path {
                "customer" => {
                    reference(v, org, &field, &p.customer, "customers");
                }
                "display_name" => validate::required_text(v, &field, &p.display_name, 200),
                "title" => validate::optional_text(v, &field, &p.title, 200),
                "email" => validate::optional_email(v, &field, &p.email),
                "phone" => validate::optional_phone(v, &field, &p.phone),
                "notes" => validate::optional_text(v, &field, &p.notes, 10_000),
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
        current: Option<&'a ContactRow>,
        p: &'a Contact,
        paths: &'a [&'static str],
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            let customer = if paths.contains(&"customer") {
                let id = id_in(&p.customer, "customers");
                require_live_customer(conn, org, id, &p.customer).await?;
                id
            } else {
                current.map_or(Uuid::nil(), |r| r.customer_id)
            };
            let primary = if paths.contains(&"primary") {
                p.primary
            } else {
                current.is_some_and(|r| r.is_primary)
            };
            if primary {
                // The previous primary gives way, in this transaction.
                let this = current.map_or(Uuid::nil(), |r| r.id);
                diesel::update(c::contacts)
                    .filter(c::organization_id.eq(org))
                    .filter(c::customer_id.eq(customer))
                    .filter(c::is_primary.eq(true))
                    .filter(c::id.ne(this))
                    .set((c::is_primary.eq(false), c::revision.eq(c::revision + 1)))
                    .execute(&mut { conn })
                    .await?;
            }
            Ok(())
        })
    }
}

crm_resource::standard_store!(
    Contacts,
    contacts,
    create_time,
    display_name,
    ContactRow,
    NewContact,
    ContactChanges,
    leaf
);

crm_resource::standard_service! {
    crm_proto::core_v1::contact_service_server::ContactService, Contacts => ContactApi,
    "crm.core.v1.ContactService", contact;
    create_contact(CreateContactRequest, contact_id);
    get_contact(GetContactRequest, |_| false);
    list_contacts(ListContactsRequest, |_| false) -> ListContactsResponse.contacts;
    update_contact(UpdateContactRequest);
    delete_contact(DeleteContactRequest);
    undelete_contact(UndeleteContactRequest);
}
