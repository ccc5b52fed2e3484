//! The HTTP/JSON gateway: every RPC of the suite with a `google.api.http` rule, transcoded from
//! the compiled descriptor set (no route is written by hand). A request's path variables, query
//! parameters and body become one canonical proto3 JSON object, which `prost-reflect` reads
//! into the method's input message (unknown fields refused); the gRPC call goes to the suite
//! with the caller's `Authorization`, trace context and request id; the answer comes back as
//! proto3 JSON, an error as AIP-193 JSON. Server-streaming RPCs answer newline-delimited JSON.
//! The gateway keeps no state and no business logic.

mod codec;
mod error;
mod oauth;
pub mod openapi;
mod request;
pub mod routes;
pub mod template;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use prost_reflect::{DynamicMessage, SerializeOptions};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

pub use error::{http_status, status_json};
use routes::Routes;

/// Largest request body read, in bytes.
pub const MAX_BODY: usize = 4 * 1024 * 1024;
/// Headers passed to the suite as gRPC metadata as they came. (The request id, the trace
/// context, as the gateway's own span's, and `x-forwarded-for` go on through `Passed`.)
const PASSED: &[&str] = &["authorization"];
/// A timeout the caller may set, in seconds (fractions allowed): the gRPC deadline.
const TIMEOUT_HEADER: &str = "x-server-timeout";

/// Where each service's RPCs go: one address for all (`crm up`) or one per service.
#[derive(Debug, Clone)]
pub struct Upstreams {
    /// `crm.identity.*` (and the OAuth endpoints).
    pub identity: Channel,
    /// `crm.core.*`.
    pub core: Channel,
    /// `crm.fieldops.*`.
    pub fieldops: Channel,
}

impl Upstreams {
    /// Every service behind one address.
    #[must_use]
    pub fn one(channel: Channel) -> Self {
        Self {
            identity: channel.clone(),
            core: channel.clone(),
            fieldops: channel,
        }
    }

    fn for_package(&self, package: &str) -> &Channel {
        if package.starts_with("crm.identity.") {
            &self.identity
        } else if package.starts_with("crm.fieldops.") {
            &self.fieldops
        } else {
            &self.core
        }
    }
}

/// How the gateway treats its callers.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Origins allowed by CORS (`https://app.example.com`); none: no CORS headers at all.
    pub cors_origins: Vec<HeaderValue>,
    /// Proxies whose `X-Forwarded-For` is believed; from anyone else it is replaced by the
    /// peer's address.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// The suite's service credential, presented on every call of identity so that identity
    /// believes the `x-forwarded-for` the gateway passes (its per-address rate limits then
    /// count each client, not the gateway). `None`: identity sees the gateway's address.
    pub service_key: Option<String>,
}

/// What a call to a service carries for the HTTP request it serves, besides its message and
/// the passed headers.
#[derive(Debug, Clone, Default)]
pub(crate) struct Passed {
    forwarded_for: Option<MetadataValue<Ascii>>,
    service_key: Option<MetadataValue<Ascii>>,
    request_id: Option<MetadataValue<Ascii>>,
}

impl Passed {
    /// Puts what the call carries on `metadata`, with the current span as its trace parent.
    pub(crate) fn apply(&self, metadata: &mut tonic::metadata::MetadataMap) {
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let cx = tracing::Span::current().context();
        opentelemetry::global::get_text_map_propagator(|p| {
            p.inject_context(&cx, &mut crm_platform::client::MetadataInjector(metadata));
        });
        if let Some(v) = &self.request_id {
            metadata.insert("x-request-id", v.clone());
        }
        if let Some(v) = &self.forwarded_for {
            metadata.insert("x-forwarded-for", v.clone());
        }
        if let Some(v) = &self.service_key {
            metadata.insert(crm_auth::remote::SERVICE_KEY_HEADER, v.clone());
        }
    }
}

/// What every request shares.
#[derive(Clone)]
struct Gateway {
    routes: Arc<Routes>,
    /// `/openapi.json` and `/docs`, rendered once (the descriptors do not change).
    openapi: Arc<(bytes::Bytes, String)>,
    upstreams: Upstreams,
    trusted_proxies: Arc<[std::net::IpAddr]>,
    service_key: Option<MetadataValue<Ascii>>,
}

impl Gateway {
    /// What calls for the request of `parts` carry; the service credential only to identity.
    pub(crate) fn passed(&self, parts: &http::request::Parts, to_identity: bool) -> Passed {
        let forwarded_for = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .and_then(|peer| {
                let incoming = parts
                    .headers
                    .get("x-forwarded-for")
                    .and_then(|v| v.to_str().ok());
                let chain = forwarded_for(incoming, peer.0.ip(), &self.trusted_proxies);
                MetadataValue::try_from(chain.as_str()).ok()
            });
        Passed {
            forwarded_for,
            service_key: self.service_key.clone().filter(|_| to_identity),
            request_id: parts
                .headers
                .get("x-request-id")
                .and_then(|v| MetadataValue::try_from(v.as_bytes()).ok()),
        }
    }
}

/// The OpenAPI 3.1 document of every transcoded operation, as `/openapi.json` serves it.
///
/// # Errors
/// When the descriptor set is missing or a template does not parse.
pub fn openapi_document() -> Result<serde_json::Value, String> {
    let pool = crm_proto::json::pool().ok_or("the descriptor set does not decode")?;
    Ok(openapi::document(&Routes::from_pool(pool)?))
}

/// The gateway's router, calling the whole suite through `channel`.
///
/// # Errors
/// When the descriptor set is missing or a template does not parse.
pub fn router(channel: Channel) -> Result<axum::Router, String> {
    router_to(Upstreams::one(channel), &Options::default())
}

/// The gateway's router, calling each service at its own address.
///
/// # Errors
/// When the descriptor set is missing or a template does not parse.
pub fn router_to(upstreams: Upstreams, options: &Options) -> Result<axum::Router, String> {
    let pool = crm_proto::json::pool().ok_or("the descriptor set does not decode")?;
    let routes = Routes::from_pool(pool)?;
    let doc = openapi::document(&routes);
    let openapi = Arc::new((bytes::Bytes::from(doc.to_string()), openapi::page(&doc)));
    let state = Gateway {
        routes: Arc::new(routes),
        openapi,
        upstreams,
        trusted_proxies: options.trusted_proxies.clone().into(),
        service_key: match &options.service_key {
            Some(k) => Some(
                MetadataValue::try_from(k.as_str())
                    .map_err(|_| "the service key is not a valid header value")?,
            ),
            None => None,
        },
    };
    let docs = axum::Router::new()
        .route("/openapi.json", axum::routing::get(openapi_json))
        .route("/docs", axum::routing::get(docs_page))
        // The gateway's own liveness (it holds no state; the services have gRPC health).
        .route("/healthz", axum::routing::get(|| async { "ok" }));
    let router = oauth::routes(docs)
        .fallback(transcode)
        .with_state(state)
        .layer(axum::middleware::from_fn(observe));
    if options.cors_origins.is_empty() {
        return Ok(router);
    }
    let cors = tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::AllowOrigin::list(
            options.cors_origins.clone(),
        ))
        .allow_methods([
            http::Method::GET,
            http::Method::POST,
            http::Method::PATCH,
            http::Method::PUT,
            http::Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            http::HeaderName::from_static("traceparent"),
            http::HeaderName::from_static("tracestate"),
            http::HeaderName::from_static("x-request-id"),
            http::HeaderName::from_static(TIMEOUT_HEADER),
        ])
        .expose_headers([
            header::RETRY_AFTER,
            http::HeaderName::from_static("x-request-id"),
        ])
        .max_age(Duration::from_secs(600));
    Ok(router.layer(cors))
}

/// Serves `router` on `listener` until `shutdown` completes.
///
/// # Errors
/// The server's I/O error.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, service)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn openapi_json(State(gw): State<Gateway>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        gw.openapi.0.clone(),
    )
        .into_response()
}

async fn docs_page(State(gw): State<Gateway>) -> Response {
    axum::response::Html(gw.openapi.1.clone()).into_response()
}

/// The template of the route that answered a transcoded request, for the request metric.
#[derive(Debug, Clone)]
struct RoutePattern(String);

/// Every HTTP request: one server span (child of the caller's `traceparent`; the calls to the
/// services are its children), and one measurement of `http.server.request.duration` by
/// method, route template and status (a stream's duration is the time to its first byte).
async fn observe(req: Request, next: axum::middleware::Next) -> Response {
    use tracing::Instrument as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let parent = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract(&crm_platform::layers::HeaderExtractor(req.headers()))
    });
    let span = tracing::info_span!(
        "http.request",
        otel.kind = "server",
        http.request.method = %req.method(),
        url.path = %req.uri().path(),
        http.response.status_code = tracing::field::Empty,
    );
    let _ = span.set_parent(parent);
    let method = req.method().clone();
    let matched = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let started = std::time::Instant::now();
    let response = next.run(req).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    let route = matched.or_else(|| {
        response
            .extensions()
            .get::<RoutePattern>()
            .map(|r| r.0.clone())
    });
    crm_platform::metrics::record_http(
        method.as_str(),
        route.as_deref(),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// Finds the RPC of a request and calls it (every path the other routes do not answer).
async fn transcode(State(gw): State<Gateway>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Some((route, bound)) = gw.routes.find(&parts.method, parts.uri.path()) else {
        let known = gw.routes.any_method(parts.uri.path());
        return error::plain(
            if known {
                StatusCode::METHOD_NOT_ALLOWED
            } else {
                StatusCode::NOT_FOUND
            },
            if known {
                "FAILED_PRECONDITION"
            } else {
                "NOT_FOUND"
            },
            &format!("no RPC answers {} {}", parts.method, parts.uri.path()),
        );
    };
    let mut response = call(&gw, route, bound, parts, body).await;
    response
        .extensions_mut()
        .insert(RoutePattern(route.pattern.clone()));
    response
}

/// Calls the RPC of `route` for one request.
async fn call(
    gw: &Gateway,
    route: &routes::Route,
    bound: Vec<(String, String)>,
    parts: http::request::Parts,
    body: Body,
) -> Response {
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return error::plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            "INVALID_ARGUMENT",
            &format!("the body is over {MAX_BODY} bytes"),
        );
    };
    let input = match request::build(route, bound, parts.uri.query().unwrap_or(""), &bytes) {
        Ok(m) => m,
        Err(message) => {
            return error::plain(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", &message);
        }
    };
    let mut grpc = tonic::Request::new(input);
    if let Err(message) = pass(&parts.headers, &mut grpc) {
        return error::plain(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", &message);
    }
    let to_identity = route
        .method
        .parent_service()
        .package_name()
        .starts_with("crm.identity.");
    gw.passed(&parts, to_identity).apply(grpc.metadata_mut());
    let path = match http::uri::PathAndQuery::try_from(route.grpc_path()) {
        Ok(p) => p,
        Err(e) => {
            return error::plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                &e.to_string(),
            );
        }
    };
    let package = route.method.parent_service().package_name().to_owned();
    let mut client = tonic::client::Grpc::new(gw.upstreams.for_package(&package).clone());
    if let Err(e) = client.ready().await {
        return error::plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            &e.to_string(),
        );
    }
    let codec = codec::DynamicCodec::new(route.method.output());
    if route.method.is_server_streaming() {
        let framing = if accepts_event_stream(&parts.headers) {
            Framing::ServerSentEvents
        } else {
            Framing::Lines
        };
        return match client.server_streaming(grpc, path, codec).await {
            Ok(r) => {
                let id = request_id_of(r.metadata());
                with_request_id(stream(r.into_inner(), framing), id)
            }
            Err(s) => with_request_id(error::response(&s), request_id_of(s.metadata())),
        };
    }
    match client.unary(grpc, path, codec).await {
        Ok(r) => {
            let id = request_id_of(r.metadata());
            with_request_id(json(StatusCode::OK, r.get_ref()), id)
        }
        Err(s) => with_request_id(error::response(&s), request_id_of(s.metadata())),
    }
}

/// The request id the service answered with (its own when the caller gave none).
fn request_id_of(metadata: &tonic::metadata::MetadataMap) -> Option<HeaderValue> {
    metadata
        .get("x-request-id")
        .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok())
}

/// Echoes the call's request id to the HTTP caller, for support and logs.
fn with_request_id(mut response: Response, id: Option<HeaderValue>) -> Response {
    if let Some(v) = id {
        response
            .headers_mut()
            .insert(http::HeaderName::from_static("x-request-id"), v);
    }
    response
}

/// The `X-Forwarded-For` passed on, whose last entry is the client: from a trusted proxy its
/// chain as it came (the proxy appended the client it saw), from anyone else the peer's own
/// address (what it claims is dropped).
#[must_use]
pub fn forwarded_for(
    incoming: Option<&str>,
    peer: std::net::IpAddr,
    trusted: &[std::net::IpAddr],
) -> String {
    match incoming.map(str::trim).filter(|s| !s.is_empty()) {
        Some(chain) if trusted.contains(&peer) => chain.to_owned(),
        _ => peer.to_string(),
    }
}

/// Copies the passed headers and the timeout onto the gRPC request.
fn pass(headers: &HeaderMap, grpc: &mut tonic::Request<DynamicMessage>) -> Result<(), String> {
    for name in PASSED {
        if let Some(v) = headers.get(*name)
            && let Ok(v) = tonic::metadata::MetadataValue::try_from(v.as_bytes())
        {
            grpc.metadata_mut().insert(*name, v);
        }
    }
    if let Some(v) = headers.get(TIMEOUT_HEADER) {
        let seconds = v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0 && *s <= 3_600.0)
            .ok_or_else(|| format!("{TIMEOUT_HEADER}: seconds, more than 0 and at most 3600"))?;
        grpc.set_timeout(Duration::from_secs_f64(seconds));
    }
    Ok(())
}

fn to_json(message: &DynamicMessage) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::new(&mut out);
    message
        .serialize_with_options(&mut ser, &SerializeOptions::new())
        .map_err(|e| e.to_string())?;
    Ok(out)
}

fn json(code: StatusCode, message: &DynamicMessage) -> Response {
    match to_json(message) {
        Ok(body) => (
            code,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Err(e) => error::plain(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", &e),
    }
}

/// How a server stream is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// Newline-delimited JSON (the default).
    Lines,
    /// Server-sent events, for an `Accept: text/event-stream` (browsers' `EventSource`).
    ServerSentEvents,
}

fn accepts_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            t.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/event-stream"))
        })
}

/// A server stream: as newline-delimited JSON, one message a line, an error ending it with an
/// AIP-193 error object on its own line; or as server-sent events, each message one `data:`
/// event and an error one `event: error`.
fn stream(messages: tonic::Streaming<DynamicMessage>, framing: Framing) -> Response {
    let frames = messages.map(move |item| {
        let (json, failed) = match item {
            Ok(m) => match to_json(&m) {
                Ok(j) => (j, false),
                Err(e) => (
                    serde_json::to_vec(&serde_json::json!({"error": {"message": e}}))
                        .unwrap_or_default(),
                    true,
                ),
            },
            Err(s) => (
                serde_json::to_vec(&status_json(&s)).unwrap_or_default(),
                true,
            ),
        };
        // Compact JSON has no raw newline, so one `data:` line carries it whole.
        let frame = match framing {
            Framing::Lines => [json.as_slice(), b"\n"].concat(),
            Framing::ServerSentEvents if failed => {
                [b"event: error\ndata: ".as_slice(), &json, b"\n\n"].concat()
            }
            Framing::ServerSentEvents => [b"data: ".as_slice(), &json, b"\n\n"].concat(),
        };
        Ok::<_, std::convert::Infallible>(bytes::Bytes::from(frame))
    });
    let content_type = match framing {
        Framing::Lines => "application/x-ndjson",
        Framing::ServerSentEvents => "text/event-stream",
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        Body::from_stream(frames),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::{accepts_event_stream, forwarded_for};

    #[test]
    fn event_streams_are_chosen_by_the_accept_header() {
        let with = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(http::header::ACCEPT, v.parse().unwrap());
            accepts_event_stream(&h)
        };
        assert!(with("text/event-stream"));
        assert!(with("application/json, Text/Event-Stream;q=0.9"));
        assert!(!with("application/x-ndjson"));
        assert!(!with("text/event-streams"));
        assert!(!accepts_event_stream(&http::HeaderMap::new()));
    }

    #[test]
    fn only_a_trusted_proxy_names_the_client() {
        let proxy: std::net::IpAddr = "10.0.0.5".parse().unwrap();
        let stranger: std::net::IpAddr = "203.0.113.9".parse().unwrap();
        let trusted = [proxy];
        assert_eq!(
            forwarded_for(Some("198.51.100.7"), proxy, &trusted),
            "198.51.100.7"
        );
        assert_eq!(
            forwarded_for(Some("1.2.3.4"), stranger, &trusted),
            "203.0.113.9"
        );
        assert_eq!(forwarded_for(None, proxy, &trusted), "10.0.0.5");
        assert_eq!(forwarded_for(Some(" "), proxy, &trusted), "10.0.0.5");
    }
}
