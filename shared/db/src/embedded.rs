//! A PostgreSQL for development and tests when none is configured: the local server if one
//! answers on 127.0.0.1:5432, otherwise a private cluster started from the installed server
//! binaries in a data directory of ours, stopped again when dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection};

/// The default URL tried for a local server (trust authentication, as Debian's test setups use).
pub const LOCAL_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Failure to find or start a PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// No server binaries were found.
    #[error(
        "no PostgreSQL server binaries found (looked for initdb in /usr/lib/postgresql/*/bin and PATH); install the postgresql package"
    )]
    NoBinaries,
    /// A command failed.
    #[error("{command} failed: {detail}")]
    Command {
        /// The command.
        command: String,
        /// Its output or error.
        detail: String,
    },
    /// File-system trouble.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A running PostgreSQL this process may use as an administrator.
#[derive(Debug)]
pub struct LocalPostgres {
    /// Superuser URL (TCP), database `postgres`.
    pub admin_url: String,
    /// Directory of the server's Unix socket, when it has one we can reach.
    pub socket_dir: Option<PathBuf>,
    /// Server port (also names the socket file).
    pub port: u16,
    cluster: Option<PrivateCluster>,
}

impl LocalPostgres {
    /// Whether this process started (and will stop) the server.
    #[must_use]
    pub fn is_private(&self) -> bool {
        self.cluster.is_some()
    }

    /// The admin URL pointed at database `db` instead of `postgres`.
    #[must_use]
    pub fn url_for(&self, db: &str) -> String {
        with_database(&self.admin_url, db)
    }

    /// Connection string for `user` on database `db`: over the Unix socket when there is one
    /// (a co-located service skips loopback TCP, which costs a large share of each round trip),
    /// else the TCP URL.
    #[must_use]
    pub fn service_dsn(&self, db: &str, user: &str, password: Option<&str>) -> String {
        match &self.socket_dir {
            Some(dir) => {
                let quote = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
                let mut dsn = format!(
                    "host={} port={} dbname={} user={}",
                    quote(&dir.display().to_string()),
                    self.port,
                    quote(db),
                    quote(user)
                );
                if let Some(p) = password {
                    dsn.push_str(&format!(" password={}", quote(p)));
                }
                dsn
            }
            None => with_user(&self.url_for(db), user, password),
        }
    }

    /// Stops a private cluster now (also done on drop).
    pub fn stop(&mut self) {
        if let Some(cluster) = self.cluster.take() {
            cluster.stop();
        }
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Replaces the database of a `postgres://` URL.
#[must_use]
pub fn with_database(url: &str, db: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            u.set_path(&format!("/{db}"));
            u.to_string()
        }
        Err(_) => url.to_owned(),
    }
}

/// Replaces the user (and drops the password) of a `postgres://` URL.
#[must_use]
pub fn with_user(url: &str, user: &str, password: Option<&str>) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username(user);
            let _ = u.set_password(password);
            u.to_string()
        }
        Err(_) => url.to_owned(),
    }
}

/// Whether a server answers at `url` within `timeout`.
pub async fn answers(url: &str, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, AsyncPgConnection::establish(url)).await,
        Ok(Ok(_))
    )
}

/// Uses the local server when it answers, else starts a private cluster in `data_dir`.
///
/// # Errors
/// When no server answers and none can be started.
pub async fn local_or_private(data_dir: &Path) -> Result<LocalPostgres, EmbeddedError> {
    if answers(LOCAL_ADMIN_URL, Duration::from_secs(2)).await {
        let debian_socket = Path::new("/var/run/postgresql");
        return Ok(LocalPostgres {
            admin_url: LOCAL_ADMIN_URL.to_owned(),
            socket_dir: debian_socket
                .join(".s.PGSQL.5432")
                .exists()
                .then(|| debian_socket.to_path_buf()),
            port: 5432,
            cluster: None,
        });
    }
    let dir = data_dir.to_path_buf();
    let cluster = tokio::task::spawn_blocking(move || PrivateCluster::start(&dir))
        .await
        .map_err(|e| EmbeddedError::Command {
            command: "start".into(),
            detail: e.to_string(),
        })??;
    let admin_url = format!("postgres://postgres@127.0.0.1:{}/postgres", cluster.port);
    Ok(LocalPostgres {
        admin_url,
        socket_dir: Some(cluster.socket_dir.clone()),
        port: cluster.port,
        cluster: Some(cluster),
    })
}

#[derive(Debug)]
struct PrivateCluster {
    bin: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
    port: u16,
    as_postgres: bool,
}

fn find_bin_dir() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                .collect()
        })
        .unwrap_or_default();
    candidates.sort();
    candidates.reverse();
    if let Ok(path) = std::env::var("PATH") {
        candidates.extend(std::env::split_paths(&path));
    }
    candidates
        .into_iter()
        .find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

impl PrivateCluster {
    fn command(&self, program: &str) -> Command {
        let exe = self.bin.join(program);
        if self.as_postgres {
            // PostgreSQL refuses to run as root: run it as the `postgres` OS user.
            let mut c = Command::new("runuser");
            c.arg("-u").arg("postgres").arg("--").arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    fn run(&self, mut cmd: Command, what: &str) -> Result<(), EmbeddedError> {
        let out = cmd.stdin(Stdio::null()).output()?;
        if out.status.success() {
            Ok(())
        } else {
            Err(EmbeddedError::Command {
                command: what.to_owned(),
                detail: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            })
        }
    }

    fn start(dir: &Path) -> Result<Self, EmbeddedError> {
        let bin = find_bin_dir().ok_or(EmbeddedError::NoBinaries)?;
        std::fs::create_dir_all(dir)?;
        let dir = dir.canonicalize()?;
        let data = dir.join("pgdata");
        let cluster = Self {
            bin,
            data: data.clone(),
            socket_dir: dir.clone(),
            port: free_port()?,
            as_postgres: is_root(),
        };
        if cluster.as_postgres {
            let mut chown = Command::new("chown");
            chown.arg("-R").arg("postgres:postgres").arg(&dir);
            cluster.run(chown, "chown")?;
        }
        if !data.join("PG_VERSION").is_file() {
            let mut initdb = cluster.command("initdb");
            initdb.arg("-D").arg(&data).args([
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            ]);
            cluster.run(initdb, "initdb")?;
        }
        let mut start = cluster.command("pg_ctl");
        start
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.join("postgres.log"))
            .arg("-o")
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
                cluster.port,
                dir.display()
            ))
            .args(["-w", "-t", "60", "start"]);
        cluster.run(start, "pg_ctl start")?;
        Ok(cluster)
    }

    fn stop(&self) {
        let mut stop = self.command("pg_ctl");
        stop.arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "stop"]);
        let _ = stop
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
