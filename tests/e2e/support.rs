//! Helpers shared by the end-to-end tests.

use crm_proto::core_v1::customer_service_client::CustomerServiceClient;
use crm_proto::core_v1::{CreateCustomerRequest, Customer, CustomerKind};
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

impl Env {
    pub async fn new() -> Self {
        let db = TestDb::new().await.expect("test database");
        let server = TestServer::start(&db).await.expect("test server");
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
