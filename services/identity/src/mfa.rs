//! `MfaService` (TOTP enrolment) and the second-factor check of sign-in.

use chrono::Utc;
use crm_auth::layer::principal_of;
use crm_auth::{MethodPolicy, Requirement};
use crm_db::{AsyncPgConnection, DbError, DbPool};
use crm_platform::ApiError;
use crm_platform::api::validate::Violations;
use crm_platform::mutation::{self, IdempotencyKey};
use crm_proto::identity_v1::mfa_service_server::MfaService;
use crm_proto::identity_v1::{
    ConfirmTotpRequest, ConfirmTotpResponse, EnrollTotpRequest, EnrollTotpResponse,
};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use rand::RngCore;
use tonic::{Request, Response, Status};

use crate::status;
use uuid::Uuid;

use crate::keys::Kek;
use crate::schema::{recovery_codes as rc, user_totp as t, users as u};
use crate::secrets::TokenSecrets;
use crate::{IdentityState, audit, totp};

const SERVICE: &str = "crm.identity.v1.MfaService";
const RECOVERY_CODES: usize = 10;

/// RPC requirements: the signed-in user manages their own factors.
#[must_use]
pub fn policy() -> MethodPolicy {
    MethodPolicy::new()
        .with(SERVICE, "EnrollTotp", Requirement::Authenticated)
        .with(SERVICE, "ConfirmTotp", Requirement::Authenticated)
}

fn label(user: Uuid) -> String {
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
    let mut conn = pool.get().await.map_err(DbError::from)?;
    let enrolled: Option<(Vec<u8>, i64)> = t::table
        .filter(t::user_id.eq(user))
        .filter(t::confirm_time.is_not_null())
        .select((t::sealed_secret, t::last_step))
        .first(&mut conn)
        .await
        .optional()?;
    let Some((sealed, last_step)) = enrolled else {
        return Ok(SecondFactor::NotEnrolled);
    };
    if !totp_code.is_empty() {
        let secret = kek
            .open_bytes(&label(user), &sealed)
            .ok_or_else(|| ApiError::Internal("TOTP secret unreadable".into()))?;
        let Some(step) = totp::matching_step(&secret, totp_code.trim(), now_step(), last_step)
        else {
            return Ok(SecondFactor::Wrong);
        };
        // Conditional on the step still being new: two sign-ins racing with one code cannot both pass.
        let updated = diesel::update(
            t::table
                .filter(t::user_id.eq(user))
                .filter(t::last_step.lt(step)),
        )
        .set(t::last_step.eq(step))
        .execute(&mut conn)
        .await?;
        return Ok(if updated == 1 {
            SecondFactor::Passed
        } else {
            SecondFactor::Wrong
        });
    }
    if !recovery_code.is_empty() {
        let used = diesel::update(
            rc::table
                .filter(rc::user_id.eq(user))
                .filter(rc::digest.eq(recovery_digest(secrets, recovery_code)))
                .filter(rc::use_time.is_null()),
        )
        .set(rc::use_time.eq(diesel::dsl::now))
        .execute(&mut conn)
        .await?;
        return Ok(if used == 1 {
            SecondFactor::Passed
        } else {
            SecondFactor::Wrong
        });
    }
    Ok(SecondFactor::Missing)
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

fn user_of(subject: &str) -> Result<Uuid, ApiError> {
    subject
        .strip_prefix("users/")
        .and_then(|id| Uuid::parse_str(id).ok())
        .ok_or(ApiError::FailedPrecondition {
            reason: "NOT_A_USER",
            message: "only people have second factors".into(),
        })
}

async fn confirmed(conn: &AsyncPgConnection, user: Uuid) -> QueryResult<bool> {
    let n: i64 = t::table
        .filter(t::user_id.eq(user))
        .filter(t::confirm_time.is_not_null())
        .count()
        .get_result(&mut { conn })
        .await?;
    Ok(n > 0)
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
                    if confirmed(conn, user).await? {
                        return Err(ApiError::FailedPrecondition {
                            reason: "MFA_ALREADY_ENROLLED",
                            message: "TOTP is already enrolled".into(),
                        });
                    }
                    let email: String = u::table
                        .filter(u::id.eq(user))
                        .select(u::email)
                        .first(&mut { conn })
                        .await?;
                    diesel::insert_into(t::table)
                        .values((t::user_id.eq(user), t::sealed_secret.eq(&sealed)))
                        .on_conflict(t::user_id)
                        .do_update()
                        .set((
                            t::sealed_secret.eq(&sealed),
                            t::last_step.eq(0),
                            t::create_time.eq(diesel::dsl::now),
                        ))
                        .execute(&mut { conn })
                        .await?;
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
                    let pending: Option<Vec<u8>> = t::table
                        .filter(t::user_id.eq(user))
                        .filter(t::confirm_time.is_null())
                        .select(t::sealed_secret)
                        .first(&mut { conn })
                        .await
                        .optional()?;
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
                    diesel::update(t::table.filter(t::user_id.eq(user)))
                        .set((t::confirm_time.eq(diesel::dsl::now), t::last_step.eq(step)))
                        .execute(&mut { conn })
                        .await?;
                    diesel::delete(rc::table.filter(rc::user_id.eq(user)))
                        .execute(&mut { conn })
                        .await?;
                    for digest in &digests {
                        diesel::insert_into(rc::table)
                            .values((rc::user_id.eq(user), rc::digest.eq(digest)))
                            .execute(&mut { conn })
                            .await?;
                    }
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
