//! Queries of the OAuth flows: authorization codes, and which session a refresh token belongs
//! to. Each runs in the caller's tenant transaction and returns a `QueryResult`.

use chrono::{DateTime, Utc};
use crm_db::{AsyncPgConnection, OrgId};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use crate::ids::UserId;
use crate::schema::{authorization_codes as ac, refresh_tokens as rt, sessions as s};

/// An authorization code as stored (by its digest).
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = ac)]
pub struct CodeRow {
    pub user_id: UserId,
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub expire_time: DateTime<Utc>,
    pub use_time: Option<DateTime<Utc>>,
    pub session_id: Option<Uuid>,
}

/// A code to store.
#[derive(Debug, Clone, Copy)]
pub struct NewCode<'a> {
    pub digest: &'a [u8],
    pub user: UserId,
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
    pub code_challenge: &'a str,
    pub expire_time: DateTime<Utc>,
}

/// Stores an authorization code.
pub async fn insert_code(
    conn: &AsyncPgConnection,
    org: OrgId,
    code: NewCode<'_>,
) -> QueryResult<()> {
    diesel::insert_into(ac::table)
        .values((
            ac::organization_id.eq(org),
            ac::digest.eq(code.digest),
            ac::user_id.eq(code.user),
            ac::client_id.eq(code.client_id),
            ac::redirect_uri.eq(code.redirect_uri),
            ac::code_challenge.eq(code.code_challenge),
            ac::expire_time.eq(code.expire_time),
        ))
        .execute(&mut { conn })
        .await
        .map(|_| ())
}

/// The code with `digest`, locked for this transaction.
pub async fn lock_code(
    conn: &AsyncPgConnection,
    org: OrgId,
    digest: &[u8],
) -> QueryResult<Option<CodeRow>> {
    ac::table
        .filter(ac::organization_id.eq(org))
        .filter(ac::digest.eq(digest))
        .select(CodeRow::as_select())
        .for_update()
        .first(&mut { conn })
        .await
        .optional()
}

/// Marks the code with `digest` used by `session`.
pub async fn use_code(
    conn: &AsyncPgConnection,
    org: OrgId,
    digest: &[u8],
    session: Uuid,
) -> QueryResult<()> {
    diesel::update(
        ac::table
            .filter(ac::organization_id.eq(org))
            .filter(ac::digest.eq(digest)),
    )
    .set((ac::use_time.eq(Utc::now()), ac::session_id.eq(session)))
    .execute(&mut { conn })
    .await
    .map(|_| ())
}

/// The session, and its owner, of the refresh token with `digest`.
pub async fn refresh_owner(
    conn: &AsyncPgConnection,
    org: OrgId,
    digest: &[u8],
) -> QueryResult<Option<(Uuid, UserId)>> {
    rt::table
        .inner_join(
            s::table.on(s::organization_id
                .eq(rt::organization_id)
                .and(s::id.eq(rt::session_id))),
        )
        .filter(rt::organization_id.eq(org))
        .filter(rt::digest.eq(digest))
        .select((rt::session_id, s::user_id))
        .first(&mut { conn })
        .await
        .optional()
}
