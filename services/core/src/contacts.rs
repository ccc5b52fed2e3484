//! `crm.core.v1.ContactService`: people at a customer, at most one of them primary.

use crm_auth::{MethodPolicy, permission};
use crm_db::OrgId;
use crm_platform::ApiError;
use crm_platform::api::names::child_name;
use crm_proto::core_v1::{
    Contact, CreateContactRequest, DeleteContactRequest, GetContactRequest, ListContactsRequest,
    ListContactsResponse, UndeleteContactRequest, UpdateContactRequest,
};
use crm_resource::{BoxFuture, Field, Resource, Row};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::customers::require_live;
use crate::schema::contacts::{self, dsl as c};

/// The permission of every RPC.
#[must_use]
pub fn policy() -> MethodPolicy {
    ContactApi::policy(
        permission::CUSTOMERS_READ,
        permission::CUSTOMERS_WRITE,
        permission::CUSTOMERS_DELETE,
    )
}

/// The columns of `core.contacts` besides the standard ones.
#[derive(Debug, Clone, Default, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = contacts, treat_none_as_null = true)]
pub struct ContactFields {
    pub customer_id: Uuid,
    pub display_name: String,
    pub title: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub is_primary: bool,
    pub notes: String,
}

/// The contact resource.
#[derive(Debug)]
pub struct Contacts;

impl Resource for Contacts {
    type Proto = Contact;
    type Fields = ContactFields;
    type Table = contacts::table;
    const RESOURCE_TYPE: &'static str = "core.crm/Contact";
    const COLLECTION: &'static str = "contacts";
    const FIELD: &'static str = "contact";
    const FIELDS: &'static [Field<Self>] = &[
        Field::<Self>::updatable("customer", |i, p, f| {
            if let Some(id) = i.reference(&p.customer, "customers") {
                f.customer_id = id;
            }
        })
        .filter(|n, op, v| crm_resource::filter_reference!(c::customer_id, n, op, v, "customers")),
        Field::<Self>::updatable("display_name", |i, p, f| {
            f.display_name = i.required_text(&p.display_name, 200);
        })
        .filter(|n, op, v| crm_db::filter_text!(c::display_name, n, op, v)),
        Field::<Self>::updatable("title", |i, p, f| f.title = i.trimmed(&p.title, 200))
            .filter(|n, op, v| crm_db::filter_text!(c::title, n, op, v)),
        Field::<Self>::updatable("email", |i, p, f| f.email = i.email(&p.email))
            .filter(|n, op, v| crm_db::filter_text!(c::email.assume_not_null(), n, op, v)),
        Field::<Self>::updatable("phone", |i, p, f| f.phone = i.phone(&p.phone))
            .filter(|n, op, v| crm_db::filter_text!(c::phone.assume_not_null(), n, op, v)),
        Field::<Self>::updatable("primary", |_, p, f| f.is_primary = p.primary)
            .filter(|n, op, v| crm_resource::filter_bool!(c::is_primary, n, op, v)),
        Field::<Self>::updatable("notes", |i, p, f| f.notes = i.text(&p.notes, 10_000)),
    ];

    fn to_proto(org: Uuid, f: ContactFields) -> Contact {
        Contact {
            customer: child_name(org, "customers", f.customer_id),
            display_name: f.display_name,
            title: f.title,
            email: f.email.unwrap_or_default(),
            phone: f.phone.unwrap_or_default(),
            primary: f.is_primary,
            notes: f.notes,
            ..Contact::default()
        }
    }
    fn order_text(f: &ContactFields) -> &str {
        &f.display_name
    }
    fn before_write<'a>(
        conn: &'a AsyncPgConnection,
        org: OrgId,
        current: Option<&'a Row<ContactFields>>,
        next: &'a mut ContactFields,
        paths: &'a [&'static str],
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if paths.contains(&"customer") {
                require_live(conn, org, next.customer_id).await?;
            }
            if next.is_primary {
                // The previous primary gives way, in this transaction.
                let mut others = diesel::update(c::contacts)
                    .filter(c::organization_id.eq(org))
                    .filter(c::customer_id.eq(next.customer_id))
                    .filter(c::is_primary.eq(true))
                    .into_boxed();
                if let Some(this) = current {
                    others = others.filter(c::id.ne(this.std.id));
                }
                others
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
    table = contacts,
    time = create_time,
    text = display_name
);

crm_resource::standard_service! {
    service = "crm.core.v1.ContactService",
    server = crm_proto::core_v1::contact_service_server::ContactService,
    resource = Contacts,
    api = ContactApi,
    field = contact;
    create = create_contact(CreateContactRequest, id = contact_id);
    get = get_contact(GetContactRequest, full = |_| false);
    list = list_contacts(ListContactsRequest, full = |_| false) -> ListContactsResponse.contacts;
    update = update_contact(UpdateContactRequest);
    delete = delete_contact(DeleteContactRequest);
    undelete = undelete_contact(UndeleteContactRequest);
}
