//! The revocation log and `RevocationService.WatchRevocations`.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use crm_auth::{MethodPolicy, Requirement};
use crm_db::outbox::Cursor;
use crm_db::{AsyncPgConnection, DbError, DbPool};
use crm_platform::ApiError;
use crm_platform::api::names;
use crm_platform::api::time::{optional_timestamp, timestamp};
use crm_platform::streams::StreamLimiter;
use crm_proto::identity_v1::revocation_service_server::RevocationService;
use crm_proto::identity_v1::{
    Revocation, RevocationKind, WatchRevocationsRequest, WatchRevocationsResponse,
};
use diesel::sql_types::{BigInt, Bool, Int2, Nullable, Text, Timestamptz};
use diesel_async::RunQueryDsl;
use tokio::sync::Notify;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use uuid::Uuid;

const SERVICE: &str = "crm.identity.v1.RevocationService";
/// The LISTEN/NOTIFY channel announcing committed revocations.
pub const CHANNEL: &str = "crm_revocations";
/// How long a revocation matters: longer than any access token lives.
pub const RELEVANT_FOR: Duration = Duration::from_secs(15 * 60);

/// RPC requirements. The stream needs no access token (a service follows it before it can
/// verify any) but the suite's internal service credential, checked by the handler.
#[must_use]
pub fn policy() -> MethodPolicy {
    MethodPolicy::new().with(SERVICE, "WatchRevocations", Requirement::Public)
}

/// Records a revocation of a session, token or client (ids unique across organizations) in the
/// caller's transaction.
///
/// # Errors
/// The database error.
pub async fn record(
    conn: &AsyncPgConnection,
    kind: RevocationKind,
    value: &str,
    issued_before: Option<DateTime<Utc>>,
) -> Result<(), diesel::result::Error> {
    insert(conn, kind, value, issued_before, None).await
}

/// Revokes the tokens of `subject` issued at or before `issued_before`: in organization `org`
/// only (a membership changed there), or in every organization when `None` (the person's own
/// credentials changed).
///
/// # Errors
/// The database error.
pub async fn record_subject(
    conn: &AsyncPgConnection,
    subject: &str,
    org: Option<Uuid>,
    issued_before: DateTime<Utc>,
) -> Result<(), diesel::result::Error> {
    insert(
        conn,
        RevocationKind::Subject,
        subject,
        Some(issued_before),
        org,
    )
    .await
}

crm_db::enum_column!(StoredKind, RevocationKind, "`revocations.kind`.");

async fn insert(
    conn: &AsyncPgConnection,
    kind: RevocationKind,
    value: &str,
    issued_before: Option<DateTime<Utc>>,
    org: Option<Uuid>,
) -> Result<(), diesel::result::Error> {
    let expire = Utc::now() + chrono::Duration::from_std(RELEVANT_FOR).unwrap_or_default();
    diesel::sql_query(
        "INSERT INTO revocations (kind, value, issued_before, expire_time, organization_id) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind::<Int2, _>(StoredKind(kind))
    .bind::<Text, _>(value)
    .bind::<Nullable<Timestamptz>, _>(issued_before)
    .bind::<Timestamptz, _>(expire)
    .bind::<Nullable<diesel::sql_types::Uuid>, _>(org)
    .execute(&mut { conn })
    .await?;
    // Woken on commit: every replica's streams read the new row at once.
    crm_db::notify::announce(conn, CHANNEL).await
}

#[derive(Debug, diesel::QueryableByName)]
struct Row {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    txid: String,
    #[diesel(sql_type = Int2)]
    kind: i16,
    #[diesel(sql_type = Text)]
    value: String,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    issued_before: Option<DateTime<Utc>>,
    #[diesel(sql_type = Timestamptz)]
    create_time: DateTime<Utc>,
    #[diesel(sql_type = Nullable<diesel::sql_types::Uuid>)]
    organization_id: Option<Uuid>,
}

async fn read_after(
    pool: &DbPool,
    after: Cursor,
    include_expired: bool,
) -> Result<Vec<Row>, DbError> {
    let mut conn = pool.get().await?;
    // Commit-safe order, as for the outbox: only transactions below the snapshot's xmin.
    Ok(diesel::sql_query(
        "SELECT id, txid::text AS txid, kind, value, issued_before, create_time, organization_id \
           FROM revocations \
          WHERE (txid, id) > ($1::xid8, $2) \
            AND txid < pg_snapshot_xmin(pg_current_snapshot()) \
            AND ($3 OR expire_time > now()) \
          ORDER BY revocations.txid, revocations.id LIMIT 500",
    )
    .bind::<Text, _>(after.txid.to_string())
    .bind::<BigInt, _>(after.id)
    .bind::<Bool, _>(include_expired)
    .load(&mut conn)
    .await?)
}

/// The stream handlers.
#[derive(Debug, Clone)]
pub struct RevocationApi {
    pool: DbPool,
    written: Arc<Notify>,
    service_key: [u8; 32],
    streams: Arc<StreamLimiter>,
}

/// Streams open at once in this process, and per client address.
const MAX_STREAMS: usize = 64;
const MAX_STREAMS_PER_ADDRESS: usize = 8;
/// An empty batch after this much quiet tells followers the feed is alive and current.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// How often an idle stream reads anyway (writes of other replicas are announced by
/// LISTEN/NOTIFY; this only bounds a lost notification).
const SAFETY_POLL: Duration = Duration::from_secs(1);
/// After a wake-up, how often and how many times an empty read is retried: a committed row is
/// readable only once every older transaction has ended (the snapshot's xmin passed it).
const CATCH_UP_INTERVAL: Duration = Duration::from_millis(100);
const CATCH_UP_TRIES: u32 = 50;

/// The SHA-256 of an internal service credential, as compared.
pub(crate) fn service_key_digest(key: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(key.as_bytes()).into()
}

/// Whether `req` carries the service credential whose digest is `digest` (compared in
/// constant time).
pub(crate) fn presents_service_key<T>(req: &Request<T>, digest: &[u8; 32]) -> bool {
    use subtle::ConstantTimeEq;
    req.metadata()
        .get(crm_auth::remote::SERVICE_KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(service_key_digest)
        .is_some_and(|d| bool::from(d.ct_eq(digest)))
}

impl RevocationApi {
    /// Handlers over `pool`; `written` is woken after revocations commit (locally, and through
    /// LISTEN/NOTIFY from other replicas); only callers presenting `service_key` (the suite's
    /// internal credential) may watch.
    #[must_use]
    pub fn new(pool: DbPool, written: Arc<Notify>, service_key: &str) -> Self {
        Self {
            pool,
            written,
            service_key: service_key_digest(service_key),
            streams: StreamLimiter::new(MAX_STREAMS, MAX_STREAMS_PER_ADDRESS),
        }
    }

    fn check_credential<T>(&self, req: &Request<T>) -> Result<(), Status> {
        if presents_service_key(req, &self.service_key) {
            return Ok(());
        }
        Err(crate::status(ApiError::Unauthenticated {
            reason: "SERVICE_CREDENTIAL_REQUIRED",
            message: "the revocation feed is for the suite's services".into(),
        }))
    }
}

type RevocationStream =
    Pin<Box<dyn Stream<Item = Result<WatchRevocationsResponse, Status>> + Send>>;

fn to_proto(r: Row) -> Revocation {
    Revocation {
        kind: i32::from(r.kind),
        value: r.value,
        issued_before: optional_timestamp(r.issued_before),
        create_time: Some(timestamp(r.create_time)),
        organization: r
            .organization_id
            .map(names::organization_name)
            .unwrap_or_default(),
    }
}

#[tonic::async_trait]
impl RevocationService for RevocationApi {
    type WatchRevocationsStream = RevocationStream;

    async fn watch_revocations(
        &self,
        req: Request<WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        self.check_credential(&req)?;
        let guard = self
            .streams
            .open(crm_platform::streams::peer(&req))
            .map_err(crate::status)?;
        let body = req.into_inner();
        let mut cursor =
            Cursor::decode(&body.cursor).map_err(|e| crate::status(ApiError::from(e)))?;
        let mut include_expired = !body.cursor.is_empty();
        let api = self.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let _guard = guard;
            // The first answer always comes at once (empty when there is nothing): followers
            // serve only after it.
            let mut last_sent: Option<tokio::time::Instant> = None;
            let mut pacing =
                crm_db::notify::Pacing::new(SAFETY_POLL, CATCH_UP_INTERVAL, CATCH_UP_TRIES);
            loop {
                let notified = api.written.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                match read_after(&api.pool, cursor, include_expired).await {
                    Ok(rows) if rows.is_empty() => {
                        if last_sent.is_none_or(|t| t.elapsed() >= HEARTBEAT) {
                            let beat = WatchRevocationsResponse {
                                revocations: Vec::new(),
                                cursor: cursor.encode(),
                            };
                            if tx.send(Ok(beat)).await.is_err() {
                                return;
                            }
                            last_sent = Some(tokio::time::Instant::now());
                        }
                        let wait = pacing.next_wait();
                        tokio::select! {
                            () = &mut notified => pacing.woken(),
                            () = tokio::time::sleep(wait) => {}
                            () = tx.closed() => return,
                        }
                    }
                    Ok(rows) => {
                        include_expired = true;
                        if let Some(last) = rows.last() {
                            cursor = Cursor {
                                txid: last.txid.parse().unwrap_or(cursor.txid),
                                id: last.id,
                            };
                        }
                        let batch = WatchRevocationsResponse {
                            revocations: rows.into_iter().map(to_proto).collect(),
                            cursor: cursor.encode(),
                        };
                        if tx.send(Ok(batch)).await.is_err() {
                            return;
                        }
                        last_sent = Some(tokio::time::Instant::now());
                    }
                    Err(e) => {
                        let _ = tx.send(Err(crate::status(ApiError::from(e)))).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
