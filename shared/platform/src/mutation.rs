//! How every mutating RPC runs: one tenant transaction that claims the idempotency key, does
//! the work (row changes, outbox events) and stores the response — all or nothing — executed in
//! a spawned task so a client disconnect cannot cut it half-way, yet bounded by the call's
//! deadline so no work continues after the caller gave up.

use std::future::Future;

use crm_db::idempotency::{self, Claim};
use crm_db::tenant::{self, TxFuture};
use crm_db::{AsyncPgConnection, DbPool};
use uuid::Uuid;

use crate::api::validate::Violations;
use crate::error::ApiError;
use crate::layers::Deadline;

/// The idempotency key of one mutating request.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    /// The client's `request_id`.
    pub request_id: Uuid,
    /// The method, so one id cannot be replayed against another RPC.
    pub method: String,
    /// Digest of the request without its `request_id`.
    pub hash: Vec<u8>,
}

impl IdempotencyKey {
    /// Builds the key of a request whose `request_id` field is `request_id` (empty = no key).
    /// `without_id` is the request with `request_id` cleared.
    pub fn from_request<M: prost::Message>(
        violations: &mut Violations,
        method: &str,
        request_id: &str,
        without_id: &M,
    ) -> Option<Self> {
        let id = crate::api::validate::optional_uuid(violations, "request_id", request_id)?;
        Some(Self {
            request_id: id,
            method: method.to_owned(),
            hash: idempotency::request_hash(method, &without_id.encode_to_vec()),
        })
    }
}

/// Runs `work` once per idempotency key in one tenant transaction; a repeat of the key returns
/// the first response, the same key with another payload is INVALID_ARGUMENT.
///
/// # Errors
/// `work`'s error or a mapped database error; nothing is written unless everything succeeds.
pub async fn idempotent<R, F>(
    pool: DbPool,
    org: Uuid,
    key: Option<IdempotencyKey>,
    work: F,
) -> Result<R, ApiError>
where
    R: prost::Message + Default + Clone + Send + 'static,
    F: for<'r> FnOnce(&'r AsyncPgConnection) -> TxFuture<'r, Result<R, ApiError>> + Send + 'static,
{
    idempotent_redacted(pool, org, key, work, R::clone).await
}

/// [`idempotent`] in a transaction that also sets `app.user_id` to `viewer`, when given
/// (see [`crm_db::tenant::transaction_as`]).
///
/// # Errors
/// As [`idempotent`].
pub async fn idempotent_as<R, F>(
    pool: DbPool,
    org: Uuid,
    viewer: Option<Uuid>,
    key: Option<IdempotencyKey>,
    work: F,
) -> Result<R, ApiError>
where
    R: prost::Message + Default + Clone + Send + 'static,
    F: for<'r> FnOnce(&'r AsyncPgConnection) -> TxFuture<'r, Result<R, ApiError>> + Send + 'static,
{
    claimed(pool, org, viewer, key, work, R::clone).await
}

/// As [`idempotent`], but what is stored for replays is `redact(response)`: for responses that
/// carry something shown once (a new secret), a retry gets the rest of the response without it.
///
/// # Errors
/// As [`idempotent`].
pub async fn idempotent_redacted<R, F>(
    pool: DbPool,
    org: Uuid,
    key: Option<IdempotencyKey>,
    work: F,
    redact: fn(&R) -> R,
) -> Result<R, ApiError>
where
    R: prost::Message + Default + Clone + Send + 'static,
    F: for<'r> FnOnce(&'r AsyncPgConnection) -> TxFuture<'r, Result<R, ApiError>> + Send + 'static,
{
    claimed(pool, org, None, key, work, redact).await
}

async fn claimed<R, F>(
    pool: DbPool,
    org: Uuid,
    viewer: Option<Uuid>,
    key: Option<IdempotencyKey>,
    work: F,
    redact: fn(&R) -> R,
) -> Result<R, ApiError>
where
    R: prost::Message + Default + Clone + Send + 'static,
    F: for<'r> FnOnce(&'r AsyncPgConnection) -> TxFuture<'r, Result<R, ApiError>> + Send + 'static,
{
    tenant::transaction_as(&pool, org, viewer, move |conn| {
        Box::pin(async move {
            if let Some(k) = &key {
                match idempotency::claim(conn, org, k.request_id, &k.method, &k.hash).await? {
                    Claim::Replay(bytes) => {
                        return R::decode(bytes.as_slice())
                            .map_err(|e| ApiError::Internal(format!("stored response: {e}")));
                    }
                    Claim::Mismatch => {
                        return Err(ApiError::invalid(
                            "request_id",
                            "REQUEST_ID_REUSED",
                            "this request_id was already used for a different request",
                        ));
                    }
                    Claim::New => {}
                }
            }
            let response = work(conn).await?;
            if let Some(k) = &key {
                idempotency::complete(conn, org, k.request_id, &redact(&response).encode_to_vec())
                    .await?;
            }
            Ok(response)
        })
    })
    .await
}

/// Runs a write detached from the caller: a client disconnect does not cancel it, but the
/// call's deadline does (the transaction then rolls back and its connection is discarded).
///
/// # Errors
/// The write's error; DEADLINE_EXCEEDED when the deadline passed first.
pub async fn detached<T, Fut>(deadline: Option<Deadline>, write: Fut) -> Result<T, ApiError>
where
    Fut: Future<Output = Result<T, ApiError>> + Send + 'static,
    T: Send + 'static,
{
    let task = tokio::spawn(async move {
        match deadline {
            Some(d) => tokio::time::timeout_at(d.0, write)
                .await
                .unwrap_or(Err(ApiError::DeadlineExceeded)),
            None => write.await,
        }
    });
    task.await
        .map_err(|e| ApiError::Internal(format!("write task failed: {e}")))?
}
