//! RED metrics: calls made through a real server are counted by method and status code in the
//! `rpc.server.call.duration` histogram, read back as Prometheus text from `/metrics`.

use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::conformance::rpc;
use crate::support::Env;

async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text
}

/// The value of the first sample whose name and labels contain all of `parts`.
fn sample(text: &str, name: &str, parts: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| parts.iter().all(|p| l.contains(p)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn calls_are_counted_by_method_and_code_with_duration_buckets() {
    let env = Env::new().await;
    let customer = env.create("Measured").await.name;
    let s = "crm.core.v1.CustomerService";
    for _ in 0..3 {
        rpc(
            &env,
            &env.token,
            s,
            "GetCustomer",
            json!({"name": customer}),
        )
        .await
        .unwrap();
    }
    let missing = format!("{}/customers/{}", env.parent(), uuid::Uuid::now_v7());
    for _ in 0..2 {
        rpc(&env, &env.token, s, "GetCustomer", json!({"name": missing}))
            .await
            .unwrap_err();
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(crm_platform::metrics::serve_admin(
        listener,
        std::future::pending(),
    ));
    let text = scrape(addr).await;
    let name = "rpc_server_call_duration_seconds";
    assert!(text.contains(&format!("# TYPE {name} histogram")), "{text}");
    let method = "rpc_method=\"GetCustomer\"";
    let service = "rpc_service=\"crm.core.v1.CustomerService\"";
    let ok = "rpc_grpc_status_code=\"0\"";
    let not_found = "rpc_grpc_status_code=\"5\"";
    // Other tests in this process call too: at least ours are there.
    let count = sample(&text, &format!("{name}_count"), &[method, service, ok]).unwrap();
    assert!(count >= 3.0, "{count}");
    let errors = sample(
        &text,
        &format!("{name}_count"),
        &[method, service, not_found],
    )
    .unwrap();
    assert!(errors >= 2.0, "{errors}");
    // Buckets are cumulative and end at the count.
    let buckets: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{name}_bucket{{")))
        .filter(|l| l.contains(method) && l.contains(service) && l.contains(ok))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(buckets.len() > 5, "{buckets:?}");
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    let inf = sample(
        &text,
        &format!("{name}_bucket"),
        &[method, service, ok, "le=\"+Inf\""],
    )
    .unwrap();
    let count_now = sample(&text, &format!("{name}_count"), &[method, service, ok]).unwrap();
    assert!((inf - count_now).abs() < f64::EPSILON);
}

#[tokio::test]
async fn pools_and_event_streams_report_their_gauges() {
    use crm_proto::core_v1::StreamEventsRequest;
    use crm_proto::core_v1::event_service_client::EventServiceClient;
    use tokio_stream::StreamExt as _;

    let env = Env::new().await;
    env.create("Gauged").await;
    let mut events = EventServiceClient::new(env.server.channel.clone());
    let mut stream = events
        .stream_events(env.req(StreamEventsRequest {
            parent: env.parent(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(std::time::Duration::from_secs(30), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(!first.events.is_empty());
    let text = tokio::task::spawn_blocking(crm_platform::metrics::prometheus_text)
        .await
        .unwrap();
    for state in ["idle", "used"] {
        let connections = sample(
            &text,
            "db_client_connection_count",
            &[
                "db_client_connection_pool_name=\"core\"",
                &format!("db_client_connection_state=\"{state}\""),
            ],
        );
        assert!(connections.is_some_and(|n| n >= 0.0), "{state}: {text}");
    }
    // The call above checked a connection out: the pool has made at least one.
    let total: f64 = ["idle", "used"]
        .iter()
        .filter_map(|s| {
            sample(
                &text,
                "db_client_connection_count",
                &[
                    "db_client_connection_pool_name=\"core\"",
                    &format!("db_client_connection_state=\"{s}\""),
                ],
            )
        })
        .sum();
    assert!(total >= 1.0, "{text}");
    assert!(
        sample(
            &text,
            "db_client_connection_timeouts_total",
            &["db_client_connection_pool_name=\"core\""]
        )
        .is_some(),
        "{text}"
    );
    let lag = sample(
        &text,
        "crm_events_consumer_lag_seconds",
        &[
            "messaging_consumer_group_name=\"watch-events\"",
            "messaging_destination_name=\"core.crm\"",
        ],
    );
    assert!(lag.is_some_and(|s| s >= 0.0), "{text}");
    // The server's copy of the revocations heard from identity within the feed's freshness.
    let revocations = sample(
        &text,
        "crm_events_consumer_lag_seconds",
        &[
            "messaging_consumer_group_name=\"revocation-follower\"",
            "messaging_destination_name=\"identity.revocations\"",
        ],
    );
    assert!(
        revocations.is_some_and(|s| (0.0..300.0).contains(&s)),
        "{text}"
    );
    drop(stream);
}

#[tokio::test]
async fn gateway_requests_are_measured_by_route_template_and_status() {
    let env = Env::new().await;
    let router = crm_gateway::router(env.server.channel.clone()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw = listener.local_addr().unwrap();
    tokio::spawn(crm_gateway::serve(listener, router, std::future::pending()));
    let get = |target: String| {
        let token = env.token.clone();
        async move {
            let mut stream = tokio::net::TcpStream::connect(gw).await.unwrap();
            let request = format!(
                "GET {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\
                 Authorization: Bearer {token}\r\n\r\n"
            );
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut raw = Vec::new();
            stream.read_to_end(&mut raw).await.unwrap();
            String::from_utf8_lossy(&raw).to_string()
        }
    };
    let listed = get(format!("/v1/{}/customers", env.parent())).await;
    assert!(listed.starts_with("HTTP/1.1 200"), "{listed}");
    let nowhere = get(format!("/v1/nowhere/{}", uuid::Uuid::now_v7())).await;
    assert!(nowhere.starts_with("HTTP/1.1 404"), "{nowhere}");
    assert!(get("/healthz".to_owned()).await.starts_with("HTTP/1.1 200"));
    let text = tokio::task::spawn_blocking(crm_platform::metrics::prometheus_text)
        .await
        .unwrap();
    let name = "http_server_request_duration_seconds_count";
    let list = sample(
        &text,
        name,
        &[
            "http_request_method=\"GET\"",
            "http_response_status_code=\"200\"",
            "http_route=\"/v1/{parent=organizations/*}/customers\"",
        ],
    );
    assert!(list.is_some_and(|n| n >= 1.0), "{text}");
    let health = sample(&text, name, &["http_route=\"/healthz\""]);
    assert!(health.is_some_and(|n| n >= 1.0), "{text}");
    // An unknown path is counted without a route: one series, not one per path.
    assert!(
        !text.contains("nowhere"),
        "a path that matched no route became a label"
    );
    let unrouted = text
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| l.contains("http_response_status_code=\"404\"") && !l.contains("http_route"));
    assert!(unrouted.is_some(), "{text}");
}
