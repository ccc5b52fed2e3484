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

/// mimalloc (without its secure mode) as the process's allocator: the default allocator's
/// malloc/free were about a sixth of the suite's CPU under a GetCustomer load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use std::time::Duration;

use crm_auth::password::{PasswordHasher, default_params};
use crm_auth::remote::JwksKeys;
use crm_auth::revocation::{DEFAULT_MAX_LAG, RevocationSet};
use crm_auth::{TokenVerifier, VerifierSettings};
use crm_db::migrate::{self, Direction};
use crm_db::pool::{self, PoolSettings};
use crm_platform::config::ServeArgs;
use crm_platform::module::{AssemblyConfig, ServiceModule, assemble};
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
    /// Register an API client holding service roles (operators only: no organization
    /// administrator can grant them). Prints its client id and one-time secret.
    ServiceClient(ServiceClientArgs),
    /// Print the gateway's OpenAPI 3.1 document (what it serves at /openapi.json), for client
    /// generators and offline validation.
    Openapi,
}

#[derive(Debug, clap::Args)]
struct ServiceClientArgs {
    /// Identity's database as `identity_app`.
    #[arg(long, env = "SERVICE_DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// The organization the client acts in, `organizations/{id}`.
    #[arg(long)]
    organization: String,
    /// What the client is, e.g. "QuickBooks sync".
    #[arg(long)]
    name: String,
    /// Roles to hold (repeat the flag), e.g. `service.integrations`.
    #[arg(long = "role", required = true)]
    roles: Vec<String>,
    /// Where identity keeps its generated secrets when CRM_TOKEN_SECRET is not set.
    #[arg(long, env = "CRM_DATA_DIR", default_value = ".crm")]
    data_dir: std::path::PathBuf,
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
    /// Address of the HTTP/JSON gateway (every RPC with an HTTP rule).
    #[arg(long, env = "CRM_HTTP_LISTEN", default_value = "127.0.0.1:8080")]
    http_listen: std::net::SocketAddr,
    #[command(flatten)]
    gateway: GatewayArgs,
    #[command(flatten)]
    admin: AdminArgs,
    #[command(flatten)]
    serve: ServeArgs,
}

/// Where a process serves its own metrics.
#[derive(Debug, Clone, clap::Args)]
struct AdminArgs {
    /// Address of `/metrics` (Prometheus text of the OpenTelemetry metrics); `off` serves none.
    #[arg(long, env = "CRM_ADMIN_LISTEN", default_value = "127.0.0.1:9464")]
    admin_listen: String,
}

impl AdminArgs {
    /// Starts the admin server unless it is off; answers its address.
    async fn start(&self) -> anyhow::Result<Option<std::net::SocketAddr>> {
        if self.admin_listen == "off" {
            return Ok(None);
        }
        let listener = TcpListener::bind(&self.admin_listen)
            .await
            .with_context(|| format!("binding the admin address {}", self.admin_listen))?;
        let addr = listener.local_addr()?;
        tokio::spawn(crm_platform::metrics::serve_admin(
            listener,
            shutdown_signal(),
        ));
        Ok(Some(addr))
    }
}

/// How the HTTP/JSON gateway treats its callers.
#[derive(Debug, Clone, clap::Args)]
struct GatewayArgs {
    /// Origins allowed by CORS (comma-separated, `https://app.example.com`); none by default.
    #[arg(long = "cors-origin", env = "CRM_CORS_ORIGINS", value_delimiter = ',')]
    cors_origins: Vec<String>,
    /// Proxies whose `X-Forwarded-For` the gateway believes (comma-separated addresses).
    #[arg(
        long = "trusted-proxy",
        env = "CRM_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    trusted_proxies: Vec<std::net::IpAddr>,
}

impl GatewayArgs {
    /// The gateway's options; `service_key` lets identity believe the client addresses it
    /// passes.
    fn options(&self, service_key: Option<String>) -> anyhow::Result<crm_gateway::Options> {
        let cors_origins = self
            .cors_origins
            .iter()
            .filter(|o| !o.is_empty())
            .map(|o| {
                http::HeaderValue::from_str(o.trim_end_matches('/'))
                    .with_context(|| format!("CORS origin {o}"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(crm_gateway::Options {
            cors_origins,
            trusted_proxies: self.trusted_proxies.clone(),
            service_key,
        })
    }
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
    /// Field operations.
    Fieldops,
    /// The HTTP/JSON gateway (no database): `--listen` is its HTTP address, and it calls
    /// identity, core and fieldops at their URLs.
    Gateway,
}

#[derive(Debug, clap::Args)]
struct ServeOne {
    /// The service to run.
    service: Service,
    /// URL the service connects with: its `_app` role (`identity_app`, `core_app`,
    /// `fieldops_app`); not for the gateway.
    #[arg(long, env = "SERVICE_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Identity's gRPC address, whose key set and revocations this service follows.
    #[arg(long, env = "CRM_IDENTITY_URL")]
    identity_url: Option<String>,
    /// Core's gRPC address (fieldops checks customers and properties there).
    #[arg(long, env = "CRM_CORE_URL")]
    core_url: Option<String>,
    /// Fieldops' gRPC address (core invoices completed work orders from it); optional.
    #[arg(long, env = "CRM_FIELDOPS_URL")]
    fieldops_url: Option<String>,
    /// Extra static verification keys, `kid=<base64url Ed25519 public key>` separated by commas.
    #[arg(long, env = "CRM_TOKEN_PUBLIC_KEYS", default_value = "")]
    token_public_keys: String,
    /// Where identity keeps its generated secrets when CRM_KEY_ENCRYPTION_KEY and
    /// CRM_TOKEN_SECRET are not set.
    #[arg(long, env = "CRM_DATA_DIR", default_value = ".crm")]
    data_dir: std::path::PathBuf,
    #[command(flatten)]
    gateway: GatewayArgs,
    #[command(flatten)]
    admin: AdminArgs,
    #[command(flatten)]
    serve: ServeArgs,
}

fn main() -> anyhow::Result<()> {
    restart_with_allocator_options();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

/// mimalloc reads its options from the environment once, as the process starts. A service
/// spends most of its life idle, so it should give freed memory back to the system at once
/// (`MIMALLOC_PURGE_DELAY=0`) and not back its small heap with transparent huge pages
/// (`MIMALLOC_ALLOW_THP=0`): measured, `crm up` idles at 29 MiB with both against 68 MiB
/// without, at the same GetCustomer throughput. Unless the operator set them, the process
/// replaces itself once (same pid, same arguments) with those two set.
fn restart_with_allocator_options() {
    const DONE: &str = "CRM_ALLOCATOR_OPTIONS";
    const OPTIONS: [(&str, &str); 2] = [("MIMALLOC_PURGE_DELAY", "0"), ("MIMALLOC_ALLOW_THP", "0")];
    if std::env::var_os(DONE).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        std::os::unix::process::CommandExt::arg0(&mut command, arg0);
    }
    command.args(args).env(DONE, "1");
    for (name, value) in OPTIONS {
        if std::env::var_os(name).is_none() {
            command.env(name, value);
        }
    }
    let error = std::os::unix::process::CommandExt::exec(&mut command);
    eprintln!("crm: could not restart with allocator options ({error}); running without them");
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Each service under its own name in the OTLP backend; the whole suite as `crm`.
    let service_name = match &cli.command {
        Command::Serve(args) => format!("crm-{:?}", args.service).to_lowercase(),
        Command::Up(_)
        | Command::Migrate(_)
        | Command::Bench(_)
        | Command::ServiceClient(_)
        | Command::Openapi => "crm".to_owned(),
    };
    let telemetry = crm_platform::telemetry::init(&service_name);
    #[cfg(feature = "bench-skip-auth")]
    tracing::warn!(
        "BENCHMARK BUILD (bench-skip-auth): tokens after the first are not verified; never serve users with it"
    );
    let result = match cli.command {
        Command::Up(args) => up(args).await,
        Command::Migrate(args) => migrate_all(&args).await,
        Command::Serve(args) => serve_one(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::ServiceClient(args) => service_client(&args).await,
        Command::Openapi => crm_gateway::openapi_document()
            .map(|doc| println!("{doc:#}"))
            .map_err(|e| anyhow::anyhow!(e)),
    };
    // The last spans and metrics go out before the process ends (bounded: a collector that is
    // gone does not hold up the exit).
    let flushed = tokio::task::spawn_blocking(move || {
        drop(telemetry);
        crm_platform::metrics::flush_otlp();
    });
    let _ = tokio::time::timeout(Duration::from_secs(5), flushed).await;
    result
}

async fn migrate_all(args: &MigrateArgs) -> anyhow::Result<()> {
    let direction = if args.down_all {
        Direction::DownAll
    } else {
        Direction::Up
    };
    for schema in crm_suite::schemas() {
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

/// The page-token key: `CRM_PAGE_TOKEN_SECRET`, else (a local deployment) a key created once in
/// the data directory, so tokens survive restarts and are shared by every service of the
/// process. `crm serve` requires the variable (replicas must share it).
fn page_secret(args: &ServeArgs, local_dir: Option<&std::path::Path>) -> anyhow::Result<Vec<u8>> {
    match (&args.page_token_secret, local_dir) {
        (Some(s), _) if !s.is_empty() => Ok(s.as_bytes().to_vec()),
        (_, Some(dir)) => Ok(secrets::load_or_create_file(dir, "page-token-secret")?.to_vec()),
        (_, None) => anyhow::bail!(
            "CRM_PAGE_TOKEN_SECRET is required: every replica must sign page tokens with the same key"
        ),
    }
}

/// The suite's internal service credential (revocation feed): `CRM_SERVICE_KEY`, else for a
/// local deployment or identity itself a key created once in the data directory.
fn service_key(local_dir: Option<&std::path::Path>) -> anyhow::Result<String> {
    use base64::Engine;
    let bytes = match local_dir {
        Some(dir) => secrets::load_or_create("CRM_SERVICE_KEY", dir, "service-key")?,
        None => secrets::from_env("CRM_SERVICE_KEY")?.context(
            "CRM_SERVICE_KEY is required: identity's revocation feed only serves the suite's services",
        )?,
    };
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Refuses a pool whose role stands outside row-level security; a database that cannot be
/// reached yet is only logged (the service starts NOT_SERVING and the check runs again at the
/// next start).
async fn ensure_safe_role(pool: &crm_db::DbPool, service: &str) -> anyhow::Result<()> {
    match pool::check_role(pool).await {
        Ok(Some(())) => Ok(()),
        Ok(None) => {
            tracing::warn!(%service, "database unreachable: the role check is skipped");
            Ok(())
        }
        Err(e) => Err(anyhow::anyhow!("{service}: {e}")),
    }
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
    for schema in crm_suite::schemas() {
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
    let service_key = service_key(Some(&args.data_dir))?;
    let (kek, token_secret) = identity_secrets(&args.data_dir)?;
    let secrets = crm_suite::SuiteSecrets {
        kek,
        token_secret: token_secret.to_vec(),
        service_key: service_key.clone(),
        page_token_secret: page_secret(&args.serve, Some(&args.data_dir))?,
    };
    // Bound before the modules start: fieldops calls core and identity at this address.
    let listener = TcpListener::bind(args.serve.listen)
        .await
        .with_context(|| format!("binding {}", args.serve.listen))?;
    let addr = listener.local_addr()?;
    let self_url = format!("http://{addr}");
    let modules = crm_suite::modules(
        &secrets,
        hasher(&args.serve)?,
        identity_settings(&args.serve),
        Some(Duration::from_secs(60)),
        crm_fieldops::Peers::connect_lazy(&self_url, &self_url)?,
        crm_platform::client::channel(&self_url)?,
    );

    let jwks = Arc::new(JwksKeys::new());
    let revocations = Arc::new(RevocationSet::followed(DEFAULT_MAX_LAG));
    let verifier = Arc::new(TokenVerifier::new(
        verifier_settings(&args.serve),
        Arc::clone(&jwks) as Arc<dyn crm_auth::keys::KeySource>,
        Arc::clone(&revocations),
    ));
    let (server, assembly) = assemble_for(&modules, &pool_for, &args.serve, verifier).await?;
    let identity = assembly
        .state::<crm_identity::IdentityState>()
        .context("identity did not start")?;

    let serving = tokio::spawn(server.serve(listener, shutdown_signal()));
    let http_listener = TcpListener::bind(args.http_listen)
        .await
        .with_context(|| format!("binding {}", args.http_listen))?;
    let http_addr = http_listener.local_addr()?;
    let gateway = crm_gateway::router_to(
        crm_gateway::Upstreams::one(crm_platform::client::channel(&self_url)?),
        &args.gateway.options(Some(service_key.clone()))?,
    )
    .map_err(|e| anyhow::anyhow!("the gateway's routes: {e}"))?;
    let _http = tokio::spawn(crm_gateway::serve(
        http_listener,
        gateway,
        shutdown_signal(),
    ));
    if let Some(admin) = args.admin.start().await? {
        println!("metrics: http://{admin}/metrics");
    }

    // Every service in this process follows identity like a remote one would.
    let channel = crm_platform::client::channel(&self_url)?;
    let _revocation_lag = crm_platform::metrics::observe_revocation_feed(&revocations);
    let _followers = [
        crm_auth::remote::follow_jwks(channel.clone(), Arc::clone(&jwks)),
        crm_auth::remote::follow_revocations(channel, Arc::clone(&revocations), service_key),
    ];
    tokio::time::timeout(Duration::from_secs(10), jwks.loaded())
        .await
        .context("identity's key set did not arrive")?;
    tokio::time::timeout(Duration::from_secs(10), revocations.loaded())
        .await
        .context("identity's revocations did not arrive")?;

    let demo = if args.demo {
        Some(demo::seed(addr, &identity).await?)
    } else {
        None
    };
    demo::print_next_steps((addr, http_addr), &db.describe(), demo.as_ref());

    let result = serving.await.context("server task")?;
    drop(assembly);
    db.stop();
    result.map_err(anyhow::Error::from)
}

async fn service_client(args: &ServiceClientArgs) -> anyhow::Result<()> {
    let org = crm_platform::api::names::parse_organization(&args.organization, "organization")
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (_, token_secret) = identity_secrets(&args.data_dir)?;
    let mut settings = PoolSettings::new(args.database_url.clone(), crm_identity::SCHEMA.name);
    settings.max_size = 1;
    settings.acquire_timeout = Duration::from_secs(5);
    let pool = pool::build(&settings);
    ensure_safe_role(&pool, "identity").await?;
    let created = crm_identity::api_clients::register_service_client(
        &pool,
        &crm_identity::secrets::TokenSecrets::new(&token_secret),
        org,
        &args.name,
        &args.roles,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let client = created.api_client.unwrap_or_default();
    println!("client_id:     {}", client.client_id);
    println!(
        "client_secret: {}   (shown only now)",
        created.client_secret
    );
    println!("roles:         {}", client.roles.join(", "));
    Ok(())
}

/// The modules on one server with the serving options (limits, retention and purge).
async fn assemble_for(
    modules: &[Arc<dyn ServiceModule>],
    pool_for: &dyn Fn(&migrate::ServiceSchema) -> crm_db::DbPool,
    serve: &ServeArgs,
    verifier: Arc<TokenVerifier>,
) -> anyhow::Result<(crm_platform::GrpcServer, crm_platform::module::Assembly)> {
    assemble(
        modules,
        AssemblyConfig {
            pool_for,
            settings: serve.server_settings(),
            verifier,
            retention: Some(serve.retention()),
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Identity as a module, with its secrets from the environment or the data directory.
fn identity_module(
    data_dir: &std::path::Path,
    serve: &ServeArgs,
    service_key: &str,
) -> anyhow::Result<Arc<dyn ServiceModule>> {
    let (kek, token_secret) = identity_secrets(data_dir)?;
    Ok(crm_suite::identity(
        kek,
        &token_secret,
        service_key,
        hasher(serve)?,
        identity_settings(serve),
        Some(Duration::from_secs(60)),
    ))
}

/// Identity's KEK and token secret: from the environment, else created once in `data_dir`.
fn identity_secrets(data_dir: &std::path::Path) -> anyhow::Result<([u8; 32], [u8; 32])> {
    Ok((
        secrets::load_or_create("CRM_KEY_ENCRYPTION_KEY", data_dir, "identity-kek")?,
        secrets::load_or_create("CRM_TOKEN_SECRET", data_dir, "identity-token-secret")?,
    ))
}

/// Password hashing at the production parameters, one slot per core.
fn hasher(serve: &ServeArgs) -> anyhow::Result<PasswordHasher> {
    let permits = serve
        .password_hash_slots
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, std::num::NonZero::get));
    Ok(PasswordHasher::new(permits, default_params()?)?)
}

fn identity_settings(serve: &ServeArgs) -> crm_identity::IdentitySettings {
    crm_identity::IdentitySettings {
        issuer: serve.token_issuer.clone(),
        audience: serve.token_audience.clone(),
        rate_limits: crm_identity::rate_limit::RateLimits {
            login_per_account: serve.login_rate_per_account,
            per_address: serve.credential_rate_per_address,
            ..crm_identity::rate_limit::RateLimits::default()
        },
        ..crm_identity::IdentitySettings::default()
    }
}

fn verifier_settings(args: &ServeArgs) -> VerifierSettings {
    VerifierSettings {
        issuer: args.token_issuer.clone(),
        audience: args.token_audience.clone(),
        ..VerifierSettings::default()
    }
}

async fn serve_gateway(args: ServeOne) -> anyhow::Result<()> {
    let url = |u: &Option<String>, name: &str| {
        u.clone()
            .with_context(|| format!("{name} is required: the gateway calls that service"))
    };
    let upstreams = crm_gateway::Upstreams {
        identity: crm_platform::client::channel(&url(&args.identity_url, "CRM_IDENTITY_URL")?)?,
        core: crm_platform::client::channel(&url(&args.core_url, "CRM_CORE_URL")?)?,
        fieldops: crm_platform::client::channel(&url(&args.fieldops_url, "CRM_FIELDOPS_URL")?)?,
    };
    // Without the service credential identity rate-limits every HTTP client as one address.
    let key = service_key(None).ok();
    if key.is_none() {
        tracing::warn!(
            "CRM_SERVICE_KEY is not set: identity will count every client as the gateway's address"
        );
    }
    let router = crm_gateway::router_to(upstreams, &args.gateway.options(key)?)
        .map_err(|e| anyhow::anyhow!("the gateway's routes: {e}"))?;
    let listener = TcpListener::bind(args.serve.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "serving the HTTP/JSON gateway");
    crm_gateway::serve(listener, router, shutdown_signal()).await?;
    Ok(())
}

async fn serve_one(args: ServeOne) -> anyhow::Result<()> {
    if let Some(admin) = args.admin.start().await? {
        tracing::info!(%admin, "serving /metrics");
    }
    if matches!(args.service, Service::Gateway) {
        return serve_gateway(args).await;
    }
    let database_url = args
        .database_url
        .clone()
        .context("SERVICE_DATABASE_URL is required")?;
    let static_keys = Arc::new(crm_auth::keys::StaticKeys::new());
    keys::load_static(&static_keys, &args.token_public_keys)?;
    let jwks = Arc::new(JwksKeys::new());
    let revocations = Arc::new(RevocationSet::followed(DEFAULT_MAX_LAG));
    let verifier = Arc::new(TokenVerifier::new(
        verifier_settings(&args.serve),
        Arc::new(crm_auth::remote::KeyChain(vec![
            static_keys as Arc<dyn crm_auth::keys::KeySource>,
            Arc::clone(&jwks) as Arc<dyn crm_auth::keys::KeySource>,
        ])),
        Arc::clone(&revocations),
    ));
    let (module, identity_url, service_key): (Arc<dyn ServiceModule>, Option<String>, String) =
        match args.service {
            Service::Core => {
                // A service that cannot follow revocations must not serve (fail closed).
                let url = args.identity_url.clone().context(
                    "CRM_IDENTITY_URL is required: core follows identity's keys and revocations",
                )?;
                let fieldops = match &args.fieldops_url {
                    Some(u) => Some(crm_platform::client::channel(u)?),
                    None => None,
                };
                let module = crm_suite::core(&page_secret(&args.serve, None)?, fieldops);
                (module, Some(url), service_key(None)?)
            }
            Service::Fieldops => {
                let identity = args.identity_url.clone().context(
                    "CRM_IDENTITY_URL is required: fieldops follows identity's keys and revocations",
                )?;
                let core = args.core_url.clone().context(
                    "CRM_CORE_URL is required: fieldops checks work orders' customers and properties with core",
                )?;
                let peers = crm_fieldops::Peers::connect_lazy(&core, &identity)?;
                let module = crm_suite::fieldops(&page_secret(&args.serve, None)?, peers);
                (module, Some(identity), service_key(None)?)
            }
            Service::Identity => {
                let key = service_key(Some(&args.data_dir))?;
                // Identity follows itself.
                (
                    identity_module(&args.data_dir, &args.serve, &key)?,
                    None,
                    key,
                )
            }
            Service::Gateway => anyhow::bail!("the gateway is served by serve_gateway"),
        };
    let pool_for = |schema: &migrate::ServiceSchema| {
        let mut settings = PoolSettings::new(database_url.clone(), schema.name);
        settings.max_size = args.serve.pool_size;
        pool::build(&settings)
    };
    let (server, _assembly) = assemble_for(&[module], &pool_for, &args.serve, verifier).await?;
    let listener = TcpListener::bind(args.serve.listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, service = ?args.service, "serving");
    let identity_url = identity_url.unwrap_or_else(|| format!("http://{addr}"));
    let channel = crm_platform::client::channel(&identity_url)?;
    let _revocation_lag = crm_platform::metrics::observe_revocation_feed(&revocations);
    let _followers = [
        crm_auth::remote::follow_jwks(channel.clone(), jwks),
        crm_auth::remote::follow_revocations(channel, revocations, service_key),
    ];
    server.serve(listener, shutdown_signal()).await?;
    Ok(())
}
