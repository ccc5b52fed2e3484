//! Refresh-token rotation: one successor per token, the same successor for a retry within
//! the grace window from the same client, and the whole family and session revoked when a used
//! token comes back after it.

use super::*;

impl AuthApi {
    pub(super) async fn refresh(
        &self,
        body: RefreshTokenRequest,
    ) -> Result<TokenResponse, ApiError> {
        if body.refresh_token.is_empty() || body.refresh_token.len() > 200 {
            return Err(ApiError::invalid(
                "refresh_token",
                "REQUIRED",
                "a refresh token is required",
            ));
        }
        let org = TokenSecrets::organization_of(&body.refresh_token)
            .ok_or_else(|| invalid_grant("the refresh token is not valid"))?;
        let client_id = if body.client_id.is_empty() {
            FIRST_PARTY_CLIENT.to_owned()
        } else {
            body.client_id
        };
        let digest = self.secrets.digest(&body.refresh_token);
        let successor = self.secrets.successor(org, &body.refresh_token);
        let successor_digest = self.secrets.digest(&successor);
        let grace = chrono(self.settings.refresh_grace);
        let refresh_ttl = chrono(self.settings.refresh_ttl);
        let client = client_id.clone();
        let outcome = tenant::transaction::<Refreshed, ApiError, _>(&self.pool, org, move |conn| {
            Box::pin(async move {
                let token: Option<RefreshRow> = rt::table
                    .filter(rt::organization_id.eq(org))
                    .filter(rt::digest.eq(&digest))
                    .select(RefreshRow::as_select())
                    .for_update()
                    .first(&mut { conn })
                    .await
                    .optional()?;
                let Some(RefreshRow {
                    id,
                    session_id: session,
                    family_id: family,
                    client_id: token_client,
                    expire_time: expire,
                    used_time: used,
                    revoke_time: revoked,
                }) = token
                else {
                    return Ok(Refreshed::Refused("the refresh token is not valid"));
                };
                let now = Utc::now();
                let session_row: SessionCheck = s::table
                    .filter(s::organization_id.eq(org))
                    .filter(s::id.eq(session))
                    .select((s::user_id, s::create_time, s::expire_time, s::revoke_time))
                    .first(&mut { conn })
                    .await?;
                let (user_id, session_start, session_expire, session_revoked) = session_row;
                // A password reset (or other credential change) ends every earlier session.
                let changed: Option<DateTime<Utc>> = u::table
                    .filter(u::id.eq(user_id))
                    .select(u::credentials_change_time)
                    .first(&mut { conn })
                    .await?;
                if revoked.is_some()
                    || session_revoked.is_some()
                    || changed.is_some_and(|t| session_start <= t)
                    || expire <= now
                    || session_expire <= now
                {
                    return Ok(Refreshed::Refused(
                        "the refresh token is expired or revoked",
                    ));
                }
                if token_client != client {
                    return Ok(Refreshed::Refused(
                        "the refresh token was issued to another client",
                    ));
                }
                match used {
                    None => {
                        let next_id = Uuid::now_v7();
                        diesel::update(
                            rt::table
                                .filter(rt::organization_id.eq(org))
                                .filter(rt::id.eq(id)),
                        )
                        .set((rt::used_time.eq(now), rt::successor_id.eq(next_id)))
                        .execute(&mut { conn })
                        .await?;
                        let next_expire = (now + refresh_ttl).min(session_expire);
                        insert_refresh(
                            conn,
                            org,
                            session,
                            family,
                            successor_digest,
                            &client,
                            next_expire,
                        )
                        .await?;
                        Ok(Refreshed::Issued {
                            user_id,
                            session,
                            expire: next_expire,
                        })
                    }
                    Some(used_at) if now - used_at <= grace => {
                        // A retry of a refresh that already succeeded: the same successor again.
                        let next_expire: DateTime<Utc> = rt::table
                            .filter(rt::organization_id.eq(org))
                            .filter(rt::digest.eq(&successor_digest))
                            .filter(rt::revoke_time.is_null())
                            .select(rt::expire_time)
                            .first(&mut { conn })
                            .await
                            .optional()?
                            .ok_or(ApiError::Unauthenticated {
                                reason: "INVALID_GRANT",
                                message: "the refresh token is not valid".into(),
                            })?;
                        Ok(Refreshed::Issued {
                            user_id,
                            session,
                            expire: next_expire,
                        })
                    }
                    Some(_) => {
                        // Reuse after rotation: someone else holds a copy. End the family and session.
                        diesel::update(
                            rt::table
                                .filter(rt::organization_id.eq(org))
                                .filter(rt::family_id.eq(family)),
                        )
                        .set(rt::revoke_time.eq(now))
                        .execute(&mut { conn })
                        .await?;
                        diesel::update(
                            s::table
                                .filter(s::organization_id.eq(org))
                                .filter(s::id.eq(session)),
                        )
                        .set(s::revoke_time.eq(now))
                        .execute(&mut { conn })
                        .await?;
                        revocations::record(
                            conn,
                            RevocationKind::Session,
                            &session.to_string(),
                            None,
                        )
                        .await?;
                        let actor = format!("users/{user_id}");
                        let subject = format!("organizations/{org}/sessions/{session}");
                        let entry = audit::Entry {
                            kind: "refresh.reuse_detected",
                            actor: &actor,
                            subject: &subject,
                            detail: "refresh family and session revoked",
                        };
                        audit::append(conn, org, entry).await?;
                        Ok(Refreshed::Reused)
                    }
                }
            })
        })
        .await?;
        let (user_id, session, expire) = match outcome {
            Refreshed::Issued {
                user_id,
                session,
                expire,
            } => (user_id, session, expire),
            Refreshed::Refused(message) => return Err(invalid_grant(message)),
            Refreshed::Reused => {
                self.revoked.notify_waiters();
                tracing::warn!(%org, "refresh token reuse detected; family and session revoked");
                return Err(ApiError::Unauthenticated {
                    reason: "REFRESH_TOKEN_REUSED",
                    message: "the refresh token was already used; the session has been ended"
                        .into(),
                });
            }
        };
        let roles = self
            .current_roles(org, user_id)
            .await?
            .ok_or_else(|| invalid_grant("the membership is no longer active"))?;
        let (access_token, expires_in) =
            self.access_token(org, user_id, roles, session, &client_id)?;
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer".into(),
            expires_in,
            refresh_token: successor,
            refresh_expire_time: Some(crm_platform::api::time::timestamp(expire)),
            session: format!("organizations/{org}/sessions/{session}"),
            scope: "crm".into(),
        })
    }

    async fn current_roles(
        &self,
        org: Uuid,
        user_id: Uuid,
    ) -> Result<Option<Vec<String>>, ApiError> {
        tenant::transaction(&self.pool, org, move |conn| {
            Box::pin(async move {
                crate::roles::of_active_member(conn, org, user_id)
                    .await
                    .map_err(ApiError::from)
            })
        })
        .await
    }
}

/// The columns of a refresh token that a refresh decides on.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = rt)]
struct RefreshRow {
    id: Uuid,
    session_id: Uuid,
    family_id: Uuid,
    client_id: String,
    expire_time: DateTime<Utc>,
    used_time: Option<DateTime<Utc>>,
    revoke_time: Option<DateTime<Utc>>,
}

type SessionCheck = (Uuid, DateTime<Utc>, DateTime<Utc>, Option<DateTime<Utc>>);

enum Refreshed {
    Issued {
        user_id: Uuid,
        session: Uuid,
        expire: DateTime<Utc>,
    },
    Refused(&'static str),
    Reused,
}
