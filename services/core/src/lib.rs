//! CRM core service: customers and the resources around them.
//!
//! Module layout: one module per resource (`customers`), each with its handlers (`mod.rs`),
//! its row model and conversions (`model.rs`) and its queries (`store.rs`); `events` serves the
//! outbox as a resumable stream.

pub mod customers;
pub mod events;
pub mod schema;

use std::sync::Arc;

use crm_auth::MethodPolicy;
use crm_db::DbPool;
use crm_db::migrate::ServiceSchema;
use crm_db::page::PageTokens;
use crm_platform::GrpcServer;
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use tokio::sync::Notify;

/// `ErrorInfo.domain` of this service's errors.
pub const DOMAIN: &str = "core.crm";

/// The core schema's migrations.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

fn migrations() -> EmbeddedMigrations {
    MIGRATIONS
}

/// Schema `core`, roles `core_owner` / `core_app`.
pub const SCHEMA: ServiceSchema = ServiceSchema {
    name: "core",
    migrations,
};

/// What the core handlers share.
#[derive(Clone)]
pub struct CoreState {
    /// Pool connected as `core_app`.
    pub pool: DbPool,
    /// Signs List page tokens.
    pub page_tokens: PageTokens,
    /// Woken after every commit that wrote events, so streams deliver without polling delay.
    pub events_written: Arc<Notify>,
}

impl std::fmt::Debug for CoreState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreState").finish_non_exhaustive()
    }
}

impl CoreState {
    /// State over `pool`, signing page tokens with `page_token_secret`.
    #[must_use]
    pub fn new(pool: DbPool, page_token_secret: &[u8]) -> Self {
        Self {
            pool,
            page_tokens: PageTokens::new(page_token_secret),
            events_written: Arc::new(Notify::new()),
        }
    }
}

/// Every core RPC and the permission it needs.
#[must_use]
pub fn policy() -> MethodPolicy {
    customers::policy().merge(&events::policy())
}

/// Adds the core services to `server`.
pub fn register(server: &mut GrpcServer, state: &CoreState) {
    let limit = server.settings().max_message_bytes;
    let customers = crm_proto::core_v1::customer_service_server::CustomerServiceServer::new(
        customers::CustomerApi::new(state.clone()),
    )
    .max_decoding_message_size(limit)
    .max_encoding_message_size(limit);
    let events = crm_proto::core_v1::event_service_server::EventServiceServer::new(
        events::EventApi::new(state.clone()),
    )
    .max_decoding_message_size(limit)
    .max_encoding_message_size(limit);
    server.add_service(customers, &customers::policy(), Some(state.pool.clone()));
    server.add_service(events, &events::policy(), Some(state.pool.clone()));
}
