//! A PostgreSQL for tests, a migrated template per test binary, a database per test.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use crm_db::embedded::{self, LOCAL_ADMIN_URL, answers, with_database, with_user};
use crm_db::migrate::{self, Direction, ServiceSchema};
use diesel::QueryableByName;
use diesel::sql_types::Text;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use tokio::sync::OnceCell;

/// Password set on the `_app` roles in tests (ignored under trust authentication).
pub const APP_PASSWORD: &str = "crm-test-app";

struct Template {
    admin_url: String,
    name: String,
}

static TEMPLATE: OnceCell<Template> = OnceCell::const_new();
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The superuser URL of the test server (database `postgres`).
///
/// # Errors
/// When no PostgreSQL can be found or started.
pub async fn admin_url() -> anyhow::Result<String> {
    if let Ok(url) = std::env::var("TEST_DATABASE_URL") {
        return Ok(url);
    }
    if answers(LOCAL_ADMIN_URL, Duration::from_secs(2)).await {
        return Ok(LOCAL_ADMIN_URL.to_owned());
    }
    // A private cluster shared by the test binaries of this machine: started once, reused.
    let dir = std::env::temp_dir().join("crm-testkit-postgres");
    let url_file = dir.join("admin_url");
    if let Ok(url) = std::fs::read_to_string(&url_file)
        && answers(url.trim(), Duration::from_secs(2)).await
    {
        return Ok(url.trim().to_owned());
    }
    let pg = embedded::local_or_private(&dir).await?;
    let url = pg.admin_url.clone();
    std::fs::write(&url_file, &url)?;
    // Keep it running for the other tests and binaries; it is reused by the next run.
    std::mem::forget(pg);
    Ok(url)
}

#[derive(QueryableByName)]
struct DbName {
    #[diesel(sql_type = Text)]
    datname: String,
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Drops databases left behind by test binaries that are no longer running.
async fn drop_stale(admin: &mut AsyncPgConnection) -> anyhow::Result<()> {
    let names: Vec<DbName> = diesel::sql_query(
        "SELECT datname FROM pg_database WHERE datname LIKE 'crm\\_tpl\\_%' OR datname LIKE 'crm\\_t\\_%'",
    )
    .load(admin)
    .await?;
    for DbName { datname } in names {
        let pid = datname
            .split('_')
            .nth(2)
            .and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !pid_alive(p)) {
            let _ = admin
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS \"{datname}\" WITH (FORCE)"
                ))
                .await;
        }
    }
    Ok(())
}

async fn template(schemas: &[ServiceSchema]) -> anyhow::Result<&'static Template> {
    TEMPLATE
        .get_or_try_init(|| async {
            let admin_url = admin_url().await?;
            let mut admin = AsyncPgConnection::establish(&admin_url)
                .await
                .context("connecting to the test PostgreSQL")?;
            drop_stale(&mut admin).await?;
            let name = format!("crm_tpl_{}", std::process::id());
            // Separate statements: DROP/CREATE DATABASE cannot share an implicit transaction.
            admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await?;
            admin
                .batch_execute(&format!("CREATE DATABASE \"{name}\""))
                .await?;
            let url = with_database(&admin_url, &name);
            for schema in schemas {
                migrate::run(&url, *schema, Direction::Up, Some(APP_PASSWORD.to_owned()))
                    .await
                    .with_context(|| format!("migrating {}", schema.name))?;
            }
            Ok(Template { admin_url, name })
        })
        .await
}

/// A fresh database for one test, cloned from the migrated template; dropped with the value.
#[derive(Debug)]
pub struct TestDb {
    /// Superuser URL of this database.
    pub admin_url: String,
    /// Name of the database.
    pub name: String,
    server_admin_url: String,
}

impl TestDb {
    /// Clones the template — migrated with `schemas`, in order, by the first test of the binary
    /// (every test of one binary passes the same suite) — into a new database.
    ///
    /// # Errors
    /// When PostgreSQL is unavailable or cloning keeps failing.
    pub async fn new(schemas: &[ServiceSchema]) -> anyhow::Result<Self> {
        let tpl = template(schemas).await?;
        let name = format!(
            "crm_t_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = AsyncPgConnection::establish(&tpl.admin_url).await?;
        let mut attempt = 0;
        loop {
            // The template's last connections close asynchronously after migrating: retry the
            // clone briefly while PostgreSQL still sees them.
            match admin
                .batch_execute(&format!(
                    "CREATE DATABASE \"{name}\" TEMPLATE \"{}\"",
                    tpl.name
                ))
                .await
            {
                Ok(()) => break,
                Err(e)
                    if attempt < 50 && e.to_string().contains("being accessed by other users") =>
                {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => bail!("creating test database: {e}"),
            }
        }
        Ok(Self {
            admin_url: with_database(&tpl.admin_url, &name),
            name,
            server_admin_url: tpl.admin_url.clone(),
        })
    }

    /// URL for the `<schema>_app` role: what services connect as.
    #[must_use]
    pub fn app_url(&self, schema: &str) -> String {
        with_user(
            &self.admin_url,
            &format!("{schema}_app"),
            Some(APP_PASSWORD),
        )
    }

    /// A superuser connection to this database.
    ///
    /// # Errors
    /// Connection failure.
    pub async fn admin(&self) -> anyhow::Result<AsyncPgConnection> {
        Ok(AsyncPgConnection::establish(&self.admin_url).await?)
    }

    /// A connection as `<schema>_app`, with `search_path` set to the schema.
    ///
    /// # Errors
    /// Connection failure.
    pub async fn app(&self, schema: &str) -> anyhow::Result<AsyncPgConnection> {
        let mut conn = AsyncPgConnection::establish(&self.app_url(schema)).await?;
        conn.batch_execute(&format!("SET search_path = {schema}"))
            .await?;
        Ok(conn)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let url = self.server_admin_url.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime: do the blocking cleanup on its own thread.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut admin) = AsyncPgConnection::establish(&url).await {
                    let _ = admin
                        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}
