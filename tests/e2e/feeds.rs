//! The revocation feed and the event stream as security-relevant, bounded feeds: credential,
//! caps, permits held for a stream's life, fail-closed freshness, commit-order with txids that
//! cross a power of ten, prompt ends at shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crm_auth::remote::SERVICE_KEY_HEADER;
use crm_platform::ServerSettings;
use crm_proto::core_v1::event_service_client::EventServiceClient;
use crm_proto::core_v1::{GetCustomerRequest, ListCustomersRequest, StreamEventsRequest};
use crm_proto::identity_v1::revocation_service_client::RevocationServiceClient;
use crm_proto::identity_v1::{WatchRevocationsRequest, WatchRevocationsResponse};
use crm_testkit::server::TestServerOptions;
use crm_testkit::{TestDb, TestServer};
use diesel_async::SimpleAsyncConnection;
use tonic::Code;
use uuid::Uuid;

use crate::support::reason;

fn watch(key: Option<&str>, cursor: &str) -> tonic::Request<WatchRevocationsRequest> {
    let mut req = tonic::Request::new(WatchRevocationsRequest {
        cursor: cursor.to_owned(),
    });
    if let Some(k) = key {
        req.metadata_mut()
            .insert(SERVICE_KEY_HEADER, k.parse().unwrap());
    }
    req
}

async fn start(options: TestServerOptions) -> (TestDb, TestServer) {
    let db = crate::support::test_db().await;
    let server = crate::support::start(&db, options).await;
    (db, server)
}

#[tokio::test]
async fn the_revocation_feed_wants_the_service_credential_and_caps_streams_per_address() {
    let (_db, server) = start(TestServerOptions::default()).await;
    let mut client = RevocationServiceClient::new(server.channel.clone());
    for key in [None, Some("not-the-key")] {
        let refused = client.watch_revocations(watch(key, "")).await.unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
        assert_eq!(reason(&refused), "SERVICE_CREDENTIAL_REQUIRED");
    }
    // A person's access token is not a service credential either.
    let token = server.token(Uuid::now_v7(), &["org.admin"]);
    let refused = client
        .watch_revocations(TestServer::request(
            &token,
            WatchRevocationsRequest::default(),
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "SERVICE_CREDENTIAL_REQUIRED");

    // The server's own follower holds one stream from 127.0.0.1; seven more fit, then no more.
    let mut open = Vec::new();
    for _ in 0..7 {
        let mut stream = client
            .watch_revocations(watch(Some(&server.service_key), ""))
            .await
            .unwrap()
            .into_inner();
        stream
            .message()
            .await
            .unwrap()
            .expect("a first batch at once");
        open.push(stream);
    }
    let capped = client
        .watch_revocations(watch(Some(&server.service_key), ""))
        .await;
    let capped = match capped {
        Err(s) => s,
        Ok(r) => r.into_inner().message().await.unwrap_err(),
    };
    assert_eq!(capped.code(), Code::ResourceExhausted, "{capped:?}");
    assert_eq!(reason(&capped), "TOO_MANY_STREAMS");
    // Closing one gives its place back.
    drop(open.pop());
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        match client
            .watch_revocations(watch(Some(&server.service_key), ""))
            .await
        {
            Ok(_) => break,
            Err(s) if Instant::now() < until && s.code() == Code::ResourceExhausted => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(s) => panic!("place not given back: {s:?}"),
        }
    }
}

#[tokio::test]
async fn revocations_whose_txids_straddle_a_power_of_ten_come_in_number_order() {
    let (db, server) = start(TestServerOptions::default()).await;
    let mut admin = db.admin().await.unwrap();
    let boundary = crate::outbox::power_of_ten_below_current_xid(&mut admin).await;
    let txids = [boundary + 1, boundary - 2, boundary, boundary - 1];
    for (i, txid) in txids.iter().enumerate() {
        admin
            .batch_execute(&format!(
                "INSERT INTO identity.revocations (txid, kind, value, expire_time) \
                 VALUES ('{txid}'::xid8, 2, 'jti-{txid}-{i}', now() + interval '10 minutes')"
            ))
            .await
            .unwrap();
    }
    let mut client = RevocationServiceClient::new(server.channel.clone());
    let mut stream = client
        .watch_revocations(watch(Some(&server.service_key), ""))
        .await
        .unwrap()
        .into_inner();
    let mut seen: Vec<u64> = Vec::new();
    let until = Instant::now() + Duration::from_secs(10);
    while seen.len() < 4 && Instant::now() < until {
        let batch: WatchRevocationsResponse = stream.message().await.unwrap().unwrap();
        seen.extend(batch.revocations.iter().filter_map(|r| {
            r.value
                .strip_prefix("jti-")
                .and_then(|v| v.split('-').next())
                .and_then(|v| v.parse::<u64>().ok())
        }));
    }
    assert_eq!(seen, [boundary - 2, boundary - 1, boundary, boundary + 1]);
}

#[tokio::test]
async fn a_silent_revocation_feed_stops_authenticated_calls_and_health_until_it_speaks_again() {
    let (db, server) = start(TestServerOptions {
        revocation_max_lag: Duration::from_secs(1),
        ..TestServerOptions::default()
    })
    .await;
    let org = Uuid::now_v7();
    let token = server.token(org, &["org.admin"]);
    let list = || {
        let mut customers = crm_proto::core_v1::customer_service_client::CustomerServiceClient::new(
            server.channel.clone(),
        );
        let req = TestServer::request(
            &token,
            ListCustomersRequest {
                parent: format!("organizations/{org}"),
                ..Default::default()
            },
        );
        async move { customers.list_customers(req).await }
    };
    // The feed heartbeats every 15 s; past the allowed 1 s of silence nothing is trusted. (That
    // calls are served right after the first batch is the unit test of the set: on a loaded
    // machine more than a second may pass before this test's first call.)
    let until = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        match list().await {
            Err(s) => break s,
            Ok(_) if Instant::now() < until => tokio::time::sleep(Duration::from_millis(100)).await,
            Ok(_) => panic!("served with a stale revocation feed"),
        }
    };
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert_eq!(reason(&refused), "REVOCATIONS_STALE");
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel.clone());
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "crm.core.v1.CustomerService".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        if status == tonic_health::pb::health_check_response::ServingStatus::NotServing as i32 {
            break;
        }
        assert!(Instant::now() < until, "health stayed SERVING");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A revocation (written by another replica, say) makes the feed speak: calls are served
    // again.
    let mut admin = db.admin().await.unwrap();
    admin
        .batch_execute(
            "BEGIN; INSERT INTO identity.revocations (kind, value, expire_time) \
             VALUES (2, 'some-jti', now() + interval '10 minutes'); \
             SELECT pg_notify('crm_revocations', ''); COMMIT",
        )
        .await
        .unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    while let Err(s) = list().await {
        assert!(Instant::now() < until, "still refused: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_stream_holds_a_permit_for_its_life() {
    let (_db, server) = start(TestServerOptions {
        settings: ServerSettings {
            // Two for the suite's own follower streams, one for the stream under test, one call.
            max_in_flight: 4,
            ..TestServerOptions::default().settings
        },
        ..TestServerOptions::default()
    })
    .await;
    let org = Uuid::now_v7();
    let token = server.token(org, &["org.admin"]);
    let get = || {
        let mut customers = crm_proto::core_v1::customer_service_client::CustomerServiceClient::new(
            server.channel.clone(),
        );
        let req = TestServer::request(
            &token,
            GetCustomerRequest {
                name: format!("organizations/{org}/customers/{}", Uuid::now_v7()),
            },
        );
        async move { customers.get_customer(req).await }
    };
    let open = || {
        let mut events = EventServiceClient::new(server.channel.clone());
        let req = TestServer::request(
            &token,
            StreamEventsRequest {
                parent: format!("organizations/{org}"),
                ..Default::default()
            },
        );
        async move { events.stream_events(req).await.unwrap().into_inner() }
    };
    let first = open().await;
    assert_eq!(
        get().await.unwrap_err().code(),
        Code::NotFound,
        "one permit left"
    );
    let second = open().await;
    let shed = get().await.unwrap_err();
    assert_eq!(shed.code(), Code::ResourceExhausted, "{shed:?}");
    assert_eq!(reason(&shed), "SERVER_OVERLOADED");
    // The refusal is counted, and the gauges show the calls held open.
    let text = tokio::task::spawn_blocking(crm_platform::metrics::prometheus_text)
        .await
        .unwrap();
    let value = |name: &str, parts: &[&str]| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(name))
            .find(|l| parts.iter().all(|p| l.contains(p)))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} {parts:?} in {text}"))
    };
    assert!(value("rpc_server_shed_total", &["rpc_method=\"GetCustomer\""]) >= 1.0);
    assert!(value("rpc_server_active_requests", &[]) >= 2.0);
    assert!(value("rpc_server_concurrency_limit", &[]) >= 2.0);
    drop(second);
    drop(first);
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        match get().await {
            Err(s) if s.code() == Code::NotFound => break,
            Err(s) if s.code() == Code::ResourceExhausted && Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => panic!("permits not given back: {other:?}"),
        }
    }
}

#[tokio::test]
async fn shutdown_ends_open_streams_at_once_with_a_reconnect_status() {
    let (_db, server) = start(TestServerOptions {
        settings: ServerSettings {
            drain_notice: Duration::from_millis(100),
            drain_timeout: Duration::from_secs(30),
            ..TestServerOptions::default().settings
        },
        ..TestServerOptions::default()
    })
    .await;
    let org = Uuid::now_v7();
    let token = server.token(org, &["org.admin"]);
    let mut events = EventServiceClient::new(server.channel.clone());
    let mut stream = events
        .stream_events(TestServer::request(
            &token,
            StreamEventsRequest {
                parent: format!("organizations/{org}"),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut revocations = RevocationServiceClient::new(server.channel.clone())
        .watch_revocations(watch(Some(&server.service_key), ""))
        .await
        .unwrap()
        .into_inner();
    revocations.message().await.unwrap();
    let started = Instant::now();
    let stopping = tokio::spawn(server.stop());
    let ended = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("the stream ended")
        .unwrap_err();
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    assert_eq!(reason(&ended), "SERVER_DRAINING");
    let ended = loop {
        match revocations.message().await {
            Ok(Some(_)) => {}
            Ok(None) => panic!("ended without a status"),
            Err(s) => break s,
        }
    };
    assert_eq!(reason(&ended), "SERVER_DRAINING");
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("the server stopped")
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "shutdown took {:?}: it waited for the 30 s drain timeout",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_notification_from_another_connection_wakes_the_listener() {
    let db = crate::support::test_db().await;
    let pool = crm_db::pool::build(&crm_db::pool::PoolSettings::new(db.app_url("core"), "core"));
    let wake = Arc::new(tokio::sync::Notify::new());
    let _listener =
        crm_db::notify::spawn_listener(pool, "crm_test_channel".to_owned(), Arc::clone(&wake));
    let mut other = db.app("core").await.unwrap();
    // Announce until heard: the listener may still be connecting.
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let woken = wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        other
            .batch_execute("BEGIN; SELECT pg_notify('crm_test_channel', ''); COMMIT")
            .await
            .unwrap();
        if tokio::time::timeout(Duration::from_millis(200), woken)
            .await
            .is_ok()
        {
            break;
        }
        assert!(Instant::now() < until, "never woken");
    }
}

#[tokio::test]
async fn the_public_key_set_stream_is_capped_per_address() {
    use crm_proto::identity_v1::WatchJwksRequest;
    use crm_proto::identity_v1::key_service_client::KeyServiceClient;

    let (_db, server) = start(TestServerOptions::default()).await;
    let mut client = KeyServiceClient::new(server.channel.clone());
    // The server's own follower holds one from 127.0.0.1; seven more fit.
    let mut open = Vec::new();
    for _ in 0..7 {
        let mut stream = client
            .watch_jwks(WatchJwksRequest {})
            .await
            .unwrap()
            .into_inner();
        stream
            .message()
            .await
            .unwrap()
            .expect("the key set at once");
        open.push(stream);
    }
    let capped = match client.watch_jwks(WatchJwksRequest {}).await {
        Err(s) => s,
        Ok(r) => r.into_inner().message().await.unwrap_err(),
    };
    assert_eq!(capped.code(), Code::ResourceExhausted, "{capped:?}");
    assert_eq!(reason(&capped), "TOO_MANY_STREAMS");
}
