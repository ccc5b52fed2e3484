//! The HTTP/JSON gateway against the real suite: path, query and body binding (nested path
//! fields, custom verbs, repeated and boolean query parameters, enums by name, an update mask
//! derived from a PATCH body), answers equal to the gRPC call's, AIP-193 errors with the HTTP
//! status of their code, and newline-delimited JSON for a server stream.

use prost_reflect::{DynamicMessage, SerializeOptions};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::conformance::rpc;
use crate::support::{Env, Suite as _};

/// The gateway in front of `env`'s server, on 127.0.0.1:0.
async fn gateway(env: &Env) -> std::net::SocketAddr {
    let router = crm_gateway::router(env.server.channel.clone()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(crm_gateway::serve(listener, router, std::future::pending()));
    addr
}

/// An HTTP/1.1 answer: status, headers (lowercase names), body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One request on its own connection (`Connection: close`, read to the end).
async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    target: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Answer {
    let mut headers = vec!["Content-Type: application/json".to_owned()];
    if let Some(t) = token {
        headers.push(format!("Authorization: Bearer {t}"));
    }
    send(addr, method, target, &headers, body.unwrap_or("")).await
}

/// A form post with `headers` besides the content type.
async fn form(addr: std::net::SocketAddr, target: &str, headers: &[String], body: &str) -> Answer {
    let mut all = vec!["Content-Type: application/x-www-form-urlencoded".to_owned()];
    all.extend(headers.iter().cloned());
    send(addr, "POST", target, &all, body).await
}

async fn send(
    addr: std::net::SocketAddr,
    method: &str,
    target: &str,
    headers: &[String],
    body: &str,
) -> Answer {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{extra}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v == "chunked")
    {
        body = dechunk(&body);
    }
    Answer {
        status,
        headers,
        body,
    }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = raw.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(String::from_utf8_lossy(&raw[..end]).trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        let data = &raw[end + 2..];
        if data.len() < size + 2 {
            // A stream still open: its last chunk so far.
            out.extend_from_slice(&data[..size.min(data.len())]);
            return out;
        }
        out.extend_from_slice(&data[..size]);
        raw = &data[size + 2..];
    }
}

/// The gateway's camelCase JSON of `service/method`'s output, as the proto-named JSON the
/// gRPC helper answers (so the two compare field by field).
fn proto_named(service: &str, method: &str, v: &Value) -> Value {
    let pool = crm_proto::json::pool().unwrap();
    let m = pool
        .get_service_by_name(service)
        .unwrap()
        .methods()
        .find(|m| m.name() == method)
        .unwrap();
    let message = DynamicMessage::deserialize(m.output(), v.clone()).unwrap();
    message
        .serialize_with_options(
            serde_json::value::Serializer,
            &SerializeOptions::new().use_proto_field_name(true),
        )
        .unwrap()
}

const CUSTOMERS: &str = "crm.core.v1.CustomerService";

#[tokio::test]
async fn customers_over_http_bind_path_query_and_body_and_answer_as_grpc_does() {
    let env = Env::new().await;
    let gw = gateway(&env).await;
    let t = Some(env.token.as_str());
    let parent = env.parent();

    let created = http(gw, "POST", &format!("/v1/{parent}/customers"), t,
        Some(r#"{"displayName":"Lakeside Cafe","kind":"CUSTOMER_KIND_FOOD_SERVICE","phone":"+15125550142"}"#))
    .await;
    assert_eq!(
        created.status,
        200,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    assert_eq!(created.header("content-type"), Some("application/json"));
    let c = created.json();
    let name = c["name"].as_str().unwrap().to_owned();
    assert_eq!(c["displayName"], "Lakeside Cafe");
    assert_eq!(c["kind"], "CUSTOMER_KIND_FOOD_SERVICE");

    // GET by its nested name equals the gRPC answer.
    let got = http(gw, "GET", &format!("/v1/{name}"), t, None).await;
    assert_eq!(got.status, 200);
    let grpc = rpc(
        &env,
        &env.token,
        CUSTOMERS,
        "GetCustomer",
        json!({"name": name}),
    )
    .await
    .unwrap();
    assert_eq!(proto_named(CUSTOMERS, "GetCustomer", &got.json()), grpc);

    // PATCH without update_mask changes what the body names, and only that.
    let patched = http(
        gw,
        "PATCH",
        &format!("/v1/{name}"),
        t,
        Some(r#"{"displayName":"Lakeside Café"}"#),
    )
    .await;
    assert_eq!(
        patched.status,
        200,
        "{}",
        String::from_utf8_lossy(&patched.body)
    );
    let p = patched.json();
    assert_eq!(p["displayName"], "Lakeside Café");
    assert_eq!(
        (p["phone"].as_str(), p["kind"].as_str()),
        (Some("+15125550142"), Some("CUSTOMER_KIND_FOOD_SERVICE"))
    );
    // With an explicit mask in the query, an empty phone is cleared.
    let cleared = http(
        gw,
        "PATCH",
        &format!("/v1/{name}?updateMask=phone"),
        t,
        Some(r#"{"displayName":"ignored"}"#),
    )
    .await;
    assert_eq!(
        cleared.status,
        200,
        "{}",
        String::from_utf8_lossy(&cleared.body)
    );
    assert_eq!(cleared.json()["displayName"], "Lakeside Café");
    assert!(cleared.json().get("phone").is_none());

    // DELETE, then the custom verb :undelete; a boolean query parameter shows the deleted.
    assert_eq!(
        http(gw, "DELETE", &format!("/v1/{name}"), t, None)
            .await
            .status,
        200
    );
    let hidden = http(
        gw,
        "GET",
        &format!("/v1/{parent}/customers?pageSize=10"),
        t,
        None,
    )
    .await;
    assert!(
        hidden.json().get("customers").is_none(),
        "{}",
        hidden.json()
    );
    let shown = http(
        gw,
        "GET",
        &format!(
            "/v1/{parent}/customers?showDeleted=true&filter=kind%20%3D%20CUSTOMER_KIND_FOOD_SERVICE"
        ),
        t,
        None,
    )
    .await;
    assert_eq!(
        shown.json()["customers"].as_array().map(Vec::len),
        Some(1),
        "{}",
        shown.json()
    );
    let undeleted = http(gw, "POST", &format!("/v1/{name}:undelete"), t, Some("{}")).await;
    assert_eq!(
        undeleted.status,
        200,
        "{}",
        String::from_utf8_lossy(&undeleted.body)
    );
    assert!(undeleted.json().get("deleteTime").is_none());

    // A page size in the query and the page token it gives.
    for n in 0..3 {
        let body = format!(r#"{{"displayName":"Customer {n}"}}"#);
        http(
            gw,
            "POST",
            &format!("/v1/{parent}/customers"),
            t,
            Some(&body),
        )
        .await;
    }
    let page = http(
        gw,
        "GET",
        &format!("/v1/{parent}/customers?pageSize=2&orderBy=display_name"),
        t,
        None,
    )
    .await;
    let page = page.json();
    assert_eq!(page["customers"].as_array().map(Vec::len), Some(2));
    let token = page["nextPageToken"].as_str().unwrap();
    let next = http(
        gw,
        "GET",
        &format!("/v1/{parent}/customers?pageSize=2&orderBy=display_name&pageToken={token}"),
        t,
        None,
    )
    .await;
    assert_eq!(next.status, 200);
    assert_eq!(next.json()["customers"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn errors_are_aip_193_json_with_the_http_status_of_their_code() {
    let env = Env::new().await;
    let gw = gateway(&env).await;
    let t = Some(env.token.as_str());
    let parent = env.parent();
    let customers = format!("/v1/{parent}/customers");

    let invalid = http(gw, "POST", &customers, t, Some(r#"{"displayName":""}"#)).await;
    assert_eq!(invalid.status, 400);
    let e = &invalid.json()["error"];
    assert_eq!(
        (e["code"].as_u64(), e["status"].as_str()),
        (Some(400), Some("INVALID_ARGUMENT"))
    );
    let violations: Vec<&str> = e["details"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["@type"] == "type.googleapis.com/google.rpc.BadRequest")
        .flat_map(|d| d["fieldViolations"].as_array().unwrap())
        .map(|v| v["field"].as_str().unwrap())
        .collect();
    assert_eq!(violations, ["customer.display_name"]);

    // The request id goes through to the service and comes back, given or made there.
    for target in [
        customers.clone(),
        format!("{customers}/{}", uuid::Uuid::now_v7()),
    ] {
        let given = send(
            gw,
            "GET",
            &target,
            &[
                format!("Authorization: Bearer {}", env.token),
                "X-Request-Id: support-ticket-4711".to_owned(),
            ],
            "",
        )
        .await;
        assert_eq!(given.header("x-request-id"), Some("support-ticket-4711"));
    }
    let made = http(gw, "GET", &customers, t, None).await;
    assert!(made.header("x-request-id").is_some_and(|v| v.len() >= 16));

    let anonymous = http(gw, "GET", &customers, None, None).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.json()["error"]["status"], "UNAUTHENTICATED");
    let info = &anonymous.json()["error"]["details"][0];
    assert_eq!(info["@type"], "type.googleapis.com/google.rpc.ErrorInfo");
    assert!(info["reason"].as_str().is_some_and(|r| !r.is_empty()));

    let missing = format!("/v1/{parent}/customers/{}", uuid::Uuid::now_v7());
    let not_found = http(gw, "GET", &missing, t, None).await;
    assert_eq!(
        (
            not_found.status,
            not_found.json()["error"]["status"].as_str()
        ),
        (404, Some("NOT_FOUND"))
    );

    let foreign = format!("/v1/organizations/{}/customers", uuid::Uuid::now_v7());
    let other = http(gw, "GET", &foreign, t, None).await;
    assert_eq!(other.status, 403, "{}", other.json());

    // What the gateway refuses itself: unknown fields and parameters, bad JSON, no route.
    for (method, target, body) in [
        (
            "POST",
            customers.clone(),
            Some(r#"{"displayName":"x","nope":1}"#),
        ),
        ("GET", format!("{customers}?nope=1"), None),
        ("GET", format!("{customers}?showDeleted=maybe"), None),
        ("GET", format!("{customers}?pageSize=many"), None),
        ("POST", customers.clone(), Some("{not json")),
        ("POST", customers.clone(), Some("[1]")),
        ("GET", missing.clone(), Some(r#"{"a":1}"#)),
    ] {
        let a = http(gw, method, &target, t, body).await;
        assert_eq!(
            a.status,
            400,
            "{method} {target} {body:?}: {}",
            String::from_utf8_lossy(&a.body)
        );
        assert_eq!(a.json()["error"]["status"], "INVALID_ARGUMENT");
    }
    let nowhere = http(gw, "GET", "/v1/nowhere", t, None).await;
    assert_eq!(
        (nowhere.status, nowhere.json()["error"]["status"].as_str()),
        (404, Some("NOT_FOUND"))
    );
    let wrong_verb = http(gw, "PUT", &customers, t, Some("{}")).await;
    assert_eq!(wrong_verb.status, 405);
    // Nothing of the refused requests was written.
    let list = http(gw, "GET", &customers, t, None).await;
    assert!(list.json().get("customers").is_none(), "{}", list.json());
}

#[tokio::test]
async fn hostile_requests_are_refused_whole_and_write_nothing() {
    let env = Env::new().await;
    let gw = gateway(&env).await;
    let t = Some(env.token.as_str());
    let customers = format!("/v1/{}/customers", env.parent());
    let refused = |a: &Answer, want: u16| {
        assert_eq!(
            a.status,
            want,
            "{}",
            String::from_utf8_lossy(&a.body[..a.body.len().min(400)])
        );
        assert!(a.json()["error"]["status"].is_string(), "AIP-193 shape");
    };
    // A NUL byte in a string (valid JSON) is the service's to refuse, with the field named.
    let nul = http(
        gw,
        "POST",
        &customers,
        t,
        Some(r#"{"displayName":"Bad\u0000Name"}"#),
    )
    .await;
    refused(&nul, 400);
    assert!(
        nul.json().to_string().contains("display_name"),
        "{}",
        nul.json()
    );
    // Nesting deeper than any message, in a field the message has (not an unknown one):
    // refused by the parser, not a stack overflow.
    let deep = format!(
        "{{\"displayName\":{}1{}}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    refused(&http(gw, "POST", &customers, t, Some(&deep)).await, 400);
    // Over the body limit.
    let huge = format!(
        r#"{{"displayName":"{}"}}"#,
        "x".repeat(crm_gateway::MAX_BODY + 1)
    );
    refused(&http(gw, "POST", &customers, t, Some(&huge)).await, 413);
    // A megabyte name under the limit: the service's length rule answers.
    let long = format!(r#"{{"displayName":"{}"}}"#, "x".repeat(1 << 20));
    refused(&http(gw, "POST", &customers, t, Some(&long)).await, 400);
    // Percent-encoded NUL and garbage in a resource name.
    refused(
        &http(gw, "GET", &format!("{customers}/%00"), t, None).await,
        400,
    );
    refused(
        &http(gw, "GET", &format!("{customers}/not-a-uuid"), t, None).await,
        400,
    );
    // A timeout that is no number of seconds.
    for timeout in ["-1", "NaN", "1e309", "soon"] {
        let a = send(
            gw,
            "GET",
            &customers,
            &[
                format!("Authorization: Bearer {}", env.token),
                format!("X-Server-Timeout: {timeout}"),
            ],
            "",
        )
        .await;
        refused(&a, 400);
    }
    // Nothing of it was written.
    let list = http(gw, "GET", &customers, t, None).await;
    assert!(list.json().get("customers").is_none(), "{}", list.json());
}

#[tokio::test]
async fn a_stale_etag_an_overloaded_server_and_an_unreachable_service_are_409_429_503() {
    // ABORTED: an update carrying the etag of a revision that has since changed.
    let env = Env::new().await;
    let gw = gateway(&env).await;
    let t = Some(env.token.as_str());
    let created = http(
        gw,
        "POST",
        &format!("/v1/{}/customers", env.parent()),
        t,
        Some(r#"{"displayName":"Etag Diner"}"#),
    )
    .await
    .json();
    let name = created["name"].as_str().unwrap().to_owned();
    let old = created["etag"].as_str().unwrap().to_owned();
    let first = http(
        gw,
        "PATCH",
        &format!("/v1/{name}"),
        t,
        Some(&json!({"displayName": "Etag Diner II", "etag": old}).to_string()),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.json());
    let stale = http(
        gw,
        "PATCH",
        &format!("/v1/{name}"),
        t,
        Some(&json!({"displayName": "Etag Diner III", "etag": old}).to_string()),
    )
    .await;
    assert_eq!(
        (stale.status, stale.json()["error"]["status"].as_str()),
        (409, Some("ABORTED")),
        "{}",
        stale.json()
    );
    let now = http(gw, "GET", &format!("/v1/{name}"), t, None)
        .await
        .json();
    assert_eq!(
        now["displayName"], "Etag Diner II",
        "the stale write changed nothing"
    );

    // UNAVAILABLE: the service behind the gateway is not there.
    let dead = tonic::transport::Channel::from_static("http://127.0.0.1:1").connect_lazy();
    let router = crm_gateway::router(dead).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cut_off = listener.local_addr().unwrap();
    tokio::spawn(crm_gateway::serve(listener, router, std::future::pending()));
    let gone = http(cut_off, "GET", &format!("/v1/{name}"), t, None).await;
    assert_eq!(
        (gone.status, gone.json()["error"]["status"].as_str()),
        (503, Some("UNAVAILABLE")),
        "{}",
        gone.json()
    );

    // RESOURCE_EXHAUSTED: a server at its concurrency limit sheds the call; the retry delay
    // becomes Retry-After.
    let db = crate::support::test_db().await;
    let server = crate::support::start(
        &db,
        crm_testkit::server::TestServerOptions {
            settings: crm_platform::ServerSettings {
                // The suite's own two follower streams, and the stream opened below.
                max_in_flight: 3,
                ..crm_testkit::server::TestServerOptions::default().settings
            },
            ..crm_testkit::server::TestServerOptions::default()
        },
    )
    .await;
    let org = uuid::Uuid::now_v7();
    let token = server.token(org, &["org.admin"]);
    let router = crm_gateway::router(server.channel.clone()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let busy = listener.local_addr().unwrap();
    tokio::spawn(crm_gateway::serve(listener, router, std::future::pending()));
    let mut events =
        crm_proto::core_v1::event_service_client::EventServiceClient::new(server.channel.clone());
    let _held = events
        .stream_events(crm_testkit::TestServer::request(
            &token,
            crm_proto::core_v1::StreamEventsRequest {
                parent: format!("organizations/{org}"),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let shed = http(
        busy,
        "GET",
        &format!("/v1/organizations/{org}/customers"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(
        (shed.status, shed.json()["error"]["status"].as_str()),
        (429, Some("RESOURCE_EXHAUSTED")),
        "{}",
        shed.json()
    );
    let retry: u64 = shed.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
}

/// Opens `parent`'s event stream through the gateway (with `accept` when given) and reads until
/// the created customer's event has come: the raw response.
async fn read_stream(gw: std::net::SocketAddr, env: &Env, accept: Option<&str>) -> Vec<u8> {
    let mut stream = tokio::net::TcpStream::connect(gw).await.unwrap();
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "GET /v1/{}/events:stream HTTP/1.1\r\nHost: test\r\n{accept}Authorization: Bearer {}\r\n\r\n",
        env.parent(),
        env.token
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !String::from_utf8_lossy(&raw).contains("Customer.created") {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .expect("the first batch in time")
            .unwrap();
        assert_ne!(n, 0, "closed early: {}", String::from_utf8_lossy(&raw));
        raw.extend_from_slice(&buf[..n]);
    }
    raw
}

#[tokio::test]
async fn a_server_stream_is_newline_delimited_json_or_server_sent_events() {
    let env = Env::new().await;
    let gw = gateway(&env).await;
    http(
        gw,
        "POST",
        &format!("/v1/{}/customers", env.parent()),
        Some(env.token.as_str()),
        Some(r#"{"displayName":"Streamed"}"#),
    )
    .await;
    // The stream stays open for new events: read what arrives within a moment.
    let raw = read_stream(gw, &env, None).await;
    let text = String::from_utf8_lossy(&raw).to_string();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.to_lowercase()
            .contains("content-type: application/x-ndjson"),
        "{text}"
    );
    let body = dechunk(&raw[raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..]);
    let first = String::from_utf8_lossy(&body)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    let batch: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(
        batch["events"][0]["type"], "crm.core.v1.Customer.created",
        "{batch}"
    );

    // A browser's EventSource asks for server-sent events: the same batches as `data:` events.
    let raw = read_stream(gw, &env, Some("text/event-stream")).await;
    let text = String::from_utf8_lossy(&raw).to_string();
    assert!(
        text.to_lowercase()
            .contains("content-type: text/event-stream"),
        "{text}"
    );
    let body = dechunk(&raw[raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..]);
    let body = String::from_utf8_lossy(&body).to_string();
    let event = body.split("\n\n").next().unwrap();
    let data = event.strip_prefix("data: ").expect("a data event");
    let batch: Value = serde_json::from_str(data).unwrap();
    assert_eq!(
        batch["events"][0]["type"], "crm.core.v1.Customer.created",
        "{batch}"
    );
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn oauth_grants_over_http_with_basic_and_body_client_authentication() {
    use base64::Engine as _;
    use crm_proto::identity_v1::api_client_service_client::ApiClientServiceClient;
    use crm_proto::identity_v1::key_service_client::KeyServiceClient;
    use crm_proto::identity_v1::{ApiClient, CreateApiClientRequest, GetJwksRequest};
    let env = Env::new().await;
    let gw = gateway(&env).await;
    let (email, password) = (
        format!("owner-{}@example.com", uuid::Uuid::now_v7().simple()),
        "a long enough password",
    );
    crm_identity::bootstrap::ensure_member(
        &env.server.identity().pool,
        &env.server.identity().hasher,
        &crm_identity::bootstrap::Member {
            org: env.org,
            org_display_name: "Gateway Inc",
            email: &email,
            password,
            roles: &["org.admin"],
            reset_password: false,
        },
    )
    .await
    .unwrap();
    let login = http(
        gw,
        "POST",
        "/v1/auth:login",
        None,
        Some(
            &json!({
        "email": email, "password": password, "organization": env.parent()})
            .to_string(),
        ),
    )
    .await;
    assert_eq!(
        login.status,
        200,
        "{}",
        String::from_utf8_lossy(&login.body)
    );
    let admin = login.json()["accessToken"].as_str().unwrap().to_owned();
    let redirect = "https://app.example/callback";
    let created = ApiClientServiceClient::new(env.server.channel.clone())
        .create_api_client(crm_testkit::TestServer::request(
            &admin,
            CreateApiClientRequest {
                parent: env.parent(),
                api_client: Some(ApiClient {
                    display_name: "Route planner".into(),
                    roles: vec!["crm.viewer".into()],
                    redirect_uris: vec![redirect.into()],
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let id = created.api_client.unwrap().client_id;
    let secret = created.client_secret;
    let basic = |id: &str, secret: &str| {
        format!(
            "Authorization: Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                enc(id),
                enc(secret)
            ))
        )
    };

    // client_credentials, by Basic and in the body; the token reads customers over HTTP.
    let by_basic = form(
        gw,
        "/oauth/token",
        &[basic(&id, &secret)],
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!(
        by_basic.status,
        200,
        "{}",
        String::from_utf8_lossy(&by_basic.body)
    );
    assert_eq!(by_basic.header("cache-control"), Some("no-store"));
    let t = by_basic.json();
    assert_eq!(t["token_type"], "Bearer");
    let client_token = t["access_token"].as_str().unwrap().to_owned();
    let listed = http(
        gw,
        "GET",
        &format!("/v1/{}/customers", env.parent()),
        Some(&client_token),
        None,
    )
    .await;
    assert_eq!(listed.status, 200);
    let in_body = form(
        gw,
        "/oauth/token",
        &[],
        &format!(
            "grant_type=client_credentials&client_id={}&client_secret={}",
            enc(&id),
            enc(&secret)
        ),
    )
    .await;
    assert_eq!(in_body.status, 200);
    for wrong in [
        form(
            gw,
            "/oauth/token",
            &[basic(&id, "cs1_wrong")],
            "grant_type=client_credentials",
        )
        .await,
        form(
            gw,
            "/oauth/token",
            &[],
            &format!(
                "grant_type=client_credentials&client_id={}&client_secret=nope",
                enc(&id)
            ),
        )
        .await,
    ] {
        assert_eq!(
            wrong.status,
            401,
            "{}",
            String::from_utf8_lossy(&wrong.body)
        );
        assert_eq!(wrong.json()["error"], "invalid_client");
        assert!(wrong.header("www-authenticate").is_some());
    }
    let unsupported = form(gw, "/oauth/token", &[], "grant_type=password").await;
    assert_eq!(
        (unsupported.status, unsupported.json()["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );

    // The code flow: the sign-in page, a redirect with the code and the state, PKCE checked.
    let verifier = format!(
        "{}-{}",
        uuid::Uuid::now_v7().simple(),
        uuid::Uuid::now_v7().simple()
    );
    let challenge = crm_identity::pkce::challenge_s256(&verifier);
    let flow = format!(
        "response_type=code&client_id={}&redirect_uri={}&code_challenge={}&code_challenge_method=S256&state=xyz",
        enc(&id),
        enc(redirect),
        enc(&challenge)
    );
    let page = http(gw, "GET", &format!("/oauth/authorize?{flow}"), None, None).await;
    assert_eq!(page.status, 200);
    assert!(String::from_utf8_lossy(&page.body).contains("name=\"password\""));
    let sign_in = |uri: &str| {
        format!(
            "{}&email={}&password={}&organization={}",
            flow.replace(&enc(redirect), &enc(uri)),
            enc(&email),
            enc(password),
            enc(&env.parent())
        )
    };
    let elsewhere = form(
        gw,
        "/oauth/authorize",
        &[],
        &sign_in("https://app.example/other"),
    )
    .await;
    assert_eq!(elsewhere.status, 400);
    assert!(
        elsewhere.header("location").is_none(),
        "never redirected to an unregistered URI"
    );
    let signed = form(gw, "/oauth/authorize", &[], &sign_in(redirect)).await;
    assert_eq!(
        signed.status,
        302,
        "{}",
        String::from_utf8_lossy(&signed.body)
    );
    let location = url::Url::parse(signed.header("location").unwrap()).unwrap();
    assert!(location.as_str().starts_with(redirect));
    let q: Vec<(String, String)> = location.query_pairs().into_owned().collect();
    assert!(q.contains(&("state".to_owned(), "xyz".to_owned())), "{q:?}");
    let code = q.iter().find(|(k, _)| k == "code").unwrap().1.clone();
    let exchange = |v: &str| {
        format!(
            "grant_type=authorization_code&code={}&redirect_uri={}&client_id={}&code_verifier={}",
            enc(&code),
            enc(redirect),
            enc(&id),
            enc(v)
        )
    };
    let mismatch = form(gw, "/oauth/token", &[], &exchange(&"w".repeat(50))).await;
    assert_eq!(
        (mismatch.status, mismatch.json()["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let granted = form(gw, "/oauth/token", &[], &exchange(&verifier)).await;
    assert_eq!(
        granted.status,
        200,
        "{}",
        String::from_utf8_lossy(&granted.body)
    );
    let refresh = granted.json()["refresh_token"].as_str().unwrap().to_owned();
    let user_token = granted.json()["access_token"].as_str().unwrap().to_owned();

    // refresh_token rotates; the old one is refused.
    let refreshed = form(
        gw,
        "/oauth/token",
        &[],
        &format!(
            "grant_type=refresh_token&refresh_token={}&client_id={}",
            enc(&refresh),
            enc(&id)
        ),
    )
    .await;
    assert_eq!(
        refreshed.status,
        200,
        "{}",
        String::from_utf8_lossy(&refreshed.body)
    );
    assert_ne!(refreshed.json()["refresh_token"], json!(refresh));

    // Introspection and revocation with the client's credentials.
    let active = form(
        gw,
        "/oauth/introspect",
        &[basic(&id, &secret)],
        &format!("token={}", enc(&user_token)),
    )
    .await;
    assert_eq!(
        active.status,
        200,
        "{}",
        String::from_utf8_lossy(&active.body)
    );
    assert_eq!(active.json()["active"], true);
    assert_eq!(
        form(
            gw,
            "/oauth/introspect",
            &[],
            &format!("token={}", enc(&user_token))
        )
        .await
        .status,
        401
    );
    let revoked = form(
        gw,
        "/oauth/revoke",
        &[basic(&id, &secret)],
        "token=not-a-token",
    )
    .await;
    assert_eq!(
        revoked.status, 200,
        "RFC 7009: an unknown token is no error"
    );

    // The JWKS is identity's; the metadata names the endpoints.
    let jwks = http(gw, "GET", "/.well-known/jwks.json", None, None)
        .await
        .json();
    let keys = KeyServiceClient::new(env.server.channel.clone())
        .get_jwks(GetJwksRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(
        kids,
        keys.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>()
    );
    assert!(!kids.is_empty());
    let meta = http(
        gw,
        "GET",
        "/.well-known/oauth-authorization-server",
        None,
        None,
    )
    .await
    .json();
    assert_eq!(meta["token_endpoint"], "http://test/oauth/token");
}

#[tokio::test]
async fn token_exchange_over_http_switches_organization_and_delegates() {
    use base64::Engine as _;
    const GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
    const ACCESS: &str = "urn:ietf:params:oauth:token-type:access_token";
    let m = crate::identity::member(&["crm.sales"]).await;
    let org_b = m.join_another_organization(&["crm.viewer"]).await;
    let person = m.login().await;
    let gw = gateway(&m.env).await;

    // A person switches organization with their own token as the actor.
    let switched = form(
        gw,
        "/oauth/token",
        &[],
        &format!(
            "grant_type={}&actor_token={}&actor_token_type={}&resource={}",
            enc(GRANT),
            enc(&person.access_token),
            enc(ACCESS),
            enc(&format!("organizations/{org_b}"))
        ),
    )
    .await;
    assert_eq!(switched.status, 200, "{}", switched.json());
    let b = switched.json();
    assert_eq!(b["token_type"], "Bearer");
    let b_token = b["access_token"].as_str().unwrap();
    let in_b = http(
        gw,
        "GET",
        &format!("/v1/organizations/{org_b}/customers"),
        Some(b_token),
        None,
    )
    .await;
    assert_eq!(in_b.status, 200, "{}", in_b.json());
    let in_a = http(
        gw,
        "GET",
        &format!("/v1/{}/customers", m.env.parent()),
        Some(b_token),
        None,
    )
    .await;
    assert_eq!(in_a.status, 403, "one token, one organization");
    // Into an organization the person is not in: refused in the RFC 6749 form.
    let stranger = form(
        gw,
        "/oauth/token",
        &[format!("Authorization: Bearer {}", person.access_token)],
        &format!(
            "grant_type={}&resource={}",
            enc(GRANT),
            enc(&format!("organizations/{}", uuid::Uuid::now_v7()))
        ),
    )
    .await;
    assert!((400..500).contains(&stranger.status), "{}", stranger.status);
    assert!(stranger.json()["error"].is_string(), "{}", stranger.json());

    // A service with the delegation role acts for the person: client authentication by Basic,
    // the person's token as the subject; the result keeps the person and may only narrow.
    let service = crm_identity::api_clients::register_service_client(
        &m.env.server.identity().pool,
        &m.env.server.identity().secrets,
        m.env.org,
        "Dispatch board",
        &["service.delegate".to_owned()],
    )
    .await
    .unwrap();
    let client_id = service.api_client.unwrap().client_id;
    let delegate = |secret: String, kind: &'static str| {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            enc(&client_id),
            enc(&secret)
        ));
        let body = format!(
            "grant_type={}&subject_token={}&subject_token_type={}",
            enc(GRANT),
            enc(&person.access_token),
            enc(kind)
        );
        async move {
            form(
                gw,
                "/oauth/token",
                &[format!("Authorization: Basic {basic}")],
                &body,
            )
            .await
        }
    };
    let delegated = delegate(service.client_secret.clone(), ACCESS).await;
    assert_eq!(delegated.status, 200, "{}", delegated.json());
    let acting = delegated.json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let seen = form(
        gw,
        "/oauth/introspect",
        &[format!("Authorization: Bearer {}", person.access_token)],
        &format!("token={}", enc(&acting)),
    )
    .await
    .json();
    assert_eq!(seen["active"], true, "{seen}");
    assert_eq!(seen["roles"], json!(["crm.sales"]), "{seen}");
    assert!(
        seen["act"]["sub"].as_str().is_some_and(|a| !a.is_empty()),
        "the service is the actor: {seen}"
    );
    // A wrong client secret is `invalid_client`.
    let refused = delegate("not-the-secret".to_owned(), ACCESS).await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.json()["error"], "invalid_client");
    // The client authenticated in the body instead of by Basic.
    let in_body = form(
        gw,
        "/oauth/token",
        &[],
        &format!(
            "grant_type={}&client_id={}&client_secret={}&subject_token={}&subject_token_type={}",
            enc(GRANT),
            enc(&client_id),
            enc(&service.client_secret),
            enc(&person.access_token),
            enc(ACCESS)
        ),
    )
    .await;
    assert_eq!(in_body.status, 200, "{}", in_body.json());
    // An unsupported subject token type is a malformed request.
    let odd = delegate(service.client_secret.clone(), "saml").await;
    assert_eq!(
        (odd.status, odd.json()["error"].as_str()),
        (400, Some("invalid_request"))
    );
}

#[tokio::test]
async fn identity_counts_each_client_behind_a_gateway_holding_the_service_key() {
    let options = crate::support::SuiteOptions {
        identity: crm_identity::IdentitySettings {
            rate_limits: crm_identity::rate_limit::RateLimits {
                per_address: 3,
                // Only the service credential makes identity believe `x-forwarded-for`.
                trust_forwarded_for: false,
                ..crate::support::SuiteOptions::default().identity.rate_limits
            },
            ..crate::support::SuiteOptions::default().identity
        },
        ..Default::default()
    };
    let db = crate::support::test_db().await;
    let server = crate::support::start(&db, options).await;
    let serve = |key: Option<String>| {
        let router = crm_gateway::router_to(
            crm_gateway::Upstreams::one(server.channel.clone()),
            &crm_gateway::Options {
                // The test connects from loopback, as a proxy in front of the gateway would.
                trusted_proxies: vec!["127.0.0.1".parse().unwrap()],
                service_key: key,
                ..crm_gateway::Options::default()
            },
        )
        .unwrap();
        async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(crm_gateway::serve(listener, router, std::future::pending()));
            addr
        }
    };
    // A refresh with a token that is no token: refused, and counted against the address.
    let refresh = |gw: std::net::SocketAddr, client: &'static str| async move {
        form(
            gw,
            "/oauth/token",
            &[format!("X-Forwarded-For: {client}")],
            "grant_type=refresh_token&refresh_token=not-a-token",
        )
        .await
        .status
    };
    // Documentation addresses (RFC 5737): header values only.
    let keyed = serve(Some(server.service_key.clone())).await;
    for _ in 0..3 {
        assert_eq!(refresh(keyed, "192.0.2.10").await, 400);
    }
    assert_eq!(
        refresh(keyed, "192.0.2.10").await,
        429,
        "that client is limited"
    );
    assert_eq!(
        refresh(keyed, "192.0.2.11").await,
        400,
        "another client behind the same gateway is not"
    );
    // Without the key identity sees the gateway's (loopback) address, whatever is forwarded:
    // that bucket is spent after three more.
    let plain = serve(None).await;
    let statuses = [
        refresh(plain, "192.0.2.20").await,
        refresh(plain, "192.0.2.21").await,
        refresh(plain, "192.0.2.22").await,
        refresh(plain, "192.0.2.23").await,
    ];
    assert_eq!(statuses, [400, 400, 400, 429], "one bucket for everyone");
}

#[tokio::test]
async fn the_openapi_document_and_the_reference_page_are_served() {
    let env = Env::new().await;
    let gw = gateway(&env).await;
    let doc = http(gw, "GET", "/openapi.json", None, None).await;
    assert_eq!(doc.status, 200);
    let doc = doc.json();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["servers"][0]["url"], "/");
    let get = &doc["paths"]["/v1/organizations/{organization}/customers/{customer}"]["get"];
    assert_eq!(get["x-rpc"], "crm.core.v1.CustomerService.GetCustomer");
    // Its example is served: the documented path with the parameters filled.
    let customer = env.create("Documented").await.name;
    let (org, id) = (env.org, customer.rsplit('/').next().unwrap().to_owned());
    let filled = format!("/v1/organizations/{org}/customers/{id}");
    let got = http(gw, "GET", &filled, Some(&env.token), None).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["name"], customer.as_str());
    let page = http(gw, "GET", "/docs", None, None).await;
    assert_eq!(page.status, 200);
    let html = String::from_utf8_lossy(&page.body);
    assert!(html.contains("crm.fieldops.v1.WorkOrderService") && html.contains("/openapi.json"));
}

#[tokio::test]
async fn cors_answers_only_the_configured_origins() {
    let env = Env::new().await;
    let options = crm_gateway::Options {
        cors_origins: vec![http::HeaderValue::from_static("https://app.example")],
        ..crm_gateway::Options::default()
    };
    let router = crm_gateway::router_to(
        crm_gateway::Upstreams::one(env.server.channel.clone()),
        &options,
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw = listener.local_addr().unwrap();
    tokio::spawn(crm_gateway::serve(listener, router, std::future::pending()));
    let target = format!("/v1/{}/customers", env.parent());
    let preflight = |origin: &str| {
        vec![
            format!("Origin: {origin}"),
            "Access-Control-Request-Method: POST".to_owned(),
            "Access-Control-Request-Headers: authorization, content-type".to_owned(),
        ]
    };
    let allowed = send(
        gw,
        "OPTIONS",
        &target,
        &preflight("https://app.example"),
        "",
    )
    .await;
    assert!(allowed.status < 300, "{}", allowed.status);
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let methods = allowed
        .header("access-control-allow-methods")
        .unwrap_or_default();
    assert!(methods.contains("PATCH"), "{methods}");
    let other = send(
        gw,
        "OPTIONS",
        &target,
        &preflight("https://evil.example"),
        "",
    )
    .await;
    assert!(other.header("access-control-allow-origin").is_none());
    // A real request from the allowed origin carries the header too.
    let mut headers = vec![
        "Origin: https://app.example".to_owned(),
        format!("Authorization: Bearer {}", env.token),
    ];
    let listed = send(gw, "GET", &target, &headers, "").await;
    assert_eq!(listed.status, 200);
    assert_eq!(
        listed.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    headers[0] = "Origin: https://evil.example".to_owned();
    let elsewhere = send(gw, "GET", &target, &headers, "").await;
    assert!(elsewhere.header("access-control-allow-origin").is_none());
}

/// Sets `path` (dotted) in `obj` to `value`, making the objects on the way.
fn set(obj: &mut serde_json::Map<String, Value>, path: &str, value: Value) {
    let mut at = obj;
    let parts: Vec<&str> = path.split('.').collect();
    for p in &parts[..parts.len() - 1] {
        at = at
            .entry((*p).to_owned())
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .unwrap();
    }
    at.insert(parts[parts.len() - 1].to_owned(), value);
}

#[tokio::test]
async fn every_rpc_with_an_http_rule_answers_over_http_as_over_grpc() {
    let env = Env::new().await;
    let gw = gateway(&env).await;
    // Each side of each comparison has a token of its own (its own session): a call that ends
    // its session (Logout) must not decide the other side's answer.
    let token = || env.server.token(env.org, &["org.admin"]);
    let pool = crm_proto::json::pool().unwrap();
    let routes = crm_gateway::routes::Routes::from_pool(pool).unwrap();
    let org = env.org.to_string();
    let (mut checked, mut compared) = (0, 0);
    let mut failures = Vec::new();
    for route in routes.all() {
        // Server streams stay open; the NDJSON test covers them.
        if route.method.is_server_streaming() {
            continue;
        }
        // The path with this organization and fresh ids, bound as the gateway binds it.
        let (path, params) = crm_gateway::openapi::path_of(&route.pattern);
        let mut concrete = path.clone();
        for p in &params {
            let value = if p.name == "organization" {
                org.clone()
            } else {
                uuid::Uuid::now_v7().to_string()
            };
            concrete = concrete.replacen(&format!("{{{}}}", p.name), &value, 1);
        }
        let bound = route.template.matches(&concrete).unwrap();
        let mut input = serde_json::Map::new();
        let body = match route.body.as_str() {
            "" => None,
            "*" => Some("{}"),
            field => {
                input.insert(field.to_owned(), json!({}));
                Some("{}")
            }
        };
        let m = &route.method;
        if route.verb == http::Method::PATCH
            && !route.body.is_empty()
            && route.body != "*"
            && m.input().get_field_by_name("update_mask").is_some()
        {
            input.insert("update_mask".to_owned(), json!(""));
        }
        for (field, value) in bound {
            set(&mut input, &field, json!(value));
        }
        let request = DynamicMessage::deserialize(m.input(), Value::Object(input)).unwrap();
        let grpc = crate::every_rpc::call(&env.server.channel, m, &token(), &request).await;
        let over_http = http(gw, route.verb.as_str(), &concrete, Some(&token()), body).await;
        checked += 1;
        let what = format!("{} {concrete} ({})", route.verb, m.full_name());
        match grpc {
            Ok(bytes) => {
                if over_http.status != 200 {
                    failures.push(format!(
                        "{what}: gRPC OK, HTTP {}: {}",
                        over_http.status,
                        String::from_utf8_lossy(&over_http.body)
                    ));
                    continue;
                }
                // A read answers the same message both ways.
                if route.verb == http::Method::GET {
                    let grpc =
                        DynamicMessage::decode(m.output(), bytes.unwrap_or_default().as_slice())
                            .unwrap()
                            .serialize_with_options(
                                serde_json::value::Serializer,
                                &SerializeOptions::new().use_proto_field_name(true),
                            )
                            .unwrap();
                    let service = m.parent_service().full_name().to_owned();
                    if proto_named(&service, m.name(), &over_http.json()) != grpc {
                        failures.push(format!("{what}: the answers differ"));
                    }
                    compared += 1;
                }
            }
            Err(status) => {
                let want = crm_gateway::http_status(status.code()).as_u16();
                let e = &over_http.json()["error"];
                if over_http.status != want || e["code"].as_u64() != Some(u64::from(want)) {
                    failures.push(format!(
                        "{what}: gRPC {:?} {}, HTTP {} {}",
                        status.code(),
                        status.message(),
                        over_http.status,
                        String::from_utf8_lossy(&over_http.body)
                    ));
                }
            }
        }
    }
    assert!(checked > 200, "only {checked} routes checked");
    assert!(compared > 20, "only {compared} answers compared");
    assert!(
        failures.is_empty(),
        "{} of {checked}:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
