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

/// Writes trace context (or any text map) into gRPC metadata.
pub struct MetadataInjector<'a>(pub &'a mut MetadataMap);

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

/// What a refusal by `service` about `reference` means for the call that named it: a missing
/// reference is FAILED_PRECONDITION `REFERENCE_NOT_FOUND`, the callee's own refusals keep their
/// kind, and an unreachable callee is UNAVAILABLE with the reason `unavailable`.
#[must_use]
pub fn remote_error(
    service: &str,
    unavailable: &'static str,
    reference: &str,
    s: &tonic::Status,
) -> crate::ApiError {
    use crate::ApiError;
    use tonic::Code;
    match s.code() {
        Code::NotFound => ApiError::FailedPrecondition {
            reason: "REFERENCE_NOT_FOUND",
            message: format!("{reference} does not exist"),
        },
        Code::PermissionDenied => ApiError::PermissionDenied {
            reason: "REFERENCE_NOT_READABLE",
            message: format!("the caller may not use {reference} in {service}"),
        },
        Code::Unauthenticated => ApiError::Unauthenticated {
            reason: "REMOTE_UNAUTHENTICATED",
            message: format!("{service} did not accept the caller's credentials"),
        },
        Code::InvalidArgument => ApiError::FailedPrecondition {
            reason: "REFERENCE_INVALID",
            message: format!(
                "{service} refused the reference {reference}: {}",
                s.message()
            ),
        },
        Code::FailedPrecondition => ApiError::FailedPrecondition {
            reason: "REMOTE_REFUSED",
            message: format!("{service} refused: {}", s.message()),
        },
        Code::DeadlineExceeded | Code::Cancelled => ApiError::DeadlineExceeded,
        Code::Unavailable | Code::Unknown | Code::ResourceExhausted | Code::Aborted => {
            tracing::warn!(%service, code = ?s.code(), message = s.message(), "peer unavailable");
            ApiError::Unavailable {
                reason: unavailable,
            }
        }
        Code::Ok
        | Code::AlreadyExists
        | Code::OutOfRange
        | Code::Unimplemented
        | Code::Internal
        | Code::DataLoss => ApiError::Internal(format!(
            "{service} answered {:?}: {}",
            s.code(),
            s.message()
        )),
    }
}
