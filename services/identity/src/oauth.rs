//! `OAuthService`: token exchange to switch organization (RFC 8693), introspection (RFC 7662)
//! and revocation (RFC 7009), for signed-in callers.

use std::sync::Arc;

use chrono::Utc;
use crm_auth::layer::principal_of;
use crm_auth::{MethodPolicy, Principal, Requirement, TokenVerifier, permission};
use crm_db::tenant;
use crm_platform::ApiError;
use crm_platform::api::names;
use crm_proto::identity_v1::o_auth_service_server::OAuthService;
use crm_proto::identity_v1::{
    ExchangeTokenRequest, IntrospectTokenRequest, IntrospectTokenResponse, RevocationKind,
    RevokeTokenRequest, RevokeTokenResponse, TokenResponse,
};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::auth::AuthApi;
use crate::schema::{memberships as m, refresh_tokens as rt, sessions as s};
use crate::secrets::TokenSecrets;
use crate::{DOMAIN, IdentityState, audit, revocations};

const SERVICE: &str = "crm.identity.v1.OAuthService";

/// RPC requirements.
#[must_use]
pub fn policy() -> MethodPolicy {
    MethodPolicy::new()
        .with(SERVICE, "ExchangeToken", Requirement::Authenticated)
        .with(SERVICE, "IntrospectToken", Requirement::Authenticated)
        .with(SERVICE, "RevokeToken", Requirement::Authenticated)
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

fn status(e: ApiError) -> Status {
    e.into_status(DOMAIN)
}

fn user_of(p: &Principal) -> Option<Uuid> {
    p.subject
        .strip_prefix("users/")
        .and_then(|id| Uuid::parse_str(id).ok())
}

impl OAuthApi {
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
                let found: Option<(uuid::Uuid, uuid::Uuid)> = rt::table
                    .inner_join(
                        s::table.on(s::organization_id
                            .eq(rt::organization_id)
                            .and(s::id.eq(rt::session_id))),
                    )
                    .filter(rt::organization_id.eq(org))
                    .filter(rt::digest.eq(&digest))
                    .select((rt::session_id, s::user_id))
                    .first(&mut { conn })
                    .await
                    .optional()?;
                let Some((session, owner)) = found else {
                    return Ok(false);
                };
                if !manage && me != Some(owner) {
                    return Ok(false);
                }
                let now = Utc::now();
                diesel::update(
                    s::table
                        .filter(s::organization_id.eq(org))
                        .filter(s::id.eq(session))
                        .filter(s::revoke_time.is_null()),
                )
                .set(s::revoke_time.eq(now))
                .execute(&mut { conn })
                .await?;
                diesel::update(
                    rt::table
                        .filter(rt::organization_id.eq(org))
                        .filter(rt::session_id.eq(session))
                        .filter(rt::revoke_time.is_null()),
                )
                .set(rt::revoke_time.eq(now))
                .execute(&mut { conn })
                .await?;
                revocations::record(conn, RevocationKind::Session, &session.to_string(), None)
                    .await?;
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

#[tonic::async_trait]
impl OAuthService for OAuthApi {
    async fn exchange_token(
        &self,
        req: Request<ExchangeTokenRequest>,
    ) -> Result<Response<TokenResponse>, Status> {
        let principal = principal_of(&req)?;
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
        let roles = tenant::transaction(&self.state.pool, target, move |conn| {
            Box::pin(async move {
                m::table
                    .filter(m::organization_id.eq(target))
                    .filter(m::user_id.eq(user))
                    .filter(m::status.eq(2i16))
                    .select(m::roles)
                    .first::<Vec<String>>(&mut { conn })
                    .await
                    .optional()
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
            .open_session(target, user, roles, &principal.client_id, "token.exchanged")
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
