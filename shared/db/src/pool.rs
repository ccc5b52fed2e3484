//! Connection pools with the policy of ARCHITECTURE.md: no per-checkout ping, a short acquire
//! timeout, small pools, and per-connection `statement_timeout`,
//! `idle_in_transaction_session_timeout`, `application_name` and `search_path` set once when the
//! connection is made.

use std::time::Duration;

use diesel::ConnectionError;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use futures_util::FutureExt;

use crate::DbError;

/// A pool of connections to one service's schema.
pub type DbPool = bb8::Pool<AsyncDieselConnectionManager<AsyncPgConnection>>;

/// How a service's pool connects and behaves.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// `postgres://` URL; the user should be the service's `_app` role.
    pub url: String,
    /// Schema put first on `search_path`.
    pub schema: String,
    /// Reported in `pg_stat_activity`.
    pub application_name: String,
    /// Maximum connections (4 to 8 is right for most services).
    pub max_size: u32,
    /// How long a caller waits for a connection before failing UNAVAILABLE (200 ms: with the
    /// rest of the call, a call fails within 250 ms of the database going away, PERFORMANCE.md
    /// T8).
    pub acquire_timeout: Duration,
    /// Server-side limit of one statement.
    pub statement_timeout: Duration,
    /// Server-side limit of a transaction left idle (a stuck caller): PostgreSQL ends the
    /// session, so one forgotten transaction cannot hold back the snapshot xmin that the outbox
    /// and revocation readers wait on.
    pub idle_in_transaction_timeout: Duration,
}

impl PoolSettings {
    /// Settings with the defaults of ARCHITECTURE.md for `url` and `schema`.
    #[must_use]
    pub fn new(url: impl Into<String>, schema: impl Into<String>) -> Self {
        let schema = schema.into();
        Self {
            url: url.into(),
            application_name: format!("crm-{schema}"),
            schema,
            max_size: 8,
            acquire_timeout: Duration::from_millis(200),
            statement_timeout: Duration::from_secs(5),
            idle_in_transaction_timeout: Duration::from_secs(10),
        }
    }
}

/// Builds a pool without connecting: a service starts (and reports NOT_SERVING) even while its
/// database is down, and connects as soon as it is back.
#[must_use]
pub fn build(settings: &PoolSettings) -> DbPool {
    let setup_sql = format!(
        "SET application_name = '{}'; SET statement_timeout = {}; \
         SET idle_in_transaction_session_timeout = {}; SET search_path = \"{}\"",
        settings.application_name.replace('\'', ""),
        settings.statement_timeout.as_millis(),
        settings.idle_in_transaction_timeout.as_millis(),
        settings.schema.replace('"', ""),
    );
    let mut config = ManagerConfig::<AsyncPgConnection>::default();
    config.recycling_method = RecyclingMethod::Fast;
    config.custom_setup = Box::new(move |url| {
        let sql = setup_sql.clone();
        let url = url.to_owned();
        async move {
            let mut conn = AsyncPgConnection::establish(&url).await?;
            conn.batch_execute(&sql)
                .await
                .map_err(ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        }
        .boxed()
    });
    let manager = AsyncDieselConnectionManager::new_with_config(settings.url.clone(), config);
    bb8::Pool::builder()
        .max_size(settings.max_size)
        .min_idle(Some(1))
        .test_on_check_out(false)
        .connection_timeout(settings.acquire_timeout)
        .idle_timeout(Some(Duration::from_secs(300)))
        .max_lifetime(Some(Duration::from_secs(1800)))
        .build_unchecked(manager)
}

/// Checks that the database answers, within the pool's acquire timeout plus one round trip.
///
/// # Errors
/// Returns the pool or query failure.
pub async fn ping(pool: &DbPool) -> Result<(), DbError> {
    let mut conn = pool.get().await?;
    conn.batch_execute("SELECT 1").await?;
    Ok(())
}

/// Why a pool's role must not serve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnsafeRole {
    /// Superusers bypass row-level security.
    #[error("role {0} is a superuser: services must connect as their _app role")]
    Superuser(String),
    /// BYPASSRLS skips every tenant policy.
    #[error("role {0} has BYPASSRLS: services must connect as their _app role")]
    BypassRls(String),
    /// The schema owner can alter or drop the tables and policies.
    #[error("role {0} owns schema {1}: services must connect as their _app role")]
    SchemaOwner(String, String),
}

#[derive(diesel::QueryableByName)]
struct RoleFacts {
    #[diesel(sql_type = diesel::sql_types::Text)]
    role: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    schema: String,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    superuser: bool,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    bypass_rls: bool,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    owner: bool,
}

/// Checks that the pool's role is neither a superuser, nor BYPASSRLS, nor the owner of the
/// schema it serves: row-level security is the second wall between tenants, and those roles
/// stand outside it. `Ok(None)` when the database cannot be reached (the caller decides).
///
/// # Errors
/// [`UnsafeRole`] naming what is wrong.
pub async fn check_role(pool: &DbPool) -> Result<Option<()>, UnsafeRole> {
    use diesel_async::RunQueryDsl;
    let Ok(mut conn) = pool.dedicated_connection().await else {
        return Ok(None);
    };
    let facts: Result<RoleFacts, _> = diesel::sql_query(
        "SELECT current_user::text AS role, coalesce(current_schema(), '') AS schema, \
                r.rolsuper AS superuser, r.rolbypassrls AS bypass_rls, \
                coalesce((SELECT n.nspowner = r.oid FROM pg_namespace n \
                           WHERE n.nspname = current_schema()), false) AS owner \
           FROM pg_roles r WHERE r.rolname = current_user",
    )
    .get_result(&mut conn)
    .await;
    let Ok(f) = facts else { return Ok(None) };
    if f.superuser {
        Err(UnsafeRole::Superuser(f.role))
    } else if f.bypass_rls {
        Err(UnsafeRole::BypassRls(f.role))
    } else if f.owner {
        Err(UnsafeRole::SchemaOwner(f.role, f.schema))
    } else {
        Ok(Some(()))
    }
}
