//! The real suite server on `127.0.0.1:0`, with a channel to it and a signer for test tokens.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crm_auth::keys::{KeySource, StaticKeys};
use crm_auth::remote::{JwksKeys, KeyChain};
use crm_auth::revocation::RevocationSet;
use crm_auth::token::TokenSigner;
use crm_auth::{TokenVerifier, VerifierSettings};
use crm_db::migrate::ServiceSchema;
use crm_db::pool::{self, PoolSettings};
use crm_platform::ServerSettings;
use crm_platform::module::{Assembly, AssemblyConfig, ServiceModule};
use tokio::net::TcpListener;
use tonic::transport::{Channel, Endpoint};
use uuid::Uuid;

use crate::TestDb;

/// A running server and what a test needs to call it.
#[derive(Debug)]
pub struct TestServer {
    /// Listening address.
    pub addr: SocketAddr,
    /// A connected channel.
    pub channel: Channel,
    /// Signs tokens the server accepts.
    pub signer: Arc<TokenSigner>,
    /// The verifier's settings (issuer, audience).
    pub verifier_settings: VerifierSettings,
    /// The server's revocation set.
    pub revocations: Arc<RevocationSet>,
    /// The started modules (their states: `assembly.state::<S>()`).
    pub assembly: Assembly,
    /// The internal service credential the revocation feed wants.
    pub service_key: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    followers: Vec<tokio::task::JoinHandle<()>>,
    _revocation_lag: crm_platform::metrics::LagGauge,
}

/// How to start a test server.
#[derive(Debug, Clone)]
pub struct TestServerOptions {
    /// Database URLs replacing a schema's `<schema>_app` URL (e.g. one through a cuttable proxy).
    pub pool_urls: Vec<(&'static str, String)>,
    /// Server settings.
    pub settings: ServerSettings,
    /// Pool size.
    pub pool_size: u32,
    /// How long a call waits for a pooled connection. Production answers UNAVAILABLE after
    /// 250 ms; tests wait longer by default because every test of the binary starts its server
    /// at once on a shared machine, and a test of that policy sets it back.
    pub acquire_timeout: Duration,
    /// How long the revocation feed may stay silent before calls are refused (production: the
    /// access-token lifetime).
    pub revocation_max_lag: Duration,
}

impl Default for TestServerOptions {
    fn default() -> Self {
        Self {
            pool_urls: Vec::new(),
            settings: ServerSettings {
                drain_notice: Duration::ZERO,
                drain_timeout: Duration::from_secs(5),
                health_interval: Duration::from_millis(100),
                ..ServerSettings::default()
            },
            pool_size: 4,
            acquire_timeout: Duration::from_secs(3),
            revocation_max_lag: Duration::from_secs(300),
        }
    }
}

/// What the modules of a test server share with it: the internal service credential that the
/// token issuer's revocation feed wants and that the server presents when it follows it.
#[derive(Debug, Clone)]
pub struct Seeds {
    /// Base64url internal service credential.
    pub service_key: String,
    /// The address the server will listen on (bound already), for modules that call the
    /// server's other services.
    pub addr: SocketAddr,
}

impl TestServer {
    /// Starts `modules` over `db` (one of them must issue tokens and publish the key set and
    /// revocations, as identity does: the server follows itself like every deployment).
    ///
    /// # Errors
    /// When a module fails to start, or binding or connecting fails.
    pub async fn start_with(
        db: &TestDb,
        options: TestServerOptions,
        modules: impl FnOnce(&Seeds) -> Vec<Arc<dyn ServiceModule>>,
    ) -> anyhow::Result<Self> {
        let signer = Arc::new(TokenSigner::generate("test-key"));
        let static_keys = Arc::new(StaticKeys::new());
        static_keys.insert(signer.kid(), signer.verifying_key());
        let jwks = Arc::new(JwksKeys::new());
        let keys = Arc::new(KeyChain(vec![
            static_keys as Arc<dyn KeySource>,
            Arc::clone(&jwks) as Arc<dyn KeySource>,
        ]));
        let revocations = Arc::new(RevocationSet::followed(options.revocation_max_lag));
        let service_key = Uuid::new_v4().simple().to_string();
        let verifier_settings = VerifierSettings::default();
        let verifier = Arc::new(TokenVerifier::new(
            verifier_settings.clone(),
            keys,
            Arc::clone(&revocations),
        ));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let modules = modules(&Seeds {
            service_key: service_key.clone(),
            addr,
        });
        let pool_for = |schema: &ServiceSchema| {
            let url = options
                .pool_urls
                .iter()
                .find(|(name, _)| *name == schema.name)
                .map_or_else(|| db.app_url(schema.name), |(_, url)| url.clone());
            let mut settings = PoolSettings::new(url, schema.name);
            settings.max_size = options.pool_size;
            settings.acquire_timeout = options.acquire_timeout;
            pool::build(&settings)
        };
        let (server, assembly) = crm_platform::module::assemble(
            &modules,
            AssemblyConfig {
                pool_for: &pool_for,
                settings: options.settings,
                verifier,
                retention: None,
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;

        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = rx.await;
            };
            if let Err(e) = server.serve(listener, shutdown).await {
                tracing::error!(%e, "test server failed");
            }
        });
        let channel = Endpoint::from_shared(format!("http://{addr}"))?
            .connect()
            .await?;
        let followers = vec![
            crm_auth::remote::follow_jwks(channel.clone(), Arc::clone(&jwks)),
            crm_auth::remote::follow_revocations(
                channel.clone(),
                Arc::clone(&revocations),
                service_key.clone(),
            ),
        ];
        tokio::time::timeout(Duration::from_secs(10), jwks.loaded()).await?;
        tokio::time::timeout(Duration::from_secs(10), revocations.loaded()).await?;
        let revocation_lag = crm_platform::metrics::observe_revocation_feed(&revocations);
        Ok(Self {
            addr,
            channel,
            signer,
            verifier_settings,
            revocations,
            assembly,
            service_key,
            shutdown: Some(tx),
            task: Some(task),
            followers,
            _revocation_lag: revocation_lag,
        })
    }

    /// A bearer token for a user of `org` with `roles`.
    #[must_use]
    pub fn token(&self, org: Uuid, roles: &[&str]) -> String {
        let claims = TokenSigner::user_claims(
            &self.verifier_settings,
            Uuid::now_v7(),
            org,
            roles,
            Duration::from_secs(300),
        );
        self.signer.sign(&claims)
    }

    /// A request carrying `token`.
    #[must_use]
    pub fn request<T>(token: &str, message: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(message);
        if let Ok(v) = format!("Bearer {token}").parse() {
            req.metadata_mut().insert("authorization", v);
        }
        req
    }

    /// Signals shutdown and waits for the server to stop.
    pub async fn stop(mut self) {
        for f in &self.followers {
            f.abort();
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        for f in &self.followers {
            f.abort();
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
