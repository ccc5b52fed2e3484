//! The standard methods (AIP-131 to 135 and 164) of every service's resources, written once.
//!
//! A resource describes itself with [`Resource`] (its proto, row, fields, validation and the
//! checks its writes need) and gets its queries from [`standard_store!`](crate::standard_store)
//! and its handlers from [`standard_service!`](crate::standard_service). Every handler: principal
//! → validate everything (all violations at once) → the name's organization against the token →
//! one tenant transaction (idempotent for writes, detached from the client) with the row change,
//! the outbox event and the audit entry → response. The steps inside that transaction
//! ([`create_in`], [`update_in`], [`set_deleted_in`], [`changed_in`], with [`lock`]) also run inside a custom
//! method's own transaction. What differs between services comes in through a [`Context`].
//!
//! A new resource (see `services/core/src/contacts.rs`, about 140 lines):
//! 1. a migration creating its table with the standard columns ([`Standard`]), RLS policies and
//!    grants, and its `diesel::table!`;
//! 2. a `Fields` struct of its own columns deriving `Queryable`, `Selectable`, `Insertable` and
//!    `AsChangeset` (with `treat_none_as_null`);
//! 3. `impl Resource`: the message, the `FIELDS` (each field's validation through [`Input`],
//!    whether it is updatable, create-only, output-only or redacted, its filter), `to_proto` for
//!    its own fields, and its rules in `before_write`;
//! 4. [`standard_store!`](crate::standard_store) and
//!    [`standard_service!`](crate::standard_service);
//! 5. the service registered with its policy, and a fixture in the conformance suite.

pub mod audit;
pub mod events;
pub mod input;
pub mod list;
pub mod schema;
pub mod store;

/// The crates the macros expand to, so a service needs no direct dependency for them.
#[doc(hidden)]
pub mod deps {
    pub use {chrono, crm_auth, crm_db, crm_platform, diesel, diesel_async, tonic, uuid};
}

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use crm_auth::Principal;
use crm_auth::layer::principal_of;
use crm_db::filter::{BoxedPredicate, Filter, FilterError, Op, Value as FilterValue};
use crm_db::outbox::{self, NewEvent};
use crm_db::page::PageTokens;
use crm_db::{DbPool, OrgId};
use crm_platform::ApiError;
use crm_platform::api::names::child_name;
use crm_platform::api::time::{optional_timestamp, timestamp};
use crm_platform::api::validate::{self, Violations};
use crm_platform::api::{mask, names};
use crm_platform::error::etag_error;
use crm_platform::layers::Deadline;
use crm_platform::mutation::{self, IdempotencyKey};
use crm_proto::common_v1::ResourceChanged;
use crm_proto::{StandardFields, StandardResource};
use diesel::{Queryable, QueryableByName};
use diesel_async::AsyncPgConnection;
use prost::Message;
use tokio::sync::Notify;
use tonic::Request;
use uuid::Uuid;

pub use self::input::Input;
pub use self::list::{After, ListQuery, Order, OrderField};
use crate::audit::{Action, Entry};

/// What the engine needs from the service it runs in.
#[derive(Clone)]
pub struct Context {
    /// Pool connected as the service's app role, its schema first on `search_path`.
    pub pool: DbPool,
    /// Signs List page tokens.
    pub page_tokens: PageTokens,
    /// `ErrorInfo.domain` of the service's errors, e.g. `core.crm`.
    pub domain: &'static str,
    /// Woken after every commit that wrote events, so event streams deliver without polling.
    pub events_written: Arc<Notify>,
    /// What the service's resources reach other services with (its clients), for
    /// [`Resource::check_remote`]; `()` when it calls none.
    pub peers: Arc<dyn std::any::Any + Send + Sync>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// The service's peers of type `P` (see [`Context::peers`]).
    ///
    /// # Errors
    /// INTERNAL when the service was built without them.
    pub fn peers<P: std::any::Any + Send + Sync>(&self) -> Result<&P, ApiError> {
        self.peers
            .downcast_ref::<P>()
            .ok_or_else(|| ApiError::Internal("the service was built without its peers".into()))
    }

    /// Maps an error of this service to a status.
    #[must_use]
    pub fn status(&self, e: ApiError) -> tonic::Status {
        e.into_status(self.domain)
    }

    /// Runs `write` (a mutation) detached from the caller within its deadline, then wakes the
    /// event streams.
    ///
    /// # Errors
    /// The write's error, DEADLINE_EXCEEDED.
    pub async fn commit<T: Send + 'static>(
        &self,
        deadline: Option<Deadline>,
        write: impl Future<Output = Result<T, ApiError>> + Send + 'static,
    ) -> Result<T, ApiError> {
        let out = mutation::detached(deadline, write).await?;
        self.events_written.notify_waiters();
        Ok(out)
    }
}

/// The output-only fields every standard resource has.
pub const STANDARD_OUTPUT_ONLY: &[&str] = &[
    "name",
    "create_time",
    "update_time",
    "delete_time",
    "purge_time",
    "etag",
    "creator",
    "last_modifier",
];

/// A boxed future borrowing the transaction's connection.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The standard columns every resource table has, read in this order by the store (and by
/// name from raw SQL such as full-text search).
#[derive(Debug, Clone, Queryable, QueryableByName)]
pub struct Standard {
    /// The tenant.
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub organization_id: OrgId,
    /// The resource's id.
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub id: Uuid,
    /// Creation.
    #[diesel(sql_type = diesel::sql_types::Timestamptz)]
    pub create_time: DateTime<Utc>,
    /// Last change.
    #[diesel(sql_type = diesel::sql_types::Timestamptz)]
    pub update_time: DateTime<Utc>,
    /// Soft deletion.
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Timestamptz>)]
    pub delete_time: Option<DateTime<Utc>>,
    /// When a soft-deleted row is removed for good.
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Timestamptz>)]
    pub purge_time: Option<DateTime<Utc>>,
    /// Bumped by every change (the etag's source).
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub revision: i64,
    /// Subject that created the row.
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub created_by: String,
    /// Subject that changed it last.
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub updated_by: String,
}

impl Standard {
    /// Whether the row is soft-deleted.
    #[must_use]
    pub fn deleted(&self) -> bool {
        self.delete_time.is_some()
    }
}

/// A row of a standard resource: the standard columns and the resource's own.
#[derive(Debug, Clone)]
pub struct Row<F> {
    /// The standard columns.
    pub std: Standard,
    /// The resource's own columns.
    pub fields: F,
}

impl<F> Row<F> {
    /// A row from the standard columns and the resource's, as the store selects them.
    #[must_use]
    pub fn from_pair((std, fields): (Standard, F)) -> Self {
        Self { std, fields }
    }
}

/// The part of an organization a caller sees of a resource, when not all of it: a filter ANDed
/// to every read of the resource (in the query), and the user the transaction names in
/// `app.user_id` for the restrictive row-level-security policy behind it (the second wall).
#[derive(Debug, Clone)]
pub struct Scope {
    /// Over the resource's filter fields (usually a filter-only one).
    pub filter: Filter,
    /// The caller, as `app.user_id`.
    pub viewer: Uuid,
}

/// How a field of the API message may be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Set on create, changed by updates that name it.
    Updatable,
    /// Set on create, never changed (a mask naming it is refused).
    CreateOnly,
    /// Computed by the service (a mask naming it is ignored).
    OutputOnly,
    /// Not a field of the message, only a name List filters on (a part of one, `locality`).
    FilterOnly,
}

/// A filter leaf over table `T`: the field's name as the caller wrote it, the operator and the
/// value.
pub type Leaf<T> = fn(&str, Op, &FilterValue) -> Result<BoxedPredicate<T>, FilterError>;

/// How one field of the API message is written: validated and converted into the resource's
/// columns (`set`), whether it is redacted, and how List filters on it.
pub struct Field<R: Resource> {
    /// The field's name in the API message (the update-mask path).
    pub path: &'static str,
    /// Who writes it.
    pub access: Access,
    /// Never shown in audit entries, events or BASIC views.
    pub redacted: bool,
    /// Validates the field of the message (recording violations under `<resource>.<path>`) and
    /// writes it into the columns.
    pub set: fn(&mut Input<'_>, &R::Proto, &mut R::Fields),
    /// The filter on this field, if List may filter on it.
    pub filter: Option<Leaf<R::Table>>,
}

impl<R: Resource> Field<R> {
    /// An updatable field.
    #[must_use]
    pub const fn updatable(
        path: &'static str,
        set: fn(&mut Input<'_>, &R::Proto, &mut R::Fields),
    ) -> Self {
        Self {
            path,
            access: Access::Updatable,
            redacted: false,
            set,
            filter: None,
        }
    }

    /// A field set on create only.
    #[must_use]
    pub const fn create_only(
        path: &'static str,
        set: fn(&mut Input<'_>, &R::Proto, &mut R::Fields),
    ) -> Self {
        Self {
            access: Access::CreateOnly,
            ..Self::updatable(path, set)
        }
    }

    /// An output-only field (declared for its filter).
    #[must_use]
    pub const fn output(path: &'static str) -> Self {
        Self {
            access: Access::OutputOnly,
            ..Self::updatable(path, |_, _, _| {})
        }
    }

    /// A name List filters on that is not a field of the message.
    #[must_use]
    pub const fn filter_only(path: &'static str, leaf: Leaf<R::Table>) -> Self {
        Self {
            access: Access::FilterOnly,
            filter: Some(leaf),
            ..Self::updatable(path, |_, _, _| {})
        }
    }

    /// The same field, filterable with `leaf`.
    #[must_use]
    pub const fn filter(self, leaf: Leaf<R::Table>) -> Self {
        Self {
            filter: Some(leaf),
            ..self
        }
    }

    /// The same field, redacted.
    #[must_use]
    pub const fn redacted(self) -> Self {
        Self {
            redacted: true,
            ..self
        }
    }
}

/// A resource with the standard methods, declared once: its message, its columns, its fields
/// (how each is validated, written, redacted and filtered) and the rules its writes keep. The
/// engine derives the update-mask handling, the filter allow-list, the order keys, the names,
/// etags and standard fields.
pub trait Resource: Send + Sync + Sized + 'static {
    /// The API message.
    type Proto: Message + prost::Name + StandardResource + Default + Clone + Send + Sync + 'static;
    /// The resource's own columns (every column but the standard ones).
    type Fields: Clone + Default + Send + Sync + 'static;
    /// The diesel table.
    type Table: Send + Sync + 'static;

    /// `ErrorInfo` resource type, e.g. `core.crm/Contact`.
    const RESOURCE_TYPE: &'static str;
    /// Collection segment of names, e.g. `contacts`.
    const COLLECTION: &'static str;
    /// The request field holding the resource, e.g. `contact` (violations are named under it).
    const FIELD: &'static str;
    /// The fields of the message besides the standard ones.
    const FIELDS: &'static [Field<Self>];
    /// The permission the FULL view (the redacted fields) needs beyond reading.
    const FULL_VIEW_PERMISSION: Option<&'static str> = None;
    /// How long a soft-deleted resource can be undeleted.
    const RETENTION_DAYS: i64 = 30;
    /// The text field List can order by.
    const TEXT_ORDER: &'static str = "display_name";
    /// The time field List orders by by default.
    const TIME_ORDER: &'static str = "create_time";
    /// Whether the default order is newest first.
    const DEFAULT_DESC: bool = false;

    /// The message's own fields from the columns (the engine sets the standard ones).
    fn to_proto(org: Uuid, fields: Self::Fields) -> Self::Proto;
    /// The value of the text order field.
    fn order_text(fields: &Self::Fields) -> &str;
    /// The value of the time order field, when it is not `create_time`.
    fn order_time(row: &Row<Self::Fields>) -> DateTime<Utc> {
        row.std.create_time
    }
    /// Validates a new resource as a whole (rules across fields, or that hold only at
    /// creation), after its fields were read into `fields`.
    fn validate_new(_v: &mut Violations, _fields: &Self::Fields) {}
    /// What `principal` may see of the resource, when less than its organization's (see
    /// [`Scope`]).
    fn scope(_principal: &Principal) -> Option<Scope> {
        None
    }
    /// The rows a write derives from the resource's, in its transaction, after the row was
    /// written (`before` is the row before the write, `None` on create): a work order's
    /// bookings, the first step of its history.
    fn after_write<'a>(
        _conn: &'a AsyncPgConnection,
        _w: Write<'a>,
        _before: Option<&'a Row<Self::Fields>>,
        _after: &'a Row<Self::Fields>,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async { Ok(()) })
    }
    /// Whether the resource may be deleted (`delete`) or undeleted as it stands.
    ///
    /// # Errors
    /// FAILED_PRECONDITION naming the rule (a recorded manifest is final).
    fn check_deletion(_current: &Row<Self::Fields>, _delete: bool) -> Result<(), ApiError> {
        Ok(())
    }
    /// The checks of a write against other services, before its transaction opens (so no
    /// connection is held across a remote call): the references `paths` name in `fields` exist
    /// there, asked with the caller's credentials, trace context and remaining deadline.
    fn check_remote<'a>(
        _ctx: &'a Context,
        _call: &'a Call,
        _fields: &'a Self::Fields,
        _paths: &'a [&'static str],
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async { Ok(()) })
    }
    /// The rules of a write, in its transaction, before the row is written: referenced
    /// resources exist, a state change is allowed, derived columns are set in `next`, another
    /// row must give way. `current` is `None` on create; `paths` are the fields written.
    fn before_write<'a>(
        _conn: &'a AsyncPgConnection,
        _org: OrgId,
        _current: Option<&'a Row<Self::Fields>>,
        _next: &'a mut Self::Fields,
        _paths: &'a [&'static str],
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async { Ok(()) })
    }
}

fn paths_of<R: Resource>(access: &[Access]) -> Vec<&'static str> {
    R::FIELDS
        .iter()
        .filter(|f| access.contains(&f.access))
        .map(|f| f.path)
        .collect()
}

/// The fields an update may name.
#[must_use]
pub fn updatable<R: Resource>() -> Vec<&'static str> {
    paths_of::<R>(&[Access::Updatable])
}

/// Every field a create sets.
#[must_use]
pub fn create_fields<R: Resource>() -> Vec<&'static str> {
    paths_of::<R>(&[Access::Updatable, Access::CreateOnly])
}

/// The fields an update mask may name without effect.
#[must_use]
pub fn output_only<R: Resource>() -> Vec<&'static str> {
    let mut out = STANDARD_OUTPUT_ONLY.to_vec();
    out.extend(paths_of::<R>(&[Access::OutputOnly]));
    out
}

/// The redacted fields.
#[must_use]
pub fn redacted<R: Resource>() -> Vec<&'static str> {
    R::FIELDS
        .iter()
        .filter(|f| f.redacted)
        .map(|f| f.path)
        .collect()
}

/// The fields List may filter on, besides `create_time` and `update_time`.
#[must_use]
pub fn filter_fields<R: Resource>() -> Vec<&'static str> {
    R::FIELDS
        .iter()
        .filter(|f| f.filter.is_some())
        .map(|f| f.path)
        .collect()
}

/// The filter leaf of `field` of `R`, or the allow-list error.
///
/// # Errors
/// An unknown field.
pub fn field_leaf<R: Resource>(field: &str) -> Result<Leaf<R::Table>, FilterError> {
    R::FIELDS
        .iter()
        .find(|f| f.path == field)
        .and_then(|f| f.filter)
        .ok_or_else(|| {
            let mut allowed = filter_fields::<R>();
            allowed.extend(["create_time", "update_time"]);
            crm_db::filter::unknown_field(field, &allowed)
        })
}

/// Validates the fields of `p` named in `paths` and writes them into `into`; `org` is the
/// organization of the request, when it parsed, for checking references.
pub fn input<R: Resource>(
    v: &mut Violations,
    org: Option<Uuid>,
    p: &R::Proto,
    paths: &[&str],
    into: &mut R::Fields,
) {
    for field in R::FIELDS.iter().filter(|f| paths.contains(&f.path)) {
        let mut i = Input::new(v, org, format!("{}.{}", R::FIELD, field.path));
        (field.set)(&mut i, p, into);
    }
}

/// The API message of a row: the resource's fields and the standard ones.
#[must_use]
pub fn to_proto<R: Resource>(row: Row<R::Fields>) -> R::Proto {
    let Row { std, fields } = row;
    let org = std.organization_id.uuid();
    let mut p = R::to_proto(org, fields);
    p.set_standard(StandardFields {
        name: child_name(org, R::COLLECTION, std.id),
        create_time: Some(timestamp(std.create_time)),
        update_time: Some(timestamp(std.update_time)),
        delete_time: optional_timestamp(std.delete_time),
        purge_time: optional_timestamp(std.purge_time),
        etag: crm_db::etag::from_revision(std.revision),
        creator: std.created_by,
        last_modifier: std.updated_by,
    });
    p
}

/// Removes the redacted fields (what a BASIC read must not show): each is reset to its
/// default through the message's descriptor.
pub fn redact<R: Resource>(p: &mut R::Proto) {
    let fields = redacted::<R>();
    if fields.is_empty() {
        return;
    }
    if let Some(cleared) = crm_proto::json::clear_fields(p, &fields) {
        *p = cleared;
    }
}

/// The page-token key of a row under `field` (its value, then the id).
#[must_use]
pub fn sort_key<R: Resource>(row: &Row<R::Fields>, field: OrderField) -> Vec<String> {
    let value = match field {
        OrderField::CreateTime => R::order_time(row).to_rfc3339(),
        OrderField::UpdateTime => row.std.update_time.to_rfc3339(),
        OrderField::DisplayName => R::order_text(&row.fields).to_owned(),
    };
    Order::key(value, row.std.id)
}

/// The queries of a standard resource, generated by [`standard_store!`](crate::standard_store).
pub trait Store: Resource {
    /// Inserts `fields` as `id`.
    fn insert<'a>(
        conn: &'a AsyncPgConnection,
        org: OrgId,
        id: Uuid,
        fields: &'a Self::Fields,
        actor: &'a str,
    ) -> BoxFuture<'a, Result<Row<Self::Fields>, ApiError>>;
    /// Reads one row, locking it for the transaction when `lock`.
    fn find(
        conn: &AsyncPgConnection,
        org: OrgId,
        id: Uuid,
        lock: bool,
    ) -> BoxFuture<'_, Result<Option<Row<Self::Fields>>, ApiError>> {
        Self::find_in(conn, org, id, lock, None)
    }
    /// Reads one row if it also matches `scope` (see [`Resource::scope`]), locking it when
    /// `lock`.
    fn find_in<'a>(
        conn: &'a AsyncPgConnection,
        org: OrgId,
        id: Uuid,
        lock: bool,
        scope: Option<&'a Filter>,
    ) -> BoxFuture<'a, Result<Option<Row<Self::Fields>>, ApiError>>;
    /// Writes `fields`, bumps the revision, stamps the modifier.
    fn update<'a>(
        conn: &'a AsyncPgConnection,
        org: OrgId,
        id: Uuid,
        fields: &'a Self::Fields,
        actor: &'a str,
    ) -> BoxFuture<'a, Result<Row<Self::Fields>, ApiError>>;
    /// Soft-deletes (`purge_after` set) or restores.
    fn set_deleted<'a>(
        conn: &'a AsyncPgConnection,
        org: OrgId,
        id: Uuid,
        purge_after: Option<chrono::Duration>,
        actor: &'a str,
    ) -> BoxFuture<'a, Result<Row<Self::Fields>, ApiError>>;
    /// Bumps the revision after a change to the resource's dependent rows (a new reading).
    fn touch<'a>(
        conn: &'a AsyncPgConnection,
        org: OrgId,
        id: Uuid,
        actor: &'a str,
    ) -> BoxFuture<'a, Result<Row<Self::Fields>, ApiError>>;
    /// Checks a List filter against the allow-list.
    ///
    /// # Errors
    /// The filter's first problem.
    fn check_filter(f: &Filter) -> Result<(), FilterError>;
    /// Runs a List query.
    fn list<'a>(
        conn: &'a AsyncPgConnection,
        org: OrgId,
        q: &'a ListQuery,
    ) -> BoxFuture<'a, Result<Vec<Row<Self::Fields>>, ApiError>>;
}

/// NOT_FOUND for `name` of resource `R`.
pub fn not_found<R: Resource>(name: &str) -> ApiError {
    ApiError::NotFound {
        resource_type: R::RESOURCE_TYPE,
        name: name.to_owned(),
    }
}

/// An RPC's name from its handler's (`create_contact` → `CreateContact`).
#[must_use]
pub fn camel(rpc: &str) -> String {
    rpc.split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// Who is calling, the deadline, and the RPC (for the audit log).
#[derive(Debug, Clone)]
pub struct Call {
    /// The verified caller.
    pub principal: std::sync::Arc<Principal>,
    /// The call's deadline.
    pub deadline: Option<Deadline>,
    /// `crm.core.v1.ContactService/CreateContact`.
    pub method: String,
    /// What calls to other services carry on (credentials, request id, deadline).
    pub outbound: crm_platform::client::CallContext,
}

impl Call {
    /// The call context of `req` to `service`'s `rpc` (snake case, as the handler is named).
    ///
    /// # Errors
    /// UNAUTHENTICATED without a principal.
    pub fn of<T>(req: &Request<T>, service: &str, rpc: &str) -> Result<Self, tonic::Status> {
        let principal = principal_of(req)?;
        Ok(Self {
            principal,
            deadline: req.extensions().get::<Deadline>().copied(),
            method: format!("{service}/{}", camel(rpc)),
            outbound: crm_platform::client::CallContext::of(req),
        })
    }

    /// The subject recorded as creator/modifier.
    #[must_use]
    pub fn actor(&self) -> &str {
        &self.principal.subject
    }
}

/// A validated organization-scoped name, or the violation already recorded.
pub fn parse_name<R: Resource>(
    v: &mut Violations,
    name: &str,
    field: &str,
) -> Option<(Uuid, Uuid)> {
    names::parse_child(name, R::COLLECTION, field)
        .map_err(|e| v.absorb(e))
        .ok()
}

/// The id of a reference field (`organizations/{org}/{collection}/{id}`) in organization `org`;
/// records a violation when it is malformed or names another organization.
pub fn reference(
    v: &mut Violations,
    org: Option<Uuid>,
    field: &str,
    value: &str,
    collection: &str,
) -> Option<Uuid> {
    Input::new(v, org, field.to_owned()).reference(value, collection)
}

/// The `smallint` column value of an enum number (or another small integer) that validation
/// accepted.
///
/// # Errors
/// INTERNAL if it does not fit: validation should have refused it.
pub fn column(n: i32) -> Result<i16, ApiError> {
    i16::try_from(n).map_err(|_| ApiError::Internal(format!("{n} does not fit a smallint column")))
}

/// Appends the change event of `resource` to the outbox.
///
/// # Errors
/// The database error.
pub async fn emit<M: Message + prost::Name>(
    conn: &AsyncPgConnection,
    w: Write<'_>,
    change: &str,
    resource: &M,
    name: &str,
    update_mask: Option<prost_types::FieldMask>,
) -> Result<(), ApiError> {
    let event = ResourceChanged {
        change: change.to_owned(),
        resource: Some(
            prost_types::Any::from_msg(resource)
                .map_err(|e| ApiError::Internal(format!("encoding the event resource: {e}")))?,
        ),
        update_mask,
    };
    outbox::append(
        conn,
        w.org.uuid(),
        NewEvent {
            event_type: &format!("{}.{change}", M::full_name()),
            resource: name,
            actor: w.call.actor(),
            request_id: w.request_id,
            payload: event.encode_to_vec(),
        },
    )
    .await?;
    Ok(())
}

/// Create: `parent`, the resource, an optional `<x>_id` and `request_id`.
pub struct Create<'a, R: Resource, F> {
    /// `organizations/{org}`.
    pub parent: &'a str,
    /// The resource.
    pub resource: Option<R::Proto>,
    /// Requested id.
    pub id: &'a str,
    /// Idempotency key.
    pub request_id: &'a str,
    /// The request without its `request_id`, for the idempotency fingerprint.
    pub fingerprint: &'a F,
}

/// The ids of a write inside its transaction: the organization, the call and its idempotency
/// key (recorded with the event and the audit entry).
#[derive(Debug, Clone, Copy)]
pub struct Write<'a> {
    /// The organization (the transaction's tenant).
    pub org: OrgId,
    /// Who, which RPC.
    pub call: &'a Call,
    /// The request's `request_id`.
    pub request_id: &'a str,
}

impl Write<'_> {
    /// The audit entry of this write for `resource`.
    #[must_use]
    pub fn entry<'e>(&'e self, resource: &'e str, action: Action) -> Entry<'e> {
        Entry {
            call: self.call,
            request_id: self.request_id,
            resource,
            action,
        }
    }
}

/// The create step inside a caller's transaction: `before_write`, the insert, the `created`
/// event and the audit entry, for validated columns `next`.
///
/// # Errors
/// Whatever `before_write` refuses, ALREADY_EXISTS for a taken id, the database error.
pub async fn create_in<R: Store>(
    conn: &AsyncPgConnection,
    w: Write<'_>,
    id: Uuid,
    mut next: R::Fields,
) -> Result<R::Proto, ApiError> {
    let fields = create_fields::<R>();
    R::before_write(conn, w.org, None, &mut next, &fields).await?;
    let row = R::insert(conn, w.org, id, &next, w.call.actor()).await?;
    R::after_write(conn, w, None, &row).await?;
    let created = to_proto::<R>(row);
    let name = created.name().to_owned();
    emit(conn, w, "created", &for_event::<R>(&created), &name, None).await?;
    audit::record_change::<R>(
        conn,
        w.org,
        w.entry(&name, Action::Create),
        None,
        &created,
        &fields,
    )
    .await?;
    Ok(created)
}

/// Creates a resource.
///
/// # Errors
/// INVALID_ARGUMENT naming every bad field, PERMISSION_DENIED for another organization,
/// ALREADY_EXISTS for a taken id, whatever `before_write` refuses.
pub async fn create<R: Store, F: Message>(
    ctx: &Context,
    call: Call,
    req: Create<'_, R, F>,
) -> Result<R::Proto, ApiError> {
    let mut v = Violations::new();
    let org = names::parse_organization(req.parent, "parent")
        .map_err(|e| v.absorb(e))
        .ok();
    let resource = req.resource.clone().unwrap_or_default();
    if req.resource.is_none() {
        v.push(
            R::FIELD,
            "REQUIRED",
            format!("the {} to create is required", R::FIELD),
        );
    }
    let mut fields = R::Fields::default();
    if req.resource.is_some() {
        input::<R>(&mut v, org, &resource, &create_fields::<R>(), &mut fields);
        R::validate_new(&mut v, &fields);
    }
    let id_field = format!("{}_id", R::FIELD);
    let id = validate::optional_uuid(&mut v, &id_field, req.id);
    let key = IdempotencyKey::from_request(&mut v, &call.method, req.request_id, req.fingerprint);
    v.finish()?;
    let org = org.ok_or_else(|| ApiError::Internal("parent parsed without violation".into()))?;
    names::require_same_organization(&call.principal, org)?;
    R::check_remote(ctx, &call, &fields, &create_fields::<R>()).await?;
    let id = id.unwrap_or_else(Uuid::now_v7);
    let request_id = req.request_id.to_owned();
    let deadline = call.deadline;
    let write = mutation::idempotent(ctx.pool.clone(), org, key, move |conn| {
        Box::pin(async move {
            let w = Write {
                org: OrgId(org),
                call: &call,
                request_id: &request_id,
            };
            create_in::<R>(conn, w, id, fields).await
        })
    });
    ctx.commit(deadline, write).await
}

/// Refuses the FULL view to a caller without the resource's full-view permission.
///
/// # Errors
/// PERMISSION_DENIED `FULL_VIEW_PERMISSION_MISSING`.
pub fn require_full_view<R: Resource>(principal: &Principal, full: bool) -> Result<(), ApiError> {
    match R::FULL_VIEW_PERMISSION {
        Some(p) if full && !principal.has_permission(p) => Err(ApiError::PermissionDenied {
            reason: "FULL_VIEW_PERMISSION_MISSING",
            message: format!("the FULL view needs the permission {p}"),
        }),
        Some(_) | None => Ok(()),
    }
}

/// The resource as events carry it: redacted like BASIC views and audit entries.
#[must_use]
pub fn for_event<R: Resource>(resource: &R::Proto) -> R::Proto {
    let mut shown = resource.clone();
    redact::<R>(&mut shown);
    shown
}

/// Reads one resource (soft-deleted ones too); `full` keeps what BASIC views redact.
///
/// # Errors
/// INVALID_ARGUMENT for a bad name, PERMISSION_DENIED for another organization, NOT_FOUND.
pub async fn get<R: Store>(
    ctx: &Context,
    principal: &Principal,
    name: &str,
    full: bool,
) -> Result<R::Proto, ApiError> {
    let (org, id) = names::parse_child(name, R::COLLECTION, "name")?;
    names::require_same_organization(principal, org)?;
    require_full_view::<R>(principal, full)?;
    let scope = R::scope(principal);
    let viewer = scope.as_ref().map(|s| s.viewer);
    let row = crm_db::tenant::read_as(&ctx.pool, org, viewer, move |conn| {
        Box::pin(async move {
            let filter = scope.as_ref().map(|s| &s.filter);
            R::find_in(conn, OrgId(org), id, false, filter).await
        })
    })
    .await?
    .ok_or_else(|| not_found::<R>(name))?;
    let mut out = to_proto::<R>(row);
    if !full {
        redact::<R>(&mut out);
    }
    Ok(out)
}

/// Update: the resource with its name and etag, the mask, `request_id`.
pub struct Update<'a, R: Resource, F> {
    /// The resource.
    pub resource: Option<R::Proto>,
    /// Fields to change.
    pub update_mask: Option<&'a prost_types::FieldMask>,
    /// Idempotency key.
    pub request_id: &'a str,
    /// The request without its `request_id`.
    pub fingerprint: &'a F,
}

/// Reads `id` locked for this transaction and checks `etag` (when not empty) against it.
///
/// # Errors
/// NOT_FOUND, ABORTED for a stale etag (a violation of `etag_field`).
pub async fn lock<R: Store>(
    conn: &AsyncPgConnection,
    org: OrgId,
    id: Uuid,
    name: &str,
    etag: &str,
    etag_field: &str,
) -> Result<Row<R::Fields>, ApiError> {
    lock_in::<R>(conn, org, id, name, (etag, etag_field), None).await
}

/// [`lock`] of a row the caller's `scope` also matches (see [`Resource::scope`]); `etag` is
/// the value and the field it came in.
///
/// # Errors
/// NOT_FOUND (also outside the scope), ABORTED for a stale etag.
pub async fn lock_in<R: Store>(
    conn: &AsyncPgConnection,
    org: OrgId,
    id: Uuid,
    name: &str,
    (etag, etag_field): (&str, &str),
    scope: Option<&Filter>,
) -> Result<Row<R::Fields>, ApiError> {
    let current = R::find_in(conn, org, id, true, scope)
        .await?
        .ok_or_else(|| not_found::<R>(name))?;
    crm_db::etag::check(etag, current.std.revision).map_err(|e| etag_error(etag_field, e))?;
    Ok(current)
}

/// The update step inside a caller's transaction: lock, etag, `before_write`, the masked
/// change, the `updated` event and the audit entry. `resource` must be validated for `paths`.
///
/// # Errors
/// NOT_FOUND, ABORTED for a stale etag, FAILED_PRECONDITION for a deleted resource or a refused
/// change.
pub async fn update_in<R: Store>(
    conn: &AsyncPgConnection,
    w: Write<'_>,
    id: Uuid,
    resource: &R::Proto,
    paths: &[&'static str],
) -> Result<R::Proto, ApiError> {
    let org = w.org;
    let name = resource.name().to_owned();
    let etag_field = format!("{}.etag", R::FIELD);
    let scope = R::scope(&w.call.principal).map(|s| s.filter);
    let etag = (resource.etag(), etag_field.as_str());
    let current = lock_in::<R>(conn, org, id, &name, etag, scope.as_ref()).await?;
    if current.std.deleted() {
        return Err(ApiError::FailedPrecondition {
            reason: "RESOURCE_DELETED",
            message: format!(
                "a deleted {} cannot be updated; undelete it first",
                R::FIELD
            ),
        });
    }
    if paths.is_empty() {
        return Ok(to_proto::<R>(current));
    }
    let mut next = current.fields.clone();
    let mut v = Violations::new();
    input::<R>(&mut v, Some(org.uuid()), resource, paths, &mut next);
    v.finish()?;
    R::before_write(conn, org, Some(&current), &mut next, paths).await?;
    let row = R::update(conn, org, id, &next, w.call.actor()).await?;
    R::after_write(conn, w, Some(&current), &row).await?;
    let before = to_proto::<R>(current);
    let updated = to_proto::<R>(row);
    let mask = prost_types::FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    };
    emit(
        conn,
        w,
        "updated",
        &for_event::<R>(&updated),
        &name,
        Some(mask),
    )
    .await?;
    audit::record_change::<R>(
        conn,
        org,
        w.entry(&name, Action::Update),
        Some(&before),
        &updated,
        paths,
    )
    .await?;
    Ok(updated)
}

/// Applies an update mask.
///
/// # Errors
/// INVALID_ARGUMENT naming every bad field or mask path, PERMISSION_DENIED, NOT_FOUND, ABORTED
/// for a stale etag, FAILED_PRECONDITION for a deleted resource or a refused change.
pub async fn update<R: Store, F: Message>(
    ctx: &Context,
    call: Call,
    req: Update<'_, R, F>,
) -> Result<R::Proto, ApiError> {
    let mut v = Violations::new();
    let resource = req.resource.clone().unwrap_or_default();
    if req.resource.is_none() {
        v.push(
            R::FIELD,
            "REQUIRED",
            format!("the {} with its name is required", R::FIELD),
        );
    }
    let parsed = parse_name::<R>(&mut v, resource.name(), &format!("{}.name", R::FIELD));
    let paths = mask::resolve(req.update_mask, &updatable::<R>(), &output_only::<R>())
        .map_err(|e| v.absorb(e))
        .unwrap_or_default();
    let mut scratch = R::Fields::default();
    input::<R>(
        &mut v,
        parsed.map(|(o, _)| o),
        &resource,
        &paths,
        &mut scratch,
    );
    let key = IdempotencyKey::from_request(&mut v, &call.method, req.request_id, req.fingerprint);
    v.finish()?;
    let (org, id) =
        parsed.ok_or_else(|| ApiError::Internal("name parsed without violation".into()))?;
    names::require_same_organization(&call.principal, org)?;
    R::check_remote(ctx, &call, &scratch, &paths).await?;
    let request_id = req.request_id.to_owned();
    let deadline = call.deadline;
    let viewer = R::scope(&call.principal).map(|s| s.viewer);
    let write = mutation::idempotent_as(ctx.pool.clone(), org, viewer, key, move |conn| {
        Box::pin(async move {
            let w = Write {
                org: OrgId(org),
                call: &call,
                request_id: &request_id,
            };
            update_in::<R>(conn, w, id, &resource, &paths).await
        })
    });
    ctx.commit(deadline, write).await
}

/// Delete or Undelete: the name, an optional etag, `request_id`.
pub struct Deletion<'a, F> {
    /// The resource's name.
    pub name: &'a str,
    /// When set, must match.
    pub etag: &'a str,
    /// Idempotency key.
    pub request_id: &'a str,
    /// The request without its `request_id`.
    pub fingerprint: &'a F,
    /// Delete (true) or undelete (false).
    pub delete: bool,
}

/// The delete / undelete step inside a caller's transaction.
///
/// # Errors
/// NOT_FOUND, ABORTED for a stale etag, FAILED_PRECONDITION when already in the requested state.
pub async fn set_deleted_in<R: Store>(
    conn: &AsyncPgConnection,
    w: Write<'_>,
    id: Uuid,
    name: &str,
    etag: &str,
    delete: bool,
) -> Result<R::Proto, ApiError> {
    let org = w.org;
    let scope = R::scope(&w.call.principal).map(|s| s.filter);
    let current = lock_in::<R>(conn, org, id, name, (etag, "etag"), scope.as_ref()).await?;
    match (delete, current.std.deleted()) {
        (true, true) => {
            return Err(ApiError::FailedPrecondition {
                reason: "ALREADY_DELETED",
                message: format!("the {} is already deleted", R::FIELD),
            });
        }
        (false, false) => {
            return Err(ApiError::FailedPrecondition {
                reason: "NOT_DELETED",
                message: format!("the {} is not deleted", R::FIELD),
            });
        }
        (true, false) | (false, true) => {}
    }
    R::check_deletion(&current, delete)?;
    let retention = delete.then(|| chrono::Duration::days(R::RETENTION_DAYS));
    let row = R::set_deleted(conn, org, id, retention, w.call.actor()).await?;
    R::after_write(conn, w, Some(&current), &row).await?;
    let before = to_proto::<R>(current);
    let after = to_proto::<R>(row);
    let (change, action) = if delete {
        ("deleted", Action::Delete)
    } else {
        ("undeleted", Action::Undelete)
    };
    emit(conn, w, change, &for_event::<R>(&after), name, None).await?;
    audit::record_change::<R>(
        conn,
        org,
        w.entry(name, action),
        Some(&before),
        &after,
        &["delete_time", "purge_time"],
    )
    .await?;
    Ok(after)
}

/// Soft-deletes or restores.
///
/// # Errors
/// As [`update`]; FAILED_PRECONDITION when already in the requested state.
pub async fn set_deleted<R: Store, F: Message>(
    ctx: &Context,
    call: Call,
    req: Deletion<'_, F>,
) -> Result<R::Proto, ApiError> {
    let mut v = Violations::new();
    let parsed = parse_name::<R>(&mut v, req.name, "name");
    let key = IdempotencyKey::from_request(&mut v, &call.method, req.request_id, req.fingerprint);
    v.finish()?;
    let (org, id) =
        parsed.ok_or_else(|| ApiError::Internal("name parsed without violation".into()))?;
    names::require_same_organization(&call.principal, org)?;
    let (name, etag, request_id, delete) = (
        req.name.to_owned(),
        req.etag.to_owned(),
        req.request_id.to_owned(),
        req.delete,
    );
    let deadline = call.deadline;
    let viewer = R::scope(&call.principal).map(|s| s.viewer);
    let write = mutation::idempotent_as(ctx.pool.clone(), org, viewer, key, move |conn| {
        Box::pin(async move {
            let w = Write {
                org: OrgId(org),
                call: &call,
                request_id: &request_id,
            };
            set_deleted_in::<R>(conn, w, id, &name, &etag, delete).await
        })
    });
    ctx.commit(deadline, write).await
}

/// The step that ends a custom change inside its transaction, after the caller's own writes to
/// the resource's row or dependent rows: bumps the revision, emits `change` (e.g.
/// `reading_recorded`) and audits `verb` over `fields` against `before`.
///
/// # Errors
/// The database error.
pub async fn changed_in<R: Store>(
    conn: &AsyncPgConnection,
    w: Write<'_>,
    id: Uuid,
    before: &R::Proto,
    change: &str,
    verb: &'static str,
    fields: &[&str],
) -> Result<R::Proto, ApiError> {
    let after = to_proto::<R>(R::touch(conn, w.org, id, w.call.actor()).await?);
    let name = after.name().to_owned();
    emit(conn, w, change, &for_event::<R>(&after), &name, None).await?;
    audit::record_change::<R>(
        conn,
        w.org,
        w.entry(&name, Action::Custom(verb)),
        Some(before),
        &after,
        fields,
    )
    .await?;
    Ok(after)
}

/// The fields of a Delete or Undelete request.
#[derive(Debug, Clone, Copy)]
pub struct DeletionFields<'a> {
    /// The resource's name.
    pub name: &'a str,
    /// When set, must match.
    pub etag: &'a str,
    /// Idempotency key.
    pub request_id: &'a str,
}

/// Serves Delete (`delete`) or Undelete of `R` from the request `body` whose fields `fields`
/// reads; the idempotency fingerprint is the request without its `request_id`.
///
/// # Errors
/// As [`set_deleted`], as a status.
pub async fn serve_deletion<R: Store, Q: Message + Clone>(
    ctx: &Context,
    call: Call,
    body: Q,
    delete: bool,
    fields: fn(&Q) -> DeletionFields<'_>,
    clear_request_id: fn(&mut Q),
) -> Result<tonic::Response<R::Proto>, tonic::Status> {
    let mut fingerprint = body.clone();
    clear_request_id(&mut fingerprint);
    let f = fields(&body);
    let req = Deletion {
        name: f.name,
        etag: f.etag,
        request_id: f.request_id,
        fingerprint: &fingerprint,
        delete,
    };
    set_deleted::<R, _>(ctx, call, req)
        .await
        .map(tonic::Response::new)
        .map_err(|e| ctx.status(e))
}

/// A policy giving each RPC of `service` its permission.
#[must_use]
pub fn policy(service: &str, rules: &[(&str, &'static str)]) -> crm_auth::MethodPolicy {
    rules
        .iter()
        .fold(crm_auth::MethodPolicy::new(), |p, (rpc, permission)| {
            p.with(service, rpc, crm_auth::Requirement::Permission(permission))
        })
}

/// Declares the handler type `$api` (holding the service's [`Context`]) and implements the
/// resource's tonic service trait on it with the standard methods, plus `extra` items (custom
/// methods).
#[macro_export]
macro_rules! standard_service {
    (
        service = $service:literal,
        server = $service_trait:path,
        resource = $resource:ty,
        api = $api:ident,
        field = $field:ident;
        create = $create:ident($create_req:ty, id = $id:ident);
        get = $get:ident($get_req:ty, full = $get_full:expr);
        list = $list:ident($list_req:ty, full = $list_full:expr) -> $list_resp:ident.$items:ident;
        update = $update:ident($update_req:ty);
        delete = $delete:ident($delete_req:ty);
        undelete = $undelete:ident($undelete_req:ty);
        $($extra:item)*
    ) => {
        /// The handlers (see [`standard_service!`](crm_resource::standard_service)).
        #[derive(Debug, Clone)]
        pub struct $api {
            /// The service's context.
            pub ctx: $crate::Context,
        }

        impl $api {
            /// Handlers over `ctx`.
            #[must_use]
            pub fn new(ctx: $crate::Context) -> Self {
                Self { ctx }
            }

            /// The permissions of the standard methods: Get and List need `read`, Create and
            /// Update `write`, Delete and Undelete `delete`.
            #[must_use]
            pub fn policy(
                read: &'static str,
                write: &'static str,
                delete: &'static str,
            ) -> $crate::deps::crm_auth::MethodPolicy {
                let rules = [
                    (stringify!($create), write),
                    (stringify!($get), read),
                    (stringify!($list), read),
                    (stringify!($update), write),
                    (stringify!($delete), delete),
                    (stringify!($undelete), delete),
                ];
                rules.iter().fold(
                    $crate::deps::crm_auth::MethodPolicy::new(),
                    |p, (rpc, permission)| {
                        p.with(
                            $service,
                            &$crate::camel(rpc),
                            $crate::deps::crm_auth::Requirement::Permission(permission),
                        )
                    },
                )
            }
        }

        #[$crate::deps::tonic::async_trait]
        impl $service_trait for $api {
            async fn $create(
                &self,
                req: $crate::deps::tonic::Request<$create_req>,
            ) -> Result<$crate::deps::tonic::Response<<$resource as $crate::Resource>::Proto>, $crate::deps::tonic::Status> {
                let call = $crate::Call::of(&req, $service, stringify!($create))?;
                let body = req.into_inner();
                let mut fingerprint = body.clone();
                fingerprint.request_id.clear();
                $crate::create::<$resource, _>(
                    &self.ctx,
                    call,
                    $crate::Create {
                        parent: &body.parent,
                        resource: body.$field.clone(),
                        id: &body.$id,
                        request_id: &body.request_id,
                        fingerprint: &fingerprint,
                    },
                )
                .await
                .map($crate::deps::tonic::Response::new)
                .map_err(|e| self.ctx.status(e))
            }

            async fn $get(
                &self,
                req: $crate::deps::tonic::Request<$get_req>,
            ) -> Result<$crate::deps::tonic::Response<<$resource as $crate::Resource>::Proto>, $crate::deps::tonic::Status> {
                let principal = $crate::deps::crm_auth::layer::principal_of(&req)?;
                let body = req.into_inner();
                let full: fn(&$get_req) -> bool = $get_full;
                $crate::get::<$resource>(&self.ctx, &principal, &body.name, full(&body))
                    .await
                    .map($crate::deps::tonic::Response::new)
                    .map_err(|e| self.ctx.status(e))
            }

            async fn $list(
                &self,
                req: $crate::deps::tonic::Request<$list_req>,
            ) -> Result<$crate::deps::tonic::Response<$list_resp>, $crate::deps::tonic::Status> {
                let principal = $crate::deps::crm_auth::layer::principal_of(&req)?;
                let body = req.into_inner();
                let full: fn(&$list_req) -> bool = $list_full;
                let (items, next_page_token) = $crate::list::list::<$resource>(
                    &self.ctx,
                    &principal,
                    $crate::list::ListRequest {
                        parent: &body.parent,
                        page_size: body.page_size,
                        page_token: &body.page_token,
                        filter: &body.filter,
                        order_by: &body.order_by,
                        show_deleted: body.show_deleted,
                    },
                    full(&body),
                )
                .await
                .map_err(|e| self.ctx.status(e))?;
                Ok($crate::deps::tonic::Response::new($list_resp {
                    $items: items,
                    next_page_token,
                }))
            }

            async fn $update(
                &self,
                req: $crate::deps::tonic::Request<$update_req>,
            ) -> Result<$crate::deps::tonic::Response<<$resource as $crate::Resource>::Proto>, $crate::deps::tonic::Status> {
                let call = $crate::Call::of(&req, $service, stringify!($update))?;
                let body = req.into_inner();
                let mut fingerprint = body.clone();
                fingerprint.request_id.clear();
                $crate::update::<$resource, _>(
                    &self.ctx,
                    call,
                    $crate::Update {
                        resource: body.$field.clone(),
                        update_mask: body.update_mask.as_ref(),
                        request_id: &body.request_id,
                        fingerprint: &fingerprint,
                    },
                )
                .await
                .map($crate::deps::tonic::Response::new)
                .map_err(|e| self.ctx.status(e))
            }

            async fn $delete(
                &self,
                req: $crate::deps::tonic::Request<$delete_req>,
            ) -> Result<$crate::deps::tonic::Response<<$resource as $crate::Resource>::Proto>, $crate::deps::tonic::Status> {
                let call = $crate::Call::of(&req, $service, stringify!($delete))?;
                $crate::serve_deletion::<$resource, _>(
                    &self.ctx,
                    call,
                    req.into_inner(),
                    true,
                    |b| $crate::DeletionFields { name: &b.name, etag: &b.etag, request_id: &b.request_id },
                    |b| b.request_id.clear(),
                )
                .await
            }

            async fn $undelete(
                &self,
                req: $crate::deps::tonic::Request<$undelete_req>,
            ) -> Result<$crate::deps::tonic::Response<<$resource as $crate::Resource>::Proto>, $crate::deps::tonic::Status> {
                let call = $crate::Call::of(&req, $service, stringify!($undelete))?;
                $crate::serve_deletion::<$resource, _>(
                    &self.ctx,
                    call,
                    req.into_inner(),
                    false,
                    |b| $crate::DeletionFields { name: &b.name, etag: &b.etag, request_id: &b.request_id },
                    |b| b.request_id.clear(),
                )
                .await
            }

            $($extra)*
        }
    };
}

/// Fails unless the resource `id` exists in `org` and is not deleted (for references).
///
/// # Errors
/// FAILED_PRECONDITION naming the reference (`REFERENCE_NOT_FOUND` / `REFERENCE_DELETED`).
pub async fn require_live<R: Store>(
    conn: &AsyncPgConnection,
    org: OrgId,
    id: Uuid,
    name: &str,
) -> Result<(), ApiError> {
    match R::find(conn, org, id, false)
        .await?
        .map(|r| r.std.deleted())
    {
        Some(false) => Ok(()),
        Some(true) => Err(ApiError::FailedPrecondition {
            reason: "REFERENCE_DELETED",
            message: format!("{name} is deleted"),
        }),
        None => Err(ApiError::FailedPrecondition {
            reason: "REFERENCE_NOT_FOUND",
            message: format!("{name} does not exist"),
        }),
    }
}
