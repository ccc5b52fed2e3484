//! Tenant transactions: the only way a service touches tenant rows.

use diesel::sql_types::Text;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures_util::future::BoxFuture;
use uuid::Uuid;

use crate::{DbError, DbPool};

/// Work done inside a tenant transaction: borrows the connection for the transaction's length.
pub type TxFuture<'r, T> = BoxFuture<'r, T>;

/// Runs `work` in one transaction in which `app.org_id` is `org`, set transaction-locally
/// (`set_config(..., true)`), so row-level security confines every statement to that
/// organization and the setting cannot leak to the next user of the pooled connection.
///
/// The transaction commits when `work` returns `Ok` and rolls back otherwise. If the returned
/// future is dropped mid-transaction, the connection is marked broken and is closed rather than
/// returned to the pool.
///
/// # Errors
/// Returns `work`'s error, or a pool or database error converted into `E`.
pub async fn transaction<R, E, F>(pool: &DbPool, org: Uuid, work: F) -> Result<R, E>
where
    F: for<'r> FnOnce(&'r mut AsyncPgConnection) -> TxFuture<'r, Result<R, E>> + Send,
    E: From<DbError> + From<diesel::result::Error> + Send,
    R: Send,
{
    let mut conn = pool.get().await.map_err(DbError::from)?;
    conn.transaction(async move |conn| {
        set_tenant(conn, org).await?;
        work(conn).await
    })
    .await
}

/// Sets `app.org_id` for the current transaction only.
///
/// # Errors
/// Returns the database error.
pub async fn set_tenant(
    conn: &mut AsyncPgConnection,
    org: Uuid,
) -> Result<(), diesel::result::Error> {
    diesel::sql_query("SELECT set_config('app.org_id', $1, true)")
        .bind::<Text, _>(org.to_string())
        .execute(conn)
        .await?;
    Ok(())
}
