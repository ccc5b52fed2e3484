//! The core audit log: every create, update, delete and custom change in core appends one entry
//! in the same transaction as the change (who, which RPC and request, which resource, each
//! changed field before and after), hash-chained per organization ([`crm_db::chain`]). The app
//! role may only append.

use chrono::{DateTime, Utc};
use crm_auth::layer::principal_of;
use crm_auth::{MethodPolicy, Principal, permission};
use crm_db::chain;
use crm_db::filter::{self, BoxedPredicate, Filter, FilterError, Op, Value};
use crm_platform::ApiError;
use crm_platform::api::listing::Listing;
use crm_platform::api::time::timestamp;
use crm_platform::api::validate::Violations;
use crm_proto::core_v1::audit_service_server::AuditService;
use crm_proto::core_v1::{
    ActorKind, AuditEntry, FieldChange, ListAuditEntriesRequest, ListAuditEntriesResponse,
    VerifyAuditChainRequest, VerifyAuditChainResponse,
};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::CoreState;
use crate::resource::{Call, Resource, status};
use crate::schema::audit_entries as a;

const SERVICE: &str = "crm.core.v1.AuditService";
/// What audit entries show instead of a sensitive value.
pub const REDACTED: &str = "\"[redacted]\"";

/// RPC requirements.
#[must_use]
pub fn policy() -> MethodPolicy {
    crate::resource::policy(
        SERVICE,
        &[
            ("ListAuditEntries", permission::CORE_AUDIT_READ),
            ("VerifyAuditChain", permission::CORE_AUDIT_READ),
        ],
    )
}

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
    fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::Undelete => "undelete",
            Self::Custom(verb) => verb,
        }
    }
}

/// The kind of caller behind a principal.
#[must_use]
pub fn actor_kind(principal: &Principal) -> ActorKind {
    let subject = principal.subject.as_str();
    if subject.starts_with("users/") {
        ActorKind::User
    } else if subject.starts_with("clients/") {
        ActorKind::ApiClient
    } else if subject.starts_with("services/") {
        ActorKind::Service
    } else if subject.starts_with("workflows/") {
        ActorKind::Workflow
    } else {
        ActorKind::Unspecified
    }
}

/// The changed `fields` between `before` (None on create: compared with an empty resource) and
/// `after`, as JSON values; `redacted` fields show [`REDACTED`].
#[must_use]
pub fn diff<M: prost::Message + prost::Name + Default>(
    before: Option<&M>,
    after: &M,
    fields: &[&str],
    redacted: &[&str],
) -> Vec<FieldChange> {
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
            Some(FieldChange {
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

/// Records the change of a standard resource.
///
/// # Errors
/// The database error.
#[expect(clippy::too_many_arguments, reason = "the facts of one audit entry")]
pub async fn record_change<R: Resource>(
    conn: &AsyncPgConnection,
    org: Uuid,
    call: &Call,
    request_id: &str,
    resource: &str,
    action: Action,
    before: Option<&R::Proto>,
    after: &R::Proto,
    fields: &[&str],
) -> Result<(), ApiError> {
    record_diff(
        conn,
        org,
        call,
        request_id,
        resource,
        action,
        before,
        after,
        fields,
        R::REDACTED,
    )
    .await
}

/// Records the change of any message: the `fields` that differ between `before` and `after`.
///
/// # Errors
/// The database error.
#[expect(clippy::too_many_arguments, reason = "the facts of one audit entry")]
pub async fn record_diff<M: prost::Message + prost::Name + Default>(
    conn: &AsyncPgConnection,
    org: Uuid,
    call: &Call,
    request_id: &str,
    resource: &str,
    action: Action,
    before: Option<&M>,
    after: &M,
    fields: &[&str],
    redacted: &[&str],
) -> Result<(), ApiError> {
    let changes = diff(before, after, fields, redacted);
    record(conn, org, call, request_id, resource, action, &changes).await
}

/// Appends one entry to `org`'s chain in the caller's transaction.
///
/// # Errors
/// The database error.
pub async fn record(
    conn: &AsyncPgConnection,
    org: Uuid,
    call: &Call,
    request_id: &str,
    resource: &str,
    action: Action,
    changes: &[FieldChange],
) -> Result<(), ApiError> {
    let (seq, prev) = chain::next(conn, org).await?;
    let id = Uuid::now_v7();
    let now = Utc::now();
    // Stored with microsecond precision: hash exactly what is stored.
    let create_time = DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now);
    let kind = i16::try_from(actor_kind(&call.principal) as i32).unwrap_or(0);
    let delegate = call.principal.actor.clone().unwrap_or_default();
    let changes = serde_json::to_string(
        &changes
            .iter()
            .map(|c| [c.field.as_str(), c.before.as_str(), c.after.as_str()])
            .collect::<Vec<_>>(),
    )
    .map_err(|e| ApiError::Internal(format!("encoding audit changes: {e}")))?;
    let kind_text = kind.to_string();
    let hash = chain::link(
        &prev,
        seq,
        id,
        &[
            &kind_text,
            call.actor(),
            &delegate,
            request_id,
            &call.method,
            resource,
            action.as_str(),
            &changes,
        ],
        create_time.timestamp_micros(),
    );
    diesel::insert_into(a::table)
        .values((
            a::organization_id.eq(org),
            a::seq.eq(seq),
            a::id.eq(id),
            a::actor_kind.eq(kind),
            a::actor.eq(call.actor()),
            a::delegate.eq(&delegate),
            a::request_id.eq(request_id),
            a::method.eq(&call.method),
            a::resource.eq(resource),
            a::action.eq(action.as_str()),
            a::changes.eq(&changes),
            a::create_time.eq(create_time),
            a::prev_hash.eq(&prev),
            a::hash.eq(hash.to_vec()),
        ))
        .execute(&mut { conn })
        .await?;
    chain::advance(conn, org, seq, &hash).await?;
    Ok(())
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = a)]
struct Row {
    seq: i64,
    id: Uuid,
    actor_kind: i16,
    actor: String,
    delegate: String,
    request_id: String,
    method: String,
    resource: String,
    action: String,
    changes: String,
    create_time: DateTime<Utc>,
    prev_hash: Vec<u8>,
    hash: Vec<u8>,
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

fn to_proto(org: Uuid, r: Row) -> AuditEntry {
    let parsed: Vec<[String; 3]> = serde_json::from_str(&r.changes).unwrap_or_default();
    AuditEntry {
        name: format!("organizations/{org}/auditEntries/{}", r.seq),
        sequence: r.seq,
        actor_kind: i32::from(r.actor_kind),
        actor: r.actor,
        delegate: r.delegate,
        request_id: r.request_id,
        method: r.method,
        resource: r.resource,
        action: r.action,
        changes: parsed
            .into_iter()
            .map(|[field, before, after]| FieldChange {
                field,
                before,
                after,
            })
            .collect(),
        create_time: Some(timestamp(r.create_time)),
        hash: r.hash.iter().map(|b| format!("{b:02x}")).collect(),
    }
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

/// The handlers.
#[derive(Debug, Clone)]
pub struct AuditApi {
    state: CoreState,
}

impl AuditApi {
    /// Handlers over `state`.
    #[must_use]
    pub fn new(state: CoreState) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn list_audit_entries(
        &self,
        req: Request<ListAuditEntriesRequest>,
    ) -> Result<Response<ListAuditEntriesResponse>, Status> {
        let principal = principal_of(&req)?;
        let body = req.into_inner();
        let mut v = Violations::new();
        let parsed: Option<Option<Filter>> = filter::parse(&body.filter)
            .and_then(|f| {
                if let Some(f) = &f {
                    filter::compile(f, &leaf)?;
                }
                Ok(f)
            })
            .map_err(|e| v.absorb(e.into()))
            .ok();
        v.finish().map_err(status)?;
        let parsed = parsed.flatten();
        let listing = Listing::begin(
            &principal,
            &self.state.page_tokens,
            "ListAuditEntries",
            &body.parent,
            body.page_size,
            &body.page_token,
            &[&body.filter],
            100,
            crm_platform::api::listing::MAX_PAGE_SIZE,
        )
        .map_err(status)?;
        let org = listing.org;
        let after = listing.after_i64().map_err(status)?.unwrap_or(0);
        let limit = listing.limit();
        let mut rows: Vec<Row> = crm_db::tenant::transaction(&self.state.pool, org, move |conn| {
            Box::pin(async move {
                let mut q = a::table
                    .filter(a::organization_id.eq(org))
                    .filter(a::seq.gt(after))
                    .order(a::seq.asc())
                    .limit(limit)
                    .select(Row::as_select())
                    .into_boxed();
                if let Some(f) = &parsed {
                    q = q.filter(filter::compile(f, &leaf)?);
                }
                q.load(&mut { conn }).await.map_err(ApiError::from)
            })
        })
        .await
        .map_err(status)?;
        let next_page_token = listing.finish(&self.state.page_tokens, &mut rows, |r| {
            vec![r.seq.to_string()]
        });
        Ok(Response::new(ListAuditEntriesResponse {
            audit_entries: rows.into_iter().map(|r| to_proto(org, r)).collect(),
            next_page_token,
        }))
    }

    async fn verify_audit_chain(
        &self,
        req: Request<VerifyAuditChainRequest>,
    ) -> Result<Response<VerifyAuditChainResponse>, Status> {
        let principal = principal_of(&req)?;
        let body = req.into_inner();
        let org =
            crm_platform::api::names::parse_organization(&body.parent, "parent").map_err(status)?;
        crm_platform::api::names::require_same_organization(&principal, org).map_err(status)?;
        let verdict = crm_db::tenant::transaction(&self.state.pool, org, move |conn| {
            Box::pin(async move {
                let rows: Vec<Row> = a::table
                    .filter(a::organization_id.eq(org))
                    .order(a::seq.asc())
                    .select(Row::as_select())
                    .load(&mut { conn })
                    .await?;
                let head = chain::head(conn, org).await?;
                Ok::<_, ApiError>(chain::verify(
                    &rows,
                    head,
                    |r| chain::Stored {
                        seq: r.seq,
                        prev_hash: &r.prev_hash,
                        hash: &r.hash,
                    },
                    row_hash,
                ))
            })
        })
        .await
        .map_err(status)?;
        let (first_bad_sequence, problem) = verdict.broken.unwrap_or_default();
        Ok(Response::new(VerifyAuditChainResponse {
            intact: problem.is_empty(),
            entries_checked: verdict.checked,
            first_bad_sequence,
            problem,
        }))
    }
}
