//! The outbox of a service as a resumable, commit-ordered stream (each service's
//! `EventService/StreamEvents`).
//!
//! A stream reads batches after the client's cursor in tenant transactions. When caught up it
//! sleeps until a commit that wrote events is announced (by this process, or by any replica
//! through LISTEN/NOTIFY), then retries briefly while the new rows are not yet below the
//! snapshot's xmin; a slow safety poll bounds a lost notification. Streams are limited per
//! organization and in total.

use std::sync::Arc;
use std::time::Duration;

use crm_auth::Principal;
use crm_db::outbox::{self, Cursor};
use crm_platform::ApiError;
use crm_platform::api::names;
use crm_platform::api::time::timestamp;
use crm_platform::streams::StreamLimiter;
use crm_proto::common_v1::Event;
use tonic::Status;

use crate::Context;

/// How often an idle stream reads anyway.
const SAFETY_POLL: Duration = Duration::from_secs(2);
/// After a wake-up: retry an empty read this often, this many times.
const CATCH_UP_INTERVAL: Duration = Duration::from_millis(50);
const CATCH_UP_TRIES: u32 = 100;
/// Streams open at once in this process, and per organization.
pub const MAX_STREAMS: usize = 256;
/// Streams one organization may hold open.
pub const MAX_STREAMS_PER_ORGANIZATION: usize = 16;
const DEFAULT_BATCH: i32 = 100;
const MAX_BATCH: i32 = 1000;
const MAX_TYPES: usize = 64;

/// A new limiter of open streams with the standard limits.
#[must_use]
pub fn limiter() -> Arc<StreamLimiter> {
    StreamLimiter::new(MAX_STREAMS, MAX_STREAMS_PER_ORGANIZATION)
}

/// What a StreamEvents request asks for.
#[derive(Debug, Clone)]
pub struct StreamRequest {
    /// `organizations/{organization}`.
    pub parent: String,
    /// The last cursor processed; empty for the oldest retained event.
    pub cursor: String,
    /// Event types to deliver; empty for all.
    pub types: Vec<String>,
    /// Events per batch: 0 means 100, at most 1000.
    pub batch_size: i32,
}

/// One batch: the events and the cursor after the last of them.
pub type Batch = (Vec<Event>, String);

/// The batches of a stream, as they commit.
pub type Batches = tokio_stream::wrappers::ReceiverStream<Result<Batch, Status>>;

/// The payload's message type for an event type: a resource change (`crm.core.v1.Contact.created`,
/// whose last segment is a lowercase verb) carries `crm.common.v1.ResourceChanged`; any other
/// event type is its payload's message (`crm.core.v1.ConsentRevoked`, say).
fn payload_type(event_type: &str) -> &str {
    let verb = event_type
        .rsplit('.')
        .next()
        .and_then(|last| last.chars().next())
        .is_some_and(char::is_lowercase);
    if verb {
        "crm.common.v1.ResourceChanged"
    } else {
        event_type
    }
}

fn to_event(org_name: &str, e: outbox::StoredEvent) -> Event {
    let cursor = e.cursor().encode();
    Event {
        event_id: e.event_id.to_string(),
        cursor,
        organization: org_name.to_owned(),
        payload: Some(prost_types::Any {
            type_url: format!("type.googleapis.com/{}", payload_type(&e.event_type)),
            value: e.payload,
        }),
        r#type: e.event_type,
        occur_time: Some(timestamp(e.occur_time)),
        actor: e.actor,
        request_id: e.request_id,
        resource: e.resource,
    }
}

/// Opens a stream of the organization's events after `req.cursor`.
///
/// # Errors
/// INVALID_ARGUMENT for a bad parent, cursor, batch size or type; PERMISSION_DENIED for another
/// organization; RESOURCE_EXHAUSTED when too many streams are open.
pub fn open(
    ctx: &Context,
    streams: &Arc<StreamLimiter>,
    principal: &Principal,
    body: StreamRequest,
) -> Result<Batches, ApiError> {
    let mut v = crm_platform::api::validate::Violations::new();
    let org = names::parse_organization(&body.parent, "parent")
        .map_err(|e| v.absorb(e))
        .ok();
    let cursor = Cursor::decode(&body.cursor)
        .map_err(|e| v.absorb(e.into()))
        .ok();
    if body.batch_size < 0 {
        v.push("batch_size", "NEGATIVE_BATCH_SIZE", "must not be negative");
    }
    if body.types.len() > MAX_TYPES {
        v.push(
            "types",
            "TOO_MANY_TYPES",
            format!("at most {MAX_TYPES} types"),
        );
    }
    for t in &body.types {
        // Fully-qualified message names: letters, digits, `_` and `.` only.
        if t.is_empty()
            || t.len() > 200
            || !t
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_')
        {
            v.push(
                "types",
                "INVALID_EVENT_TYPE",
                "each type is a full message name such as crm.core.v1.Customer.created",
            );
            break;
        }
    }
    v.finish()?;
    let (Some(org), Some(mut cursor)) = (org, cursor) else {
        return Err(ApiError::Internal("parsed without violation".into()));
    };
    names::require_same_organization(principal, org)?;
    let guard = streams.open(org.to_string())?;
    let batch = match body.batch_size {
        0 => DEFAULT_BATCH,
        n => n.min(MAX_BATCH),
    };
    let types = body.types;
    let org_name = body.parent;
    let ctx = ctx.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Batch, Status>>(4);
    let lag = crm_platform::metrics::ConsumerLag::new("watch-events", ctx.domain, SAFETY_POLL);
    tokio::spawn(async move {
        let _guard = guard;
        let mut pacing =
            crm_db::notify::Pacing::new(SAFETY_POLL, CATCH_UP_INTERVAL, CATCH_UP_TRIES);
        loop {
            // Register for the wake-up before reading, so a commit between the read and the
            // wait is not missed.
            let notified = ctx.events_written.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let types_q = types.clone();
            let read = crm_db::tenant::read(&ctx.pool, org, move |conn| {
                Box::pin(async move {
                    outbox::read_after(conn, org, cursor, &types_q, batch)
                        .await
                        .map_err(ApiError::from)
                })
            })
            .await;
            match read {
                Ok(events) if events.is_empty() => {
                    lag.caught_up();
                    let wait = pacing.next_wait();
                    tokio::select! {
                        () = &mut notified => pacing.woken(),
                        () = tokio::time::sleep(wait) => {}
                        () = tx.closed() => return,
                    }
                }
                Ok(events) => {
                    if let Some(last) = events.last() {
                        cursor = last.cursor();
                        // Until the stream reads an empty batch, more may be waiting.
                        lag.behind(last.occur_time.into());
                    }
                    let response = (
                        events.into_iter().map(|e| to_event(&org_name, e)).collect(),
                        cursor.encode(),
                    );
                    if tx.send(Ok(response)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(ctx.status(e))).await;
                    return;
                }
            }
        }
    });
    Ok(tokio_stream::wrappers::ReceiverStream::new(rx))
}
