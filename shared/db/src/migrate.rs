//! Per-service migrations: roles, schema, grants, and the embedded diesel migrations, each
//! service's tracked in its own schema.
//!
//! Layout per service `svc`:
//! - `svc_owner` (NOLOGIN) owns schema `svc` and every object in it; migrations run as it.
//! - `svc_app` (LOGIN, NOSUPERUSER, NOBYPASSRLS) gets DML only, through default privileges.
//!   Services connect as `svc_app`, so `FORCE ROW LEVEL SECURITY` policies bind them.

use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness};

use crate::DbError;

/// A service's schema and its migrations.
#[derive(Clone, Copy)]
pub struct ServiceSchema {
    /// Schema name, also the prefix of the roles.
    pub name: &'static str,
    /// The service's embedded migrations (a function, since `EmbeddedMigrations` is not `Copy`).
    pub migrations: fn() -> EmbeddedMigrations,
    /// Extensions its migrations need (e.g. `btree_gist`), created by [`provision`] with the
    /// admin's rights before they run.
    pub extensions: &'static [&'static str],
}

impl std::fmt::Debug for ServiceSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceSchema")
            .field("name", &self.name)
            .finish()
    }
}

impl ServiceSchema {
    /// `<schema>_owner`.
    #[must_use]
    pub fn owner_role(&self) -> String {
        format!("{}_owner", self.name)
    }

    /// `<schema>_app`.
    #[must_use]
    pub fn app_role(&self) -> String {
        format!("{}_app", self.name)
    }
}

/// A migration failure.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// Connecting or provisioning failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// diesel_migrations failed.
    #[error("migration: {0}")]
    Migration(String),
    /// The schema name is not a plain identifier.
    #[error("invalid schema name {0:?}")]
    InvalidName(String),
}

fn check_ident(name: &str) -> Result<(), MigrateError> {
    if !name.is_empty()
        && name.len() < 40
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        Ok(())
    } else {
        Err(MigrateError::InvalidName(name.to_owned()))
    }
}

/// Creates the roles (cluster-wide, tolerant of a concurrent creator), the schema and the grants.
/// `app_password`, when given, is set on the `_app` role.
///
/// # Errors
/// Returns the database error.
pub async fn provision(
    admin: &mut AsyncPgConnection,
    schema: &ServiceSchema,
    app_password: Option<&str>,
) -> Result<(), MigrateError> {
    check_ident(schema.name)?;
    let (name, owner, app) = (schema.name, schema.owner_role(), schema.app_role());
    let password = match app_password {
        Some(p) => format!("PASSWORD '{}'", p.replace('\'', "''")),
        None => String::new(),
    };
    // Roles are global to the cluster while databases are not: several test databases (and
    // concurrent test binaries) provision the same roles, so creation tolerates losing the race.
    let sql = format!(
        r#"
        DO $$ BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{owner}') THEN
                BEGIN CREATE ROLE {owner} NOLOGIN; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END;
            END IF;
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{app}') THEN
                BEGIN CREATE ROLE {app} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END;
            END IF;
        END $$;
        ALTER ROLE {app} LOGIN NOSUPERUSER NOBYPASSRLS {password};
        GRANT {owner} TO CURRENT_USER;
        CREATE SCHEMA IF NOT EXISTS {name} AUTHORIZATION {owner};
        GRANT USAGE ON SCHEMA {name} TO {app};
        ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {name}
            GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {app};
        ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {name}
            GRANT USAGE, SELECT ON SEQUENCES TO {app};
        "#
    );
    admin.batch_execute(&sql).await.map_err(DbError::from)?;
    for extension in schema.extensions {
        check_ident(extension)?;
        // Tolerates a concurrent creator in the same database.
        let sql = format!(
            "DO $$ BEGIN CREATE EXTENSION IF NOT EXISTS {extension}; \
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;"
        );
        admin.batch_execute(&sql).await.map_err(DbError::from)?;
    }
    Ok(())
}

/// Which way to move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Apply pending migrations.
    Up,
    /// Revert every applied migration.
    DownAll,
}

/// Provisions the service and runs its migrations as `<schema>_owner`, with the migration
/// table in the service's own schema. Returns the versions applied or reverted.
///
/// Runs on a dedicated thread with its own connection: diesel_migrations is synchronous.
///
/// # Errors
/// Returns the first failure; a failed migration is rolled back.
pub async fn run(
    admin_url: &str,
    schema: ServiceSchema,
    direction: Direction,
    app_password: Option<String>,
) -> Result<Vec<String>, MigrateError> {
    {
        let mut admin = AsyncPgConnection::establish(admin_url)
            .await
            .map_err(DbError::from)?;
        provision(&mut admin, &schema, app_password.as_deref()).await?;
    }
    let url = admin_url.to_owned();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(format!("migrate-{}", schema.name))
        .spawn(move || {
            let _ = tx.send(run_blocking(&url, schema, direction));
        })
        .map_err(|e| MigrateError::Migration(e.to_string()))?;
    rx.await
        .map_err(|_| MigrateError::Migration("migration thread died".to_owned()))?
}

fn run_blocking(
    url: &str,
    schema: ServiceSchema,
    direction: Direction,
) -> Result<Vec<String>, MigrateError> {
    use diesel::Connection;
    use diesel::connection::SimpleConnection;
    let mut conn: AsyncConnectionWrapper<AsyncPgConnection> =
        <AsyncConnectionWrapper<AsyncPgConnection> as Connection>::establish(url)
            .map_err(DbError::from)?;
    SimpleConnection::batch_execute(
        &mut conn,
        &format!(
            "SET ROLE {}; SET search_path = {}",
            schema.owner_role(),
            schema.name
        ),
    )
    .map_err(DbError::from)?;
    let migrations = (schema.migrations)();
    let versions = match direction {
        Direction::Up => conn
            .run_pending_migrations(migrations)
            .map_err(|e| MigrateError::Migration(e.to_string()))?,
        Direction::DownAll => {
            let applied = conn
                .applied_migrations()
                .map_err(|e| MigrateError::Migration(e.to_string()))?;
            let mut reverted = Vec::new();
            for _ in 0..applied.len() {
                reverted.push(
                    conn.revert_last_migration((schema.migrations)())
                        .map_err(|e| MigrateError::Migration(e.to_string()))?,
                );
            }
            reverted
        }
    };
    Ok(versions.into_iter().map(|v| v.to_string()).collect())
}
