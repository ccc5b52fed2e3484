//! Health follows the database; outages fail fast; reflection; deadlines.

use std::time::{Duration, Instant};

use crm_proto::core_v1::{GetCustomerRequest, ListCustomersRequest};
use crm_testkit::TestServer;
use crm_testkit::proxy::TcpProxy;
use crm_testkit::server::TestServerOptions;
use tokio_stream::StreamExt;
use tonic::{Code, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::support::Env;

async fn status_of(server: &TestServer, service: &str) -> ServingStatus {
    let mut client = HealthClient::new(server.channel.clone());
    let response = client
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    ServingStatus::try_from(response.status).unwrap()
}

async fn wait_for(server: &TestServer, service: &str, want: ServingStatus) {
    let until = Instant::now() + Duration::from_secs(15);
    while status_of(server, service).await != want {
        assert!(Instant::now() < until, "{service} never became {want:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn health_follows_the_database_and_calls_fail_fast_while_it_is_gone() {
    let db = crate::support::test_db().await;
    let url = url::Url::parse(&db.app_url("core")).unwrap();
    let host = url.host_str().unwrap().to_owned();
    let target = tokio::net::lookup_host((host.as_str(), url.port().unwrap_or(5432)))
        .await
        .unwrap()
        .next()
        .unwrap();
    let proxy = TcpProxy::start(target).await.unwrap();
    let mut via_proxy = url.clone();
    via_proxy.set_host(Some("127.0.0.1")).unwrap();
    via_proxy.set_port(Some(proxy.addr.port())).unwrap();
    let server = crate::support::start(
        &db,
        TestServerOptions {
            pool_urls: vec![("core", via_proxy.to_string())],
            // The production policy under test: give up on the database after 250 ms.
            acquire_timeout: Duration::from_millis(250),
            ..TestServerOptions::default()
        },
    )
    .await;
    let org = uuid::Uuid::now_v7();
    let token = server.token(org, &["org.admin"]);
    let list = || {
        TestServer::request(
            &token,
            ListCustomersRequest {
                parent: format!("organizations/{org}"),
                ..Default::default()
            },
        )
    };
    let mut client = crm_proto::core_v1::customer_service_client::CustomerServiceClient::new(
        server.channel.clone(),
    );

    wait_for(
        &server,
        "crm.core.v1.CustomerService",
        ServingStatus::Serving,
    )
    .await;
    wait_for(&server, "", ServingStatus::Serving).await;
    client.list_customers(list()).await.unwrap();

    proxy.cut();
    // Calls fail UNAVAILABLE instead of hanging (the pool's acquire timeout is 250 ms; the bound
    // here is loose because CI machines are shared — deploy/bench measures the real number).
    for _ in 0..3 {
        let started = Instant::now();
        let status = client.list_customers(list()).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
    }
    wait_for(
        &server,
        "crm.core.v1.CustomerService",
        ServingStatus::NotServing,
    )
    .await;
    wait_for(&server, "", ServingStatus::NotServing).await;

    proxy.restore();
    wait_for(
        &server,
        "crm.core.v1.CustomerService",
        ServingStatus::Serving,
    )
    .await;
    // Recovered without a restart: a broken pooled connection is discarded, not reused forever.
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        match client.list_customers(list()).await {
            Ok(_) => break,
            Err(s) if s.code() == Code::Unavailable && Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(s) => panic!("did not recover: {s:?}"),
        }
    }
    for _ in 0..10 {
        client.list_customers(list()).await.unwrap();
    }
}

#[tokio::test]
async fn reflection_lists_every_service() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let env = Env::new().await;
    let mut client = ServerReflectionClient::new(env.server.channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    // Every service of the descriptor set is served and listed, plus health and reflection.
    let mut want = crm_proto::json::service_names();
    assert!(want.len() > 20, "descriptor set lists {want:?}");
    want.extend(
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
        ]
        .map(String::from),
    );
    for want in &want {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }

    // The error-detail types are resolvable, so grpcurl can print ErrorInfo and BadRequest.
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(
            "google.rpc.BadRequest".into(),
        )),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.next().await.unwrap().unwrap();
    assert!(
        matches!(
            response.message_response,
            Some(MessageResponse::FileDescriptorResponse(_))
        ),
        "{response:?}"
    );
}

#[tokio::test]
async fn an_expired_deadline_yields_deadline_exceeded_and_no_work_continues() {
    use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
    let env = Env::new().await;
    let c = env.create("Deadline").await;
    let id = c.name.rsplit('/').next().unwrap().to_owned();
    let mut client = env.customers();

    // Hold the row's lock so the update waits past its deadline.
    let mut locker = env.db.admin().await.unwrap();
    locker.batch_execute("BEGIN").await.unwrap();
    diesel::sql_query(format!(
        "SELECT 1 FROM core.customers WHERE id = '{id}' FOR UPDATE"
    ))
    .execute(&mut locker)
    .await
    .unwrap();
    // The server answers a little before the deadline; on a loaded machine the client's own
    // timer (tonic enforces grpc-timeout on its side too) can still fire first, so a few
    // attempts are allowed: one of them must get the server's DEADLINE_EXCEEDED.
    let mut status = Status::ok("");
    for _ in 0..5 {
        let mut req = env.req(crm_proto::core_v1::UpdateCustomerRequest {
            customer: Some(crm_proto::core_v1::Customer {
                name: c.name.clone(),
                notes: "late".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["notes".into()],
            }),
            request_id: String::new(),
        });
        req.set_timeout(Duration::from_millis(400));
        status = client.update_customer(req).await.unwrap_err();
        if status.code() != Code::Cancelled {
            break;
        }
    }
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    locker.batch_execute("COMMIT").await.unwrap();
    drop(locker);

    // The abandoned update did not go on to commit after the lock was released.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let now = client
        .get_customer(env.req(GetCustomerRequest {
            name: c.name.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(now.notes, "");
    assert_eq!(now.etag, c.etag);
    // No connection went back to the pool mid-transaction: every later call works.
    for _ in 0..20 {
        client
            .get_customer(env.req(GetCustomerRequest {
                name: c.name.clone(),
            }))
            .await
            .unwrap();
    }
}
