//! Queries of memberships and the users they join. Each runs in the caller's tenant transaction,
//! filters on the organization explicitly (row-level security is the second wall) and returns
//! the database's answer as a `QueryResult`.

use chrono::{DateTime, Utc};
use crm_db::{AsyncPgConnection, OrgId};
use crm_proto::identity_v1::MemberStatus;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::ids::UserId;
use crate::schema::{memberships as m, users as u};

crm_db::enum_column!(
    MemberState,
    MemberStatus,
    "`memberships.status`: a member's standing."
);

/// `memberships.status` of an invitation not yet accepted.
pub const INVITED: MemberState = MemberState(MemberStatus::Invited);
/// `memberships.status` of a member who may sign in.
pub const ACTIVE: MemberState = MemberState(MemberStatus::Active);

diesel::define_sql_function! {
    /// PostgreSQL's `lower(text)`.
    fn lower(x: diesel::sql_types::Text) -> diesel::sql_types::Text;
}

/// A membership with its user's address and name.
#[derive(Debug, Queryable)]
pub struct MemberRow {
    pub organization_id: OrgId,
    pub user_id: UserId,
    pub roles: Vec<String>,
    pub status: MemberState,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
    pub revision: i64,
    pub email: String,
    pub display_name: String,
}

type MemberColumns = (
    m::organization_id,
    m::user_id,
    m::roles,
    m::status,
    m::create_time,
    m::update_time,
    m::revision,
    u::email,
    u::display_name,
);

const COLUMNS: MemberColumns = (
    m::organization_id,
    m::user_id,
    m::roles,
    m::status,
    m::create_time,
    m::update_time,
    m::revision,
    u::email,
    u::display_name,
);

/// `user`'s membership of `org`.
pub async fn load(
    conn: &AsyncPgConnection,
    org: OrgId,
    user: UserId,
) -> QueryResult<Option<MemberRow>> {
    m::table
        .inner_join(u::table)
        .filter(m::organization_id.eq(org))
        .filter(m::user_id.eq(user))
        .select(COLUMNS)
        .first(&mut { conn })
        .await
        .optional()
}

/// Up to `limit` members of `org` after `after`, in user id order.
pub async fn page(
    conn: &AsyncPgConnection,
    org: OrgId,
    after: Option<UserId>,
    limit: i64,
) -> QueryResult<Vec<MemberRow>> {
    let mut q = m::table
        .inner_join(u::table)
        .filter(m::organization_id.eq(org))
        .order(m::user_id.asc())
        .limit(limit)
        .select(COLUMNS)
        .into_boxed();
    if let Some(after) = after {
        q = q.filter(m::user_id.gt(after));
    }
    q.load(&mut { conn }).await
}

/// The user with `email` (compared lower-cased), if any.
pub async fn user_by_email(conn: &AsyncPgConnection, email: &str) -> QueryResult<Option<UserId>> {
    u::table
        .filter(lower(u::email).eq(email))
        .select(u::id)
        .first(&mut { conn })
        .await
        .optional()
}

/// A new user.
#[derive(Debug, Clone, Copy)]
pub struct NewUser<'a> {
    pub id: UserId,
    pub email: &'a str,
    pub display_name: &'a str,
    pub password_hash: Option<&'a str>,
}

/// Inserts a user.
pub async fn insert_user(conn: &AsyncPgConnection, user: NewUser<'_>) -> QueryResult<()> {
    diesel::insert_into(u::table)
        .values((
            u::id.eq(user.id),
            u::email.eq(user.email),
            u::display_name.eq(user.display_name),
            u::password_hash.eq(user.password_hash),
        ))
        .execute(&mut { conn })
        .await
        .map(|_| ())
}

/// Adds `user` to `org`; false when they are a member already.
pub async fn insert_membership(
    conn: &AsyncPgConnection,
    org: OrgId,
    user: UserId,
    roles: &[String],
    status: MemberState,
) -> QueryResult<bool> {
    diesel::insert_into(m::table)
        .values((
            m::organization_id.eq(org),
            m::user_id.eq(user),
            m::roles.eq(roles),
            m::status.eq(status),
        ))
        .on_conflict_do_nothing()
        .execute(&mut { conn })
        .await
        .map(|n| n == 1)
}

/// Sets the roles and status of `user` in `org`, bumping the revision.
pub async fn update_membership(
    conn: &AsyncPgConnection,
    org: OrgId,
    user: UserId,
    roles: &[String],
    status: MemberState,
) -> QueryResult<()> {
    diesel::update(
        m::table
            .filter(m::organization_id.eq(org))
            .filter(m::user_id.eq(user)),
    )
    .set((
        m::roles.eq(roles),
        m::status.eq(status),
        m::revision.eq(m::revision + 1),
        m::update_time.eq(diesel::dsl::now),
    ))
    .execute(&mut { conn })
    .await
    .map(|_| ())
}

/// Turns `user`'s invitation to `org` into an active membership; false when there was none.
pub async fn accept(conn: &AsyncPgConnection, org: OrgId, user: UserId) -> QueryResult<bool> {
    diesel::update(
        m::table
            .filter(m::organization_id.eq(org))
            .filter(m::user_id.eq(user))
            .filter(m::status.eq(INVITED)),
    )
    .set((
        m::status.eq(ACTIVE),
        m::revision.eq(m::revision + 1),
        m::update_time.eq(diesel::dsl::now),
    ))
    .execute(&mut { conn })
    .await
    .map(|n| n == 1)
}
