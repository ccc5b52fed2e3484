//! The transactional outbox and its ordered reader.
//!
//! Writers append events in the transaction that makes the change; the row's `txid` column
//! defaults to `pg_current_xact_id()`. Readers order by `(txid, id)` and only return rows whose
//! transaction id is below the current snapshot's `xmin`: every such transaction has ended, so no
//! event can later appear before the reader's cursor. A transaction that commits late (after a
//! higher-numbered one) is therefore delivered late, never skipped. The price: a long-running
//! transaction anywhere in the cluster holds delivery back until it ends.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bytea, Integer, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::schema::outbox;

/// An event to append.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    /// Fully-qualified protobuf name of the payload message.
    pub event_type: &'a str,
    /// Resource the event is about.
    pub resource: &'a str,
    /// Principal that caused it.
    pub actor: &'a str,
    /// The mutating request's idempotency key, or empty.
    pub request_id: &'a str,
    /// Encoded payload message.
    pub payload: Vec<u8>,
}

/// Appends one event in the caller's tenant transaction; returns its id.
///
/// # Errors
/// Returns the database error.
pub async fn append(conn: &AsyncPgConnection, org: Uuid, event: NewEvent<'_>) -> QueryResult<Uuid> {
    let event_id = Uuid::now_v7();
    diesel::insert_into(outbox::table)
        .values((
            outbox::organization_id.eq(org),
            outbox::event_id.eq(event_id),
            outbox::event_type.eq(event.event_type),
            outbox::resource.eq(event.resource),
            outbox::actor.eq(event.actor),
            outbox::request_id.eq(event.request_id),
            outbox::payload.eq(event.payload),
        ))
        .execute(&mut { conn })
        .await?;
    // Wakes the streams of every replica when the transaction commits.
    crate::fixed::FixedSql(diesel::sql_query(
        "SELECT pg_notify('crm_outbox_' || current_schema(), '')",
    ))
    .execute(&mut { conn })
    .await?;
    Ok(event_id)
}

/// The LISTEN/NOTIFY channel on which [`append`] announces the events of service `schema`.
#[must_use]
pub fn channel(schema: &str) -> String {
    format!("crm_outbox_{schema}")
}

/// A position in the outbox: after the event `(txid, id)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    /// Transaction id (xid8) of the last delivered event.
    pub txid: u64,
    /// Row id of the last delivered event.
    pub id: i64,
}

/// A cursor string that is not one of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the cursor is malformed")]
pub struct MalformedCursor;

impl Cursor {
    /// Encodes the cursor as an opaque string.
    #[must_use]
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("o1:{}:{}", self.txid, self.id))
    }

    /// Decodes a cursor; the empty string is the start of the outbox.
    ///
    /// # Errors
    /// [`MalformedCursor`] when it was not produced by [`Cursor::encode`].
    pub fn decode(s: &str) -> Result<Self, MalformedCursor> {
        if s.is_empty() {
            return Ok(Self::default());
        }
        let raw = URL_SAFE_NO_PAD.decode(s).map_err(|_| MalformedCursor)?;
        let text = String::from_utf8(raw).map_err(|_| MalformedCursor)?;
        let mut parts = text.split(':');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("o1"), Some(txid), Some(id), None) => Ok(Self {
                txid: txid.parse().map_err(|_| MalformedCursor)?,
                id: id.parse().map_err(|_| MalformedCursor)?,
            }),
            _ => Err(MalformedCursor),
        }
    }
}

/// An event read back from the outbox.
#[derive(Debug, Clone, QueryableByName)]
pub struct StoredEvent {
    /// Row id.
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    /// Transaction id, as text (xid8 has no diesel type).
    #[diesel(sql_type = Text)]
    pub txid: String,
    /// Event id.
    #[diesel(sql_type = SqlUuid)]
    pub event_id: Uuid,
    /// Payload type.
    #[diesel(sql_type = Text)]
    pub event_type: String,
    /// Resource name.
    #[diesel(sql_type = Text)]
    pub resource: String,
    /// Actor.
    #[diesel(sql_type = Text)]
    pub actor: String,
    /// Request id.
    #[diesel(sql_type = Text)]
    pub request_id: String,
    /// Encoded payload.
    #[diesel(sql_type = Bytea)]
    pub payload: Vec<u8>,
    /// Commit-side time of the change.
    #[diesel(sql_type = Timestamptz)]
    pub occur_time: DateTime<Utc>,
}

impl StoredEvent {
    /// The cursor just after this event.
    #[must_use]
    pub fn cursor(&self) -> Cursor {
        Cursor {
            txid: self.txid.parse().unwrap_or_default(),
            id: self.id,
        }
    }
}

/// Reads up to `limit` events of the current tenant after `after`, in commit-safe order,
/// optionally only of the given types (empty = all).
///
/// The order is by the table's xid8 column (qualified: the bare name would resolve to the text
/// output column and sort `100000` before `99998`).
///
/// # Errors
/// Returns the database error.
pub async fn read_after(
    conn: &AsyncPgConnection,
    org: Uuid,
    after: Cursor,
    types: &[String],
    limit: i32,
) -> QueryResult<Vec<StoredEvent>> {
    diesel::sql_query(
        "SELECT id, txid::text AS txid, event_id, event_type, resource, actor, request_id, \
                payload, occur_time \
           FROM outbox \
          WHERE organization_id = $1 \
            AND (txid, id) > ($2::xid8, $3) \
            AND txid < pg_snapshot_xmin(pg_current_snapshot()) \
            AND (cardinality($4::text[]) = 0 OR event_type = ANY($4)) \
          ORDER BY outbox.txid, outbox.id \
          LIMIT $5",
    )
    .bind::<SqlUuid, _>(org)
    .bind::<Text, _>(after.txid.to_string())
    .bind::<BigInt, _>(after.id)
    .bind::<Array<Text>, _>(types)
    .bind::<Integer, _>(limit)
    .load(&mut { conn })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip() {
        let c = Cursor {
            txid: 9_000_000_001,
            id: 42,
        };
        assert_eq!(Cursor::decode(&c.encode()), Ok(c));
        assert_eq!(Cursor::decode(""), Ok(Cursor::default()));
        assert_eq!(Cursor::decode("bm9wZQ"), Err(MalformedCursor));
        assert_eq!(Cursor::decode("!!"), Err(MalformedCursor));
    }
}
