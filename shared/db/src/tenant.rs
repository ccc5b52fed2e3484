//! Tenant transactions: the only way a service touches tenant rows.

use diesel::sql_types::{Bool, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use uuid::Uuid;

use crate::{DbError, DbPool};

/// Work done inside a tenant transaction: borrows the connection for the transaction's length.
pub type TxFuture<'r, T> = BoxFuture<'r, T>;

diesel::define_sql_function! {
    /// PostgreSQL's `set_config(setting, value, is_local)`.
    fn set_config(setting: Text, value: Text, is_local: Bool) -> Text;
}

/// Runs `work` in one transaction in which `app.org_id` is `org`, set transaction-locally
/// (`set_config(..., true)`), so row-level security confines every statement to that
/// organization and the setting cannot leak to the next user of the pooled connection.
///
/// `set_config` is pipelined with the first statement of `work`: both go to PostgreSQL in one
/// round trip and run in that order. (Should it ever fail, RLS sees no tenant and the statement
/// matches no row — it fails closed — and the transaction rolls back with the error.)
///
/// The transaction commits when `work` returns `Ok` and rolls back otherwise. If the returned
/// future is dropped mid-transaction, the connection is marked broken and is closed rather than
/// returned to the pool.
///
/// # Errors
/// Returns `work`'s error, or a pool or database error converted into `E`.
pub async fn transaction<R, E, F>(pool: &DbPool, org: Uuid, work: F) -> Result<R, E>
where
    F: for<'r> FnOnce(&'r AsyncPgConnection) -> TxFuture<'r, Result<R, E>> + Send,
    E: From<DbError> + From<diesel::result::Error> + Send,
    R: Send,
{
    transaction_as(pool, org, None, work).await
}

/// [`transaction`] for a caller who sees only part of the organization: `app.user_id` is also
/// set transaction-locally (to `viewer`, when given), for the restrictive row-level-security
/// policies that confine such a caller (a technician sees only their own work orders).
///
/// # Errors
/// As [`transaction`].
pub async fn transaction_as<R, E, F>(
    pool: &DbPool,
    org: Uuid,
    viewer: Option<Uuid>,
    work: F,
) -> Result<R, E>
where
    F: for<'r> FnOnce(&'r AsyncPgConnection) -> TxFuture<'r, Result<R, E>> + Send,
    E: From<DbError> + From<diesel::result::Error> + Send,
    R: Send,
{
    let mut conn = pool.get().await.map_err(DbError::from)?;
    conn.transaction(async move |conn| {
        let shared: &AsyncPgConnection = conn;
        let (set, result) =
            futures_util::future::join(set_scope(shared, org, viewer), work(shared)).await;
        set?;
        result
    })
    .await
}

/// Runs the read-only `work` in one transaction in which `app.org_id` is `org`, in what is for
/// the caller one round trip: `BEGIN READ ONLY`, the transaction-local `set_config` and the
/// first statement of `work` are pipelined (sent together, run in that order), and the `COMMIT`
/// is queued on the connection without waiting for its answer.
///
/// Safe as [`transaction`] is: the setting is transaction-local; the transaction is read only,
/// so a write in `work` fails and nothing can be lost by not reading the `COMMIT`'s answer;
/// should `BEGIN` or `set_config` fail, the call fails (and RLS, seeing no tenant, matches no
/// row meanwhile). The end of the transaction (`COMMIT`, or `ROLLBACK` on any error, on a panic
/// or when the caller drops the future half-way) is always queued on the connection before it
/// goes back to the pool, so its next user's statements run after this transaction has ended.
///
/// # Errors
/// Returns `work`'s error, or a pool or database error converted into `E`.
pub async fn read<R, E, F>(pool: &DbPool, org: Uuid, work: F) -> Result<R, E>
where
    F: for<'r> FnOnce(&'r AsyncPgConnection) -> TxFuture<'r, Result<R, E>> + Send,
    E: From<DbError> + From<diesel::result::Error> + Send,
    R: Send,
{
    read_as(pool, org, None, work).await
}

/// [`read`] with `app.user_id` also set to `viewer`, when given (see [`transaction_as`]).
///
/// # Errors
/// As [`read`].
pub async fn read_as<R, E, F>(
    pool: &DbPool,
    org: Uuid,
    viewer: Option<Uuid>,
    work: F,
) -> Result<R, E>
where
    F: for<'r> FnOnce(&'r AsyncPgConnection) -> TxFuture<'r, Result<R, E>> + Send,
    E: From<DbError> + From<diesel::result::Error> + Send,
    R: Send,
{
    let conn = pool.get().await.map_err(DbError::from)?;
    let shared: &AsyncPgConnection = &conn;
    let mut end = EndOnDrop {
        conn: shared,
        sql: "ROLLBACK",
    };
    let begin = async {
        let mut c = shared;
        c.batch_execute("BEGIN READ ONLY").await
    };
    let (begun, set, result) =
        futures_util::future::join3(begin, set_scope(shared, org, viewer), work(shared)).await;
    if begun.is_ok() && set.is_ok() && result.is_ok() {
        end.sql = "COMMIT";
    }
    drop(end);
    begun?;
    set?;
    result
}

/// Queues the end of a read-only transaction on the connection when dropped, without waiting
/// for the answer: the request is written at the first poll, and the connection's next user
/// queues behind it.
struct EndOnDrop<'c> {
    conn: &'c AsyncPgConnection,
    sql: &'static str,
}

impl Drop for EndOnDrop<'_> {
    fn drop(&mut self) {
        let mut conn = self.conn;
        // Dropped after its first poll: the statement is on its way, its answer is discarded.
        let _ = conn.batch_execute(self.sql).now_or_never();
    }
}

/// Sets `app.org_id` and, when given, `app.user_id` for the current transaction only, in one
/// statement.
///
/// # Errors
/// Returns the database error.
pub async fn set_scope(
    conn: &AsyncPgConnection,
    org: Uuid,
    viewer: Option<Uuid>,
) -> Result<(), diesel::result::Error> {
    let Some(viewer) = viewer else {
        return set_tenant(conn, org).await;
    };
    let mut conn = conn;
    diesel::select((
        set_config("app.org_id", org.to_string(), true),
        set_config("app.user_id", viewer.to_string(), true),
    ))
    .execute(&mut conn)
    .await?;
    Ok(())
}

/// Sets `app.org_id` for the current transaction only.
///
/// # Errors
/// Returns the database error.
pub async fn set_tenant(conn: &AsyncPgConnection, org: Uuid) -> Result<(), diesel::result::Error> {
    let mut conn = conn;
    diesel::select(set_config("app.org_id", org.to_string(), true))
        .execute(&mut conn)
        .await?;
    Ok(())
}
