//! The suite as a list: which services it has, in migration order, and how each is built as a
//! module from its secrets. `crm up` runs them all, `crm serve <service>` one, and the
//! end-to-end tests assemble the same list; a new service is added here once.

use std::sync::Arc;
use std::time::Duration;

use crm_auth::password::PasswordHasher;
use crm_db::migrate::ServiceSchema;
use crm_platform::module::ServiceModule;

/// Every service schema, in migration order.
#[must_use]
pub fn schemas() -> Vec<ServiceSchema> {
    vec![crm_identity::SCHEMA, crm_core::SCHEMA, crm_fieldops::SCHEMA]
}

/// What the suite's modules are built from.
pub struct SuiteSecrets {
    /// Identity's key-encryption key.
    pub kek: [u8; 32],
    /// Identity's refresh-token (and page-token) key.
    pub token_secret: Vec<u8>,
    /// The internal service credential (revocation feed).
    pub service_key: String,
    /// Core's and fieldops' page-token key.
    pub page_token_secret: Vec<u8>,
}

impl std::fmt::Debug for SuiteSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SuiteSecrets(..)")
    }
}

/// Identity as a module: its KEK, token secret and the service credential.
#[must_use]
pub fn identity(
    kek: [u8; 32],
    token_secret: &[u8],
    service_key: &str,
    hasher: PasswordHasher,
    settings: crm_identity::IdentitySettings,
    rotate_every: Option<Duration>,
) -> Arc<dyn ServiceModule> {
    Arc::new(crm_identity::IdentityModule::new(
        crm_identity::keys::Kek::new(kek),
        token_secret,
        service_key,
        hasher,
        settings,
        rotate_every,
    ))
}

/// Core as a module, signing page tokens with `page_token_secret`, calling fieldops through
/// `fieldops` when given.
#[must_use]
pub fn core(
    page_token_secret: &[u8],
    fieldops: Option<tonic::transport::Channel>,
) -> Arc<dyn ServiceModule> {
    Arc::new(crm_core::CoreModule::new(
        page_token_secret,
        crm_core::CorePeers { fieldops },
    ))
}

/// Fieldops as a module, signing page tokens with `page_token_secret` and calling core and
/// identity through `peers`.
#[must_use]
pub fn fieldops(page_token_secret: &[u8], peers: crm_fieldops::Peers) -> Arc<dyn ServiceModule> {
    Arc::new(crm_fieldops::FieldopsModule::new(page_token_secret, peers))
}

/// Every service of the suite as modules, in the order of [`schemas`]; fieldops reaches core
/// and identity through `peers`, core reaches fieldops through `fieldops` (in one process: the
/// process's own address).
#[must_use]
pub fn modules(
    secrets: &SuiteSecrets,
    hasher: PasswordHasher,
    identity_settings: crm_identity::IdentitySettings,
    rotate_every: Option<Duration>,
    peers: crm_fieldops::Peers,
    fieldops_channel: tonic::transport::Channel,
) -> Vec<Arc<dyn ServiceModule>> {
    vec![
        identity(
            secrets.kek,
            &secrets.token_secret,
            &secrets.service_key,
            hasher,
            identity_settings,
            rotate_every,
        ),
        core(&secrets.page_token_secret, Some(fieldops_channel)),
        fieldops(&secrets.page_token_secret, peers),
    ]
}
