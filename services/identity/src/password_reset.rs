//! Password reset: request (answers the same for everyone, in the same time — the work happens
//! after the answer) and reset (single use, 30 minutes; ends every session of the person).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use crm_auth::password::{HashError, PasswordHasher};
use crm_db::outbox::{self, NewEvent};
use crm_db::{DbError, DbPool, tenant};
use crm_platform::ApiError;
use crm_platform::api::names;
use crm_platform::api::time::timestamp;
use crm_platform::api::validate::Violations;
use crm_proto::identity_v1::PasswordResetRequested;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use prost::Message;
use rand::RngCore;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::keys::Kek;
use crate::schema::{memberships as m, password_reset_tokens as p, users as u};
use crate::secrets::TokenSecrets;
use crate::{audit, revocations};

const TOKEN_TTL: Duration = Duration::from_secs(30 * 60);

/// user, organization, expiry, use time.
type ResetRow = (Uuid, Uuid, DateTime<Utc>, Option<DateTime<Utc>>);

diesel::define_sql_function! {
    /// PostgreSQL's `lower(text)`.
    fn lower(x: diesel::sql_types::Text) -> diesel::sql_types::Text;
}

fn reset_digest(secrets: &TokenSecrets, token: &str) -> Vec<u8> {
    secrets.digest(&format!("reset:{token}"))
}

/// `pr2.{organization}.{random}`: the organization lets the reset find the row inside that
/// tenant's transaction (the table is behind row-level security like every tenant table).
fn new_token(org: Uuid) -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("pr2.{}.{}", org.simple(), URL_SAFE_NO_PAD.encode(bytes))
}

fn token_organization(token: &str) -> Option<Uuid> {
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("pr2"), Some(org), Some(_), None) => Uuid::try_parse(org).ok(),
        _ => None,
    }
}

fn seal_label(user: Uuid) -> String {
    format!("password-reset:users/{user}")
}

/// Opens the sealed token of a `PasswordResetRequested` event: what the sender (identity's own
/// notification step, holding the KEK) does just before delivering it. The event itself never
/// carries the token in the clear, so the outbox and its readers never see it.
#[must_use]
pub fn open_sealed_token(kek: &Kek, event: &PasswordResetRequested) -> Option<String> {
    let user = crate::ids::UserId::of_subject(&event.user)?.uuid();
    String::from_utf8(kek.open_bytes(&seal_label(user), &event.sealed_reset_token)?).ok()
}

/// Validates and schedules a reset request; always `Ok` for well-formed input.
///
/// # Errors
/// INVALID_ARGUMENT for malformed input only.
pub fn request(
    pool: &DbPool,
    secrets: &TokenSecrets,
    kek: &Kek,
    email: &str,
    organization: &str,
) -> Result<(), ApiError> {
    let mut v = Violations::new();
    if email.trim().is_empty() || email.len() > 254 {
        v.push("email", "REQUIRED", "an email address is required");
    }
    let org = names::parse_organization(organization, "organization")
        .map_err(|e| v.absorb(e))
        .ok();
    v.finish()?;
    let org = org.ok_or_else(|| ApiError::Internal("parsed without violation".into()))?;
    let (pool, secrets, email_key) = (pool.clone(), secrets.clone(), email.trim().to_lowercase());
    let kek = kek.clone();
    // Known and unknown emails get the same answer at the same speed: the work runs afterwards.
    tokio::spawn(async move {
        if let Err(e) = issue(&pool, &secrets, &kek, org, &email_key).await {
            tracing::warn!(error = %e, "password reset request failed");
        }
    });
    Ok(())
}

async fn issue(
    pool: &DbPool,
    secrets: &TokenSecrets,
    kek: &Kek,
    org: Uuid,
    email_key: &str,
) -> Result<(), ApiError> {
    let user: Option<Uuid> = {
        let mut conn = pool.get().await.map_err(DbError::from)?;
        u::table
            .filter(lower(u::email).eq(email_key))
            .select(u::id)
            .first(&mut conn)
            .await
            .optional()?
    };
    let Some(user) = user else { return Ok(()) };
    let token = new_token(org);
    let digest = reset_digest(secrets, &token);
    let sealed = kek
        .seal_bytes(&seal_label(user), token.as_bytes())
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    drop(token);
    let expire = Utc::now() + chrono::Duration::from_std(TOKEN_TTL).unwrap_or_default();
    let email = email_key.to_owned();
    tenant::transaction(pool, org, move |conn| {
        Box::pin(async move {
            let member: i64 = m::table
                .filter(m::organization_id.eq(org))
                .filter(m::user_id.eq(user))
                // Invited people too: it is how someone invited without a password sets one.
                .filter(m::status.eq_any([crate::members::INVITED, crate::members::ACTIVE]))
                .count()
                .get_result(&mut { conn })
                .await?;
            if member == 0 {
                return Ok(());
            }
            diesel::insert_into(p::table)
                .values((
                    p::digest.eq(&digest),
                    p::user_id.eq(user),
                    p::organization_id.eq(org),
                    p::expire_time.eq(expire),
                ))
                .execute(&mut { conn })
                .await?;
            let subject = format!("users/{user}");
            let event = PasswordResetRequested {
                user: subject.clone(),
                email,
                expire_time: Some(timestamp(expire)),
                sealed_reset_token: sealed,
                ..PasswordResetRequested::default()
            };
            outbox::append(
                conn,
                org,
                NewEvent {
                    event_type: "crm.identity.v1.PasswordResetRequested",
                    resource: &subject,
                    actor: "anonymous",
                    request_id: "",
                    payload: event.encode_to_vec(),
                },
            )
            .await?;
            audit::append(
                conn,
                org,
                audit::Entry {
                    kind: "password_reset.requested",
                    actor: "anonymous",
                    subject: &subject,
                    detail: "",
                },
            )
            .await?;
            Ok::<_, ApiError>(())
        })
    })
    .await
}

/// Completes a reset.
///
/// # Errors
/// INVALID_ARGUMENT for a weak password, UNAUTHENTICATED `INVALID_RESET_TOKEN` for a token that
/// is unknown, used or expired.
pub async fn reset(
    pool: &DbPool,
    hasher: &PasswordHasher,
    secrets: &TokenSecrets,
    revoked: &Arc<Notify>,
    token: &str,
    new_password: &str,
) -> Result<(), ApiError> {
    let mut v = Violations::new();
    if token.is_empty() || token.len() > 200 {
        v.push("reset_token", "REQUIRED", "the reset token is required");
    }
    if !(12..=1024).contains(&new_password.chars().count()) {
        v.push(
            "new_password",
            "WEAK_PASSWORD",
            "must be 12 to 1024 characters",
        );
    }
    v.finish()?;
    let invalid = || ApiError::Unauthenticated {
        reason: "INVALID_RESET_TOKEN",
        message: "the reset token is not valid or was already used".into(),
    };
    let Some(token_org) = token_organization(token) else {
        return Err(invalid());
    };
    let digest = reset_digest(secrets, token);
    let lookup = digest.clone();
    let found: Option<ResetRow> = tenant::transaction(pool, token_org, move |conn| {
        Box::pin(async move {
            p::table
                .filter(p::organization_id.eq(token_org))
                .filter(p::digest.eq(&lookup))
                .select((p::user_id, p::organization_id, p::expire_time, p::use_time))
                .first(&mut { conn })
                .await
                .optional()
                .map_err(ApiError::from)
        })
    })
    .await?;
    let (user, org) = match found {
        Some((user, org, expire, None)) if expire > Utc::now() => (user, org),
        Some(_) | None => return Err(invalid()),
    };
    let phc = hasher
        .hash(new_password.to_owned())
        .await
        .map_err(|e| match e {
            HashError::Busy => ApiError::ResourceExhausted {
                reason: "HASHING_CAPACITY",
                message: "too many password operations at once; retry shortly".into(),
                retry_after: Some(Duration::from_millis(200)),
            },
            HashError::Internal(d) => ApiError::Internal(d),
        })?;
    tenant::transaction(pool, org, move |conn| {
        Box::pin(async move {
            // Single use, even under a race: only one transaction marks it.
            let marked = diesel::update(
                p::table
                    .filter(p::organization_id.eq(org))
                    .filter(p::digest.eq(&digest))
                    .filter(p::use_time.is_null()),
            )
            .set(p::use_time.eq(diesel::dsl::now))
            .execute(&mut { conn })
            .await?;
            if marked != 1 {
                return Err(invalid());
            }
            let now = Utc::now();
            diesel::update(u::table.filter(u::id.eq(user)))
                .set((
                    u::password_hash.eq(&phc),
                    u::credentials_change_time.eq(now),
                    u::update_time.eq(now),
                ))
                .execute(&mut { conn })
                .await?;
            let subject = format!("users/{user}");
            // The person's own password changed: their tokens end in every organization.
            revocations::record_subject(conn, &subject, None, now).await?;
            audit::append(
                conn,
                org,
                audit::Entry {
                    kind: "password_reset.completed",
                    actor: &subject,
                    subject: &subject,
                    detail: "sessions ended",
                },
            )
            .await?;
            Ok::<_, ApiError>(())
        })
    })
    .await?;
    revoked.notify_waiters();
    Ok(())
}
