//! Which PostgreSQL `crm up` uses: the configured one, else the local server, else a private
//! cluster it starts (and stops on exit).

use std::path::Path;

use anyhow::Context;
use crm_db::embedded::{self, LocalPostgres, with_database};
use diesel::sql_types::Text;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};

/// The database of this run.
pub struct Database {
    /// Superuser URL of the `crm` database.
    pub admin_url: String,
    origin: Origin,
}

enum Origin {
    Configured,
    Local(LocalPostgres),
    Private(LocalPostgres),
}

impl Database {
    /// For the banner.
    pub fn describe(&self) -> String {
        let redacted = redact(&self.admin_url);
        match &self.origin {
            Origin::Configured => format!("{redacted} (from DATABASE_URL)"),
            Origin::Local(_) => format!("{redacted} (local server)"),
            Origin::Private(_) => {
                format!("{redacted} (private cluster started by crm, stopped on exit)")
            }
        }
    }

    /// What a service connects with as `role`: the Unix socket of a local or private server
    /// when there is one, else the admin URL with the user replaced.
    pub fn service_dsn(&self, role: &str, password: Option<&str>) -> String {
        match &self.origin {
            Origin::Local(pg) | Origin::Private(pg) => pg.service_dsn("crm", role, password),
            Origin::Configured => crm_db::embedded::with_user(&self.admin_url, role, password),
        }
    }

    /// Stops a private cluster.
    pub fn stop(&mut self) {
        if let Origin::Private(pg) = &mut self.origin {
            pg.stop();
        }
    }
}

fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

#[derive(diesel::QueryableByName)]
struct Exists {
    #[diesel(sql_type = Text)]
    datname: String,
}

/// Creates database `crm` on the server of `server_url` if it is missing.
async fn ensure_crm_database(server_url: &str) -> anyhow::Result<String> {
    let mut admin = AsyncPgConnection::establish(server_url)
        .await
        .context("connecting to PostgreSQL")?;
    let found: Vec<Exists> =
        diesel::sql_query("SELECT datname::text FROM pg_database WHERE datname = 'crm'")
            .load(&mut admin)
            .await?;
    if found.iter().all(|e| e.datname != "crm") {
        admin.batch_execute("CREATE DATABASE crm").await?;
    }
    Ok(with_database(server_url, "crm"))
}

/// Resolves the database of `crm up`.
pub async fn resolve(configured: Option<String>, data_dir: &Path) -> anyhow::Result<Database> {
    if let Some(url) = configured {
        return Ok(Database {
            admin_url: url,
            origin: Origin::Configured,
        });
    }
    let pg = embedded::local_or_private(data_dir).await.context(
        "no DATABASE_URL, no local PostgreSQL, and a private cluster could not be started",
    )?;
    let admin_url = ensure_crm_database(&pg.admin_url).await?;
    Ok(Database {
        admin_url,
        origin: if pg.is_private() {
            Origin::Private(pg)
        } else {
            Origin::Local(pg)
        },
    })
}
