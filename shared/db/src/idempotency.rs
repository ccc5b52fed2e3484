//! Idempotency of mutating requests.
//!
//! The key is claimed with `INSERT ... ON CONFLICT DO NOTHING` inside the request's own
//! transaction: a concurrent duplicate blocks on the unique index until the first transaction
//! ends, then sees its committed response (or, if it rolled back, claims the key itself).

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::schema::idempotency_keys as keys;

/// What to do with a request carrying a `request_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// First time: do the work, then call [`complete`].
    New,
    /// Seen before with the same payload: answer with this encoded response.
    Replay(Vec<u8>),
    /// Seen before with a different payload or method: INVALID_ARGUMENT.
    Mismatch,
}

/// Digest of a request: its method and its encoded body with the `request_id` cleared.
#[must_use]
pub fn request_hash(method: &str, encoded_request: &[u8]) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update((method.len() as u64).to_be_bytes());
    hasher.update(method.as_bytes());
    hasher.update(encoded_request);
    hasher.finalize().to_vec()
}

/// Claims `request_id` for `method` in the current tenant transaction.
///
/// # Errors
/// Returns the database error.
pub async fn claim(
    conn: &AsyncPgConnection,
    org: Uuid,
    request_id: Uuid,
    method: &str,
    hash: &[u8],
) -> QueryResult<Claim> {
    let inserted = diesel::insert_into(keys::table)
        .values((
            keys::organization_id.eq(org),
            keys::request_id.eq(request_id),
            keys::method.eq(method),
            keys::request_hash.eq(hash),
        ))
        .on_conflict_do_nothing()
        .execute(&mut { conn })
        .await?;
    if inserted == 1 {
        return Ok(Claim::New);
    }
    let (stored_method, stored_hash, response): (String, Vec<u8>, Option<Vec<u8>>) = keys::table
        .filter(keys::organization_id.eq(org))
        .filter(keys::request_id.eq(request_id))
        .select((keys::method, keys::request_hash, keys::response))
        .first(&mut { conn })
        .await?;
    Ok(match response {
        Some(bytes) if stored_method == method && stored_hash == hash => Claim::Replay(bytes),
        Some(_) | None => Claim::Mismatch,
    })
}

/// Stores the response of a claimed key, in the same transaction as the effect.
///
/// # Errors
/// Returns the database error.
pub async fn complete(
    conn: &AsyncPgConnection,
    org: Uuid,
    request_id: Uuid,
    response: &[u8],
) -> QueryResult<()> {
    crate::fixed::FixedSql(
        diesel::update(keys::table)
            .filter(keys::organization_id.eq(org))
            .filter(keys::request_id.eq(request_id))
            .set(keys::response.eq(response)),
    )
    .execute(&mut { conn })
    .await?;
    Ok(())
}
