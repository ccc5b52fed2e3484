//! Identity service: organizations, users, memberships, sessions, access and refresh tokens,
//! signing keys (JWKS) and the revocation stream every other service follows.

pub mod api_clients;
pub mod audit;
pub mod auth;
pub mod bootstrap;
pub mod credentials;
pub mod ids;
pub mod jwks;
pub mod keys;
pub mod members;
pub mod mfa;
pub mod oauth;
pub mod organizations;
pub mod password_reset;
pub mod pkce;
pub mod rate_limit;
pub mod revocations;
pub mod roles;
pub mod schema;
pub mod secrets;
pub mod sessions;
pub mod totp;

use std::sync::Arc;
use std::time::Duration;

use crm_auth::MethodPolicy;
use crm_auth::password::PasswordHasher;
use crm_db::DbPool;
use crm_db::migrate::ServiceSchema;
use crm_platform::GrpcServer;
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use tokio::sync::Notify;

/// `ErrorInfo.domain` of this service's errors.
pub const DOMAIN: &str = "identity.crm";

/// The `Status` of an error of this service.
pub(crate) fn status(e: crm_platform::ApiError) -> tonic::Status {
    e.into_status(DOMAIN)
}

/// The identity schema's migrations.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

fn migrations() -> EmbeddedMigrations {
    MIGRATIONS
}

/// Schema `identity`, roles `identity_owner` / `identity_app`.
pub const SCHEMA: ServiceSchema = ServiceSchema {
    name: "identity",
    migrations,
    extensions: &[],
};

/// Token lifetimes and names.
#[derive(Debug, Clone)]
pub struct IdentitySettings {
    /// `iss` of issued tokens.
    pub issuer: String,
    /// `aud` of issued tokens.
    pub audience: String,
    /// Access-token lifetime for users (5 min).
    pub access_ttl: Duration,
    /// Access-token lifetime for API clients (10 min).
    pub client_access_ttl: Duration,
    /// Refresh-token lifetime (30 days, never past the session).
    pub refresh_ttl: Duration,
    /// Session lifetime (30 days).
    pub session_ttl: Duration,
    /// How long a retried refresh gets the same successor.
    pub refresh_grace: Duration,
    /// First lockout length (doubling per lockout, at most 15 min).
    pub lockout_base: Duration,
    /// Request rates of the credential endpoints.
    pub rate_limits: rate_limit::RateLimits,
    /// Key rotation.
    pub rotation: keys::RotationPolicy,
}

impl Default for IdentitySettings {
    fn default() -> Self {
        Self {
            issuer: "crm-identity".into(),
            audience: "crm".into(),
            access_ttl: Duration::from_secs(300),
            client_access_ttl: Duration::from_secs(600),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            session_ttl: Duration::from_secs(30 * 24 * 3600),
            refresh_grace: Duration::from_secs(20),
            lockout_base: Duration::from_secs(30),
            rate_limits: rate_limit::RateLimits::default(),
            rotation: keys::RotationPolicy::default(),
        }
    }
}

/// What the identity handlers share.
#[derive(Clone)]
pub struct IdentityState {
    /// Pool connected as `identity_app`.
    pub pool: DbPool,
    /// Signing keys.
    pub keys: Arc<keys::KeyStore>,
    /// Password hashing pool.
    pub hasher: PasswordHasher,
    /// Refresh-token key.
    pub secrets: secrets::TokenSecrets,
    /// Lifetimes and names.
    pub settings: IdentitySettings,
    /// Woken after revocations commit.
    pub revoked: Arc<Notify>,
    /// Signs List page tokens.
    pub page_tokens: crm_db::page::PageTokens,
    /// Seals secrets at rest (signing keys, TOTP secrets).
    pub kek: keys::Kek,
    /// Rate-limit buckets of this replica.
    pub limiter: Arc<rate_limit::RateLimiter>,
    /// The suite's internal service credential (watching revocations needs it).
    pub service_key: Arc<str>,
    /// Wakes revocation streams on commits of any replica; lives as long as the state.
    _listener: Arc<crm_db::notify::Listener>,
}

impl std::fmt::Debug for IdentityState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityState")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl IdentityState {
    /// Builds the state and loads (or creates) the signing keys.
    ///
    /// # Errors
    /// When the keys cannot be loaded or created.
    pub async fn start(
        pool: DbPool,
        kek: keys::Kek,
        token_secret: &[u8],
        service_key: &str,
        hasher: PasswordHasher,
        settings: IdentitySettings,
    ) -> Result<Self, keys::KeyError> {
        let keys = Arc::new(keys::KeyStore::new(
            pool.clone(),
            kek.clone(),
            settings.rotation.clone(),
        ));
        keys.rotate_and_reload().await?;
        let revoked = Arc::new(Notify::new());
        let listener = crm_db::notify::spawn_listener(
            pool.clone(),
            revocations::CHANNEL.to_owned(),
            Arc::clone(&revoked),
        );
        Ok(Self {
            pool,
            keys,
            hasher,
            secrets: secrets::TokenSecrets::new(token_secret),
            settings,
            revoked,
            page_tokens: crm_db::page::PageTokens::new(token_secret),
            kek,
            limiter: Arc::new(rate_limit::RateLimiter::new()),
            service_key: Arc::from(service_key),
            _listener: Arc::new(listener),
        })
    }
}

/// Every identity RPC and what it needs.
#[must_use]
pub fn policy() -> MethodPolicy {
    auth::policy()
        .merge(&jwks::policy())
        .merge(&revocations::policy())
        .merge(&audit::policy())
        .merge(&members::policy())
        .merge(&sessions::policy())
        .merge(&api_clients::policy())
        .merge(&mfa::policy())
        .merge(&oauth::policy())
        .merge(&credentials::policy())
        .merge(&roles::policy())
        .merge(&organizations::policy())
}

/// Adds the identity services to `server`.
pub fn register(server: &mut GrpcServer, state: &IdentityState) {
    use crm_proto::identity_v1::auth_service_server::AuthServiceServer;
    use crm_proto::identity_v1::key_service_server::KeyServiceServer;
    use crm_proto::identity_v1::revocation_service_server::RevocationServiceServer;
    let auth = AuthServiceServer::new(auth::AuthApi::new(state));
    let keys = KeyServiceServer::new(jwks::KeyApi::new(Arc::clone(&state.keys)));
    let revocations = RevocationServiceServer::new(revocations::RevocationApi::new(
        state.pool.clone(),
        Arc::clone(&state.revoked),
        &state.service_key,
    ));
    let audit = crm_proto::identity_v1::audit_service_server::AuditServiceServer::new(
        audit::AuditApi::new(state.pool.clone(), state.page_tokens.clone()),
    );
    server.add_service(auth, &auth::policy(), Some(state.pool.clone()));
    server.add_service(audit, &audit::policy(), Some(state.pool.clone()));
    let members = crm_proto::identity_v1::member_service_server::MemberServiceServer::new(
        members::MemberApi::new(state.clone()),
    );
    let sessions = crm_proto::identity_v1::session_service_server::SessionServiceServer::new(
        sessions::SessionApi::new(state.clone()),
    );
    server.add_service(members, &members::policy(), Some(state.pool.clone()));
    server.add_service(sessions, &sessions::policy(), Some(state.pool.clone()));
    let clients = crm_proto::identity_v1::api_client_service_server::ApiClientServiceServer::new(
        api_clients::ApiClientApi::new(state.clone()),
    );
    server.add_service(clients, &api_clients::policy(), Some(state.pool.clone()));
    let mfa = crm_proto::identity_v1::mfa_service_server::MfaServiceServer::new(mfa::MfaApi::new(
        state.clone(),
    ));
    server.add_service(mfa, &mfa::policy(), Some(state.pool.clone()));
    let oauth = crm_proto::identity_v1::o_auth_service_server::OAuthServiceServer::new(
        oauth::OAuthApi::new(state, server.verifier()),
    );
    server.add_service(oauth, &oauth::policy(), Some(state.pool.clone()));
    let credentials = crm_proto::identity_v1::integration_credential_service_server::IntegrationCredentialServiceServer::new(
        credentials::CredentialApi::new(state.clone()),
    );
    server.add_service(
        credentials,
        &credentials::policy(),
        Some(state.pool.clone()),
    );
    let roles = crm_proto::identity_v1::role_service_server::RoleServiceServer::new(
        roles::RoleApi::new(state.clone()),
    );
    server.add_service(roles, &roles::policy(), Some(state.pool.clone()));
    let organizations =
        crm_proto::identity_v1::organization_service_server::OrganizationServiceServer::new(
            organizations::OrganizationApi::new(state.clone()),
        );
    server.add_service(
        organizations,
        &organizations::policy(),
        Some(state.pool.clone()),
    );
    server.add_service(keys, &jwks::policy(), Some(state.pool.clone()));
    server.add_service(
        revocations,
        &revocations::policy(),
        Some(state.pool.clone()),
    );
}

/// What identity's purge job removes: idempotency keys and events past their retention,
/// revocations, reset tokens and authorization codes past their expiry, and sign-in throttles
/// nobody has touched (and that lock nobody out) for the retention.
#[must_use]
pub fn purge_rules(retention: &crm_db::purge::Retention) -> Vec<crm_db::purge::Rule> {
    use crm_db::purge::Rule;
    let mut rules = crm_db::purge::standard_rules(retention);
    for table in [
        "revocations",
        "password_reset_tokens",
        "authorization_codes",
    ] {
        rules.push(Rule {
            table,
            condition: "expire_time < now() - make_interval(secs => $1)",
            keep: retention.expired,
        });
    }
    rules.push(Rule {
        table: "login_throttle",
        condition: "update_time < now() - make_interval(secs => $1) \
                    AND (locked_until IS NULL OR locked_until < now())",
        keep: retention.expired,
    });
    rules
}

/// Identity as a service module: its schema, its state (signing keys loaded or created), its
/// services, key rotation and its purge.
pub struct IdentityModule {
    kek: keys::Kek,
    token_secret: Vec<u8>,
    service_key: String,
    hasher: PasswordHasher,
    settings: IdentitySettings,
    rotate_every: Option<std::time::Duration>,
}

impl std::fmt::Debug for IdentityModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityModule")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl IdentityModule {
    /// Identity with its secrets: the KEK, the token secret (refresh-token and page-token
    /// keys) and the suite's internal service credential; `rotate_every` runs key rotation in
    /// the background (`None`: only at start, as tests that drive rotation want).
    #[must_use]
    pub fn new(
        kek: keys::Kek,
        token_secret: &[u8],
        service_key: &str,
        hasher: PasswordHasher,
        settings: IdentitySettings,
        rotate_every: Option<std::time::Duration>,
    ) -> Self {
        Self {
            kek,
            token_secret: token_secret.to_vec(),
            service_key: service_key.to_owned(),
            hasher,
            settings,
            rotate_every,
        }
    }
}

impl crm_platform::module::ServiceModule for IdentityModule {
    fn schema(&self) -> crm_db::migrate::ServiceSchema {
        SCHEMA
    }

    fn start(
        &self,
        pool: DbPool,
    ) -> futures_util::future::BoxFuture<
        '_,
        Result<crm_platform::module::Started, crm_platform::module::StartError>,
    > {
        Box::pin(async move {
            let state = IdentityState::start(
                pool,
                self.kek.clone(),
                &self.token_secret,
                &self.service_key,
                self.hasher.clone(),
                self.settings.clone(),
            )
            .await?;
            let rotation = self
                .rotate_every
                .map(|every| state.keys.spawn_rotation(every));
            let mut started = crm_platform::module::Started::new(state, register);
            if let Some(task) = rotation {
                started = started.with_background(task);
            }
            Ok(started)
        })
    }

    fn purge_rules(&self, retention: &crm_db::purge::Retention) -> Vec<crm_db::purge::Rule> {
        purge_rules(retention)
    }
}
