//! The per-call layer every service gets: request id, trace context, load shedding and
//! deadlines.
//!
//! - `x-request-id` is taken from the caller or generated, put in the extensions as
//!   [`RequestId`], and echoed on the response.
//! - W3C `traceparent`/`tracestate` become the parent of the call's span.
//! - At most `max_in_flight` calls run at once; the next one is refused immediately with
//!   RESOURCE_EXHAUSTED and a retry delay (load shedding keeps admitted calls fast). Health and
//!   reflection are never shed.
//! - A `grpc-timeout` becomes a [`Deadline`] in the extensions and bounds the call: when it
//!   passes, the handler's future is dropped (its transaction rolls back and its connection is
//!   discarded) and the caller gets DEADLINE_EXCEEDED.
//! - A call holds its permit until its response body ends, so a server stream counts against
//!   the limit for its whole life. When the server starts draining, a stream that is waiting
//!   for its next message ends at once with UNAVAILABLE (`SERVER_DRAINING`): the client
//!   reconnects elsewhere, and shutdown does not wait out the drain timeout for streams that
//!   never end.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, watch};

use futures_util::future::BoxFuture;
use opentelemetry::propagation::Extractor;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The request id of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

/// When a call must be finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(pub Instant);

impl Deadline {
    /// Time left, zero when passed.
    #[must_use]
    pub fn remaining(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }
}

/// Parses a `grpc-timeout` header value (`<digits><unit>`, unit one of `HMSmun`).
#[must_use]
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The part of a caller's timeout the server spends: it answers a little before the caller's
/// own timer fires, so the caller receives DEADLINE_EXCEEDED (with details) rather than giving
/// up on its own, and work stops before the caller stops waiting.
#[must_use]
pub fn server_budget(timeout: Duration) -> Duration {
    let margin = (timeout / 20).clamp(Duration::from_millis(1), Duration::from_millis(50));
    timeout.saturating_sub(margin)
}

/// Reads trace context (or any text map) from HTTP headers.
pub struct HeaderExtractor<'a>(pub &'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

fn is_exempt(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.")
}

/// Tower layer producing [`CallService`].
#[derive(Clone)]
pub struct CallLayer {
    permits: Arc<Semaphore>,
    draining: watch::Receiver<bool>,
}

impl std::fmt::Debug for CallLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallLayer")
            .field("available", &self.permits.available_permits())
            .finish()
    }
}

impl CallLayer {
    /// A layer admitting at most `max_in_flight` calls at once; streams end when `draining`
    /// turns true.
    #[must_use]
    pub fn new(max_in_flight: usize, draining: watch::Receiver<bool>) -> Self {
        let limit = max_in_flight.max(1);
        let permits = Arc::new(Semaphore::new(limit));
        crate::metrics::observe_limiter(&permits, limit);
        Self { permits, draining }
    }
}

impl<S> tower_layer::Layer<S> for CallLayer {
    type Service = CallService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallService {
            inner,
            permits: Arc::clone(&self.permits),
            draining: self.draining.clone(),
        }
    }
}

/// The service produced by [`CallLayer`].
#[derive(Clone)]
pub struct CallService<S> {
    inner: S,
    permits: Arc<Semaphore>,
    draining: watch::Receiver<bool>,
}

impl<S> std::fmt::Debug for CallService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallService").finish_non_exhaustive()
    }
}

fn platform_status(code: Code, reason: &str, message: &str, retry: Option<Duration>) -> Status {
    let mut details = ErrorDetails::with_error_info(reason, "platform.crm", HashMap::new());
    if let Some(d) = retry {
        details.set_retry_info(Some(d));
    }
    Status::with_error_details(code, message, details)
}

impl<S, B> tower_service::Service<http::Request<B>> for CallService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let path = req.uri().path().to_owned();
        let request_id = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128)
            .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
        let parent = opentelemetry::global::get_text_map_propagator(|p| {
            p.extract(&HeaderExtractor(req.headers()))
        });
        let span = tracing::info_span!(
            "grpc.call",
            otel.kind = "server",
            rpc.method = %path,
            request_id = %request_id,
            rpc.grpc.status_code = tracing::field::Empty,
        );
        let _ = span.set_parent(parent);

        let timeout = req
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout)
            .map(server_budget);
        req.extensions_mut().insert(RequestId(request_id.clone()));
        if let Some(t) = timeout {
            req.extensions_mut().insert(Deadline(Instant::now() + t));
        }

        let permit = if is_exempt(&path) {
            None
        } else {
            match Arc::clone(&self.permits).try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    crate::metrics::record_call(&path, "8", Duration::ZERO);
                    crate::metrics::record_shed(&path);
                    let status = platform_status(
                        Code::ResourceExhausted,
                        "SERVER_OVERLOADED",
                        "the server is at its concurrency limit; retry shortly",
                        Some(Duration::from_millis(100)),
                    );
                    return Box::pin(async move { Ok(status.into_http()) });
                }
            }
        };

        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let draining = self.draining.clone();
        let started = Instant::now();
        let measured = (!is_exempt(&path)).then(|| path.clone());
        Box::pin(
            async move {
                let call = inner.call(req);
                let result = match timeout {
                    Some(t) => match tokio::time::timeout(t, call).await {
                        Ok(r) => r,
                        Err(_) => Ok(platform_status(
                            Code::DeadlineExceeded,
                            "DEADLINE_EXCEEDED",
                            "the deadline expired before the call finished",
                            None,
                        )
                        .into_http()),
                    },
                    None => call.await,
                };
                result.map(|mut response| {
                    if let Ok(v) = http::HeaderValue::from_str(&request_id) {
                        response.headers_mut().insert("x-request-id", v);
                    }
                    if let Some(code) = response.headers().get("grpc-status") {
                        tracing::Span::current()
                            .record("rpc.grpc.status_code", code.to_str().unwrap_or(""));
                    }
                    // An answer without a status in its headers succeeded (a stream's status
                    // comes in its trailers: counted as sent).
                    if let Some(path) = &measured {
                        let code = response
                            .headers()
                            .get("grpc-status")
                            .and_then(|c| c.to_str().ok())
                            .unwrap_or("0");
                        crate::metrics::record_call(path, code, started.elapsed());
                    }
                    // Headers-only answers (errors) are complete: nothing to hold.
                    if response.headers().contains_key("grpc-status") {
                        return response;
                    }
                    response.map(|body| {
                        tonic::body::Body::new(CallBody {
                            inner: body,
                            permit,
                            draining,
                            drain: None,
                            done: false,
                        })
                    })
                })
            }
            .instrument(span),
        )
    }
}

type DrainFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

pin_project_lite::pin_project! {
    /// A response body that keeps its call's permit until it ends and ends a waiting stream
    /// when the server drains.
    struct CallBody {
        #[pin]
        inner: tonic::body::Body,
        permit: Option<OwnedSemaphorePermit>,
        draining: watch::Receiver<bool>,
        // Made on the first wait only: unary bodies are ready at once and never need it.
        drain: Option<DrainFuture>,
        done: bool,
    }
}

impl http_body::Body for CallBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        let this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        match this.inner.poll_frame(cx) {
            Poll::Ready(None) => {
                *this.done = true;
                this.permit.take();
                Poll::Ready(None)
            }
            Poll::Ready(frame) => Poll::Ready(frame),
            Poll::Pending => {
                let drain = this.drain.get_or_insert_with(|| {
                    let mut rx = this.draining.clone();
                    Box::pin(async move {
                        let _ = rx.wait_for(|d| *d).await;
                    })
                });
                match drain.as_mut().poll(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(()) => {
                        *this.done = true;
                        this.permit.take();
                        let status = platform_status(
                            Code::Unavailable,
                            "SERVER_DRAINING",
                            "the server is shutting down; reconnect and resume",
                            None,
                        );
                        let mut trailers = http::HeaderMap::new();
                        let _ = status.add_header(&mut trailers);
                        Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))))
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("5x"), None);
        assert_eq!(parse_grpc_timeout("m"), None);
        assert_eq!(parse_grpc_timeout("1234567890S"), None);
    }
}
