//! The change log every service keeps of its resources: each create, update, delete and custom
//! change appends one entry in the same transaction as the change (who, which RPC and request,
//! which resource, each changed field before and after), hash-chained per organization
//! ([`crm_db::chain`]). The table has the same columns in every service's schema and resolves
//! through the connection's `search_path`; the app role may only append.

use chrono::{DateTime, Utc};
use crm_db::filter::{self, BoxedPredicate, Filter, FilterError, Op, Value};
use crm_db::{OrgId, chain};
use crm_platform::ApiError;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::{Call, Resource};

use crate::schema::audit_entries as a;

/// What audit entries show instead of a sensitive value.
pub const REDACTED: &str = "\"[redacted]\"";

/// What happened to the resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Created.
    Create,
    /// Fields changed.
    Update,
    /// Soft-deleted.
    Delete,
    /// Restored.
    Undelete,
    /// A custom method (`record_reading`, `grant_consent`...).
    Custom(&'static str),
}

impl Action {
    /// The stored verb.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::Undelete => "undelete",
            Self::Custom(verb) => verb,
        }
    }
}

/// The kind of caller behind a subject, as stored: the numbers of every service's `ActorKind`
/// enum (0 unspecified, 1 user, 2 API client, 3 service, 4 workflow).
#[must_use]
pub fn actor_kind(subject: &str) -> i16 {
    if subject.starts_with("users/") {
        1
    } else if subject.starts_with("clients/") {
        2
    } else if subject.starts_with("services/") {
        3
    } else if subject.starts_with("workflows/") {
        4
    } else {
        0
    }
}

/// One changed field: JSON values before and after (empty before on create).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The field's name.
    pub field: String,
    /// Its JSON value before.
    pub before: String,
    /// Its JSON value after.
    pub after: String,
}

/// The changed `fields` between `before` (None on create: compared with an empty resource) and
/// `after`, as JSON values; `redacted` fields show [`REDACTED`].
#[must_use]
pub fn diff<M: prost::Message + prost::Name + Default>(
    before: Option<&M>,
    after: &M,
    fields: &[&str],
    redacted: &[&str],
) -> Vec<Change> {
    let empty = M::default();
    let old = crm_proto::json::to_value(before.unwrap_or(&empty)).unwrap_or_default();
    let new = crm_proto::json::to_value(after).unwrap_or_default();
    fields
        .iter()
        .filter_map(|field| {
            let (o, n) = (old.get(*field), new.get(*field));
            if o == n {
                return None;
            }
            let show = |v: Option<&serde_json::Value>| {
                if redacted.contains(field) {
                    REDACTED.to_owned()
                } else {
                    v.map(ToString::to_string).unwrap_or_default()
                }
            };
            Some(Change {
                field: (*field).to_owned(),
                before: if before.is_some() {
                    show(o)
                } else {
                    String::new()
                },
                after: show(n),
            })
        })
        .collect()
}

/// The facts of one entry besides its changes.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// The call that made the change.
    pub call: &'a Call,
    /// Its idempotency key.
    pub request_id: &'a str,
    /// The changed resource's name.
    pub resource: &'a str,
    /// What happened.
    pub action: Action,
}

/// Records the change of a standard resource `R`: the `fields` that differ between `before`
/// and `after`, its redacted fields masked.
///
/// # Errors
/// The database error.
pub async fn record_change<R: Resource>(
    conn: &AsyncPgConnection,
    org: OrgId,
    entry: Entry<'_>,
    before: Option<&R::Proto>,
    after: &R::Proto,
    fields: &[&str],
) -> Result<(), ApiError> {
    let changes = diff(before, after, fields, &crate::redacted::<R>());
    record(conn, org, entry, &changes).await
}

/// Appends one entry to `org`'s chain in the caller's transaction.
///
/// # Errors
/// The database error.
pub async fn record(
    conn: &AsyncPgConnection,
    org: OrgId,
    entry: Entry<'_>,
    changes: &[Change],
) -> Result<(), ApiError> {
    let org = org.uuid();
    let (seq, prev) = chain::next(conn, org).await?;
    let id = Uuid::now_v7();
    let now = Utc::now();
    // Stored with microsecond precision: hash exactly what is stored.
    let create_time = DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now);
    let call = entry.call;
    let kind = actor_kind(call.actor());
    let delegate = call.principal.actor.clone().unwrap_or_default();
    let changes = serde_json::to_string(
        &changes
            .iter()
            .map(|c| [c.field.as_str(), c.before.as_str(), c.after.as_str()])
            .collect::<Vec<_>>(),
    )
    .map_err(|e| ApiError::Internal(format!("encoding audit changes: {e}")))?;
    let row = Row {
        seq,
        id,
        actor_kind: kind,
        actor: call.actor().to_owned(),
        delegate,
        request_id: entry.request_id.to_owned(),
        method: call.method.clone(),
        resource: entry.resource.to_owned(),
        action: entry.action.as_str().to_owned(),
        changes,
        create_time,
        prev_hash: prev,
        hash: Vec::new(),
    };
    let hash = row_hash(&row, &row.prev_hash);
    let insert = diesel::insert_into(a::table)
        .values((
            a::organization_id.eq(org),
            a::seq.eq(seq),
            a::id.eq(id),
            a::actor_kind.eq(row.actor_kind),
            a::actor.eq(&row.actor),
            a::delegate.eq(&row.delegate),
            a::request_id.eq(&row.request_id),
            a::method.eq(&row.method),
            a::resource.eq(&row.resource),
            a::action.eq(&row.action),
            a::changes.eq(&row.changes),
            a::create_time.eq(create_time),
            a::prev_hash.eq(&row.prev_hash),
            a::hash.eq(hash.to_vec()),
        ))
        .execute(&mut { conn });
    chain::append(conn, org, seq, &hash, insert).await?;
    Ok(())
}

/// A stored entry.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = a)]
pub struct Row {
    /// Position in the organization's chain.
    pub seq: i64,
    /// Entry id.
    pub id: Uuid,
    /// See [`actor_kind`].
    pub actor_kind: i16,
    /// Subject of the caller.
    pub actor: String,
    /// Who acted through the caller (token exchange), or empty.
    pub delegate: String,
    /// Idempotency key of the call.
    pub request_id: String,
    /// Full RPC name.
    pub method: String,
    /// The changed resource's name.
    pub resource: String,
    /// See [`Action::as_str`].
    pub action: String,
    /// JSON list of `[field, before, after]`.
    pub changes: String,
    /// When.
    pub create_time: DateTime<Utc>,
    /// Hash of the previous entry.
    pub prev_hash: Vec<u8>,
    /// This entry's hash.
    pub hash: Vec<u8>,
}

impl Row {
    /// The stored changes.
    #[must_use]
    pub fn changes(&self) -> Vec<Change> {
        let parsed: Vec<[String; 3]> = serde_json::from_str(&self.changes).unwrap_or_default();
        parsed
            .into_iter()
            .map(|[field, before, after]| Change {
                field,
                before,
                after,
            })
            .collect()
    }
}

fn row_hash(r: &Row, prev: &[u8]) -> [u8; 32] {
    chain::link(
        prev,
        r.seq,
        r.id,
        &[
            &r.actor_kind.to_string(),
            &r.actor,
            &r.delegate,
            &r.request_id,
            &r.method,
            &r.resource,
            &r.action,
            &r.changes,
        ],
        r.create_time.timestamp_micros(),
    )
}

const FILTER_FIELDS: &[&str] = &[
    "resource",
    "action",
    "actor",
    "method",
    "request_id",
    "create_time",
];

fn leaf(field: &str, op: Op, value: &Value) -> Result<BoxedPredicate<a::table>, FilterError> {
    match field {
        "resource" => crm_db::filter_text!(a::resource, field, op, value),
        "action" => crm_db::filter_text!(a::action, field, op, value),
        "actor" => crm_db::filter_text!(a::actor, field, op, value),
        "method" => crm_db::filter_text!(a::method, field, op, value),
        "request_id" => crm_db::filter_text!(a::request_id, field, op, value),
        "create_time" => crm_db::filter_time!(a::create_time, field, op, value),
        other => Err(filter::unknown_field(other, FILTER_FIELDS)),
    }
}

/// Parses and checks a List filter over the log.
///
/// # Errors
/// The filter's first problem.
pub fn parse_filter(text: &str) -> Result<Option<Filter>, FilterError> {
    let parsed = filter::parse(text)?;
    if let Some(f) = &parsed {
        filter::compile(f, &leaf)?;
    }
    Ok(parsed)
}

/// Up to `limit` entries of `org` after sequence `after`, oldest first, matching `filter`.
///
/// # Errors
/// The database error.
pub async fn page(
    conn: &AsyncPgConnection,
    org: Uuid,
    after: i64,
    limit: i64,
    filter: Option<&Filter>,
) -> Result<Vec<Row>, ApiError> {
    let mut q = a::table
        .filter(a::organization_id.eq(org))
        .filter(a::seq.gt(after))
        .order(a::seq.asc())
        .limit(limit)
        .select(Row::as_select())
        .into_boxed();
    if let Some(f) = filter {
        q = q.filter(filter::compile(f, &leaf)?);
    }
    Ok(q.load(&mut { conn }).await?)
}

/// Checks `org`'s whole chain against its head.
///
/// # Errors
/// The database error.
pub async fn verify(conn: &AsyncPgConnection, org: Uuid) -> Result<chain::Verdict, ApiError> {
    let rows: Vec<Row> = a::table
        .filter(a::organization_id.eq(org))
        .order(a::seq.asc())
        .select(Row::as_select())
        .load(&mut { conn })
        .await?;
    let head = chain::head(conn, org).await?;
    Ok(chain::verify(
        &rows,
        head,
        |r| chain::Stored {
            seq: r.seq,
            prev_hash: &r.prev_hash,
            hash: &r.hash,
        },
        row_hash,
    ))
}

/// Records the change of any message: the `fields` that differ between `before` and `after`,
/// the `redacted` ones masked.
///
/// # Errors
/// The database error.
pub async fn record_diff<M: prost::Message + prost::Name + Default>(
    conn: &AsyncPgConnection,
    org: OrgId,
    entry: Entry<'_>,
    before: Option<&M>,
    after: &M,
    fields: &[&str],
    redacted: &[&str],
) -> Result<(), ApiError> {
    let changes = diff(before, after, fields, redacted);
    record(conn, org, entry, &changes).await
}

/// A ListAuditEntries request.
#[derive(Debug, Clone, Copy)]
pub struct ListRequest<'a> {
    /// `organizations/{organization}`.
    pub parent: &'a str,
    /// 0 means 100.
    pub page_size: i32,
    /// The previous page's token.
    pub page_token: &'a str,
    /// AIP-160 filter over resource, action, actor, method, request_id and create_time.
    pub filter: &'a str,
}

/// One page of the log, as a service's ListAuditEntries answers it: the organization, the
/// entries in chain order and the next page's token.
///
/// # Errors
/// INVALID_ARGUMENT for a bad filter or page token, PERMISSION_DENIED for another organization.
pub async fn list(
    ctx: &crate::Context,
    principal: &crm_auth::Principal,
    req: ListRequest<'_>,
) -> Result<(Uuid, Vec<Row>, String), ApiError> {
    use crm_platform::api::listing::{Listing, MAX_PAGE_SIZE};
    let mut v = crm_platform::api::validate::Violations::new();
    let parsed = parse_filter(req.filter)
        .map_err(|e| v.absorb(e.into()))
        .ok()
        .flatten();
    v.finish()?;
    let listing = Listing::begin(
        principal,
        &ctx.page_tokens,
        "ListAuditEntries",
        req.parent,
        req.page_size,
        req.page_token,
        &[req.filter],
        100,
        MAX_PAGE_SIZE,
    )?;
    let org = listing.org;
    let after = listing.after_i64()?.unwrap_or(0);
    let limit = listing.limit();
    let mut rows: Vec<Row> = crm_db::tenant::read(&ctx.pool, org, move |conn| {
        Box::pin(async move { page(conn, org, after, limit, parsed.as_ref()).await })
    })
    .await?;
    let next = listing.finish(&ctx.page_tokens, &mut rows, |r| vec![r.seq.to_string()]);
    Ok((org, rows, next))
}

/// Verifies the chain of the organization `parent` names.
///
/// # Errors
/// INVALID_ARGUMENT for a bad parent, PERMISSION_DENIED for another organization.
pub async fn verify_parent(
    ctx: &crate::Context,
    principal: &crm_auth::Principal,
    parent: &str,
) -> Result<chain::Verdict, ApiError> {
    let org = crm_platform::api::names::parse_organization(parent, "parent")?;
    crm_platform::api::names::require_same_organization(principal, org)?;
    crm_db::tenant::read(&ctx.pool, org, move |conn| {
        Box::pin(async move { verify(conn, org).await })
    })
    .await
}

/// Declares a service's `AuditService` (ListAuditEntries, VerifyAuditChain) over its
/// [`Context`](crate::Context), with its package's messages (`AuditEntry`, `FieldChange`, …).
#[macro_export]
macro_rules! audit_service {
    (
        service = $service:literal,
        package = $($pkg:ident)::+,
        api = $api:ident,
        permission = $permission:expr $(,)?
    ) => {
        /// The handlers of the service's change log ([`crm_resource::audit`]).
        #[derive(Debug, Clone)]
        pub struct $api {
            ctx: $crate::Context,
        }

        impl $api {
            /// Handlers over `ctx`.
            #[must_use]
            pub fn new(ctx: $crate::Context) -> Self {
                Self { ctx }
            }

            /// The permission of every RPC.
            #[must_use]
            pub fn policy() -> $crate::deps::crm_auth::MethodPolicy {
                $crate::policy(
                    $service,
                    &[("ListAuditEntries", $permission), ("VerifyAuditChain", $permission)],
                )
            }

            fn to_proto(org: $crate::deps::uuid::Uuid, r: $crate::audit::Row) -> $($pkg)::+::AuditEntry {
                use $($pkg)::+ as p;
                p::AuditEntry {
                    name: format!("organizations/{org}/auditEntries/{}", r.seq),
                    sequence: r.seq,
                    actor_kind: i32::from(r.actor_kind),
                    changes: r
                        .changes()
                        .into_iter()
                        .map(|c| p::FieldChange {
                            field: c.field,
                            before: c.before,
                            after: c.after,
                        })
                        .collect(),
                    create_time: Some($crate::deps::crm_platform::api::time::timestamp(
                        r.create_time,
                    )),
                    hash: r.hash.iter().map(|b| format!("{b:02x}")).collect(),
                    actor: r.actor,
                    delegate: r.delegate,
                    request_id: r.request_id,
                    method: r.method,
                    resource: r.resource,
                    action: r.action,
                }
            }
        }

        #[$crate::deps::tonic::async_trait]
        impl $($pkg)::+::audit_service_server::AuditService for $api {
            async fn list_audit_entries(
                &self,
                req: $crate::deps::tonic::Request<$($pkg)::+::ListAuditEntriesRequest>,
            ) -> Result<
                $crate::deps::tonic::Response<$($pkg)::+::ListAuditEntriesResponse>,
                $crate::deps::tonic::Status,
            > {
                let principal = $crate::deps::crm_auth::layer::principal_of(&req)?;
                let body = req.into_inner();
                let request = $crate::audit::ListRequest {
                    parent: &body.parent,
                    page_size: body.page_size,
                    page_token: &body.page_token,
                    filter: &body.filter,
                };
                let (org, rows, next_page_token) =
                    $crate::audit::list(&self.ctx, &principal, request)
                        .await
                        .map_err(|e| self.ctx.status(e))?;
                Ok($crate::deps::tonic::Response::new($($pkg)::+::ListAuditEntriesResponse {
                    audit_entries: rows.into_iter().map(|r| Self::to_proto(org, r)).collect(),
                    next_page_token,
                }))
            }

            async fn verify_audit_chain(
                &self,
                req: $crate::deps::tonic::Request<$($pkg)::+::VerifyAuditChainRequest>,
            ) -> Result<
                $crate::deps::tonic::Response<$($pkg)::+::VerifyAuditChainResponse>,
                $crate::deps::tonic::Status,
            > {
                let principal = $crate::deps::crm_auth::layer::principal_of(&req)?;
                let body = req.into_inner();
                let verdict = $crate::audit::verify_parent(&self.ctx, &principal, &body.parent)
                    .await
                    .map_err(|e| self.ctx.status(e))?;
                let (first_bad_sequence, problem) = verdict.broken.unwrap_or_default();
                Ok($crate::deps::tonic::Response::new($($pkg)::+::VerifyAuditChainResponse {
                    intact: problem.is_empty(),
                    entries_checked: verdict.checked,
                    first_bad_sequence,
                    problem,
                }))
            }
        }
    };
}
