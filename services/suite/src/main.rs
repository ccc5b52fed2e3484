//! `crm`: runs the CRM suite.
//!
//! - `crm up [--demo]`: every service in one process on one gRPC address, with a database found
//!   or started automatically; `--demo` seeds a demo organization and prints a token for it.
//! - `crm migrate`: creates roles and schemas and applies every service's migrations.
//! - `crm serve <service>`: one service, for the microservice deployment.

mod bench;
mod database;
mod demo;
mod keys;
mod secrets;

use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use std::time::Duration;

use crm_auth::password::{PasswordHasher, default_params};
use crm_auth::remote::JwksKeys;
use crm_auth::revocation::RevocationSet;
use crm_auth::{TokenVerifier, VerifierSettings};
use crm_db::migrate::{self, Direction};
use crm_db::pool::{self, PoolSettings};
use crm_platform::GrpcServer;
use crm_platform::config::ServeArgs;
use tokio::net::TcpListener;

#[derive(Debug, Parser)]
#[command(
    name = "crm",
    version,
    about = "Multi-tenant CRM and field-operations suite"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every service in one process (the laptop and small-business deployment).
    Up(UpArgs),
    /// Create roles and schemas and apply pending migrations.
    Migrate(MigrateArgs),
    /// Run one service.
    Serve(ServeOne),
    /// Drive load against a running suite and report throughput and latency.
    Bench(bench::BenchArgs),
}

#[derive(Debug, clap::Args)]
struct UpArgs {
    /// Seed a demo organization with sample customers and print a token for it. Uses a signing
    /// key generated for this process only; never enabled without this flag.
    #[arg(long)]
    demo: bool,
    /// Superuser URL of PostgreSQL. Without it: the local server if one answers on
    /// 127.0.0.1:5432, else a private cluster in `--data-dir`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Where the private cluster keeps its data.
    #[arg(long, env = "CRM_DATA_DIR", default_value = ".crm")]
    data_dir: std::path::PathBuf,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, clap::Args)]
struct MigrateArgs {
    /// Superuser (or schema-creating) URL of PostgreSQL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Password to set on the `<service>_app` roles.
    #[arg(long, env = "CRM_APP_PASSWORD", hide_env_values = true)]
    app_password: Option<String>,
    /// Revert every migration instead (development only).
    #[arg(long)]
    down_all: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Service {
    /// Identity and OAuth.
    Identity,
    /// CRM core.
    Core,
}

#[derive(Debug, clap::Args)]
struct ServeOne {
    /// The service to run.
    service: Service,
    /// URL the service connects with: its `_app` role (`core_app` or `identity_app`).
    #[arg(long, env = "SERVICE_DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Identity's gRPC address, whose key set and revocations this service follows.
    #[arg(long, env = "CRM_IDENTITY_URL")]
    identity_url: Option<String>,
    /// Extra static verification keys, `kid=<base64url Ed25519 public key>` separated by commas.
    #[arg(long, env = "CRM_TOKEN_PUBLIC_KEYS", default_value = "")]
    token_public_keys: String,
    /// Where identity keeps its generated secrets when CRM_KEY_ENCRYPTION_KEY and
    /// CRM_TOKEN_SECRET are not set.
    #[arg(long, env = "CRM_DATA_DIR", default_value = ".crm")]
    data_dir: std::path::PathBuf,
    #[command(flatten)]
    serve: ServeArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry = crm_platform::telemetry::init("crm");
    match cli.command {
        Command::Up(args) => up(args).await,
        Command::Migrate(args) => migrate_all(&args).await,
        Command::Serve(args) => serve_one(args).await,
        Command::Bench(args) => bench::run(args).await,
    }
}

/// Every service schema, in migration order.
fn schemas() -> Vec<migrate::ServiceSchema> {
    vec![crm_identity::SCHEMA, crm_core::SCHEMA]
}

async fn migrate_all(args: &MigrateArgs) -> anyhow::Result<()> {
    let direction = if args.down_all {
        Direction::DownAll
    } else {
        Direction::Up
    };
    for schema in schemas() {
        let versions = migrate::run(
            &args.database_url,
            schema,
            direction,
            args.app_password.clone(),
        )
        .await
        .with_context(|| format!("migrating {}", schema.name))?;
        println!(
            "{}: {} migration(s) {}",
            schema.name,
            versions.len(),
            if args.down_all { "reverted" } else { "applied" }
        );
    }
    Ok(())
}

fn page_secret(args: &ServeArgs) -> Vec<u8> {
    args.page_token_secret.as_ref().map_or_else(
        || uuid::Uuid::new_v4().as_bytes().to_vec(),
        |s| s.as_bytes().to_vec(),
    )
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            let _ = ctrl_c.await;
            return;
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    let mut db = database::resolve(args.database_url.clone(), &args.data_dir).await?;
    // Under the local trust setup no password is needed; against a server that wants one, set
    // CRM_APP_PASSWORD (the `_app` roles get it, and the pools use it).
    let app_password = std::env::var("CRM_APP_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty());
    for schema in schemas() {
        migrate::run(&db.admin_url, schema, Direction::Up, app_password.clone())
            .await
            .with_context(|| format!("migrating {}", schema.name))?;
    }
    let pool_for = |schema: &migrate::ServiceSchema| {
        let mut settings = PoolSettings::new(
            db.service_dsn(&schema.app_role(), app_password.as_deref()),
            schema.name,
        );
        settings.max_size = args.serve.pool_size;
        pool::build(&settings)
    };
    let core = crm_core::CoreState::new(pool_for(&crm_core::SCHEMA), &page_secret(&args.serve));
    let identity =
        start_identity(pool_for(&crm_identity::SCHEMA), &args.data_dir, &args.serve).await?;
    let _rotation = identity.keys.spawn_rotation(Duration::from_secs(60));

    let jwks = Arc::new(JwksKeys::new());
    let revocations = Arc::new(RevocationSet::new());
    let verifier = Arc::new(TokenVerifier::new(
        verifier_settings(&args.serve),
        Arc::clone(&jwks) as Arc<dyn crm_auth::keys::KeySource>,
        Arc::clone(&revocations),
    ));
    let mut server = GrpcServer::new(args.serve.server_settings(), verifier);
    crm_identity::register(&mut server, &identity);
    crm_core::register(&mut server, &core);

    let listener = TcpListener::bind(args.serve.listen)
        .await
        .with_context(|| format!("binding {}", args.serve.listen))?;
    let addr = listener.local_addr()?;
    let serving = tokio::spawn(server.serve(listener, shutdown_signal()));

    // Every service in this process follows identity like a remote one would.
    let channel = crm_platform::client::channel(&format!("http://{addr}"))?;
    let _followers = [
        crm_auth::remote::follow_jwks(channel.clone(), Arc::clone(&jwks)),
        crm_auth::remote::follow_revocations(channel, Arc::clone(&revocations)),
    ];
    tokio::time::timeout(Duration::from_secs(10), jwks.loaded())
        .await
        .context("identity's key set did not arrive")?;

    let demo = if args.demo {
        Some(demo::seed(addr, &identity).await?)
    } else {
        None
    };
    demo::print_next_steps(addr, &db.describe(), demo.as_ref());

    let result = serving.await.context("server task")?;
    db.stop();
    result.map_err(anyhow::Error::from)
}

async fn start_identity(
    pool: crm_db::DbPool,
    data_dir: &std::path::Path,
    serve: &ServeArgs,
) -> anyhow::Result<crm_identity::IdentityState> {
    let kek = secrets::load_or_create("CRM_KEY_ENCRYPTION_KEY", data_dir, "identity-kek")?;
    let token_secret =
        secrets::load_or_create("CRM_TOKEN_SECRET", data_dir, "identity-token-secret")?;
    let permits = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let hasher = PasswordHasher::new(permits, default_params()?)?;
    let settings = crm_identity::IdentitySettings {
        issuer: serve.token_issuer.clone(),
        audience: serve.token_audience.clone(),
        ..crm_identity::IdentitySettings::default()
    };
    Ok(crm_identity::IdentityState::start(
        pool,
        crm_identity::keys::Kek::new(kek),
        &token_secret,
        hasher,
        settings,
    )
    .await?)
}

fn verifier_settings(args: &ServeArgs) -> VerifierSettings {
    VerifierSettings {
        issuer: args.token_issuer.clone(),
        audience: args.token_audience.clone(),
        ..VerifierSettings::default()
    }
}

async fn serve_one(args: ServeOne) -> anyhow::Result<()> {
    let static_keys = Arc::new(crm_auth::keys::StaticKeys::new());
    keys::load_static(&static_keys, &args.token_public_keys)?;
    let jwks = Arc::new(JwksKeys::new());
    let revocations = Arc::new(RevocationSet::new());
    let verifier = Arc::new(TokenVerifier::new(
        verifier_settings(&args.serve),
        Arc::new(crm_auth::remote::KeyChain(vec![
            static_keys as Arc<dyn crm_auth::keys::KeySource>,
            Arc::clone(&jwks) as Arc<dyn crm_auth::keys::KeySource>,
        ])),
        Arc::clone(&revocations),
    ));
    let mut server = GrpcServer::new(args.serve.server_settings(), verifier);
    let mut settings = PoolSettings::new(args.database_url.clone(), "");
    settings.max_size = args.serve.pool_size;
    let mut _rotation = None;
    match args.service {
        Service::Core => {
            settings.schema = crm_core::SCHEMA.name.into();
            let core = crm_core::CoreState::new(pool::build(&settings), &page_secret(&args.serve));
            crm_core::register(&mut server, &core);
        }
        Service::Identity => {
            settings.schema = crm_identity::SCHEMA.name.into();
            let identity =
                start_identity(pool::build(&settings), &args.data_dir, &args.serve).await?;
            _rotation = Some(identity.keys.spawn_rotation(Duration::from_secs(60)));
            crm_identity::register(&mut server, &identity);
        }
    }
    let listener = TcpListener::bind(args.serve.listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, service = ?args.service, "serving");
    // Identity follows itself; other services follow the configured identity.
    let identity_url = match args.service {
        Service::Identity => Some(format!("http://{addr}")),
        Service::Core => args.identity_url.clone(),
    };
    let _followers = match identity_url {
        Some(url) => {
            let channel = crm_platform::client::channel(&url)?;
            vec![
                crm_auth::remote::follow_jwks(channel.clone(), jwks),
                crm_auth::remote::follow_revocations(channel, revocations),
            ]
        }
        None => Vec::new(),
    };
    server.serve(listener, shutdown_signal()).await?;
    Ok(())
}
