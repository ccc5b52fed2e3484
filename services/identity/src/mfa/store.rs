//! Queries of second factors (TOTP secrets and recovery codes). Factors belong to the user, not
//! to an organization; each function returns the database's answer as a `QueryResult`.

use crm_db::AsyncPgConnection;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::ids::UserId;
use crate::schema::{recovery_codes as rc, user_totp as t, users as u};

/// The sealed secret and last accepted step of `user`'s confirmed TOTP.
pub async fn confirmed_totp(
    conn: &AsyncPgConnection,
    user: UserId,
) -> QueryResult<Option<(Vec<u8>, i64)>> {
    t::table
        .filter(t::user_id.eq(user))
        .filter(t::confirm_time.is_not_null())
        .select((t::sealed_secret, t::last_step))
        .first(&mut { conn })
        .await
        .optional()
}

/// The sealed secret of `user`'s enrolment not yet confirmed.
pub async fn pending_totp(conn: &AsyncPgConnection, user: UserId) -> QueryResult<Option<Vec<u8>>> {
    t::table
        .filter(t::user_id.eq(user))
        .filter(t::confirm_time.is_null())
        .select(t::sealed_secret)
        .first(&mut { conn })
        .await
        .optional()
}

/// Records `step` as used unless a later or equal one already was; false when it was (two
/// sign-ins racing with one code cannot both pass).
pub async fn use_step(conn: &AsyncPgConnection, user: UserId, step: i64) -> QueryResult<bool> {
    diesel::update(
        t::table
            .filter(t::user_id.eq(user))
            .filter(t::last_step.lt(step)),
    )
    .set(t::last_step.eq(step))
    .execute(&mut { conn })
    .await
    .map(|n| n == 1)
}

/// Marks the unused recovery code with `digest` used; false when there is none.
pub async fn use_recovery_code(
    conn: &AsyncPgConnection,
    user: UserId,
    digest: Vec<u8>,
) -> QueryResult<bool> {
    diesel::update(
        rc::table
            .filter(rc::user_id.eq(user))
            .filter(rc::digest.eq(digest))
            .filter(rc::use_time.is_null()),
    )
    .set(rc::use_time.eq(diesel::dsl::now))
    .execute(&mut { conn })
    .await
    .map(|n| n == 1)
}

/// The e-mail address of `user`.
pub async fn email(conn: &AsyncPgConnection, user: UserId) -> QueryResult<String> {
    u::table
        .filter(u::id.eq(user))
        .select(u::email)
        .first(&mut { conn })
        .await
}

/// Starts (or restarts) an enrolment of `user` with the sealed secret.
pub async fn enroll(conn: &AsyncPgConnection, user: UserId, sealed: &[u8]) -> QueryResult<()> {
    diesel::insert_into(t::table)
        .values((t::user_id.eq(user), t::sealed_secret.eq(sealed)))
        .on_conflict(t::user_id)
        .do_update()
        .set((
            t::sealed_secret.eq(sealed),
            t::last_step.eq(0),
            t::create_time.eq(diesel::dsl::now),
        ))
        .execute(&mut { conn })
        .await
        .map(|_| ())
}

/// Confirms `user`'s enrolment at `step` and replaces their recovery codes with `digests`.
pub async fn confirm(
    conn: &AsyncPgConnection,
    user: UserId,
    step: i64,
    digests: &[Vec<u8>],
) -> QueryResult<()> {
    diesel::update(t::table.filter(t::user_id.eq(user)))
        .set((t::confirm_time.eq(diesel::dsl::now), t::last_step.eq(step)))
        .execute(&mut { conn })
        .await?;
    diesel::delete(rc::table.filter(rc::user_id.eq(user)))
        .execute(&mut { conn })
        .await?;
    for digest in digests {
        diesel::insert_into(rc::table)
            .values((rc::user_id.eq(user), rc::digest.eq(digest)))
            .execute(&mut { conn })
            .await?;
    }
    Ok(())
}
