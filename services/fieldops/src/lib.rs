//! Field operations service: technicians, trucks, shifts and time off, disposal facilities,
//! licenses and certifications — the people, vehicles, sites and credentials work is planned
//! with — work orders with their state machine and bookings ([`work_orders`]), booking
//! capacity ([`scheduling`]) and waste manifests ([`manifests`]), on the shared resource
//! engine, with its own outbox and audit chain.
//!
//! References to other services are checked through their APIs with the caller's credentials
//! ([`peers`]): a technician's user with identity, a work order's customer, property and
//! equipment with core.

pub mod audit;
pub mod compliance;
pub mod events;
pub mod facilities;
pub mod inspections;
pub mod manifests;
pub mod peers;
pub mod scheduling;
pub mod schema;
pub mod shifts;
pub mod technicians;
pub mod trucks;
pub mod work_orders;

use std::sync::Arc;

use crm_auth::MethodPolicy;
use crm_db::DbPool;
use crm_db::migrate::ServiceSchema;
use crm_db::page::PageTokens;
use crm_platform::GrpcServer;
use crm_resource::Context;
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use tokio::sync::Notify;

pub use self::peers::Peers;

/// `ErrorInfo.domain` of this service's errors.
pub const DOMAIN: &str = "fieldops.crm";

/// The fieldops schema's migrations.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

fn migrations() -> EmbeddedMigrations {
    MIGRATIONS
}

/// Schema `fieldops`, roles `fieldops_owner` / `fieldops_app`; the no-overlap constraints need
/// `btree_gist`.
pub const SCHEMA: ServiceSchema = ServiceSchema {
    name: "fieldops",
    migrations,
    extensions: &["btree_gist"],
};

/// What the fieldops handlers share.
#[derive(Clone)]
pub struct FieldopsState {
    /// The resource engine's context (its peers are [`Peers`]).
    pub ctx: Context,
    _listener: Arc<crm_db::notify::Listener>,
}

impl std::fmt::Debug for FieldopsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FieldopsState").finish_non_exhaustive()
    }
}

impl FieldopsState {
    /// State over `pool`, signing page tokens with `page_token_secret`, calling `peers`.
    /// Must run inside a tokio runtime (it starts the outbox listener).
    #[must_use]
    pub fn new(pool: DbPool, page_token_secret: &[u8], peers: Peers) -> Self {
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

/// Every fieldops RPC and the permission it needs.
#[must_use]
pub fn policy() -> MethodPolicy {
    [
        events::policy(),
        audit::policy(),
        trucks::policy(),
        facilities::policy(),
        shifts::policy(),
        compliance::policy(),
        work_orders::policy(),
        manifests::policy(),
        scheduling::policy(),
        inspections::policy(),
    ]
    .iter()
    .fold(technicians::policy(), MethodPolicy::merge)
}

/// Adds the fieldops services to `server`.
pub fn register(server: &mut GrpcServer, state: &FieldopsState) {
    use crm_proto::fieldops_v1::{
        audit_service_server::AuditServiceServer,
        certification_service_server::CertificationServiceServer,
        disposal_facility_service_server::DisposalFacilityServiceServer,
        event_service_server::EventServiceServer,
        inspection_service_server::InspectionServiceServer,
        license_service_server::LicenseServiceServer,
        scheduling_service_server::SchedulingServiceServer,
        shift_service_server::ShiftServiceServer,
        technician_service_server::TechnicianServiceServer,
        time_off_period_service_server::TimeOffPeriodServiceServer,
        truck_service_server::TruckServiceServer,
        waste_manifest_service_server::WasteManifestServiceServer,
        work_order_service_server::WorkOrderServiceServer,
    };

    let pool = Some(state.ctx.pool.clone());
    let ctx = &state.ctx;
    macro_rules! add {
        ($server:ident, $api:expr, $policy:expr) => {
            server.add_service($server::new($api), &$policy, pool.clone())
        };
    }
    add!(
        TechnicianServiceServer,
        technicians::TechnicianApi::new(ctx.clone()),
        technicians::policy()
    );
    add!(
        TruckServiceServer,
        trucks::TruckApi::new(ctx.clone()),
        trucks::policy()
    );
    add!(
        DisposalFacilityServiceServer,
        facilities::DisposalFacilityApi::new(ctx.clone()),
        facilities::policy()
    );
    add!(
        ShiftServiceServer,
        shifts::ShiftApi::new(ctx.clone()),
        shifts::policy()
    );
    add!(
        TimeOffPeriodServiceServer,
        shifts::TimeOffPeriodApi::new(ctx.clone()),
        shifts::policy()
    );
    add!(
        CertificationServiceServer,
        compliance::CertificationApi::new(ctx.clone()),
        compliance::policy()
    );
    add!(
        LicenseServiceServer,
        compliance::LicenseApi::new(ctx.clone()),
        compliance::policy()
    );
    add!(
        WorkOrderServiceServer,
        work_orders::WorkOrderApi::new(ctx.clone()),
        work_orders::policy()
    );
    add!(
        WasteManifestServiceServer,
        manifests::WasteManifestApi::new(ctx.clone()),
        manifests::policy()
    );
    add!(
        SchedulingServiceServer,
        scheduling::SchedulingApi::new(ctx.clone()),
        scheduling::policy()
    );
    add!(
        InspectionServiceServer,
        inspections::InspectionApi::new(ctx.clone()),
        inspections::policy()
    );
    add!(
        EventServiceServer,
        events::EventApi::new(ctx.clone()),
        events::policy()
    );
    add!(
        AuditServiceServer,
        audit::AuditApi::new(ctx.clone()),
        audit::policy()
    );
}

/// What fieldops' purge job removes, children before parents: idempotency keys and events past
/// their retention, then soft-deleted resources past their purge time (a parent that live rows
/// still reference is kept: the foreign keys restrict).
#[must_use]
pub fn purge_rules(retention: &crm_db::purge::Retention) -> Vec<crm_db::purge::Rule> {
    use crm_db::purge::Rule;
    const PAST_PURGE_TIME: &str = "purge_time < now() - make_interval(secs => $1)";
    let mut rules = crm_db::purge::standard_rules(retention);
    for table in [
        "shifts",
        "time_off_periods",
        "certifications",
        "licenses",
        "inspections",
        "trucks",
        "disposal_facilities",
        "technicians",
    ] {
        rules.push(Rule {
            table,
            condition: PAST_PURGE_TIME,
            keep: std::time::Duration::ZERO,
        });
    }
    rules
}

/// Fieldops as a service module.
#[derive(Debug, Clone)]
pub struct FieldopsModule {
    page_token_secret: Vec<u8>,
    peers: Peers,
}

impl FieldopsModule {
    /// Fieldops signing List page tokens with `page_token_secret`, calling `peers`.
    #[must_use]
    pub fn new(page_token_secret: &[u8], peers: Peers) -> Self {
        Self {
            page_token_secret: page_token_secret.to_vec(),
            peers,
        }
    }
}

impl crm_platform::module::ServiceModule for FieldopsModule {
    fn schema(&self) -> ServiceSchema {
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
            let state = FieldopsState::new(pool, &self.page_token_secret, self.peers.clone());
            Ok(crm_platform::module::Started::new(state, register))
        })
    }

    fn purge_rules(&self, retention: &crm_db::purge::Retention) -> Vec<crm_db::purge::Rule> {
        purge_rules(retention)
    }
}
