//! `AuthService`: password login with lockout, refresh-token rotation, logout.
//!
//! - Unknown email, wrong password and "not a member of that organization" are one answer
//!   (UNAUTHENTICATED `INVALID_CREDENTIALS`) at one cost: the password is always checked, against
//!   a dummy hash when the user is unknown.
//! - Failures are counted per email whether or not it exists; five in a row lock it for 30 s,
//!   doubling per lockout up to 15 min, unlocking by itself; a success resets the count.
//! - Refresh tokens rotate on every use. A retry with the same token within the grace window,
//!   from the same client, gets the same successor; any later reuse revokes the whole family and
//!   the session, and the revocation reaches every service through `WatchRevocations`.

mod refresh;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use crm_auth::layer::principal_of;
use crm_auth::password::{HashError, PasswordHasher};
use crm_auth::token::{Audience, Claims};
use crm_auth::{MethodPolicy, Requirement};
use crm_db::{AsyncPgConnection, DbError, DbPool, tenant};
use crm_platform::ApiError;
use crm_platform::api::names;
use crm_platform::api::validate::Violations;
use crm_proto::identity_v1::auth_service_server::AuthService;
use crm_proto::identity_v1::{
    ClientCredentialsRequest, LoginRequest, LogoutRequest, LogoutResponse, RefreshTokenRequest,
    RequestPasswordResetRequest, RequestPasswordResetResponse, ResetPasswordRequest,
    ResetPasswordResponse, RevocationKind, TokenResponse,
};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use tokio::sync::Notify;
use tonic::{Request, Response, Status};

use crate::status;
use uuid::Uuid;

use crate::IdentitySettings;
use crate::audit;
use crate::keys::KeyStore;
use crate::revocations;
use crate::schema::{login_throttle as lt, refresh_tokens as rt, sessions as s, users as u};
use crate::secrets::TokenSecrets;

const SERVICE: &str = "crm.identity.v1.AuthService";

diesel::define_sql_function! {
    /// PostgreSQL's `lower(text)`; the users' unique index is on `lower(email)`.
    fn lower(x: diesel::sql_types::Text) -> diesel::sql_types::Text;
}
const FIRST_PARTY_CLIENT: &str = "crm-first-party";
const FAILURES_BEFORE_LOCKOUT: i32 = 5;

/// RPC requirements.
#[must_use]
pub fn policy() -> MethodPolicy {
    MethodPolicy::new()
        .with(SERVICE, "Login", Requirement::Public)
        .with(SERVICE, "RefreshToken", Requirement::Public)
        .with(SERVICE, "ClientCredentials", Requirement::Public)
        .with(SERVICE, "RequestPasswordReset", Requirement::Public)
        .with(SERVICE, "ResetPassword", Requirement::Public)
        .with(SERVICE, "Logout", Requirement::Authenticated)
}

/// The handlers.
#[derive(Clone)]
pub struct AuthApi {
    pool: DbPool,
    keys: Arc<KeyStore>,
    hasher: PasswordHasher,
    secrets: TokenSecrets,
    settings: IdentitySettings,
    revoked: Arc<Notify>,
    kek: crate::keys::Kek,
    limiter: Arc<crate::rate_limit::RateLimiter>,
    /// Digest of the suite's service credential: a caller presenting it (the gateway) has its
    /// `x-forwarded-for` believed.
    service_key: [u8; 32],
}

impl std::fmt::Debug for AuthApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthApi").finish_non_exhaustive()
    }
}

fn invalid_credentials() -> ApiError {
    ApiError::Unauthenticated {
        reason: "INVALID_CREDENTIALS",
        message: "the email, password or organization is not right".into(),
    }
}

fn invalid_grant(message: &str) -> ApiError {
    ApiError::Unauthenticated {
        reason: "INVALID_GRANT",
        message: message.into(),
    }
}

/// Every hashing slot is taken.
fn capacity_refusal() -> ApiError {
    ApiError::ResourceExhausted {
        reason: "LOGIN_CAPACITY",
        message: "too many sign-ins at once; retry shortly".into(),
        retry_after: Some(Duration::from_millis(200)),
    }
}

/// Lockout length after the `n`-th lockout: `base` (30 s) doubling, at most 15 min.
#[must_use]
pub fn lockout_length(base: Duration, n: i32) -> Duration {
    let exp = u32::try_from(n.saturating_sub(1)).unwrap_or(0).min(10);
    base.saturating_mul(1 << exp)
        .min(Duration::from_secs(15 * 60))
}

fn chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl AuthApi {
    /// Handlers over the identity state.
    #[must_use]
    pub fn new(state: &crate::IdentityState) -> Self {
        Self {
            pool: state.pool.clone(),
            keys: Arc::clone(&state.keys),
            hasher: state.hasher.clone(),
            secrets: state.secrets.clone(),
            settings: state.settings.clone(),
            revoked: Arc::clone(&state.revoked),
            kek: state.kek.clone(),
            limiter: Arc::clone(&state.limiter),
            service_key: crate::revocations::service_key_digest(&state.service_key),
        }
    }

    fn access_token(
        &self,
        org: Uuid,
        user: Uuid,
        roles: Vec<String>,
        session: Uuid,
        client_id: &str,
    ) -> Result<(String, i32), ApiError> {
        self.sign(TokenSpec {
            org,
            subject: format!("users/{user}"),
            roles,
            session: Some(session),
            client_id: client_id.to_owned(),
            ttl: self.settings.access_ttl,
            scope: "crm".into(),
            act: None,
            audience: None,
        })
    }

    /// Signs an access token with the active key.
    pub(crate) fn sign(&self, spec: TokenSpec) -> Result<(String, i32), ApiError> {
        let signer = self.keys.signer().ok_or(ApiError::Unavailable {
            reason: "NO_SIGNING_KEY",
        })?;
        let now = Utc::now().timestamp();
        let ttl = i64::try_from(spec.ttl.as_secs()).unwrap_or(300);
        let claims = Claims {
            iss: self.settings.issuer.clone(),
            sub: spec.subject,
            aud: Audience::One(
                spec.audience
                    .unwrap_or_else(|| self.settings.audience.clone()),
            ),
            exp: now + ttl,
            iat: now,
            nbf: now,
            jti: Uuid::now_v7().to_string(),
            client_id: spec.client_id,
            scope: spec.scope,
            org_id: spec.org.to_string(),
            roles: spec.roles,
            sid: spec.session.map(|s| s.to_string()),
            act: spec.act.map(|sub| crm_auth::token::Actor { sub }),
        };
        Ok((signer.sign(&claims), i32::try_from(ttl).unwrap_or(300)))
    }

    /// One token from the request's client-address bucket.
    fn limit_address<T>(&self, req: &Request<T>) -> Result<(), ApiError> {
        let trusted = self.settings.rate_limits.trust_forwarded_for
            || crate::revocations::presents_service_key(req, &self.service_key);
        match crate::rate_limit::client_address(req, trusted) {
            Some(ip) => self
                .limiter
                .take(&format!("ip:{ip}"), self.settings.rate_limits.per_address),
            None => Ok(()),
        }
    }

    /// Returns the lock's remaining time if the email is locked now.
    async fn locked_for(&self, email_key: &str) -> Result<Option<Duration>, ApiError> {
        let mut conn = self.pool.get().await.map_err(DbError::from)?;
        let until: Option<Option<DateTime<Utc>>> = lt::table
            .filter(lt::email_key.eq(email_key))
            .select(lt::locked_until)
            .first(&mut conn)
            .await
            .optional()?;
        let now = Utc::now();
        Ok(until
            .flatten()
            .filter(|t| *t > now)
            .and_then(|t| (t - now).to_std().ok()))
    }

    /// Audits a failed sign-in in `org`'s log, when `org` exists (so nobody can fill the logs
    /// of organizations that do not).
    async fn audit_failure(&self, org: Uuid, email_key: &str, locked: bool) {
        let exists = match self.pool.get().await {
            Ok(mut conn) => crate::schema::organizations::table
                .filter(crate::schema::organizations::id.eq(org))
                .count()
                .get_result::<i64>(&mut conn)
                .await
                .is_ok_and(|n| n > 0),
            Err(_) => false,
        };
        if !exists {
            return;
        }
        let subject = format!("email:{email_key}");
        let mut result =
            audit::append_alone(&self.pool, org, "login.failed", "anonymous", &subject, "").await;
        if locked && result.is_ok() {
            result =
                audit::append_alone(&self.pool, org, "login.locked", "anonymous", &subject, "")
                    .await;
        }
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not audit a failed sign-in");
        }
    }

    /// Counts a failure; returns whether it locked the email.
    async fn record_failure(&self, email_key: &str) -> Result<bool, ApiError> {
        let mut conn = self.pool.get().await.map_err(DbError::from)?;
        let (failures, lockouts): (i32, i32) = diesel::insert_into(lt::table)
            .values((lt::email_key.eq(email_key), lt::failures.eq(1)))
            .on_conflict(lt::email_key)
            .do_update()
            .set((
                lt::failures.eq(lt::failures + 1),
                lt::update_time.eq(diesel::dsl::now),
            ))
            .returning((lt::failures, lt::lockouts))
            .get_result(&mut conn)
            .await?;
        if failures >= FAILURES_BEFORE_LOCKOUT {
            let lockouts = lockouts + 1;
            diesel::update(lt::table.filter(lt::email_key.eq(email_key)))
                .set((
                    lt::failures.eq(0),
                    lt::lockouts.eq(lockouts),
                    lt::locked_until
                        .eq(Utc::now()
                            + chrono(lockout_length(self.settings.lockout_base, lockouts))),
                ))
                .execute(&mut conn)
                .await?;
            tracing::warn!(lockouts, "login locked after repeated failures");
            return Ok(true);
        }
        Ok(false)
    }

    async fn reset_failures(&self, email_key: &str) -> Result<(), ApiError> {
        let mut conn = self.pool.get().await.map_err(DbError::from)?;
        diesel::delete(lt::table.filter(lt::email_key.eq(email_key)))
            .execute(&mut conn)
            .await?;
        Ok(())
    }

    async fn login(&self, body: LoginRequest) -> Result<TokenResponse, ApiError> {
        let mut v = Violations::new();
        if body.email.trim().is_empty() || body.email.len() > 254 {
            v.push(
                "email",
                "REQUIRED",
                "an email address of at most 254 characters is required",
            );
        }
        if body.password.is_empty() || body.password.len() > 1024 {
            v.push(
                "password",
                "REQUIRED",
                "a password of at most 1024 bytes is required",
            );
        }
        let org = names::parse_organization(&body.organization, "organization")
            .map_err(|e| v.absorb(e))
            .ok();
        v.finish()?;
        let org =
            org.ok_or_else(|| ApiError::Internal("organization parsed without violation".into()))?;
        let client_id = if body.client_id.is_empty() {
            FIRST_PARTY_CLIENT.to_owned()
        } else {
            body.client_id
        };
        let email_key = body.email.trim().to_lowercase();
        // The hashing slot first: a sign-in the pool cannot take is refused before it reads
        // anything.
        let slot = self.hasher.reserve().map_err(|_| capacity_refusal())?;

        if let Some(wait) = self.locked_for(&email_key).await? {
            return Err(ApiError::ResourceExhausted {
                reason: "ACCOUNT_LOCKED",
                message: "too many failed sign-ins; try again later".into(),
                retry_after: Some(wait),
            });
        }

        let user: Option<(Uuid, Option<String>)> = {
            let mut conn = self.pool.get().await.map_err(DbError::from)?;
            u::table
                .filter(lower(u::email).eq(&email_key))
                .select((u::id, u::password_hash))
                .first(&mut conn)
                .await
                .optional()?
        };
        let stored = user.as_ref().and_then(|(_, h)| h.clone());
        let verification = self
            .hasher
            .verify_in(slot, body.password.clone(), stored.clone())
            .await
            .map_err(|e| match e {
                HashError::Busy => capacity_refusal(),
                HashError::Internal(detail) => ApiError::Internal(detail),
            })?;

        let membership = match (&user, verification.matches) {
            (Some((user_id, _)), true) => {
                let user_id = *user_id;
                tenant::transaction(&self.pool, org, move |conn| {
                    Box::pin(async move {
                        crate::roles::of_member_signing_in(conn, org, user_id)
                            .await
                            .map_err(ApiError::from)
                    })
                })
                .await?
            }
            _ => None,
        };
        let (Some((user_id, _)), Some((roles, invited))) = (user, membership) else {
            let locked = self.record_failure(&email_key).await?;
            self.audit_failure(org, &email_key, locked).await;
            return Err(invalid_credentials());
        };
        match crate::mfa::check(
            &self.pool,
            &self.kek,
            &self.secrets,
            user_id,
            &body.totp_code,
            &body.recovery_code,
        )
        .await?
        {
            crate::mfa::SecondFactor::NotEnrolled | crate::mfa::SecondFactor::Passed => {}
            crate::mfa::SecondFactor::Missing => {
                return Err(ApiError::Unauthenticated {
                    reason: "MFA_REQUIRED",
                    message: "this account needs a TOTP or recovery code".into(),
                });
            }
            crate::mfa::SecondFactor::Wrong => {
                let locked = self.record_failure(&email_key).await?;
                self.audit_failure(org, &email_key, locked).await;
                return Err(ApiError::Unauthenticated {
                    reason: "MFA_INVALID",
                    message: "the TOTP or recovery code is not right, or was already used".into(),
                });
            }
        }
        self.reset_failures(&email_key).await?;
        if verification.needs_rehash {
            self.rehash(user_id, body.password).await;
        }
        if invited {
            // Signing in to the organization that invited them, with their own credentials, is
            // how a person accepts: nobody else can make them a member.
            crate::members::accept_invitation(&self.pool, org, user_id).await?;
        }

        self.open_session(org, user_id, roles, &client_id, "login.succeeded", None)
            .await
    }

    /// Opens a session of `user_id` in `org`: session row, refresh token, audit event `kind`,
    /// and the token pair.
    pub(crate) async fn open_session(
        &self,
        org: Uuid,
        user_id: Uuid,
        roles: Vec<String>,
        client_id: &str,
        kind: &'static str,
        end_by: Option<DateTime<Utc>>,
    ) -> Result<TokenResponse, ApiError> {
        let mut plan = self.plan_session(org, user_id, client_id);
        // A session opened from another (an organization switch) ends no later than it.
        if let Some(end) = end_by {
            plan.session_expire = plan.session_expire.min(end);
            plan.refresh_expire = plan.refresh_expire.min(end);
        }
        let recorded = plan.clone();
        tenant::transaction(&self.pool, org, move |conn| {
            Box::pin(async move { record_session(conn, &recorded, kind).await })
        })
        .await?;
        self.session_tokens(&plan, roles)
    }

    /// Ids, secrets and times of a session about to open.
    pub(crate) fn plan_session(&self, org: Uuid, user_id: Uuid, client_id: &str) -> SessionPlan {
        let refresh = self.secrets.mint(org);
        let now = Utc::now();
        let session_expire = now + chrono(self.settings.session_ttl);
        SessionPlan {
            org,
            user_id,
            client_id: client_id.to_owned(),
            session: Uuid::now_v7(),
            digest: self.secrets.digest(&refresh),
            refresh,
            session_expire,
            refresh_expire: (now + chrono(self.settings.refresh_ttl)).min(session_expire),
        }
    }

    /// The token pair of a recorded session.
    pub(crate) fn session_tokens(
        &self,
        plan: &SessionPlan,
        roles: Vec<String>,
    ) -> Result<TokenResponse, ApiError> {
        let (access_token, expires_in) =
            self.access_token(plan.org, plan.user_id, roles, plan.session, &plan.client_id)?;
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer".into(),
            expires_in,
            refresh_token: plan.refresh.clone(),
            refresh_expire_time: Some(crm_platform::api::time::timestamp(plan.refresh_expire)),
            session: format!("organizations/{}/sessions/{}", plan.org, plan.session),
            scope: "crm".into(),
        })
    }

    /// Rehashes with the current parameters; skipped (not failed) when the pool is busy.
    async fn rehash(&self, user_id: Uuid, password: String) {
        let Ok(phc) = self.hasher.hash(password).await else {
            return;
        };
        if let Ok(mut conn) = self.pool.get().await {
            let _ = diesel::update(u::table.filter(u::id.eq(user_id)))
                .set((
                    u::password_hash.eq(phc),
                    u::update_time.eq(diesel::dsl::now),
                ))
                .execute(&mut conn)
                .await;
        }
    }
}

/// What an access token says.
#[derive(Debug, Clone)]
pub(crate) struct TokenSpec {
    pub(crate) org: Uuid,
    pub(crate) subject: String,
    pub(crate) roles: Vec<String>,
    pub(crate) session: Option<Uuid>,
    pub(crate) client_id: String,
    pub(crate) ttl: Duration,
    pub(crate) scope: String,
    /// The acting party of a delegated token.
    pub(crate) act: Option<String>,
    /// A narrower audience than the suite's (`crm.core`), for delegated tokens.
    pub(crate) audience: Option<String>,
}

/// A session about to be recorded.
#[derive(Debug, Clone)]
pub(crate) struct SessionPlan {
    pub(crate) org: Uuid,
    pub(crate) user_id: Uuid,
    pub(crate) client_id: String,
    pub(crate) session: Uuid,
    refresh: String,
    digest: Vec<u8>,
    session_expire: DateTime<Utc>,
    refresh_expire: DateTime<Utc>,
}

/// Records a planned session, its first refresh token and the audit event `kind`, in the
/// caller's tenant transaction.
pub(crate) async fn record_session(
    conn: &AsyncPgConnection,
    plan: &SessionPlan,
    kind: &str,
) -> Result<(), ApiError> {
    let org = plan.org;
    diesel::insert_into(s::table)
        .values((
            s::organization_id.eq(org),
            s::id.eq(plan.session),
            s::user_id.eq(plan.user_id),
            s::client_id.eq(&plan.client_id),
            s::expire_time.eq(plan.session_expire),
        ))
        .execute(&mut { conn })
        .await?;
    insert_refresh(
        conn,
        org,
        plan.session,
        Uuid::now_v7(),
        plan.digest.clone(),
        &plan.client_id,
        plan.refresh_expire,
    )
    .await?;
    let actor = format!("users/{}", plan.user_id);
    let subject = format!("organizations/{org}/sessions/{}", plan.session);
    let detail = format!("client {}", plan.client_id);
    audit::append(
        conn,
        org,
        audit::Entry {
            kind,
            actor: &actor,
            subject: &subject,
            detail: &detail,
        },
    )
    .await?;
    Ok(())
}

async fn insert_refresh(
    conn: &AsyncPgConnection,
    org: Uuid,
    session: Uuid,
    family: Uuid,
    digest: Vec<u8>,
    client: &str,
    expire: DateTime<Utc>,
) -> Result<(), diesel::result::Error> {
    diesel::insert_into(rt::table)
        .values((
            rt::organization_id.eq(org),
            rt::id.eq(Uuid::now_v7()),
            rt::session_id.eq(session),
            rt::family_id.eq(family),
            rt::digest.eq(digest),
            rt::client_id.eq(client),
            rt::expire_time.eq(expire),
        ))
        .execute(&mut { conn })
        .await?;
    Ok(())
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn login(&self, req: Request<LoginRequest>) -> Result<Response<TokenResponse>, Status> {
        self.limit_address(&req).map_err(status)?;
        let account = format!("account:{}", req.get_ref().email.trim().to_lowercase());
        self.limiter
            .take(&account, self.settings.rate_limits.login_per_account)
            .map_err(status)?;
        self.login(req.into_inner())
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn refresh_token(
        &self,
        req: Request<RefreshTokenRequest>,
    ) -> Result<Response<TokenResponse>, Status> {
        self.limit_address(&req).map_err(status)?;
        self.refresh(req.into_inner())
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn client_credentials(
        &self,
        req: Request<ClientCredentialsRequest>,
    ) -> Result<Response<TokenResponse>, Status> {
        self.limit_address(&req).map_err(status)?;
        let client_key = format!("client:{}", req.get_ref().client_id);
        self.limiter
            .take(&client_key, self.settings.rate_limits.per_api_client)
            .map_err(status)?;
        let body = req.into_inner();
        let (org, id, roles) = crate::api_clients::authenticate(
            &self.pool,
            &self.secrets,
            &body.client_id,
            &body.client_secret,
        )
        .await
        .map_err(status)?;
        let subject = format!("clients/{id}");
        let (access_token, expires_in) = self
            .sign(TokenSpec {
                org,
                subject: subject.clone(),
                roles,
                session: None,
                client_id: body.client_id.clone(),
                ttl: self.settings.client_access_ttl,
                scope: "crm".into(),
                act: None,
                audience: None,
            })
            .map_err(status)?;
        let detail = format!("client_credentials for {}", body.client_id);
        if let Err(e) =
            audit::append_alone(&self.pool, org, "token.issued", &subject, &subject, &detail).await
        {
            tracing::warn!(error = %e, "could not audit a token issue");
        }
        Ok(Response::new(TokenResponse {
            access_token,
            token_type: "Bearer".into(),
            expires_in,
            refresh_token: String::new(),
            refresh_expire_time: None,
            session: String::new(),
            scope: "crm".into(),
        }))
    }

    async fn request_password_reset(
        &self,
        req: Request<RequestPasswordResetRequest>,
    ) -> Result<Response<RequestPasswordResetResponse>, Status> {
        self.limit_address(&req).map_err(status)?;
        let account = format!("reset:{}", req.get_ref().email.trim().to_lowercase());
        self.limiter.take(&account, 5).map_err(status)?;
        let body = req.into_inner();
        crate::password_reset::request(
            &self.pool,
            &self.secrets,
            &self.kek,
            &body.email,
            &body.organization,
        )
        .map_err(status)?;
        Ok(Response::new(RequestPasswordResetResponse {}))
    }

    async fn reset_password(
        &self,
        req: Request<ResetPasswordRequest>,
    ) -> Result<Response<ResetPasswordResponse>, Status> {
        let body = req.into_inner();
        crate::password_reset::reset(
            &self.pool,
            &self.hasher,
            &self.secrets,
            &self.revoked,
            &body.reset_token,
            &body.new_password,
        )
        .await
        .map_err(status)?;
        Ok(Response::new(ResetPasswordResponse {}))
    }

    async fn logout(
        &self,
        req: Request<LogoutRequest>,
    ) -> Result<Response<LogoutResponse>, Status> {
        let principal = principal_of(&req)?;
        let org = principal.organization;
        let session = principal
            .session_id
            .as_deref()
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| {
                status(ApiError::FailedPrecondition {
                    reason: "NO_SESSION",
                    message: "this token has no session to end".into(),
                })
            })?;
        let pool = self.pool.clone();
        let actor = principal.subject.clone();
        let write = async move {
            tenant::transaction(&pool, org, move |conn| {
                Box::pin(async move {
                    crate::sessions::end(conn, org, session, Utc::now()).await?;
                    let subject = format!("organizations/{org}/sessions/{session}");
                    audit::append(
                        conn,
                        org,
                        audit::Entry {
                            kind: "session.revoked",
                            actor: &actor,
                            subject: &subject,
                            detail: "logout",
                        },
                    )
                    .await?;
                    Ok::<_, ApiError>(())
                })
            })
            .await
        };
        crm_platform::mutation::detached(None, write)
            .await
            .map_err(status)?;
        self.revoked.notify_waiters();
        Ok(Response::new(LogoutResponse {
            session: format!("organizations/{org}/sessions/{session}"),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockouts_double_up_to_fifteen_minutes() {
        let base = Duration::from_secs(30);
        assert_eq!(lockout_length(base, 1), Duration::from_secs(30));
        assert_eq!(lockout_length(base, 2), Duration::from_secs(60));
        assert_eq!(lockout_length(base, 5), Duration::from_secs(480));
        assert_eq!(lockout_length(base, 6), Duration::from_secs(900));
        assert_eq!(lockout_length(base, 40), Duration::from_secs(900));
    }
}
