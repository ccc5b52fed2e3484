//! `crm.core.v1.EventService`: the outbox as a resumable, commit-ordered stream.
//!
//! A stream reads batches after the client's cursor in tenant transactions. When caught up it
//! sleeps until a commit that wrote events is announced (by this process, or by any replica
//! through LISTEN/NOTIFY), then retries briefly while the new rows are not yet below the
//! snapshot's xmin; a slow safety poll bounds a lost notification. Streams are limited per
//! organization and in total.

use std::pin::Pin;
use std::time::Duration;

use crm_auth::layer::principal_of;
use crm_auth::{MethodPolicy, Requirement, permission};
use crm_db::outbox::{self, Cursor};
use crm_platform::ApiError;
use crm_platform::api::names;
use crm_platform::api::time::timestamp;
use crm_proto::common_v1::Event;
use crm_proto::core_v1::event_service_server::EventService;
use crm_proto::core_v1::{StreamEventsRequest, StreamEventsResponse};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::{CoreState, DOMAIN};

const SERVICE: &str = "crm.core.v1.EventService";
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

/// The permission of every RPC of this service.
#[must_use]
pub fn policy() -> MethodPolicy {
    MethodPolicy::new().with(
        SERVICE,
        "StreamEvents",
        Requirement::Permission(permission::CORE_EVENTS_READ),
    )
}

/// The handlers.
#[derive(Debug, Clone)]
pub struct EventApi {
    state: CoreState,
    streams: std::sync::Arc<crm_platform::streams::StreamLimiter>,
}

impl EventApi {
    /// Handlers over `state`.
    #[must_use]
    pub fn new(state: CoreState) -> Self {
        Self {
            state,
            streams: crm_platform::streams::StreamLimiter::new(
                MAX_STREAMS,
                MAX_STREAMS_PER_ORGANIZATION,
            ),
        }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<StreamEventsResponse, Status>> + Send>>;

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

#[tonic::async_trait]
impl EventService for EventApi {
    type StreamEventsStream = EventStream;

    async fn stream_events(
        &self,
        req: Request<StreamEventsRequest>,
    ) -> Result<Response<Self::StreamEventsStream>, Status> {
        let principal = principal_of(&req)?;
        let body = req.into_inner();
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
        v.finish().map_err(|e| e.into_status(DOMAIN))?;
        let (Some(org), Some(mut cursor)) = (org, cursor) else {
            return Err(ApiError::Internal("parsed without violation".into()).into_status(DOMAIN));
        };
        names::require_same_organization(&principal, org).map_err(|e| e.into_status(DOMAIN))?;
        let guard = self
            .streams
            .open(org.to_string())
            .map_err(|e| e.into_status(DOMAIN))?;
        let batch = match body.batch_size {
            0 => DEFAULT_BATCH,
            n => n.min(MAX_BATCH),
        };
        let types = body.types;
        let org_name = body.parent;
        let state = self.state.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<StreamEventsResponse, Status>>(4);
        tokio::spawn(async move {
            let _guard = guard;
            let mut pacing =
                crm_db::notify::Pacing::new(SAFETY_POLL, CATCH_UP_INTERVAL, CATCH_UP_TRIES);
            loop {
                // Register for the wake-up before reading, so a commit between the read and the
                // wait is not missed.
                let notified = state.ctx.events_written.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let types_q = types.clone();
                let read = crm_db::tenant::read(&state.ctx.pool, org, move |conn| {
                    Box::pin(async move {
                        outbox::read_after(conn, org, cursor, &types_q, batch)
                            .await
                            .map_err(ApiError::from)
                    })
                })
                .await;
                match read {
                    Ok(events) if events.is_empty() => {
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
                        }
                        let response = StreamEventsResponse {
                            events: events.into_iter().map(|e| to_event(&org_name, e)).collect(),
                            cursor: cursor.encode(),
                        };
                        if tx.send(Ok(response)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.into_status(DOMAIN))).await;
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
