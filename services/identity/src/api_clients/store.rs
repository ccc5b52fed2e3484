//! Queries of API clients and their secrets. Each runs in the caller's tenant transaction,
//! filters on the organization explicitly and returns the database's answer as a `QueryResult`.

use chrono::{DateTime, Utc};
use crm_db::{AsyncPgConnection, OrgId};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use crate::ids::ClientId;
use crate::schema::{api_client_secrets as cs, api_clients as c};

/// A row of `api_clients`.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = c)]
pub struct ClientRow {
    pub organization_id: OrgId,
    pub id: ClientId,
    pub display_name: String,
    pub roles: Vec<String>,
    pub create_time: DateTime<Utc>,
    pub delete_time: Option<DateTime<Utc>>,
    pub redirect_uris: Vec<String>,
}

/// A client to insert.
#[derive(Debug, Clone, Copy)]
pub struct NewClient<'a> {
    pub id: ClientId,
    pub display_name: &'a str,
    pub roles: &'a [String],
    pub redirect_uris: &'a [String],
    pub created_by: &'a str,
}

/// Inserts a client.
pub async fn insert(conn: &AsyncPgConnection, org: OrgId, new: NewClient<'_>) -> QueryResult<()> {
    diesel::insert_into(c::table)
        .values((
            c::organization_id.eq(org),
            c::id.eq(new.id),
            c::display_name.eq(new.display_name),
            c::roles.eq(new.roles),
            c::redirect_uris.eq(new.redirect_uris),
            c::created_by.eq(new.created_by),
        ))
        .execute(&mut { conn })
        .await
        .map(|_| ())
}

/// Client `id` of `org`, deleted or not.
pub async fn find(
    conn: &AsyncPgConnection,
    org: OrgId,
    id: ClientId,
) -> QueryResult<Option<ClientRow>> {
    c::table
        .filter(c::organization_id.eq(org))
        .filter(c::id.eq(id))
        .select(ClientRow::as_select())
        .first(&mut { conn })
        .await
        .optional()
}

/// Client `id` of `org` unless it is deleted.
pub async fn find_live(
    conn: &AsyncPgConnection,
    org: OrgId,
    id: ClientId,
) -> QueryResult<Option<ClientRow>> {
    Ok(find(conn, org, id)
        .await?
        .filter(|r| r.delete_time.is_none()))
}

/// Up to `limit` live clients of `org` after `after`, in id order.
pub async fn page(
    conn: &AsyncPgConnection,
    org: OrgId,
    after: Option<ClientId>,
    limit: i64,
) -> QueryResult<Vec<ClientRow>> {
    let mut q = c::table
        .filter(c::organization_id.eq(org))
        .filter(c::delete_time.is_null())
        .order(c::id.asc())
        .limit(limit)
        .select(ClientRow::as_select())
        .into_boxed();
    if let Some(after) = after {
        q = q.filter(c::id.gt(after));
    }
    q.load(&mut { conn }).await
}

/// How many secrets of client `id` are valid.
pub async fn active_secrets(
    conn: &AsyncPgConnection,
    org: OrgId,
    id: ClientId,
) -> QueryResult<i64> {
    cs::table
        .filter(cs::organization_id.eq(org))
        .filter(cs::client_id.eq(id))
        .filter(cs::revoke_time.is_null())
        .count()
        .get_result(&mut { conn })
        .await
}

/// Whether `digest` is one of the valid secrets of client `id`.
pub async fn secret_matches(
    conn: &AsyncPgConnection,
    org: OrgId,
    id: ClientId,
    digest: Vec<u8>,
) -> QueryResult<bool> {
    let matches: i64 = cs::table
        .filter(cs::organization_id.eq(org))
        .filter(cs::client_id.eq(id))
        .filter(cs::revoke_time.is_null())
        .filter(cs::digest.eq(digest))
        .count()
        .get_result(&mut { conn })
        .await?;
    Ok(matches == 1)
}

/// Adds a secret and keeps only the newest two valid.
pub async fn add_secret(
    conn: &AsyncPgConnection,
    org: OrgId,
    id: ClientId,
    digest: Vec<u8>,
) -> QueryResult<()> {
    diesel::insert_into(cs::table)
        .values((
            cs::organization_id.eq(org),
            cs::client_id.eq(id),
            cs::id.eq(Uuid::now_v7()),
            cs::digest.eq(digest),
        ))
        .execute(&mut { conn })
        .await?;
    let keep: Vec<Uuid> = cs::table
        .filter(cs::organization_id.eq(org))
        .filter(cs::client_id.eq(id))
        .filter(cs::revoke_time.is_null())
        .order(cs::id.desc())
        .limit(2)
        .select(cs::id)
        .load(&mut { conn })
        .await?;
    diesel::update(
        cs::table
            .filter(cs::organization_id.eq(org))
            .filter(cs::client_id.eq(id))
            .filter(cs::revoke_time.is_null())
            .filter(cs::id.ne_all(keep)),
    )
    .set(cs::revoke_time.eq(diesel::dsl::now))
    .execute(&mut { conn })
    .await
    .map(|_| ())
}

/// Soft-deletes client `id` and revokes every secret of it.
pub async fn delete(conn: &AsyncPgConnection, org: OrgId, id: ClientId) -> QueryResult<()> {
    diesel::update(
        c::table
            .filter(c::organization_id.eq(org))
            .filter(c::id.eq(id)),
    )
    .set(c::delete_time.eq(diesel::dsl::now))
    .execute(&mut { conn })
    .await?;
    diesel::update(
        cs::table
            .filter(cs::organization_id.eq(org))
            .filter(cs::client_id.eq(id))
            .filter(cs::revoke_time.is_null()),
    )
    .set(cs::revoke_time.eq(diesel::dsl::now))
    .execute(&mut { conn })
    .await
    .map(|_| ())
}
