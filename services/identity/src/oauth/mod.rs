//! `OAuthService`: token exchange to switch organization (RFC 8693), introspection (RFC 7662)
//! and revocation (RFC 7009), for signed-in callers.

pub mod store;

use std::sync::Arc;

use chrono::Utc;
use crm_auth::layer::principal_of;
use crm_auth::{MethodPolicy, Principal, Requirement, TokenVerifier, permission};
use crm_db::{OrgId, tenant};
use crm_platform::ApiError;
use crm_platform::api::names;
use crm_proto::identity_v1::o_auth_service_server::OAuthService;
use crm_proto::identity_v1::{
    CreateAuthorizationCodeRequest, CreateAuthorizationCodeResponse,
    ExchangeAuthorizationCodeRequest, ExchangeTokenRequest, IntrospectTokenRequest,
    IntrospectTokenResponse, RevocationKind, RevokeTokenRequest, RevokeTokenResponse,
    TokenResponse,
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use self::store::NewCode;
use crate::auth::AuthApi;
use crate::ids::UserId;
use crate::secrets::TokenSecrets;
use crate::{IdentityState, audit, revocations, status};

const SERVICE: &str = "crm.identity.v1.OAuthService";

/// RPC requirements.
#[must_use]
pub fn policy() -> MethodPolicy {
    MethodPolicy::new()
        .with(SERVICE, "ExchangeToken", Requirement::Authenticated)
        .with(SERVICE, "IntrospectToken", Requirement::Authenticated)
        .with(SERVICE, "RevokeToken", Requirement::Authenticated)
        .with(
            SERVICE,
            "CreateAuthorizationCode",
            Requirement::Authenticated,
        )
        .with(SERVICE, "ExchangeAuthorizationCode", Requirement::Public)
}

/// The handlers.
#[derive(Debug, Clone)]
pub struct OAuthApi {
    auth: AuthApi,
    state: IdentityState,
    verifier: Arc<TokenVerifier>,
}

impl OAuthApi {
    /// Handlers; `verifier` is the one the authentication layer uses.
    #[must_use]
    pub fn new(state: &IdentityState, verifier: Arc<TokenVerifier>) -> Self {
        Self {
            auth: AuthApi::new(state),
            state: state.clone(),
            verifier,
        }
    }
}

/// Why an access token may not open a session in another organization.
fn exchange_refused(reason: &'static str, message: &str) -> Status {
    status(ApiError::PermissionDenied {
        reason,
        message: message.to_owned(),
    })
}

impl OAuthApi {
    /// Checks that `principal` is a person's own, suite-wide token of a live session and that
    /// `target` is another organization; returns when that session ends (the new one ends no
    /// later). A delegated or service-narrowed token, or one whose session has ended, cannot
    /// become a session of its own.
    async fn switchable_session(
        &self,
        principal: &Principal,
        target: Uuid,
    ) -> Result<chrono::DateTime<Utc>, Status> {
        if principal.actor.is_some() {
            return Err(exchange_refused(
                "DELEGATED_TOKEN_REFUSED",
                "a delegated token cannot switch organization",
            ));
        }
        if !principal
            .audiences
            .iter()
            .any(|a| a == self.verifier.audience())
        {
            return Err(exchange_refused(
                "AUDIENCE_TOO_NARROW",
                "only a token for the whole suite can switch organization",
            ));
        }
        if target == principal.organization {
            return Err(status(ApiError::invalid(
                "requested_organization",
                "SAME_ORGANIZATION",
                "the token is already for that organization",
            )));
        }
        let session = principal
            .session_id
            .as_deref()
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| {
                exchange_refused("SESSION_REQUIRED", "the token belongs to no session")
            })?;
        let org = principal.organization;
        let end: Option<chrono::DateTime<Utc>> = tenant::read(&self.state.pool, org, move |conn| {
            Box::pin(async move {
                crate::sessions::live_until(conn, org, session)
                    .await
                    .map_err(ApiError::from)
            })
        })
        .await
        .map_err(status)?;
        end.ok_or_else(|| exchange_refused("SESSION_NOT_LIVE", "the token's session has ended"))
    }
}

fn user_of(p: &Principal) -> Option<UserId> {
    UserId::of_subject(&p.subject)
}

impl OAuthApi {
    /// RFC 8693 delegation: a token for the person of `subject_token`, acted for by the caller.
    fn delegate(
        &self,
        caller: &Principal,
        subject_token: &str,
        scope: &str,
        audience: &str,
    ) -> Result<TokenResponse, ApiError> {
        let suite = self.verifier.audience();
        let narrowed = match audience {
            "" => None,
            a if a == suite => None,
            a if a
                .strip_prefix(suite)
                .and_then(|r| r.strip_prefix('.'))
                .is_some_and(|svc| {
                    !svc.is_empty()
                        && svc.len() <= 40
                        && svc.bytes().all(|b| b.is_ascii_lowercase())
                }) =>
            {
                Some(a.to_owned())
            }
            _ => {
                return Err(ApiError::invalid(
                    "audience",
                    "INVALID_AUDIENCE",
                    format!("must be {suite} or one of its services, such as {suite}.core"),
                ));
            }
        };
        if !caller.has_permission(permission::TOKENS_DELEGATE) {
            return Err(ApiError::PermissionDenied {
                reason: "PERMISSION_MISSING",
                message: "delegation needs identity.tokens.delegate".into(),
            });
        }
        let subject = self.verifier.verify(subject_token).map_err(|_| {
            ApiError::invalid(
                "subject_token",
                "INVALID_SUBJECT_TOKEN",
                "the subject token is not valid",
            )
        })?;
        if subject.organization != caller.organization {
            return Err(ApiError::PermissionDenied {
                reason: "ORGANIZATION_MISMATCH",
                message: "the subject token belongs to another organization".into(),
            });
        }
        if subject.actor.is_some() {
            return Err(ApiError::invalid(
                "subject_token",
                "ALREADY_DELEGATED",
                "a delegated token cannot be delegated again",
            ));
        }
        // Narrow only: keep the requested scopes the subject has (all of them when none are asked).
        let scopes: Vec<&str> = if scope.trim().is_empty() {
            subject.scopes.iter().map(String::as_str).collect()
        } else {
            scope
                .split_whitespace()
                .filter(|s| subject.scopes.iter().any(|have| have == s))
                .collect()
        };
        let remaining = u64::try_from(subject.expires_at - Utc::now().timestamp()).unwrap_or(0);
        let ttl = std::time::Duration::from_secs(remaining.min(300));
        let session = subject
            .session_id
            .as_deref()
            .and_then(|s| Uuid::parse_str(s).ok());
        let (access_token, expires_in) = self.auth.sign(crate::auth::TokenSpec {
            org: subject.organization,
            subject: subject.subject.clone(),
            roles: subject.roles.clone(),
            session,
            client_id: caller.client_id.clone(),
            ttl,
            scope: scopes.join(" "),
            act: Some(caller.subject.clone()),
            audience: narrowed,
        })?;
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer".into(),
            expires_in,
            refresh_token: String::new(),
            refresh_expire_time: None,
            session: String::new(),
            scope: scopes.join(" "),
        })
    }

    /// Revokes a refresh token's session and family, if the caller may.
    async fn revoke_refresh(&self, principal: &Principal, token: &str) -> Result<bool, ApiError> {
        let Some(org) = TokenSecrets::organization_of(token) else {
            return Ok(false);
        };
        if org != principal.organization {
            return Ok(false);
        }
        let digest = self.state.secrets.digest(token);
        let me = user_of(principal);
        let manage = principal.has_permission(permission::SESSIONS_MANAGE);
        let actor = principal.subject.clone();
        tenant::transaction(&self.state.pool, org, move |conn| {
            Box::pin(async move {
                let found = store::refresh_owner(conn, OrgId(org), &digest).await?;
                let Some((session, owner)) = found else {
                    return Ok(false);
                };
                if !manage && me != Some(owner) {
                    return Ok(false);
                }
                crate::sessions::end(conn, org, session, Utc::now()).await?;
                let subject = format!("organizations/{org}/sessions/{session}");
                audit::append(
                    conn,
                    org,
                    audit::Entry {
                        kind: "token.revoked",
                        actor: &actor,
                        subject: &subject,
                        detail: "refresh token",
                    },
                )
                .await?;
                Ok::<_, ApiError>(true)
            })
        })
        .await
    }

    /// Revokes an access token by `jti`, if the caller may.
    async fn revoke_access(&self, principal: &Principal, token: &str) -> Result<bool, ApiError> {
        let Ok(target) = self.verifier.verify(token) else {
            return Ok(false);
        };
        let same_owner = target.subject == principal.subject;
        if target.organization != principal.organization
            || !(same_owner || principal.has_permission(permission::SESSIONS_MANAGE))
        {
            return Ok(false);
        }
        let org = target.organization;
        let jti = target.token_id.clone();
        let actor = principal.subject.clone();
        let subject = target.subject.clone();
        tenant::transaction(&self.state.pool, org, move |conn| {
            Box::pin(async move {
                revocations::record(conn, RevocationKind::Token, &jti, None).await?;
                audit::append(
                    conn,
                    org,
                    audit::Entry {
                        kind: "token.revoked",
                        actor: &actor,
                        subject: &subject,
                        detail: "access token",
                    },
                )
                .await?;
                Ok::<_, ApiError>(true)
            })
        })
        .await
    }
}

const CODE_TTL: std::time::Duration = std::time::Duration::from_secs(300);

fn invalid_grant(message: &str) -> ApiError {
    ApiError::Unauthenticated {
        reason: "INVALID_GRANT",
        message: message.into(),
    }
}

/// Outcome of spending a code.
enum CodeUse {
    Issued(crate::auth::SessionPlan, Vec<String>),
    Refused(&'static str),
    Replayed,
}

#[tonic::async_trait]
impl OAuthService for OAuthApi {
    async fn create_authorization_code(
        &self,
        req: Request<CreateAuthorizationCodeRequest>,
    ) -> Result<Response<CreateAuthorizationCodeResponse>, Status> {
        let principal = principal_of(&req)?;
        let body = req.into_inner();
        let mut v = crm_platform::api::validate::Violations::new();
        if body.code_challenge_method != "S256" {
            v.push(
                "code_challenge_method",
                "PKCE_S256_REQUIRED",
                "PKCE with S256 is required",
            );
        }
        if !crate::pkce::valid_challenge(&body.code_challenge) {
            v.push(
                "code_challenge",
                "INVALID_CODE_CHALLENGE",
                "must be BASE64URL(SHA-256(code_verifier)), 43 characters",
            );
        }
        let client = crate::api_clients::registered(&self.state.pool, &body.client_id)
            .await
            .map_err(status)?;
        match &client {
            None => v.push("client_id", "UNKNOWN_CLIENT", "no such client"),
            Some(c) if !c.redirect_uris.contains(&body.redirect_uri) => {
                v.push(
                    "redirect_uri",
                    "UNREGISTERED_REDIRECT_URI",
                    "must exactly match a registered redirect URI",
                );
            }
            Some(_) => {}
        }
        v.finish().map_err(status)?;
        let user = user_of(&principal).ok_or_else(|| {
            status(ApiError::FailedPrecondition {
                reason: "NOT_A_USER",
                message: "only people authorize apps".into(),
            })
        })?;
        let org = principal.organization;
        if client.is_some_and(|c| c.organization != org) {
            return Err(status(ApiError::PermissionDenied {
                reason: "CLIENT_OF_ANOTHER_ORGANIZATION",
                message: "the client belongs to another organization".into(),
            }));
        }
        let code = TokenSecrets::mint_prefixed("ac1", org);
        let digest = self.state.secrets.digest(&code);
        let expire = Utc::now() + chrono::Duration::from_std(CODE_TTL).unwrap_or_default();
        let actor = principal.subject.clone();
        tenant::transaction(&self.state.pool, org, move |conn| {
            Box::pin(async move {
                let code = NewCode {
                    digest: &digest,
                    user,
                    client_id: &body.client_id,
                    redirect_uri: &body.redirect_uri,
                    code_challenge: &body.code_challenge,
                    expire_time: expire,
                };
                store::insert_code(conn, OrgId(org), code).await?;
                audit::append(
                    conn,
                    org,
                    audit::Entry {
                        kind: "authorization_code.issued",
                        actor: &actor,
                        subject: &body.client_id,
                        detail: "",
                    },
                )
                .await?;
                Ok::<_, ApiError>(())
            })
        })
        .await
        .map_err(status)?;
        Ok(Response::new(CreateAuthorizationCodeResponse { code }))
    }

    async fn exchange_authorization_code(
        &self,
        req: Request<ExchangeAuthorizationCodeRequest>,
    ) -> Result<Response<TokenResponse>, Status> {
        let body = req.into_inner();
        let org = TokenSecrets::organization_with_prefix("ac1", &body.code)
            .ok_or_else(|| status(invalid_grant("the authorization code is not valid")))?;
        if !crate::pkce::valid_verifier(&body.code_verifier) {
            return Err(status(ApiError::invalid(
                "code_verifier",
                "INVALID_CODE_VERIFIER",
                "43 to 128 characters of A-Z a-z 0-9 - . _ ~",
            )));
        }
        let digest = self.state.secrets.digest(&body.code);
        let challenge = crate::pkce::challenge_s256(&body.code_verifier);
        let auth = self.auth.clone();
        let outcome = tenant::transaction::<CodeUse, ApiError, _>(&self.state.pool, org, move |conn| {
            Box::pin(async move {
                let row = store::lock_code(conn, OrgId(org), &digest).await?;
                let Some(row) = row else { return Ok(CodeUse::Refused("the authorization code is not valid")) };
                if row.use_time.is_some() {
                    // A replayed code: whoever holds a copy must not keep what it bought.
                    if let Some(session) = row.session_id {
                        crate::sessions::end(conn, org, session, Utc::now()).await?;
                    }
                    return Ok(CodeUse::Replayed);
                }
                if row.expire_time <= Utc::now() || row.client_id != body.client_id || row.redirect_uri != body.redirect_uri {
                    return Ok(CodeUse::Refused("the authorization code is expired or was issued for another client or redirect URI"));
                }
                if row.code_challenge != challenge {
                    return Ok(CodeUse::Refused("the code verifier does not match the challenge"));
                }
                let roles = crate::roles::of_active_member(conn, org, row.user_id.uuid()).await?;
                let Some(roles) = roles else { return Ok(CodeUse::Refused("the membership is no longer active")) };
                let plan = auth.plan_session(org, row.user_id.uuid(), &body.client_id);
                crate::auth::record_session(conn, &plan, "authorization_code.exchanged").await?;
                store::use_code(conn, OrgId(org), &digest, plan.session).await?;
                Ok(CodeUse::Issued(plan, roles))
            })
        })
        .await
        .map_err(status)?;
        match outcome {
            CodeUse::Issued(plan, roles) => self
                .auth
                .session_tokens(&plan, roles)
                .map(Response::new)
                .map_err(status),
            CodeUse::Refused(message) => Err(status(invalid_grant(message))),
            CodeUse::Replayed => {
                self.state.revoked.notify_waiters();
                Err(status(ApiError::Unauthenticated {
                    reason: "CODE_REUSED",
                    message: "the authorization code was already used; its session has been ended"
                        .into(),
                }))
            }
        }
    }

    async fn exchange_token(
        &self,
        req: Request<ExchangeTokenRequest>,
    ) -> Result<Response<TokenResponse>, Status> {
        let principal = principal_of(&req)?;
        if !req.get_ref().subject_token.is_empty() {
            let body = req.into_inner();
            return self
                .delegate(&principal, &body.subject_token, &body.scope, &body.audience)
                .map(Response::new)
                .map_err(status);
        }
        let target = names::parse_organization(
            &req.get_ref().requested_organization,
            "requested_organization",
        )
        .map_err(status)?;
        let user = user_of(&principal).ok_or_else(|| {
            status(ApiError::FailedPrecondition {
                reason: "NOT_A_USER",
                message: "only people switch organizations".into(),
            })
        })?;
        let parent_end = self.switchable_session(&principal, target).await?;
        let roles = tenant::read(&self.state.pool, target, move |conn| {
            Box::pin(async move {
                crate::roles::of_active_member(conn, target, user.uuid())
                    .await
                    .map_err(ApiError::from)
            })
        })
        .await
        .map_err(status)?
        .ok_or_else(|| {
            status(ApiError::PermissionDenied {
                reason: "NOT_A_MEMBER",
                message: "the caller is not an active member of that organization".into(),
            })
        })?;
        self.auth
            .open_session(
                target,
                user.uuid(),
                roles,
                &principal.client_id,
                "token.exchanged",
                Some(parent_end),
            )
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn introspect_token(
        &self,
        req: Request<IntrospectTokenRequest>,
    ) -> Result<Response<IntrospectTokenResponse>, Status> {
        let principal = principal_of(&req)?;
        let inactive = IntrospectTokenResponse::default();
        let Ok(p) = self.verifier.verify(&req.get_ref().token) else {
            return Ok(Response::new(inactive));
        };
        if p.organization != principal.organization {
            return Ok(Response::new(inactive));
        }
        Ok(Response::new(IntrospectTokenResponse {
            active: true,
            sub: p.subject.clone(),
            organization: p.organization_name(),
            client_id: p.client_id.clone(),
            scope: p.scopes.join(" "),
            roles: p.roles.clone(),
            exp: p.expires_at,
            sid: p.session_id.clone().unwrap_or_default(),
            actor: p.actor.clone().unwrap_or_default(),
        }))
    }

    async fn revoke_token(
        &self,
        req: Request<RevokeTokenRequest>,
    ) -> Result<Response<RevokeTokenResponse>, Status> {
        let principal = principal_of(&req)?;
        let token = req.into_inner().token;
        if token.is_empty() || token.len() > 4096 {
            return Err(status(ApiError::invalid(
                "token",
                "REQUIRED",
                "the token to revoke is required",
            )));
        }
        let revoked = if token.starts_with("rt1.") {
            self.revoke_refresh(&principal, &token).await
        } else {
            self.revoke_access(&principal, &token).await
        }
        .map_err(status)?;
        if revoked {
            self.state.revoked.notify_waiters();
        }
        Ok(Response::new(RevokeTokenResponse {}))
    }
}
