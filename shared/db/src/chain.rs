//! Append-only hash chains, one per organization: each entry's hash covers the previous
//! entry's hash and the entry's own fields, and a head row (`audit_heads` in the service's
//! schema) records the newest link, so that changing, inserting or removing any entry —
//! the newest included — is detected by recomputing the chain.

use diesel::OptionalExtension as _;
use diesel::QueryableByName;
use diesel::sql_types::{Bytea, Int8, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::fixed::FixedSql;

/// The previous hash of the first entry.
pub const GENESIS: [u8; 32] = [0; 32];

/// The hash of one entry: SHA-256 over a version tag, the previous hash, the sequence number,
/// the id, each field length-prefixed (so field boundaries cannot shift), and the time in
/// microseconds.
#[must_use]
pub fn link(prev: &[u8], seq: i64, id: Uuid, fields: &[&str], micros: i64) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"crm audit v1");
    hasher.update(prev);
    hasher.update(seq.to_be_bytes());
    hasher.update(id.as_bytes());
    for field in fields {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field.as_bytes());
    }
    hasher.update(micros.to_be_bytes());
    hasher.finalize().into()
}

#[derive(QueryableByName)]
struct Head {
    #[diesel(sql_type = Int8)]
    seq: i64,
    #[diesel(sql_type = Bytea)]
    hash: Vec<u8>,
}

/// Takes the organization's chain for the rest of the transaction (appends are serialised per
/// organization) and returns the next sequence number and the previous hash, in one statement:
/// the upsert locks the head row, waiting for an appender that holds it to finish, and then
/// works on the newest committed version of the row (READ COMMITTED's rule for `ON CONFLICT
/// DO UPDATE`), so it returns the head that appender left; an organization's first append
/// creates the row at sequence 0 with the genesis hash. Were this a plain read after a lock
/// taken inside the same statement, its snapshot would predate the lock and could miss the head
/// just committed.
///
/// # Errors
/// The database error.
pub async fn next(conn: &AsyncPgConnection, org: Uuid) -> diesel::QueryResult<(i64, Vec<u8>)> {
    let head: Head = FixedSql(
        diesel::sql_query(
            "INSERT INTO audit_heads (organization_id, seq, hash) VALUES ($1, 0, $2) \
             ON CONFLICT (organization_id) DO UPDATE SET seq = audit_heads.seq \
             RETURNING seq, hash",
        )
        .bind::<SqlUuid, _>(org)
        .bind::<Bytea, _>(GENESIS.as_slice()),
    )
    .get_result(&mut { conn })
    .await?;
    Ok((head.seq + 1, head.hash))
}

/// The recorded head of the organization's chain.
///
/// # Errors
/// The database error.
pub async fn head(
    conn: &AsyncPgConnection,
    org: Uuid,
) -> diesel::QueryResult<Option<(i64, Vec<u8>)>> {
    let head: Option<Head> =
        diesel::sql_query("SELECT seq, hash FROM audit_heads WHERE organization_id = $1")
            .bind::<SqlUuid, _>(org)
            .get_result(&mut { conn })
            .await
            .optional()?;
    Ok(head.map(|h| (h.seq, h.hash)))
}

/// Appends an entry: runs `insert` (the entry's own INSERT, at `seq` with `hash`) and moves the
/// head to it, both sent together so that they cost one round trip under the chain's lock.
///
/// # Errors
/// The database error of either.
pub async fn append<F>(
    conn: &AsyncPgConnection,
    org: Uuid,
    seq: i64,
    hash: &[u8],
    insert: F,
) -> diesel::QueryResult<()>
where
    F: std::future::Future<Output = diesel::QueryResult<usize>>,
{
    let (inserted, advanced) =
        futures_util::future::join(insert, advance(conn, org, seq, hash)).await;
    inserted?;
    advanced
}

/// Moves the head to the entry just appended.
///
/// # Errors
/// The database error.
pub async fn advance(
    conn: &AsyncPgConnection,
    org: Uuid,
    seq: i64,
    hash: &[u8],
) -> diesel::QueryResult<()> {
    FixedSql(
        diesel::sql_query(
            "INSERT INTO audit_heads (organization_id, seq, hash) VALUES ($1, $2, $3) \
             ON CONFLICT (organization_id) DO UPDATE SET seq = EXCLUDED.seq, hash = EXCLUDED.hash",
        )
        .bind::<SqlUuid, _>(org)
        .bind::<Int8, _>(seq)
        .bind::<Bytea, _>(hash),
    )
    .execute(&mut { conn })
    .await?;
    Ok(())
}

/// One stored entry as the verifier sees it.
#[derive(Debug, Clone, Copy)]
pub struct Stored<'a> {
    /// Sequence number.
    pub seq: i64,
    /// The stored previous hash.
    pub prev_hash: &'a [u8],
    /// The stored hash.
    pub hash: &'a [u8],
}

/// The outcome of a verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Entries checked.
    pub checked: i64,
    /// The first broken entry and what is wrong with it, if any.
    pub broken: Option<(i64, String)>,
}

/// Checks `rows` (in sequence order) against each other and the recorded `head`;
/// `recompute(row, prev)` is the hash the row should have after `prev`.
pub fn verify<T>(
    rows: &[T],
    head: Option<(i64, Vec<u8>)>,
    stored: impl Fn(&T) -> Stored<'_>,
    recompute: impl Fn(&T, &[u8]) -> [u8; 32],
) -> Verdict {
    let mut prev = GENESIS.to_vec();
    let mut expected = 1;
    for row in rows {
        let s = stored(row);
        let problem = if s.seq != expected {
            Some(format!("entry {expected} is missing"))
        } else if s.prev_hash != prev.as_slice() {
            Some("the link to the previous entry does not match".to_owned())
        } else if s.hash != recompute(row, &prev).as_slice() {
            Some("the entry was changed after it was written".to_owned())
        } else {
            None
        };
        if let Some(problem) = problem {
            return Verdict {
                checked: expected,
                broken: Some((expected, problem)),
            };
        }
        prev = s.hash.to_vec();
        expected += 1;
    }
    let last = expected - 1;
    let broken = match head {
        Some((seq, hash)) if seq != last || hash != prev => Some((
            last + 1,
            format!(
                "the chain ends at {last} but its head records {seq}: newest entries were removed"
            ),
        )),
        None if last > 0 => Some((1, "the chain head is missing".to_owned())),
        Some(_) | None => None,
    };
    Verdict {
        checked: last,
        broken,
    }
}
