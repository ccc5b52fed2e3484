//! `MfaService` (TOTP enrolment) and the second-factor check of sign-in.

pub mod store;

use chrono::Utc;
use crm_auth::layer::principal_of;
use crm_auth::{MethodPolicy, Requirement};
use crm_db::{DbError, DbPool};
use crm_platform::ApiError;
use crm_platform::api::validate::Violations;
use crm_platform::mutation::{self, IdempotencyKey};
use crm_proto::identity_v1::mfa_service_server::MfaService;
use crm_proto::identity_v1::{
    ConfirmTotpRequest, ConfirmTotpResponse, EnrollTotpRequest, EnrollTotpResponse,
};
use rand::RngCore;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::ids::UserId;
use crate::keys::Kek;
use crate::secrets::TokenSecrets;
use crate::{IdentityState, audit, status, totp};

const SERVICE: &str = "crm.identity.v1.MfaService";
const RECOVERY_CODES: usize = 10;

/// RPC requirements: the signed-in user manages their own factors.
#[must_use]
pub fn policy() -> MethodPolicy {
    MethodPolicy::new()
        .with(SERVICE, "EnrollTotp", Requirement::Authenticated)
        .with(SERVICE, "ConfirmTotp", Requirement::Authenticated)
}

fn label(user: UserId) -> String {
    format!("totp:{user}")
}

fn recovery_digest(secrets: &TokenSecrets, code: &str) -> Vec<u8> {
    let normalized: String = code
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_ascii_uppercase();
    secrets.digest(&format!("recovery:{normalized}"))
}

fn now_step() -> i64 {
    totp::step_at(Utc::now().timestamp())
}

/// What sign-in learned about the second factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecondFactor {
    /// The user has no confirmed TOTP.
    NotEnrolled,
    /// A valid, unused TOTP or recovery code was given.
    Passed,
    /// None was given.
    Missing,
    /// One was given and is wrong, expired or already used.
    Wrong,
}

/// Checks the second factor of `user` (outside any tenant: factors belong to the user).
///
/// # Errors
/// Database failures.
pub async fn check(
    pool: &DbPool,
    kek: &Kek,
    secrets: &TokenSecrets,
    user: Uuid,
    totp_code: &str,
    recovery_code: &str,
) -> Result<SecondFactor, ApiError> {
    let user = UserId(user);
    let conn = pool.get().await.map_err(DbError::from)?;
    let Some((sealed, last_step)) = store::confirmed_totp(&conn, user).await? else {
        return Ok(SecondFactor::NotEnrolled);
    };
    let passed = if !totp_code.is_empty() {
        let secret = kek
            .open_bytes(&label(user), &sealed)
            .ok_or_else(|| ApiError::Internal("TOTP secret unreadable".into()))?;
        match totp::matching_step(&secret, totp_code.trim(), now_step(), last_step) {
            Some(step) => store::use_step(&conn, user, step).await?,
            None => false,
        }
    } else if !recovery_code.is_empty() {
        let digest = recovery_digest(secrets, recovery_code);
        store::use_recovery_code(&conn, user, digest).await?
    } else {
        return Ok(SecondFactor::Missing);
    };
    Ok(if passed {
        SecondFactor::Passed
    } else {
        SecondFactor::Wrong
    })
}

/// The handlers.
#[derive(Debug, Clone)]
pub struct MfaApi {
    state: IdentityState,
}

impl MfaApi {
    /// Handlers over `state`.
    #[must_use]
    pub fn new(state: IdentityState) -> Self {
        Self { state }
    }
}

fn user_of(subject: &str) -> Result<UserId, ApiError> {
    UserId::of_subject(subject).ok_or(ApiError::FailedPrecondition {
        reason: "NOT_A_USER",
        message: "only people have second factors".into(),
    })
}

#[tonic::async_trait]
impl MfaService for MfaApi {
    async fn enroll_totp(
        &self,
        req: Request<EnrollTotpRequest>,
    ) -> Result<Response<EnrollTotpResponse>, Status> {
        let principal = principal_of(&req)?;
        let body = req.into_inner();
        let user = user_of(&principal.subject).map_err(status)?;
        let mut v = Violations::new();
        let key = IdempotencyKey::from_request(
            &mut v,
            "EnrollTotp",
            &body.request_id,
            &EnrollTotpRequest::default(),
        );
        v.finish().map_err(status)?;
        let mut secret = [0u8; 20];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let sealed = self
            .state
            .kek
            .seal_bytes(&label(user), &secret)
            .map_err(|e| status(ApiError::Internal(e.to_string())))?;
        let encoded = totp::base32(&secret);
        let org = principal.organization;
        let write = mutation::idempotent_redacted(
            self.state.pool.clone(),
            org,
            key,
            move |conn| {
                Box::pin(async move {
                    if store::confirmed_totp(conn, user).await?.is_some() {
                        return Err(ApiError::FailedPrecondition {
                            reason: "MFA_ALREADY_ENROLLED",
                            message: "TOTP is already enrolled".into(),
                        });
                    }
                    let email = store::email(conn, user).await?;
                    store::enroll(conn, user, &sealed).await?;
                    Ok(EnrollTotpResponse {
                        otpauth_uri: format!(
                            "otpauth://totp/CRM:{email}?secret={encoded}&issuer=CRM&algorithm=SHA1&digits=6&period=30"
                        ),
                        secret: encoded,
                    })
                })
            },
            // The secret is never kept in the idempotency store: a retry gets nothing to replay.
            |_| EnrollTotpResponse::default(),
        );
        mutation::detached(None, write)
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn confirm_totp(
        &self,
        req: Request<ConfirmTotpRequest>,
    ) -> Result<Response<ConfirmTotpResponse>, Status> {
        let principal = principal_of(&req)?;
        let body = req.into_inner();
        let user = user_of(&principal.subject).map_err(status)?;
        let mut v = Violations::new();
        if body.code.trim().len() != 6 {
            v.push("code", "INVALID_CODE", "a 6-digit code is required");
        }
        let mut fingerprint = body.clone();
        fingerprint.request_id.clear();
        let key =
            IdempotencyKey::from_request(&mut v, "ConfirmTotp", &body.request_id, &fingerprint);
        v.finish().map_err(status)?;
        let codes: Vec<String> = (0..RECOVERY_CODES)
            .map(|_| {
                let mut b = [0u8; 10];
                rand::rngs::OsRng.fill_bytes(&mut b);
                let s = totp::base32(&b);
                format!("{}-{}-{}-{}", &s[0..4], &s[4..8], &s[8..12], &s[12..16])
            })
            .collect();
        let digests: Vec<Vec<u8>> = codes
            .iter()
            .map(|c| recovery_digest(&self.state.secrets, c))
            .collect();
        let kek = self.state.kek.clone();
        let org = principal.organization;
        let actor = principal.subject.clone();
        let write = mutation::idempotent_redacted(
            self.state.pool.clone(),
            org,
            key,
            move |conn| {
                Box::pin(async move {
                    let pending = store::pending_totp(conn, user).await?;
                    let sealed = pending.ok_or(ApiError::FailedPrecondition {
                        reason: "NO_PENDING_ENROLMENT",
                        message: "call EnrollTotp first".into(),
                    })?;
                    let secret = kek
                        .open_bytes(&label(user), &sealed)
                        .ok_or_else(|| ApiError::Internal("TOTP secret unreadable".into()))?;
                    let step = totp::matching_step(&secret, body.code.trim(), now_step(), 0)
                        .ok_or_else(|| {
                            ApiError::invalid(
                                "code",
                                "WRONG_CODE",
                                "the code does not match; check the device's clock",
                            )
                        })?;
                    store::confirm(conn, user, step, &digests).await?;
                    audit::append(
                        conn,
                        org,
                        audit::Entry {
                            kind: "mfa.enrolled",
                            actor: &actor,
                            subject: &actor,
                            detail: "totp",
                        },
                    )
                    .await?;
                    Ok(ConfirmTotpResponse {
                        recovery_codes: codes,
                    })
                })
            },
            |_| ConfirmTotpResponse::default(),
        );
        mutation::detached(None, write)
            .await
            .map(Response::new)
            .map_err(status)
    }
}
