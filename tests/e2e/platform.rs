//! The server platform: load shedding, graceful drain, message-size limits, request ids,
//! both reflection versions.

use std::time::Duration;

use crm_platform::ServerSettings;
use crm_proto::core_v1::customer_service_client::CustomerServiceClient;
use crm_proto::core_v1::{
    CreateCustomerRequest, Customer, GetCustomerRequest, UpdateCustomerRequest,
};
use crm_testkit::server::TestServerOptions;
use crm_testkit::{TestDb, TestServer};
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use tonic::Code;
use uuid::Uuid;

use crate::support::reason;

struct Setup {
    _db: TestDb,
    server: TestServer,
    token: String,
    parent: String,
}

async fn setup(settings: ServerSettings) -> Setup {
    let db = crate::support::test_db().await;
    let server = crate::support::start(
        &db,
        TestServerOptions {
            settings,
            ..TestServerOptions::default()
        },
    )
    .await;
    let org = Uuid::now_v7();
    let token = server.token(org, &["org.admin"]);
    Setup {
        _db: db,
        server,
        token,
        parent: format!("organizations/{org}"),
    }
}

impl Setup {
    fn client(&self) -> CustomerServiceClient<tonic::transport::Channel> {
        CustomerServiceClient::new(self.server.channel.clone())
    }

    async fn create(&self, name: &str) -> Customer {
        self.client()
            .create_customer(TestServer::request(
                &self.token,
                CreateCustomerRequest {
                    parent: self.parent.clone(),
                    customer: Some(Customer {
                        display_name: name.into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner()
    }

    /// Locks the customer's row so an update of it waits until the returned connection commits.
    async fn lock(&self, db_admin_url: &str, customer: &Customer) -> AsyncPgConnection {
        use diesel_async::AsyncConnection;
        let mut conn = AsyncPgConnection::establish(db_admin_url).await.unwrap();
        let id = customer.name.rsplit('/').next().unwrap();
        conn.batch_execute("BEGIN").await.unwrap();
        diesel::sql_query(format!(
            "SELECT 1 FROM core.customers WHERE id = '{id}' FOR UPDATE"
        ))
        .execute(&mut conn)
        .await
        .unwrap();
        conn
    }

    fn slow_update(
        &self,
        customer: &Customer,
    ) -> impl std::future::Future<Output = Result<tonic::Response<Customer>, tonic::Status>> + use<>
    {
        let mut client = self.client();
        let req = TestServer::request(
            &self.token,
            UpdateCustomerRequest {
                customer: Some(Customer {
                    name: customer.name.clone(),
                    notes: "slow".into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["notes".into()],
                }),
                request_id: String::new(),
            },
        );
        async move { client.update_customer(req).await }
    }
}

async fn wait_until_waiting_on_lock(db: &TestDb) {
    // The blocked update shows up in pg_stat_activity as waiting on a lock.
    let until = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let sql = format!(
            "SELECT count(*) AS n FROM pg_stat_activity \
             WHERE wait_event_type = 'Lock' AND application_name = 'crm-core' AND datname = '{}'",
            db.name
        );
        let n = crate::support::count(db, &sql).await;
        if n > 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < until,
            "the update never blocked"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn calls_over_the_concurrency_limit_are_shed_and_health_is_exempt() {
    // Streams hold a permit for their whole life: the suite's own two (WatchJwks and
    // WatchRevocations, which the test server follows) take two, leaving one for calls.
    let s = setup(ServerSettings {
        max_in_flight: 3,
        ..TestServerOptions::default().settings
    })
    .await;
    let c = s.create("Shed").await;
    let locker = s.lock(&s._db.admin_url, &c).await;
    let blocked = tokio::spawn(s.slow_update(&c));
    wait_until_waiting_on_lock(&s._db).await;

    let shed = s
        .client()
        .get_customer(TestServer::request(
            &s.token,
            GetCustomerRequest {
                name: c.name.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(shed.code(), Code::ResourceExhausted, "{shed:?}");
    assert_eq!(reason(&shed), "SERVER_OVERLOADED");
    let details = tonic_types::StatusExt::get_error_details(&shed);
    assert!(details.retry_info().is_some());

    let mut health = tonic_health::pb::health_client::HealthClient::new(s.server.channel.clone());
    health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();

    drop(locker);
    blocked.await.unwrap().unwrap();
    s.client()
        .get_customer(TestServer::request(
            &s.token,
            GetCustomerRequest {
                name: c.name.clone(),
            },
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn shutdown_flips_health_first_and_lets_in_flight_calls_finish() {
    let s = setup(ServerSettings {
        drain_notice: Duration::from_millis(300),
        ..TestServerOptions::default().settings
    })
    .await;
    let c = s.create("Drain").await;
    let locker = s.lock(&s._db.admin_url, &c).await;
    let in_flight = tokio::spawn(s.slow_update(&c));
    wait_until_waiting_on_lock(&s._db).await;

    let mut health = tonic_health::pb::health_client::HealthClient::new(s.server.channel.clone());
    let Setup {
        _db: db, server, ..
    } = s;
    let stopping = tokio::spawn(server.stop());
    let until = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        if status == tonic_health::pb::health_check_response::ServingStatus::NotServing as i32 {
            break;
        }
        assert!(std::time::Instant::now() < until, "health never flipped");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(locker);
    let done = in_flight.await.unwrap().unwrap().into_inner();
    assert_eq!(done.notes, "slow");
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("server stopped")
        .unwrap();
    drop(db);
}

#[tokio::test]
async fn oversized_messages_are_refused_and_request_ids_are_echoed() {
    let s = setup(ServerSettings {
        max_message_bytes: 64 * 1024,
        ..TestServerOptions::default().settings
    })
    .await;
    let big = s
        .client()
        .create_customer(TestServer::request(
            &s.token,
            CreateCustomerRequest {
                parent: s.parent.clone(),
                customer: Some(Customer {
                    display_name: "Big".into(),
                    notes: "x".repeat(100 * 1024),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(big.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{big:?}"
    );

    let mut req = TestServer::request(
        &s.token,
        CreateCustomerRequest {
            parent: s.parent.clone(),
            customer: Some(Customer {
                display_name: "Small".into(),
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    req.metadata_mut()
        .insert("x-request-id", "req-123".parse().unwrap());
    let response = s.client().create_customer(req).await.unwrap();
    assert_eq!(response.metadata().get("x-request-id").unwrap(), "req-123");
    let generated = s
        .client()
        .get_customer(TestServer::request(
            &s.token,
            GetCustomerRequest {
                name: response.into_inner().name,
            },
        ))
        .await
        .unwrap();
    assert!(!generated.metadata().get("x-request-id").unwrap().is_empty());
}

#[tokio::test]
async fn duplicate_customer_id_is_already_exists() {
    let s = setup(TestServerOptions::default().settings).await;
    let id = Uuid::now_v7().to_string();
    let create = || {
        TestServer::request(
            &s.token,
            CreateCustomerRequest {
                parent: s.parent.clone(),
                customer: Some(Customer {
                    display_name: "Twin".into(),
                    ..Default::default()
                }),
                customer_id: id.clone(),
                request_id: String::new(),
            },
        )
    };
    s.client().create_customer(create()).await.unwrap();
    let again = s.client().create_customer(create()).await.unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists);
}

#[tokio::test]
async fn reflection_v1alpha_is_served_too() {
    use tokio_stream::StreamExt;
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;

    let s = setup(TestServerOptions::default().settings).await;
    let mut client = ServerReflectionClient::new(s.server.channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let response = stream.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("{response:?}")
    };
    assert!(
        list.service
            .iter()
            .any(|s| s.name == "crm.core.v1.CustomerService")
    );
}
