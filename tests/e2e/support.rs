//! Helpers shared by the end-to-end tests.

use crm_proto::core_v1::customer_service_client::CustomerServiceClient;
use crm_proto::core_v1::{CreateCustomerRequest, Customer, CustomerKind};
use std::sync::Arc;
use std::time::Duration;

use crm_db::migrate::ServiceSchema;
use crm_testkit::server::TestServerOptions;
use crm_testkit::{TestDb, TestServer};
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;
use uuid::Uuid;

pub struct Env {
    pub db: TestDb,
    pub server: TestServer,
    pub org: Uuid,
    pub token: String,
}

/// The suite's services, in migration order (the launcher's list).
pub fn schemas() -> Vec<ServiceSchema> {
    crm_suite::schemas()
}

/// A database of its own for one test, cloned from the suite's migrated template.
pub async fn test_db() -> TestDb {
    TestDb::new(&schemas()).await.expect("test database")
}

/// How a test starts the suite: the server's options and identity's.
#[derive(Debug, Clone)]
pub struct SuiteOptions {
    pub server: TestServerOptions,
    /// Identity settings (tests shorten the lockout and the refresh grace).
    pub identity: crm_identity::IdentitySettings,
    /// Concurrent password hashes, and whether they use the production argon2 parameters
    /// (tests use small ones unless they measure hashing itself).
    pub hashing: (usize, bool),
    /// Where fieldops finds core, when not in the same server (a test of core being down).
    pub core_url: Option<String>,
}

impl Default for SuiteOptions {
    fn default() -> Self {
        Self {
            server: TestServerOptions::default(),
            identity: crm_identity::IdentitySettings {
                lockout_base: Duration::from_secs(1),
                refresh_grace: Duration::from_secs(1),
                // Functional tests sign in often; the rate-limit test sets its own limits.
                rate_limits: crm_identity::rate_limit::RateLimits {
                    login_per_account: 100_000,
                    per_address: 100_000,
                    per_api_client: 100_000,
                    trust_forwarded_for: false,
                },
                ..crm_identity::IdentitySettings::default()
            },
            hashing: (4, false),
            core_url: None,
        }
    }
}

impl From<TestServerOptions> for SuiteOptions {
    fn from(server: TestServerOptions) -> Self {
        Self {
            server,
            ..Self::default()
        }
    }
}

/// The suite (identity and core, assembled as `crm up` assembles them) on `127.0.0.1:0`.
pub async fn start(db: &TestDb, options: impl Into<SuiteOptions>) -> TestServer {
    let options = options.into();
    // Small argon2 parameters: tests exercise the logic, benchmarks the cost.
    let params = if options.hashing.1 {
        crm_auth::password::default_params().unwrap()
    } else {
        argon2::Params::new(1024, 1, 1, None).unwrap()
    };
    let hasher = crm_auth::password::PasswordHasher::new(options.hashing.0, params).unwrap();
    let identity = options.identity.clone();
    let core_url = options.core_url.clone();
    TestServer::start_with(db, options.server, move |seeds| {
        let secrets = crm_suite::SuiteSecrets {
            kek: crm_identity::keys::Kek::generate().to_bytes(),
            token_secret: uuid::Uuid::new_v4().as_bytes().to_vec(),
            service_key: seeds.service_key.clone(),
            page_token_secret: uuid::Uuid::new_v4().as_bytes().to_vec(),
        };
        let own = format!("http://{}", seeds.addr);
        let core = core_url.unwrap_or_else(|| own.clone());
        let peers = crm_fieldops::Peers::connect_lazy(&core, &own).expect("peer channels");
        // Rotation only when a test drives it.
        let fieldops = crm_platform::client::channel(&own).expect("fieldops channel");
        crm_suite::modules(&secrets, hasher, identity, None, peers, fieldops)
    })
    .await
    .expect("test server")
}

/// The states of the suite's services in a test server.
pub trait Suite {
    fn identity(&self) -> Arc<crm_identity::IdentityState>;
}

impl Suite for TestServer {
    fn identity(&self) -> Arc<crm_identity::IdentityState> {
        self.assembly
            .state()
            .expect("identity is part of the suite")
    }
}

impl Env {
    pub async fn new() -> Self {
        Self::with(SuiteOptions::default()).await
    }

    /// An organization on a suite started with `options`.
    pub async fn with(options: SuiteOptions) -> Self {
        let db = test_db().await;
        let server = start(&db, options).await;
        let org = Uuid::now_v7();
        let token = server.token(org, &["org.admin"]);
        Self {
            db,
            server,
            org,
            token,
        }
    }

    pub fn customers(&self) -> CustomerServiceClient<Channel> {
        CustomerServiceClient::new(self.server.channel.clone())
    }

    pub fn parent(&self) -> String {
        format!("organizations/{}", self.org)
    }

    pub fn req<T>(&self, message: T) -> tonic::Request<T> {
        TestServer::request(&self.token, message)
    }

    pub async fn create(&self, display_name: &str) -> Customer {
        self.customers()
            .create_customer(self.req(CreateCustomerRequest {
                parent: self.parent(),
                customer: Some(Customer {
                    display_name: display_name.to_owned(),
                    kind: CustomerKind::Residential as i32,
                    ..Customer::default()
                }),
                ..CreateCustomerRequest::default()
            }))
            .await
            .expect("create customer")
            .into_inner()
    }

    /// Rows in core.customers of any organization, read as superuser (bypasses RLS).
    pub async fn customer_rows(&self) -> i64 {
        count(&self.db, "SELECT count(*) AS n FROM core.customers").await
    }
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

pub async fn count(db: &TestDb, sql: &str) -> i64 {
    use diesel_async::RunQueryDsl;
    let mut conn = db.admin().await.unwrap();
    let row: Count = diesel::sql_query(sql).get_result(&mut conn).await.unwrap();
    row.n
}

/// Asserts INVALID_ARGUMENT with a `BadRequest` violation of `field` for `want` (the reason).
#[track_caller]
pub fn assert_invalid_field(status: &Status, field: &str, want: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let details = status.get_error_details();
    let bad = details
        .bad_request()
        .unwrap_or_else(|| panic!("no BadRequest in {status:?}"));
    assert!(
        bad.field_violations
            .iter()
            .any(|v| v.field == field && v.reason == want),
        "no {want} violation for {field} in {:?}",
        bad.field_violations
    );
    let info = details.error_info().expect("ErrorInfo");
    assert!(info.domain.ends_with(".crm"), "{info:?}");
}

pub fn reason(status: &Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
        .unwrap_or_default()
}

/// A proto3-JSON Money (units as a string or a number) in nano units.
pub fn nanos(v: &serde_json::Value) -> i64 {
    let units: i64 = v["units"]
        .as_str()
        .map_or_else(|| v["units"].as_i64().unwrap_or(0), |s| s.parse().unwrap());
    units * 1_000_000_000 + v["nanos"].as_i64().unwrap_or(0)
}

/// A proto3-JSON Money in cents.
pub fn cents(v: &serde_json::Value) -> i64 {
    nanos(v) / 10_000_000
}

/// `cents` US cents as a proto3-JSON Money.
pub fn usd_cents(cents: i64) -> serde_json::Value {
    serde_json::json!({"currency_code": "USD", "units": cents / 100, "nanos": (cents % 100) * 10_000_000})
}
