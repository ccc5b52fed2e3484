//! `crm.core.v1.EventService`: core's outbox as a resumable, commit-ordered stream
//! ([`crm_resource::events`]).

use std::pin::Pin;
use std::sync::Arc;

use crm_auth::layer::principal_of;
use crm_auth::{MethodPolicy, Requirement, permission};
use crm_platform::streams::StreamLimiter;
use crm_proto::core_v1::event_service_server::EventService;
use crm_proto::core_v1::{StreamEventsRequest, StreamEventsResponse};
use crm_resource::events::{self, StreamRequest};
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status};

use crate::CoreState;

const SERVICE: &str = "crm.core.v1.EventService";

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
    streams: Arc<StreamLimiter>,
}

impl EventApi {
    /// Handlers over `state`.
    #[must_use]
    pub fn new(state: CoreState) -> Self {
        Self {
            state,
            streams: events::limiter(),
        }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<StreamEventsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl EventService for EventApi {
    type StreamEventsStream = EventStream;

    async fn stream_events(
        &self,
        req: Request<StreamEventsRequest>,
    ) -> Result<Response<Self::StreamEventsStream>, Status> {
        let principal = principal_of(&req)?;
        let body = req.into_inner();
        let request = StreamRequest {
            parent: body.parent,
            cursor: body.cursor,
            types: body.types,
            batch_size: body.batch_size,
        };
        let ctx = &self.state.ctx;
        let batches =
            events::open(ctx, &self.streams, &principal, request).map_err(|e| ctx.status(e))?;
        Ok(Response::new(Box::pin(batches.map(|b| {
            b.map(|(events, cursor)| StreamEventsResponse { events, cursor })
        }))))
    }
}
