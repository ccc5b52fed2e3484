//! Creating an organization with its first administrator, for `crm up --demo` and tests. (The
//! organization and member RPCs that an operator calls come with the rest of identity.)

use crm_auth::password::PasswordHasher;
use crm_db::{DbError, DbPool, tenant};
use crm_platform::ApiError;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use crate::schema::{memberships as m, organizations as o, users as u};

/// An organization member to ensure.
#[derive(Debug, Clone, Copy)]
pub struct Member<'a> {
    /// The organization.
    pub org: Uuid,
    /// Its name, when it has to be created.
    pub org_display_name: &'a str,
    /// The user's email.
    pub email: &'a str,
    /// The user's password.
    pub password: &'a str,
    /// Roles in the organization.
    pub roles: &'a [&'a str],
    /// Whether an existing user's password is replaced.
    pub reset_password: bool,
}

/// Ensures organization `org` exists, that a user with `email` exists (with `password` when
/// created, or always when `reset_password`), and that the user is an active member with
/// `roles`. Idempotent.
///
/// # Errors
/// Database or hashing failures.
pub async fn ensure_member(
    pool: &DbPool,
    hasher: &PasswordHasher,
    member: &Member<'_>,
) -> Result<Uuid, ApiError> {
    let Member {
        org,
        org_display_name,
        email,
        password,
        roles,
        reset_password,
    } = *member;
    let phc = hasher
        .hash(password.to_owned())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut conn = pool.get().await.map_err(DbError::from)?;
    diesel::insert_into(o::table)
        .values((o::id.eq(org), o::display_name.eq(org_display_name)))
        .on_conflict_do_nothing()
        .execute(&mut conn)
        .await?;
    let email_key = email.trim().to_lowercase();
    let existing: Option<Uuid> = u::table
        .filter(u::email.eq(&email_key))
        .select(u::id)
        .first(&mut conn)
        .await
        .optional()?;
    let user = match existing {
        Some(id) => {
            if reset_password {
                diesel::update(u::table.filter(u::id.eq(id)))
                    .set((
                        u::password_hash.eq(&phc),
                        u::update_time.eq(diesel::dsl::now),
                    ))
                    .execute(&mut conn)
                    .await?;
            }
            id
        }
        None => {
            let id = Uuid::now_v7();
            diesel::insert_into(u::table)
                .values((
                    u::id.eq(id),
                    u::email.eq(&email_key),
                    u::display_name.eq(&email_key),
                    u::password_hash.eq(phc),
                ))
                .execute(&mut conn)
                .await?;
            id
        }
    };
    drop(conn);
    let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
    tenant::transaction(pool, org, move |conn| {
        Box::pin(async move {
            diesel::insert_into(m::table)
                .values((
                    m::organization_id.eq(org),
                    m::user_id.eq(user),
                    m::roles.eq(&roles),
                    m::status.eq(crate::members::ACTIVE),
                ))
                .on_conflict((m::organization_id, m::user_id))
                .do_update()
                .set((
                    m::roles.eq(&roles),
                    m::status.eq(crate::members::ACTIVE),
                    m::update_time.eq(diesel::dsl::now),
                ))
                .execute(&mut { conn })
                .await?;
            Ok::<_, ApiError>(())
        })
    })
    .await?;
    Ok(user)
}
