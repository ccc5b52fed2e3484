//! Service modules and the one assembly of them.
//!
//! Each service (identity, core, and every later one) implements [`ServiceModule`]: its schema
//! and migrations, how it starts over its pool, how it registers its gRPC services and method
//! policies, and what its purge job removes. [`assemble`] builds a server from any set of
//! modules: `crm up` (all of them), `crm serve <service>` (one) and the test servers use it, so
//! no list of services is repeated and a module is assembled the same way everywhere.

use std::any::Any;
use std::sync::Arc;

use crm_auth::TokenVerifier;
use crm_db::DbPool;
use crm_db::migrate::ServiceSchema;
use crm_db::purge::{self, PurgeJob, Retention, Rule};
use futures_util::future::BoxFuture;

use crate::server::{GrpcServer, ServerSettings};

/// Why a module could not start.
pub type StartError = Box<dyn std::error::Error + Send + Sync>;

/// A service, as the assembly needs to know it.
pub trait ServiceModule: Send + Sync {
    /// Its schema and migrations (the pool it gets connects as `<schema>_app`).
    fn schema(&self) -> ServiceSchema;

    /// Starts over `pool`: builds the service's state and whatever runs in the background.
    fn start(&self, pool: DbPool) -> BoxFuture<'_, Result<Started, StartError>>;

    /// What the service's purge job removes, children before parents.
    fn purge_rules(&self, _retention: &Retention) -> Vec<Rule> {
        Vec::new()
    }
}

/// A started module: what it adds to the server, its state, its background work.
pub struct Started {
    register: Box<dyn FnOnce(&mut GrpcServer) + Send>,
    state: Arc<dyn Any + Send + Sync>,
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Started {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Started").finish_non_exhaustive()
    }
}

impl Started {
    /// A started module whose services `register` adds, with its `state` (reachable through
    /// [`Assembly::state`]).
    pub fn new<S: Any + Send + Sync>(
        state: S,
        register: impl FnOnce(&mut GrpcServer, &S) + Send + 'static,
    ) -> Self {
        let state = Arc::new(state);
        let for_register = Arc::clone(&state);
        Self {
            register: Box::new(move |server| register(server, &for_register)),
            state,
            background: Vec::new(),
        }
    }

    /// A background task that lives as long as the assembly.
    #[must_use]
    pub fn with_background(mut self, task: tokio::task::JoinHandle<()>) -> Self {
        self.background.push(task);
        self
    }
}

/// How the assembly gets pools and what it runs.
pub struct AssemblyConfig<'a> {
    /// The pool for a module's schema.
    pub pool_for: &'a dyn Fn(&ServiceSchema) -> DbPool,
    /// Serving limits and timings.
    pub settings: ServerSettings,
    /// Token verification for every module.
    pub verifier: Arc<TokenVerifier>,
    /// Runs each module's purge job with this retention (`None`: no purge, as in tests that
    /// drive purges themselves).
    pub retention: Option<Retention>,
}

/// The started modules: their states and background work (keep it alive while the
/// server serves).
pub struct Assembly {
    states: Vec<Arc<dyn Any + Send + Sync>>,
    schemas: Vec<&'static str>,
    _purges: Vec<PurgeJob>,
    _pool_gauges: Vec<crate::metrics::PoolGauge>,
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Assembly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Assembly")
            .field("schemas", &self.schemas)
            .finish_non_exhaustive()
    }
}

impl Drop for Assembly {
    fn drop(&mut self) {
        for task in &self.background {
            task.abort();
        }
    }
}

impl Assembly {
    /// The state of the module whose state has type `S`.
    #[must_use]
    pub fn state<S: Any + Send + Sync>(&self) -> Option<Arc<S>> {
        self.states
            .iter()
            .find_map(|s| Arc::clone(s).downcast::<S>().ok())
    }
}

/// Starts every module over its pool and registers it on one server. A pool whose role stands
/// outside row-level security (superuser, BYPASSRLS, schema owner) is refused; one that cannot
/// be reached yet is not (the service starts NOT_SERVING).
///
/// # Errors
/// An unsafe role, or a module that fails to start.
pub async fn assemble(
    modules: &[Arc<dyn ServiceModule>],
    config: AssemblyConfig<'_>,
) -> Result<(GrpcServer, Assembly), StartError> {
    let mut server = GrpcServer::new(config.settings.clone(), Arc::clone(&config.verifier));
    let mut states = Vec::new();
    let mut schemas = Vec::new();
    let mut purges = Vec::new();
    let mut pool_gauges = Vec::new();
    let mut background = Vec::new();
    for module in modules {
        let schema = module.schema();
        let pool = (config.pool_for)(&schema);
        if let Err(e) = crm_db::pool::check_role(&pool).await {
            return Err(format!("{}: {e}", schema.name).into());
        }
        pool_gauges.push(crate::metrics::observe_pool(schema.name, pool.clone()));
        let started = module.start(pool.clone()).await?;
        (started.register)(&mut server);
        if let Some(retention) = &config.retention {
            let rules = module.purge_rules(retention);
            if !rules.is_empty() {
                purges.push(purge::spawn(pool.clone(), rules, retention.every));
            }
        }
        states.push(started.state);
        background.extend(started.background);
        schemas.push(schema.name);
    }
    Ok((
        server,
        Assembly {
            states,
            schemas,
            _purges: purges,
            _pool_gauges: pool_gauges,
            background,
        },
    ))
}
