//! The authentication audit log: append-only (the app role has no UPDATE or DELETE on it), one
//! hash chain per organization, and a head row so that removing the newest events is detected
//! as well as changing any event.

use chrono::{DateTime, Utc};
use crm_auth::layer::principal_of;
use crm_auth::{MethodPolicy, Requirement, permission};
use crm_db::page::PageTokens;
use crm_db::{AsyncPgConnection, DbPool, chain, tenant};
use crm_platform::ApiError;
use crm_platform::api::listing::Listing;
use crm_platform::api::names;
use crm_platform::api::time::timestamp;
use crm_platform::api::validate::Violations;
use crm_proto::identity_v1::audit_service_server::AuditService;
use crm_proto::identity_v1::{
    AuditEvent, ListAuditEventsRequest, ListAuditEventsResponse, VerifyAuditChainRequest,
    VerifyAuditChainResponse,
};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use tonic::{Request, Response, Status};

use crate::status;
use uuid::Uuid;

use crate::schema::audit_events as a;

const SERVICE: &str = "crm.identity.v1.AuditService";

/// RPC requirements.
#[must_use]
pub fn policy() -> MethodPolicy {
    MethodPolicy::new()
        .with(
            SERVICE,
            "ListAuditEvents",
            Requirement::Permission(permission::AUDIT_READ),
        )
        .with(
            SERVICE,
            "VerifyAuditChain",
            Requirement::Permission(permission::AUDIT_READ),
        )
}

/// An event to append.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// e.g. `login.succeeded`.
    pub kind: &'a str,
    /// Who.
    pub actor: &'a str,
    /// To what.
    pub subject: &'a str,
    /// Details.
    pub detail: &'a str,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = a)]
struct Row {
    seq: i64,
    id: Uuid,
    kind: String,
    actor: String,
    subject: String,
    detail: String,
    create_time: DateTime<Utc>,
    prev_hash: Vec<u8>,
    hash: Vec<u8>,
}

/// The hash of an event (see [`crm_db::chain::link`]).
#[must_use]
pub fn chain_hash(prev: &[u8], seq: i64, id: Uuid, fields: [&str; 4], micros: i64) -> [u8; 32] {
    chain::link(prev, seq, id, &fields, micros)
}

fn row_hash(r: &Row, prev: &[u8]) -> [u8; 32] {
    chain_hash(
        prev,
        r.seq,
        r.id,
        [&r.kind, &r.actor, &r.subject, &r.detail],
        r.create_time.timestamp_micros(),
    )
}

/// Appends an event to `org`'s chain in the caller's tenant transaction.
///
/// # Errors
/// The database error.
pub async fn append(conn: &AsyncPgConnection, org: Uuid, entry: Entry<'_>) -> QueryResult<()> {
    let (seq, prev) = chain::next(conn, org).await?;
    let id = Uuid::now_v7();
    // Stored with microsecond precision: hash exactly what is stored.
    let now = Utc::now();
    let create_time = DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now);
    let hash = chain_hash(
        &prev,
        seq,
        id,
        [entry.kind, entry.actor, entry.subject, entry.detail],
        create_time.timestamp_micros(),
    );
    let insert = diesel::insert_into(a::table)
        .values((
            a::organization_id.eq(org),
            a::seq.eq(seq),
            a::id.eq(id),
            a::kind.eq(entry.kind),
            a::actor.eq(entry.actor),
            a::subject.eq(entry.subject),
            a::detail.eq(entry.detail),
            a::create_time.eq(create_time),
            a::prev_hash.eq(&prev),
            a::hash.eq(hash.to_vec()),
        ))
        .execute(&mut { conn });
    chain::append(conn, org, seq, &hash, insert).await?;
    Ok(())
}

/// Appends in a transaction of its own (for events outside any other write).
///
/// # Errors
/// The database error.
pub async fn append_alone(
    pool: &DbPool,
    org: Uuid,
    kind: &str,
    actor: &str,
    subject: &str,
    detail: &str,
) -> Result<(), ApiError> {
    let (kind, actor, subject, detail) = (
        kind.to_owned(),
        actor.to_owned(),
        subject.to_owned(),
        detail.to_owned(),
    );
    tenant::transaction(pool, org, move |conn| {
        Box::pin(async move {
            append(
                conn,
                org,
                Entry {
                    kind: &kind,
                    actor: &actor,
                    subject: &subject,
                    detail: &detail,
                },
            )
            .await?;
            Ok::<_, ApiError>(())
        })
    })
    .await
}

/// The outcome of a verification.
pub use crm_db::chain::Verdict;

async fn verify(conn: &AsyncPgConnection, org: Uuid) -> QueryResult<Verdict> {
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

/// Verifies `org`'s chain (for operators, and for the platform chain of
/// [`crate::keys::PLATFORM_CHAIN`], which no tenant's token can ask about).
///
/// # Errors
/// Database failures.
pub async fn verify_chain(pool: &DbPool, org: Uuid) -> Result<Verdict, ApiError> {
    tenant::read(pool, org, move |conn| {
        Box::pin(async move { verify(conn, org).await.map_err(ApiError::from) })
    })
    .await
}

/// The handlers.
#[derive(Debug, Clone)]
pub struct AuditApi {
    pool: DbPool,
    page_tokens: PageTokens,
}

impl AuditApi {
    /// Handlers over `pool`.
    #[must_use]
    pub fn new(pool: DbPool, page_tokens: PageTokens) -> Self {
        Self { pool, page_tokens }
    }
}

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn list_audit_events(
        &self,
        req: Request<ListAuditEventsRequest>,
    ) -> Result<Response<ListAuditEventsResponse>, Status> {
        let principal = principal_of(&req)?;
        let body = req.into_inner();
        let mut v = Violations::new();
        crm_platform::api::validate::optional_text(&mut v, "kind", &body.kind, 100);
        v.finish().map_err(status)?;
        let listing = Listing::of(&principal, &self.page_tokens, &body, &[&body.kind], 100)
            .map_err(status)?;
        let org = listing.org;
        let after = listing.after_i64().map_err(status)?.unwrap_or(0);
        let kind = body.kind.clone();
        let limit = listing.limit();
        let mut rows: Vec<Row> = tenant::read(&self.pool, org, move |conn| {
            Box::pin(async move {
                let mut q = a::table
                    .filter(a::organization_id.eq(org))
                    .filter(a::seq.gt(after))
                    .order(a::seq.asc())
                    .limit(limit)
                    .select(Row::as_select())
                    .into_boxed();
                if !kind.is_empty() {
                    q = q.filter(a::kind.eq(kind));
                }
                q.load(&mut { conn }).await.map_err(ApiError::from)
            })
        })
        .await
        .map_err(status)?;
        let next_page_token =
            listing.finish(&self.page_tokens, &mut rows, |r| vec![r.seq.to_string()]);
        let audit_events = rows
            .into_iter()
            .map(|r| AuditEvent {
                name: format!("organizations/{org}/auditEvents/{}", r.seq),
                seq: r.seq,
                kind: r.kind,
                actor: r.actor,
                subject: r.subject,
                detail: r.detail,
                create_time: Some(timestamp(r.create_time)),
                hash: r.hash.iter().map(|b| format!("{b:02x}")).collect(),
            })
            .collect();
        Ok(Response::new(ListAuditEventsResponse {
            audit_events,
            next_page_token,
        }))
    }

    async fn verify_audit_chain(
        &self,
        req: Request<VerifyAuditChainRequest>,
    ) -> Result<Response<VerifyAuditChainResponse>, Status> {
        let principal = principal_of(&req)?;
        let org = names::parse_organization(&req.get_ref().parent, "parent").map_err(status)?;
        names::require_same_organization(&principal, org).map_err(status)?;
        let verdict = tenant::read(&self.pool, org, move |conn| {
            Box::pin(async move { verify(conn, org).await.map_err(ApiError::from) })
        })
        .await
        .map_err(status)?;
        let (first_broken_seq, problem) = verdict.broken.unwrap_or_default();
        Ok(Response::new(VerifyAuditChainResponse {
            intact: first_broken_seq == 0,
            checked: verdict.checked,
            first_broken_seq,
            problem,
        }))
    }
}
