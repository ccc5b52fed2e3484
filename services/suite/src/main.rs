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

use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
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
    /// CRM core.
    Core,
}

#[derive(Debug, clap::Args)]
struct ServeOne {
    /// The service to run.
    service: Service,
    /// URL the service connects with: its `_app` role.
    #[arg(long, env = "CORE_DATABASE_URL", hide_env_values = true)]
    core_database_url: String,
    /// Verification keys, `kid=<base64url Ed25519 public key>` separated by commas.
    #[arg(long, env = "CRM_TOKEN_PUBLIC_KEYS", default_value = "")]
    token_public_keys: String,
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
    vec![crm_core::SCHEMA]
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

fn verifier(args: &ServeArgs, keys: Arc<crm_auth::keys::StaticKeys>) -> Arc<TokenVerifier> {
    Arc::new(TokenVerifier::new(
        VerifierSettings {
            issuer: args.token_issuer.clone(),
            audience: args.token_audience.clone(),
            ..VerifierSettings::default()
        },
        keys,
        Arc::new(RevocationSet::new()),
    ))
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
    let core_url = db.service_dsn(&crm_core::SCHEMA.app_role(), app_password.as_deref());
    let mut pool_settings = PoolSettings::new(core_url, crm_core::SCHEMA.name);
    pool_settings.max_size = args.serve.pool_size;
    let core = crm_core::CoreState::new(pool::build(&pool_settings), &page_secret(&args.serve));

    let keys = Arc::new(crm_auth::keys::StaticKeys::new());
    let demo_signer = args
        .demo
        .then(|| crm_auth::token::TokenSigner::generate("demo-dev-key"));
    if let Some(signer) = &demo_signer {
        keys.insert(signer.kid(), signer.verifying_key());
    }
    let verifier = verifier(&args.serve, keys);
    let mut server = GrpcServer::new(args.serve.server_settings(), Arc::clone(&verifier));
    crm_core::register(&mut server, &core);

    let listener = TcpListener::bind(args.serve.listen)
        .await
        .with_context(|| format!("binding {}", args.serve.listen))?;
    let addr = listener.local_addr()?;
    let serving = tokio::spawn(server.serve(listener, shutdown_signal()));

    let demo = match &demo_signer {
        Some(signer) => Some(demo::seed(addr, signer, &verifier_settings(&args.serve)).await?),
        None => None,
    };
    demo::print_next_steps(addr, &db.describe(), demo.as_ref());

    let result = serving.await.context("server task")?;
    db.stop();
    result.map_err(anyhow::Error::from)
}

fn verifier_settings(args: &ServeArgs) -> VerifierSettings {
    VerifierSettings {
        issuer: args.token_issuer.clone(),
        audience: args.token_audience.clone(),
        ..VerifierSettings::default()
    }
}

async fn serve_one(args: ServeOne) -> anyhow::Result<()> {
    let keys = Arc::new(crm_auth::keys::StaticKeys::new());
    keys::load_static(&keys, &args.token_public_keys)?;
    let verifier = verifier(&args.serve, keys);
    let mut server = GrpcServer::new(args.serve.server_settings(), verifier);
    match args.service {
        Service::Core => {
            let mut settings =
                PoolSettings::new(args.core_database_url.clone(), crm_core::SCHEMA.name);
            settings.max_size = args.serve.pool_size;
            let core = crm_core::CoreState::new(pool::build(&settings), &page_secret(&args.serve));
            crm_core::register(&mut server, &core);
        }
    }
    let listener = TcpListener::bind(args.serve.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, service = ?args.service, "serving");
    server.serve(listener, shutdown_signal()).await?;
    Ok(())
}
