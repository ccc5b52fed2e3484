//! One server builder for every service: health (per service, driven by its database),
//! reflection v1 and v1alpha, the call layer (request id, trace context, load shedding,
//! deadlines), authentication, keepalive, size limits and graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crm_auth::revocation::{Freshness, RevocationSet};
use crm_auth::{AuthLayer, MethodPolicy, TokenVerifier};
use crm_db::DbPool;
use diesel_async::{AsyncPgConnection, SimpleAsyncConnection};
use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::layers::CallLayer;

/// Serving limits and timings.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Calls admitted at once across the process before shedding.
    pub max_in_flight: usize,
    /// Largest request or response message, in bytes.
    pub max_message_bytes: usize,
    /// HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// HTTP/2 keepalive ping interval.
    pub keepalive_interval: Duration,
    /// HTTP/2 keepalive ping timeout.
    pub keepalive_timeout: Duration,
    /// After the shutdown signal: how long health reports NOT_SERVING before the listener
    /// closes, so load balancers stop sending new calls.
    pub drain_notice: Duration,
    /// Longest time in-flight calls get to finish after the listener closes.
    pub drain_timeout: Duration,
    /// How often each service's database is probed for health.
    pub health_interval: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            max_in_flight: 512,
            max_message_bytes: 4 * 1024 * 1024,
            max_concurrent_streams: 128,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            drain_notice: Duration::from_millis(500),
            drain_timeout: Duration::from_secs(10),
            health_interval: Duration::from_millis(500),
        }
    }
}

/// A failure to serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Reflection could not be built from the descriptor sets.
    #[error("reflection: {0}")]
    Reflection(String),
    /// The transport failed.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Collects services, then serves them on one listener.
pub struct GrpcServer {
    settings: ServerSettings,
    verifier: Arc<TokenVerifier>,
    routes: RoutesBuilder,
    policy: MethodPolicy,
    health: Vec<(String, Option<DbPool>)>,
}

impl std::fmt::Debug for GrpcServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcServer")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl GrpcServer {
    /// A server verifying tokens with `verifier`.
    #[must_use]
    pub fn new(settings: ServerSettings, verifier: Arc<TokenVerifier>) -> Self {
        Self {
            settings,
            verifier,
            routes: RoutesBuilder::default(),
            policy: MethodPolicy::new(),
            health: Vec::new(),
        }
    }

    /// The verifier the authentication layer uses (for introspection).
    #[must_use]
    pub fn verifier(&self) -> Arc<TokenVerifier> {
        Arc::clone(&self.verifier)
    }

    /// The settings, for services to apply message-size limits to their generated servers.
    #[must_use]
    pub fn settings(&self) -> &ServerSettings {
        &self.settings
    }

    /// Adds a service with its methods' requirements and the message-size limit of the
    /// settings; its health follows `pool` when given.
    pub fn add_service<S>(
        &mut self,
        service: S,
        policy: &MethodPolicy,
        pool: Option<DbPool>,
    ) -> &mut Self
    where
        S: tower_service::Service<
                http::Request<Body>,
                Error = Infallible,
                Response = http::Response<Body>,
            > + NamedService
            + crm_proto::MessageLimits
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.routes
            .add_service(service.with_message_limits(self.settings.max_message_bytes));
        self.policy = std::mem::take(&mut self.policy).merge(policy);
        self.health.push((S::NAME.to_owned(), pool));
        self
    }

    /// Serves on `listener` until `shutdown` completes, then flips health to NOT_SERVING, waits
    /// the drain notice, stops accepting, and gives in-flight calls the drain timeout.
    ///
    /// # Errors
    /// Reflection or transport failures.
    pub async fn serve<F>(self, listener: TcpListener, shutdown: F) -> Result<(), ServeError>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let Self {
            settings,
            verifier,
            mut routes,
            policy,
            health,
        } = self;

        let (reporter, health_service) = tonic_health::server::health_reporter();
        for (name, _) in &health {
            reporter
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
        reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
        routes.add_service(health_service);

        fn reflection() -> tonic_reflection::server::Builder<'static> {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(crm_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        }
        routes.add_service(
            reflection()
                .build_v1()
                .map_err(|e| ServeError::Reflection(e.to_string()))?,
        );
        routes.add_service(
            reflection()
                .build_v1alpha()
                .map_err(|e| ServeError::Reflection(e.to_string()))?,
        );

        let names: Vec<String> = health.iter().map(|(n, _)| n.clone()).collect();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let (draining_tx, draining_rx) = tokio::sync::watch::channel(false);
        let monitor = tokio::spawn(monitor_health(
            reporter.clone(),
            health,
            Arc::clone(verifier.revocations()),
            settings.health_interval,
            stop_rx.clone(),
        ));

        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let drain_notice = settings.drain_notice;
        let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
        let signal = async move {
            shutdown.await;
            tracing::info!("shutdown requested: reporting NOT_SERVING, then draining");
            let _ = stop_tx.send(true);
            set_all(&reporter, &names, ServingStatus::NotServing).await;
            tokio::time::sleep(drain_notice).await;
            // Streams end now (clients reconnect elsewhere); unary calls in flight finish.
            let _ = draining_tx.send(true);
            let _ = closed_tx.send(());
        };
        let server = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(settings.keepalive_interval))
            .http2_keepalive_timeout(Some(settings.keepalive_timeout))
            .max_concurrent_streams(settings.max_concurrent_streams)
            .layer(CallLayer::new(settings.max_in_flight, draining_rx))
            .layer(AuthLayer::new(verifier, policy))
            .add_routes(routes.routes())
            .serve_with_incoming_shutdown(incoming, signal);
        tokio::pin!(server);
        let drain_timeout = settings.drain_timeout;
        let result = tokio::select! {
            r = &mut server => r,
            () = async {
                let _ = closed_rx.await;
                tokio::time::sleep(drain_timeout).await;
            } => {
                tracing::warn!("drain timeout reached; closing remaining connections");
                Ok(())
            }
        };
        monitor.abort();
        result.map_err(ServeError::from)
    }
}

async fn set_all(reporter: &HealthReporter, names: &[String], status: ServingStatus) {
    for name in names {
        reporter.set_service_status(name, status).await;
    }
    reporter.set_service_status("", status).await;
}

struct Probe {
    pool: DbPool,
    conn: Option<AsyncPgConnection>,
}

impl Probe {
    /// One probe on a dedicated connection (never a pooled one: a saturated pool must not make
    /// a healthy database look down).
    async fn check(&mut self, timeout: Duration) -> bool {
        let attempt = async {
            if self.conn.is_none() {
                self.conn = Some(self.pool.dedicated_connection().await.ok()?);
            }
            let conn = self.conn.as_mut()?;
            conn.batch_execute("SELECT 1").await.ok()
        };
        let ok = matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(())));
        if !ok {
            self.conn = None;
        }
        ok
    }
}

async fn monitor_health(
    reporter: HealthReporter,
    services: Vec<(String, Option<DbPool>)>,
    revocations: Arc<RevocationSet>,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    // One probe (and one dedicated connection) per proto package: the services of a package
    // are one module sharing one pool.
    let mut probes: Vec<(String, Probe)> = Vec::new();
    let mut names: Vec<(String, Option<usize>)> = Vec::new();
    for (name, pool) in services {
        let package = name.rsplit_once('.').map_or("", |(p, _)| p).to_owned();
        let probe = pool.map(|pool| {
            probes
                .iter()
                .position(|(p, _)| *p == package)
                .unwrap_or_else(|| {
                    probes.push((package, Probe { pool, conn: None }));
                    probes.len() - 1
                })
        });
        names.push((name, probe));
    }
    let mut last: Vec<Option<bool>> = vec![None; names.len()];
    loop {
        if *stop.borrow() {
            return;
        }
        let mut all = true;
        // Without a current revocation feed no authenticated call is served: say so.
        let feed = revocations.freshness();
        if feed != Freshness::Fresh {
            tracing::debug!(?feed, "revocation feed not current: NOT_SERVING");
        }
        let mut up = Vec::with_capacity(probes.len());
        for (_, probe) in &mut probes {
            up.push(probe.check(Duration::from_secs(1)).await);
        }
        for (i, (name, probe)) in names.iter().enumerate() {
            let ok = probe.is_none_or(|p| up[p]) && feed == Freshness::Fresh;
            all &= ok;
            if last[i] != Some(ok) {
                if last[i].is_some() {
                    // Losing health is news; regaining it (at every start, once the revocation
                    // feed is current) is not.
                    if ok {
                        tracing::info!(service = %name, "serving again");
                    } else {
                        tracing::warn!(service = %name, "not serving");
                    }
                }
                let status = if ok {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                reporter.set_service_status(name.as_str(), status).await;
                last[i] = Some(ok);
            }
        }
        if *stop.borrow() {
            return;
        }
        let overall = if all {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        reporter.set_service_status("", overall).await;
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
    }
}
