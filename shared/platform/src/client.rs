//! Outbound calls: channels to other services and the metadata a call carries onward — the
//! caller's credentials, the W3C trace context of the current span, and the remaining deadline.

use std::time::Duration;

use opentelemetry::propagation::Injector;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::layers::Deadline;

/// A lazily connecting channel to `uri` with sane timeouts and keepalive.
///
/// # Errors
/// When `uri` is not a valid endpoint.
pub fn channel(uri: &str) -> Result<Channel, tonic::transport::Error> {
    Ok(Endpoint::from_shared(uri.to_owned())?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true)
        .connect_lazy())
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(k, v);
        }
    }
}

/// What an inbound call passes on to the calls it makes.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    /// The caller's `authorization` value, forwarded as is.
    pub authorization: Option<String>,
    /// The inbound deadline.
    pub deadline: Option<Deadline>,
    /// The inbound request id.
    pub request_id: Option<String>,
}

impl CallContext {
    /// Captures the context of an inbound request.
    #[must_use]
    pub fn of<T>(request: &tonic::Request<T>) -> Self {
        Self {
            authorization: request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            deadline: request.extensions().get::<Deadline>().copied(),
            request_id: request
                .extensions()
                .get::<crate::layers::RequestId>()
                .map(|r| r.0.clone()),
        }
    }

    /// Prepares an outbound request: credentials, trace context, request id and the remaining
    /// deadline (an already expired deadline yields a zero timeout, so the callee refuses it).
    pub fn apply<T>(&self, request: &mut tonic::Request<T>) {
        let md = request.metadata_mut();
        if let Some(a) = self
            .authorization
            .as_deref()
            .and_then(|a| MetadataValue::try_from(a).ok())
        {
            md.insert("authorization", a);
        }
        if let Some(r) = self
            .request_id
            .as_deref()
            .and_then(|r| MetadataValue::try_from(r).ok())
        {
            md.insert("x-request-id", r);
        }
        let cx = tracing::Span::current().context();
        opentelemetry::global::get_text_map_propagator(|p| {
            p.inject_context(&cx, &mut MetadataInjector(request.metadata_mut()));
        });
        if let Some(d) = self.deadline {
            request.set_timeout(d.remaining().max(Duration::from_millis(1)));
        }
    }
}
