//! `crm.fieldops.v1.EventService`: the fieldops outbox as a resumable, commit-ordered stream
//! ([`crm_resource::events`]).

use std::pin::Pin;
use std::sync::Arc;

use crm_auth::layer::principal_of;
use crm_auth::{MethodPolicy, Requirement, permission};
use crm_platform::streams::StreamLimiter;
use crm_proto::fieldops_v1::event_service_server::EventService;
use crm_proto::fieldops_v1::{StreamEventsRequest, StreamEventsResponse};
use crm_resource::Context;
use crm_resource::events::{self, StreamRequest};
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status};

const SERVICE: &str = "crm.fieldops.v1.EventService";

/// The permission of every RPC of this service.
#[must_use]
pub fn policy() -> MethodPolicy {
    MethodPolicy::new().with(
        SERVICE,
        "StreamEvents",
        Requirement::Permission(permission::FIELDOPS_EVENTS_READ),
    )
}

/// The handlers.
#[derive(Debug, Clone)]
pub struct EventApi {
    ctx: Context,
    streams: Arc<StreamLimiter>,
}

impl EventApi {
    /// Handlers over `ctx`.
    #[must_use]
    pub fn new(ctx: Context) -> Self {
        Self {
            ctx,
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
        let batches = events::open(&self.ctx, &self.streams, &principal, request)
            .map_err(|e| self.ctx.status(e))?;
        Ok(Response::new(Box::pin(batches.map(|b| {
            b.map(|(events, cursor)| StreamEventsResponse { events, cursor })
        }))))
    }
}
