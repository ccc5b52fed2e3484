//! The real suite server on `127.0.0.1:0`, with a channel to it and a signer for test tokens.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crm_auth::keys::{KeySource, StaticKeys};
use crm_auth::password::PasswordHasher;
use crm_auth::remote::{JwksKeys, KeyChain};
use crm_auth::revocation::RevocationSet;
use crm_auth::token::TokenSigner;
use crm_auth::{TokenVerifier, VerifierSettings};
use crm_core::CoreState;
use crm_db::pool::{self, PoolSettings};
use crm_platform::{GrpcServer, ServerSettings};
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
    /// The core state (pool, page tokens).
    pub core: CoreState,
    /// The identity state (pool, keys, hasher).
    pub identity: crm_identity::IdentityState,
    /// The internal service credential the revocation feed wants.
    pub service_key: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    followers: Vec<tokio::task::JoinHandle<()>>,
}

/// How to start a test server.
#[derive(Debug, Clone)]
pub struct TestServerOptions {
    /// Database URL for the core pool (default: the test database's `core_app` URL).
    pub core_url: Option<String>,
    /// Server settings.
    pub settings: ServerSettings,
    /// Pool size.
    pub pool_size: u32,
    /// How long a call waits for a pooled connection. Production answers UNAVAILABLE after
    /// 250 ms; tests wait longer by default because every test of the binary starts its server
    /// at once on a shared machine, and a test of that policy sets it back.
    pub acquire_timeout: Duration,
    /// Identity settings (tests shorten the lockout and the refresh grace).
    pub identity: crm_identity::IdentitySettings,
    /// Concurrent password hashes, and whether they use the production argon2 parameters
    /// (tests use small ones unless they measure hashing itself).
    pub hashing: (usize, bool),
    /// How long the revocation feed may stay silent before calls are refused (production: the
    /// access-token lifetime).
    pub revocation_max_lag: Duration,
}

impl Default for TestServerOptions {
    fn default() -> Self {
        Self {
            core_url: None,
            settings: ServerSettings {
                drain_notice: Duration::ZERO,
                drain_timeout: Duration::from_secs(5),
                health_interval: Duration::from_millis(100),
                ..ServerSettings::default()
            },
            pool_size: 4,
            acquire_timeout: Duration::from_secs(3),
            identity: crm_identity::IdentitySettings {
                lockout_base: Duration::from_secs(1),
                refresh_grace: Duration::from_secs(1),
                // Functional tests sign in often; the rate-limit test sets its own limits.
                rate_limits: crm_identity::rate_limit::RateLimits {
                    login_per_account: 100_000,
                    per_address: 100_000,
                    per_api_client: 100_000,
                    trust_forwarded_for: false,
                },
                ..crm_identity::IdentitySettings::default()
            },
            hashing: (4, false),
            revocation_max_lag: Duration::from_secs(300),
        }
    }
}

impl TestServer {
    /// Starts the suite over `db` with default options.
    ///
    /// # Errors
    /// When binding or connecting fails.
    pub async fn start(db: &TestDb) -> anyhow::Result<Self> {
        Self::start_with(db, TestServerOptions::default()).await
    }

    /// Starts the suite over `db`.
    ///
    /// # Errors
    /// When binding or connecting fails.
    pub async fn start_with(db: &TestDb, options: TestServerOptions) -> anyhow::Result<Self> {
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
        let mut pool_settings = PoolSettings::new(
            options
                .core_url
                .clone()
                .unwrap_or_else(|| db.app_url("core")),
            "core",
        );
        pool_settings.max_size = options.pool_size;
        pool_settings.acquire_timeout = options.acquire_timeout;
        let core = CoreState::new(pool::build(&pool_settings), Uuid::new_v4().as_bytes());
        let mut identity_pool = PoolSettings::new(db.app_url("identity"), "identity");
        identity_pool.max_size = options.pool_size;
        identity_pool.acquire_timeout = options.acquire_timeout;
        // Small argon2 parameters: tests exercise the logic, benchmarks the cost.
        let params = if options.hashing.1 {
            crm_auth::password::default_params().map_err(|e| anyhow::anyhow!("{e}"))?
        } else {
            argon2::Params::new(1024, 1, 1, None).map_err(|e| anyhow::anyhow!("{e}"))?
        };
        let identity = crm_identity::IdentityState::start(
            pool::build(&identity_pool),
            crm_identity::keys::Kek::generate(),
            Uuid::new_v4().as_bytes(),
            &service_key,
            PasswordHasher::new(options.hashing.0, params).map_err(|e| anyhow::anyhow!("{e}"))?,
            options.identity.clone(),
        )
        .await?;
        let mut server = GrpcServer::new(options.settings, verifier);
        crm_identity::register(&mut server, &identity);
        crm_core::register(&mut server, &core);

        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
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
        Ok(Self {
            addr,
            channel,
            signer,
            verifier_settings,
            revocations,
            core,
            identity,
            service_key,
            shutdown: Some(tx),
            task: Some(task),
            followers,
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
