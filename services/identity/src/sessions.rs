//! `SessionService`: listing and ending sign-in sessions — one's own, or anyone's in the
//! organization with `identity.sessions.manage`.

use chrono::{DateTime, Utc};
use crm_auth::layer::principal_of;
use crm_auth::{MethodPolicy, Principal, Requirement, permission};
use crm_platform::ApiError;
use crm_platform::api::listing::Listing;
use crm_platform::api::names;
use crm_platform::api::time::{optional_timestamp, timestamp};
use crm_platform::api::validate::Violations;
use crm_platform::mutation::{self, IdempotencyKey};
use crm_proto::identity_v1::session_service_server::SessionService;
use crm_proto::identity_v1::{
    ListSessionsRequest, ListSessionsResponse, RevocationKind, RevokeSessionRequest, Session,
};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use tonic::{Request, Response, Status};

use crate::status;
use uuid::Uuid;

use crate::schema::{refresh_tokens as rt, sessions as s};
use crate::{IdentityState, audit, revocations};

const SERVICE: &str = "crm.identity.v1.SessionService";
const COLLECTION: &str = "sessions";

/// RPC requirements: any signed-in person may see and end their own sessions; the handlers
/// widen that to the whole organization for `identity.sessions.manage`.
#[must_use]
pub fn policy() -> MethodPolicy {
    MethodPolicy::new()
        .with(SERVICE, "ListSessions", Requirement::Authenticated)
        .with(SERVICE, "RevokeSession", Requirement::Authenticated)
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = s)]
struct SessionRow {
    organization_id: Uuid,
    id: Uuid,
    user_id: Uuid,
    client_id: String,
    create_time: DateTime<Utc>,
    expire_time: DateTime<Utc>,
    revoke_time: Option<DateTime<Utc>>,
}

impl From<SessionRow> for Session {
    fn from(r: SessionRow) -> Self {
        Self {
            name: names::child_name(r.organization_id, COLLECTION, r.id),
            user: format!("users/{}", r.user_id),
            client_id: r.client_id,
            create_time: Some(timestamp(r.create_time)),
            expire_time: Some(timestamp(r.expire_time)),
            revoke_time: optional_timestamp(r.revoke_time),
        }
    }
}

/// The user a principal is, when it is a user.
fn user_of(p: &Principal) -> Option<Uuid> {
    crate::ids::UserId::of_subject(&p.subject).map(crate::ids::UserId::uuid)
}

/// When session `id` of `org` ends, if it is live (not revoked, not expired); in the caller's
/// tenant transaction.
///
/// # Errors
/// The database error.
pub(crate) async fn live_until(
    conn: &crm_db::AsyncPgConnection,
    org: Uuid,
    id: Uuid,
) -> QueryResult<Option<DateTime<Utc>>> {
    s::table
        .filter(s::organization_id.eq(org))
        .filter(s::id.eq(id))
        .filter(s::revoke_time.is_null())
        .filter(s::expire_time.gt(diesel::dsl::now))
        .select(s::expire_time)
        .first(&mut { conn })
        .await
        .optional()
}

/// Ends session `id` of `org` at `now`: the session and every refresh token of it are revoked
/// (those already revoked keep their time), and its access tokens join the revocation feed.
///
/// # Errors
/// The database error.
pub(crate) async fn end(
    conn: &crm_db::AsyncPgConnection,
    org: Uuid,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    diesel::update(
        s::table
            .filter(s::organization_id.eq(org))
            .filter(s::id.eq(id))
            .filter(s::revoke_time.is_null()),
    )
    .set(s::revoke_time.eq(now))
    .execute(&mut { conn })
    .await?;
    diesel::update(
        rt::table
            .filter(rt::organization_id.eq(org))
            .filter(rt::session_id.eq(id))
            .filter(rt::revoke_time.is_null()),
    )
    .set(rt::revoke_time.eq(now))
    .execute(&mut { conn })
    .await?;
    revocations::record(conn, RevocationKind::Session, &id.to_string(), None).await?;
    Ok(())
}

/// The handlers.
#[derive(Debug, Clone)]
pub struct SessionApi {
    state: IdentityState,
}

impl SessionApi {
    /// Handlers over `state`.
    #[must_use]
    pub fn new(state: IdentityState) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl SessionService for SessionApi {
    async fn list_sessions(
        &self,
        req: Request<ListSessionsRequest>,
    ) -> Result<Response<ListSessionsResponse>, Status> {
        let principal = principal_of(&req)?;
        let body = req.into_inner();
        let only_user = if principal.has_permission(permission::SESSIONS_MANAGE) {
            None
        } else {
            Some(user_of(&principal))
        };
        // Whose sessions the caller sees is part of the query: a token cannot cross views.
        let scope = only_user
            .flatten()
            .map_or_else(|| "all".to_owned(), |u| u.to_string());
        let listing = Listing::of(&principal, &self.state.page_tokens, &body, &[&scope], 50)
            .map_err(status)?;
        let org = listing.org;
        let after = listing.after_uuid().map_err(status)?;
        let limit = listing.limit();
        let mut rows: Vec<SessionRow> = crm_db::tenant::read(&self.state.pool, org, move |conn| {
            Box::pin(async move {
                let mut q = s::table
                    .filter(s::organization_id.eq(org))
                    .order(s::id.desc())
                    .limit(limit)
                    .select(SessionRow::as_select())
                    .into_boxed();
                match only_user {
                    // A caller that is not a user (an API client) has no sessions of its own.
                    Some(None) => return Ok(Vec::new()),
                    Some(Some(user)) => q = q.filter(s::user_id.eq(user)),
                    None => {}
                }
                if let Some(after) = after {
                    q = q.filter(s::id.lt(after));
                }
                q.load(&mut { conn }).await.map_err(ApiError::from)
            })
        })
        .await
        .map_err(status)?;
        let next_page_token = listing.finish(&self.state.page_tokens, &mut rows, |r| {
            vec![r.id.to_string()]
        });
        Ok(Response::new(ListSessionsResponse {
            sessions: rows.into_iter().map(Session::from).collect(),
            next_page_token,
        }))
    }

    async fn revoke_session(
        &self,
        req: Request<RevokeSessionRequest>,
    ) -> Result<Response<Session>, Status> {
        let principal = principal_of(&req)?;
        let body = req.into_inner();
        let mut v = Violations::new();
        let parsed = names::parse_child(&body.name, COLLECTION, "name")
            .map_err(|e| v.absorb(e))
            .ok();
        let mut fingerprint = body.clone();
        fingerprint.request_id.clear();
        let key =
            IdempotencyKey::from_request(&mut v, "RevokeSession", &body.request_id, &fingerprint);
        v.finish().map_err(status)?;
        let (org, id) =
            parsed.ok_or_else(|| status(ApiError::Internal("parsed without violation".into())))?;
        names::require_same_organization(&principal, org).map_err(status)?;
        let manage = principal.has_permission(permission::SESSIONS_MANAGE);
        let me = user_of(&principal);
        let actor = principal.subject.clone();
        let name = body.name.clone();
        let write = mutation::idempotent(self.state.pool.clone(), org, key, move |conn| {
            Box::pin(async move {
                let row: SessionRow = s::table
                    .filter(s::organization_id.eq(org))
                    .filter(s::id.eq(id))
                    .select(SessionRow::as_select())
                    .first(&mut { conn })
                    .await
                    .optional()?
                    .ok_or_else(|| ApiError::NotFound {
                        resource_type: "identity.crm/Session",
                        name: name.clone(),
                    })?;
                if !manage && me != Some(row.user_id) {
                    // Someone else's session: as if it did not exist.
                    return Err(ApiError::NotFound {
                        resource_type: "identity.crm/Session",
                        name: name.clone(),
                    });
                }
                if row.revoke_time.is_some() {
                    return Ok(Session::from(row));
                }
                let now = Utc::now();
                end(conn, org, id, now).await?;
                audit::append(
                    conn,
                    org,
                    audit::Entry {
                        kind: "session.revoked",
                        actor: &actor,
                        subject: &name,
                        detail: "revoked",
                    },
                )
                .await?;
                Ok(Session::from(SessionRow {
                    revoke_time: Some(now),
                    ..row
                }))
            })
        });
        let out = mutation::detached(None, write).await.map_err(status)?;
        self.state.revoked.notify_waiters();
        Ok(Response::new(out))
    }
}
