//! The authentication audit log: append-only (the app role has no UPDATE or DELETE on it), one
//! hash chain per organization, and a head row so that removing the newest events is detected
//! as well as changing any event.

use chrono::{DateTime, Utc};
use crm_auth::layer::principal_of;
use crm_auth::{MethodPolicy, Requirement, permission};
use crm_db::page::PageTokens;
use crm_db::{AsyncPgConnection, DbPool, tenant};
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
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use crate::status;
use uuid::Uuid;

use crate::schema::{audit_events as a, audit_heads as h};

const SERVICE: &str = "crm.identity.v1.AuditService";
const GENESIS: [u8; 32] = [0; 32];

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

/// The hash of an event: SHA-256 over the previous hash and every field, length-prefixed.
#[must_use]
pub fn chain_hash(prev: &[u8], seq: i64, id: Uuid, fields: [&str; 4], micros: i64) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"crm audit v1");
    hasher.update(prev);
    hasher.update(seq.to_be_bytes());
    hasher.update(id.as_bytes());
    // kind, actor, subject, detail
    for field in fields {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field.as_bytes());
    }
    hasher.update(micros.to_be_bytes());
    hasher.finalize().into()
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
    // Serialise appends per organization for the rest of the transaction.
    diesel::sql_query(
        "SELECT pg_advisory_xact_lock(hashtextextended('crm-audit:' || $1::text, 0))",
    )
    .bind::<diesel::sql_types::Uuid, _>(org)
    .execute(&mut { conn })
    .await?;
    let head: Option<(i64, Vec<u8>)> = h::table
        .filter(h::organization_id.eq(org))
        .select((h::seq, h::hash))
        .first(&mut { conn })
        .await
        .optional()?;
    let (seq, prev) = head.map_or((1, GENESIS.to_vec()), |(s, hash)| (s + 1, hash));
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
    diesel::insert_into(a::table)
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
        .execute(&mut { conn })
        .await?;
    diesel::insert_into(h::table)
        .values((
            h::organization_id.eq(org),
            h::seq.eq(seq),
            h::hash.eq(hash.to_vec()),
        ))
        .on_conflict(h::organization_id)
        .do_update()
        .set((h::seq.eq(seq), h::hash.eq(hash.to_vec())))
        .execute(&mut { conn })
        .await?;
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Events checked.
    pub checked: i64,
    /// First broken link and what is wrong, if any.
    pub broken: Option<(i64, String)>,
}

async fn verify(conn: &AsyncPgConnection, org: Uuid) -> QueryResult<Verdict> {
    let rows: Vec<Row> = a::table
        .filter(a::organization_id.eq(org))
        .order(a::seq.asc())
        .select(Row::as_select())
        .load(&mut { conn })
        .await?;
    let head: Option<(i64, Vec<u8>)> = h::table
        .filter(h::organization_id.eq(org))
        .select((h::seq, h::hash))
        .first(&mut { conn })
        .await
        .optional()?;
    let mut prev = GENESIS.to_vec();
    let mut expected_seq = 1;
    for r in &rows {
        let broken = if r.seq != expected_seq {
            Some(format!("event {expected_seq} is missing"))
        } else if r.prev_hash != prev {
            Some("the link to the previous event does not match".to_owned())
        } else if r.hash != row_hash(r, &prev) {
            Some("the event was changed after it was written".to_owned())
        } else {
            None
        };
        if let Some(problem) = broken {
            return Ok(Verdict {
                checked: expected_seq,
                broken: Some((expected_seq, problem)),
            });
        }
        prev.clone_from(&r.hash);
        expected_seq += 1;
    }
    let last = expected_seq - 1;
    match head {
        Some((seq, hash)) if seq != last || hash != prev => Ok(Verdict {
            checked: last,
            broken: Some((
                last + 1,
                format!(
                    "the chain ends at {last} but its head records {seq}: newest events were removed"
                ),
            )),
        }),
        None if last > 0 => Ok(Verdict {
            checked: last,
            broken: Some((1, "the chain head is missing".into())),
        }),
        Some(_) | None => Ok(Verdict {
            checked: last,
            broken: None,
        }),
    }
}

/// Verifies `org`'s chain (for operators, and for the platform chain of
/// [`crate::keys::PLATFORM_CHAIN`], which no tenant's token can ask about).
///
/// # Errors
/// Database failures.
pub async fn verify_chain(pool: &DbPool, org: Uuid) -> Result<Verdict, ApiError> {
    tenant::transaction(pool, org, move |conn| {
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
        let mut rows: Vec<Row> = tenant::transaction(&self.pool, org, move |conn| {
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
        let verdict = tenant::transaction(&self.pool, org, move |conn| {
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
