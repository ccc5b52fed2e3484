//! CRM core service: customers and the resources around them.
//!
//! Module layout: one module per resource (`customers`), each with its handlers (`mod.rs`),
//! its row model and conversions (`model.rs`) and its queries (`store.rs`); `events` serves the
//! outbox as a resumable stream.

pub mod activities;
pub mod audit;
pub mod call_dispositions;
pub mod call_logs;
pub mod consent;
pub mod contacts;
pub mod contracts;
pub mod conversations;
pub mod customers;
pub mod equipment;
pub mod events;
pub mod ids;
pub mod inventory;
pub mod invoices;
pub mod marketing;
pub mod messages;
pub mod pricing;
pub mod properties;
pub mod quotes;
pub mod schema;
pub mod search;
pub mod signatures;
pub mod sync_logs;
pub mod tickets;

use std::sync::Arc;

use crm_auth::MethodPolicy;
use crm_db::DbPool;
use crm_db::migrate::ServiceSchema;
use crm_db::page::PageTokens;
use crm_platform::GrpcServer;
use crm_resource::Context;
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
    extensions: &[],
};

/// Maps an error of this service to a status.
#[must_use]
pub fn status(e: crm_platform::ApiError) -> tonic::Status {
    e.into_status(DOMAIN)
}

/// The services core calls: fieldops (invoicing a completed work order), when configured.
#[derive(Debug, Clone, Default)]
pub struct CorePeers {
    /// Field operations.
    pub fieldops: Option<tonic::transport::Channel>,
}

/// What the core handlers share.
#[derive(Clone)]
pub struct CoreState {
    /// The resource engine's context: the pool connected as `core_app`, the page-token key and
    /// `events_written`, woken after every commit that wrote events (by this process, and
    /// through LISTEN/NOTIFY by any replica), so streams deliver without polling.
    pub ctx: Context,
    _listener: Arc<crm_db::notify::Listener>,
}

impl std::fmt::Debug for CoreState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreState").finish_non_exhaustive()
    }
}

impl CoreState {
    /// State over `pool`, signing page tokens with `page_token_secret`.
    #[must_use]
    /// Must run inside a tokio runtime (it starts the outbox listener).
    pub fn new(pool: DbPool, page_token_secret: &[u8], peers: CorePeers) -> Self {
        let events_written = Arc::new(Notify::new());
        let listener = crm_db::notify::spawn_listener(
            pool.clone(),
            crm_db::outbox::channel(SCHEMA.name),
            Arc::clone(&events_written),
        );
        Self {
            ctx: Context {
                pool,
                page_tokens: PageTokens::new(page_token_secret),
                domain: DOMAIN,
                events_written,
                peers: Arc::new(peers),
            },
            _listener: Arc::new(listener),
        }
    }
}

/// Every core RPC and the permission it needs.
#[must_use]
pub fn policy() -> MethodPolicy {
    [
        events::policy(),
        audit::policy(),
        contacts::policy(),
        properties::policy(),
        equipment::policy(),
        conversations::policy(),
        messages::policy(),
        consent::policy(),
        tickets::policy(),
        inventory::policy(),
        activities::policy(),
        call_dispositions::policy(),
        call_logs::policy(),
        sync_logs::policy(),
        pricing::policy(),
        invoices::policy(),
        quotes::policy(),
        signatures::policy(),
        contracts::policy(),
        marketing::policy(),
    ]
    .iter()
    .fold(customers::policy(), MethodPolicy::merge)
}

/// Adds the core services to `server`.
pub fn register(server: &mut GrpcServer, state: &CoreState) {
    use crm_proto::core_v1::{
        activity_service_server::ActivityServiceServer, audit_service_server::AuditServiceServer,
        call_disposition_service_server::CallDispositionServiceServer,
        call_log_service_server::CallLogServiceServer,
        consent_service_server::ConsentServiceServer, contact_service_server::ContactServiceServer,
        conversation_service_server::ConversationServiceServer,
        customer_service_server::CustomerServiceServer,
        equipment_service_server::EquipmentServiceServer, event_service_server::EventServiceServer,
        inventory_item_service_server::InventoryItemServiceServer,
        message_service_server::MessageServiceServer,
        property_service_server::PropertyServiceServer,
        sync_log_service_server::SyncLogServiceServer, ticket_service_server::TicketServiceServer,
    };
    use crm_proto::core_v1::{
        campaign_service_server::CampaignServiceServer,
        message_template_service_server::MessageTemplateServiceServer,
        workflow_service_server::WorkflowServiceServer,
    };
    use crm_proto::core_v1::{
        catalog_item_service_server::CatalogItemServiceServer,
        invoice_service_server::InvoiceServiceServer, price_service_server::PriceServiceServer,
        pricing_rule_service_server::PricingRuleServiceServer,
        pricing_tier_service_server::PricingTierServiceServer,
        pricing_zone_service_server::PricingZoneServiceServer,
        quote_service_server::QuoteServiceServer,
    };
    use crm_proto::core_v1::{
        contract_service_server::ContractServiceServer,
        contract_template_service_server::ContractTemplateServiceServer,
        signature_request_service_server::SignatureRequestServiceServer,
    };

    let pool = Some(state.ctx.pool.clone());
    macro_rules! add {
        ($server:ident, $api:expr, $policy:expr) => {
            server.add_service($server::new($api), &$policy, pool.clone())
        };
    }
    add!(
        CustomerServiceServer,
        customers::CustomerApi::new(state.ctx.clone()),
        customers::policy()
    );
    add!(
        EventServiceServer,
        events::EventApi::new(state.clone()),
        events::policy()
    );
    add!(
        AuditServiceServer,
        audit::AuditApi::new(state.ctx.clone()),
        audit::policy()
    );
    add!(
        ContactServiceServer,
        contacts::ContactApi::new(state.ctx.clone()),
        contacts::policy()
    );
    add!(
        PropertyServiceServer,
        properties::PropertyApi::new(state.ctx.clone()),
        properties::policy()
    );
    add!(
        EquipmentServiceServer,
        equipment::EquipmentApi::new(state.ctx.clone()),
        equipment::policy()
    );
    add!(
        ConversationServiceServer,
        conversations::ConversationApi::new(state.ctx.clone()),
        conversations::policy()
    );
    add!(
        MessageServiceServer,
        messages::MessageApi::new(state.clone()),
        messages::policy()
    );
    add!(
        ConsentServiceServer,
        consent::ConsentApi::new(state.clone()),
        consent::policy()
    );
    add!(
        TicketServiceServer,
        tickets::TicketApi::new(state.ctx.clone()),
        tickets::policy()
    );
    add!(
        InventoryItemServiceServer,
        inventory::InventoryItemApi::new(state.ctx.clone()),
        inventory::policy()
    );
    add!(
        ActivityServiceServer,
        activities::ActivityApi::new(state.ctx.clone()),
        activities::policy()
    );
    add!(
        CallDispositionServiceServer,
        call_dispositions::CallDispositionApi::new(state.ctx.clone()),
        call_dispositions::policy()
    );
    add!(
        CallLogServiceServer,
        call_logs::CallLogApi::new(state.ctx.clone()),
        call_logs::policy()
    );
    add!(
        SyncLogServiceServer,
        sync_logs::SyncLogApi::new(state.ctx.clone()),
        sync_logs::policy()
    );
    let ctx = &state.ctx;
    add!(
        CatalogItemServiceServer,
        pricing::book::CatalogItemApi::new(ctx.clone()),
        pricing::policy()
    );
    add!(
        PricingZoneServiceServer,
        pricing::book::PricingZoneApi::new(ctx.clone()),
        pricing::policy()
    );
    add!(
        PricingTierServiceServer,
        pricing::book::PricingTierApi::new(ctx.clone()),
        pricing::policy()
    );
    add!(
        PricingRuleServiceServer,
        pricing::book::PricingRuleApi::new(ctx.clone()),
        pricing::policy()
    );
    add!(
        InvoiceServiceServer,
        invoices::InvoiceApi::new(ctx.clone()),
        invoices::policy()
    );
    add!(
        QuoteServiceServer,
        quotes::QuoteApi::new(ctx.clone()),
        quotes::policy()
    );
    add!(
        SignatureRequestServiceServer,
        signatures::SignatureRequestApi::new(ctx.clone()),
        signatures::policy()
    );
    add!(
        ContractTemplateServiceServer,
        contracts::ContractTemplateApi::new(ctx.clone()),
        contracts::policy()
    );
    add!(
        ContractServiceServer,
        contracts::ContractApi::new(ctx.clone()),
        contracts::policy()
    );
    add!(
        MessageTemplateServiceServer,
        marketing::MessageTemplateApi::new(ctx.clone()),
        marketing::policy()
    );
    add!(
        CampaignServiceServer,
        marketing::CampaignApi::new(ctx.clone()),
        marketing::policy()
    );
    add!(
        WorkflowServiceServer,
        marketing::WorkflowApi::new(ctx.clone()),
        marketing::policy()
    );
    add!(
        PriceServiceServer,
        pricing::PriceApi::new(ctx.clone()),
        pricing::policy()
    );
}

/// Runs `tick` every `every` (a late tick waits rather than bunching up) until the handle is
/// dropped; a failed tick is logged as `what` and the next one tries again.
pub(crate) fn spawn_every<F, Fut, T>(
    pool: DbPool,
    every: std::time::Duration,
    what: &'static str,
    mut tick: F,
) -> tokio::task::JoinHandle<()>
where
    F: FnMut(DbPool) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, crm_platform::ApiError>> + Send,
{
    tokio::spawn(async move {
        let mut timer = tokio::time::interval(every);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            timer.tick().await;
            if let Err(e) = tick(pool.clone()).await {
                tracing::warn!(error = %e, job = what, "background tick failed");
            }
        }
    })
}

/// The call a background job of core writes as: `actor` in `org`, with no roles.
pub(crate) fn background_call(org: uuid::Uuid, actor: &str, method: &str) -> crm_resource::Call {
    crm_resource::Call {
        principal: std::sync::Arc::new(crm_auth::Principal {
            subject: actor.to_owned(),
            organization: org,
            roles: Vec::new(),
            scopes: Vec::new(),
            client_id: String::new(),
            session_id: None,
            token_id: String::new(),
            issued_at: 0,
            expires_at: 0,
            actor: None,
            audiences: Vec::new(),
        }),
        deadline: None,
        method: method.to_owned(),
        outbound: crm_platform::client::CallContext::default(),
    }
}

/// What core's purge job removes, children before parents: idempotency keys and events past
/// their retention, then soft-deleted resources past their purge time (readings go with their
/// equipment; a parent that append-only rows such as messages or stock adjustments still
/// reference is kept).
#[must_use]
pub fn purge_rules(retention: &crm_db::purge::Retention) -> Vec<crm_db::purge::Rule> {
    use crm_db::purge::Rule;
    const PAST_PURGE_TIME: &str = "purge_time < now() - make_interval(secs => $1)";
    let mut rules = crm_db::purge::standard_rules(retention);
    rules.push(Rule {
        table: "equipment_readings",
        condition: "EXISTS (SELECT 1 FROM equipment e \
                     WHERE e.organization_id = equipment_readings.organization_id \
                       AND e.id = equipment_readings.equipment_id \
                       AND e.purge_time < now() - make_interval(secs => $1))",
        keep: std::time::Duration::ZERO,
    });
    rules.push(Rule {
        table: "enrollments",
        condition: "EXISTS (SELECT 1 FROM workflows w \
                     WHERE w.organization_id = enrollments.organization_id \
                       AND w.id = enrollments.workflow_id \
                       AND w.purge_time < now() - make_interval(secs => $1)) \
                    OR EXISTS (SELECT 1 FROM campaigns c \
                     WHERE c.organization_id = enrollments.organization_id \
                       AND c.id = enrollments.campaign_id \
                       AND c.purge_time < now() - make_interval(secs => $1))",
        keep: std::time::Duration::ZERO,
    });
    for table in [
        "campaigns",
        "workflows",
        "message_templates",
        "signature_requests",
        "contracts",
        "contract_templates",
        "quotes",
        "invoices",
        "pricing_rules",
        "pricing_zones",
        "pricing_tiers",
        "catalog_items",
        "equipment",
        "contacts",
        "activities",
        "call_logs",
        "tickets",
        "conversations",
        "properties",
        "call_dispositions",
        "sync_logs",
        "inventory_items",
        "customers",
    ] {
        rules.push(Rule {
            table,
            condition: PAST_PURGE_TIME,
            keep: std::time::Duration::ZERO,
        });
    }
    rules
}

/// Core as a service module: its schema, its state over the pool, its services and its purge.
#[derive(Debug, Clone)]
pub struct CoreModule {
    page_token_secret: Vec<u8>,
    peers: CorePeers,
}

impl CoreModule {
    /// Core signing List page tokens with `page_token_secret` (shared by every replica),
    /// calling `peers`.
    #[must_use]
    pub fn new(page_token_secret: &[u8], peers: CorePeers) -> Self {
        Self {
            page_token_secret: page_token_secret.to_vec(),
            peers,
        }
    }
}

impl crm_platform::module::ServiceModule for CoreModule {
    fn schema(&self) -> crm_db::migrate::ServiceSchema {
        SCHEMA
    }

    fn start(
        &self,
        pool: DbPool,
    ) -> futures_util::future::BoxFuture<
        '_,
        Result<crm_platform::module::Started, crm_platform::module::StartError>,
    > {
        Box::pin(async move {
            let state = CoreState::new(pool.clone(), &self.page_token_secret, self.peers.clone());
            // Due marketing steps and workflow triggers, every few seconds on every replica
            // (claims are SKIP LOCKED: replicas share the work, never repeat it).
            let scheduler =
                marketing::scheduler::spawn(pool.clone(), std::time::Duration::from_secs(5));
            // Contract visits coming due and terms ending, every half minute (claims SKIP
            // LOCKED as well).
            let sweep = contracts::sweep::spawn(pool, std::time::Duration::from_secs(30));
            Ok(crm_platform::module::Started::new(state, register)
                .with_background(scheduler)
                .with_background(sweep))
        })
    }

    fn purge_rules(&self, retention: &crm_db::purge::Retention) -> Vec<crm_db::purge::Rule> {
        purge_rules(retention)
    }
}
