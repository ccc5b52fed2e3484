//! Properties every RPC of the descriptor set must have, checked by calling each one through a
//! raw codec with messages built from its descriptor: new RPCs are covered without a line here.

use std::time::Duration;

use bytes::{Buf, BufMut};
use prost::Message;
use prost_reflect::{DynamicMessage, Kind, MessageDescriptor, MethodDescriptor, Value};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Code, Status};
use uuid::Uuid;

use crate::support::Env;

/// Passes encoded messages through unchanged.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self {
        Self
    }

    fn decoder(&mut self) -> Self {
        Self
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// Every method of the suite's own services.
pub fn methods() -> Vec<MethodDescriptor> {
    let pool = crm_proto::json::pool().expect("descriptor set");
    pool.services()
        .filter(|s| s.full_name().starts_with("crm."))
        .flat_map(|s| s.methods().collect::<Vec<_>>())
        .collect()
}

/// Calls `method` with `message`; for a server stream, waits briefly for its first item.
/// Returns the first response message's bytes (`None` when a stream sent nothing in time).
pub async fn call(
    channel: &Channel,
    method: &MethodDescriptor,
    token: &str,
    message: &DynamicMessage,
) -> Result<Option<Vec<u8>>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let path = http::uri::PathAndQuery::from_maybe_shared(format!(
        "/{}/{}",
        method.parent_service().full_name(),
        method.name()
    ))
    .unwrap();
    let mut request = tonic::Request::new(message.encode_to_vec());
    if !token.is_empty() {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request.set_timeout(Duration::from_secs(20));
    if method.is_server_streaming() {
        let mut stream = grpc
            .server_streaming(request, path, RawCodec)
            .await?
            .into_inner();
        match tokio::time::timeout(Duration::from_millis(300), stream.message()).await {
            Ok(item) => item,
            Err(_) => Ok(None),
        }
    } else {
        grpc.unary(request, path, RawCodec)
            .await
            .map(|r| Some(r.into_inner()))
    }
}

/// A plausible value for a string field, so that the call gets past the checks of the fields
/// that are not under test.
fn plausible(field: &str, org: Uuid) -> String {
    match field {
        "parent" => format!("organizations/{org}"),
        "name" => format!("organizations/{org}/customers/{}", Uuid::now_v7()),
        "request_id" => Uuid::now_v7().to_string(),
        "email" => "someone@example.com".into(),
        "phone" | "participant" => "+15125550142".into(),
        // Optional fields whose every non-empty value has a syntax: left out.
        "page_token" | "order_by" | "filter" | "etag" | "cursor" => String::new(),
        f if f.ends_with("_id") => String::new(),
        _ => "plain text".into(),
    }
}

/// `descriptor` with every string field (to `depth` levels of nested messages) set to a
/// plausible value, except the one at `target`, which gets `hostile`.
fn message_with(
    descriptor: &MessageDescriptor,
    org: Uuid,
    target: &[String],
    hostile: &str,
    depth: usize,
) -> DynamicMessage {
    let mut message = DynamicMessage::new(descriptor.clone());
    for field in descriptor.fields() {
        let here = target.first().is_some_and(|t| t == field.name());
        match field.kind() {
            Kind::String if !field.is_list() && !field.is_map() => {
                let value = if here && target.len() == 1 {
                    hostile.to_owned()
                } else {
                    plausible(field.name(), org)
                };
                message.set_field(&field, Value::String(value));
            }
            Kind::String if field.is_list() && here && target.len() == 1 => {
                message.set_field(&field, Value::List(vec![Value::String(hostile.to_owned())]));
            }
            Kind::Message(inner)
                if !field.is_list()
                    && !field.is_map()
                    && depth > 0
                    && !inner.full_name().starts_with("google.protobuf.") =>
            {
                let rest: &[String] = if here { &target[1..] } else { &[] };
                let nested = message_with(&inner, org, rest, hostile, depth - 1);
                message.set_field(&field, Value::Message(nested));
            }
            _ => {}
        }
    }
    message
}

/// Paths of the string fields of `descriptor`, to `depth` levels of nested messages.
fn string_paths(descriptor: &MessageDescriptor, depth: usize) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for field in descriptor.fields() {
        match field.kind() {
            Kind::String if !field.is_map() => out.push(vec![field.name().to_owned()]),
            Kind::Message(inner)
                if !field.is_list()
                    && !field.is_map()
                    && depth > 0
                    && !inner.full_name().starts_with("google.protobuf.") =>
            {
                for mut path in string_paths(&inner, depth - 1) {
                    path.insert(0, field.name().to_owned());
                    out.push(path);
                }
            }
            _ => {}
        }
    }
    out
}

/// A NUL byte in any string field of any request is answered with a client error, never
/// INTERNAL (PostgreSQL text cannot hold NUL: such a value must be refused before it gets there).
#[tokio::test]
async fn a_nul_byte_in_any_string_field_of_any_rpc_is_never_internal() {
    let env = Env::new().await;
    let token = env.server.token(env.org, &["org.admin"]);
    let mut failures = Vec::new();
    let mut calls = 0;
    for method in methods() {
        for path in string_paths(&method.input(), 2) {
            // A filter must parse to reach the database: put the NUL inside a comparison.
            let hostile = if path.last().is_some_and(|f| f == "filter") {
                "display_name = \"a\u{0}b\""
            } else {
                "a\u{0}b"
            };
            let message = message_with(&method.input(), env.org, &path, hostile, 2);
            calls += 1;
            let result = call(&env.server.channel, &method, &token, &message).await;
            if std::env::var_os("CRM_TEST_TRACE").is_some() {
                eprintln!(
                    "{} {}: {:?}",
                    method.name(),
                    path.join("."),
                    result.as_ref().err()
                );
            }
            if let Err(status) = result
                && matches!(status.code(), Code::Internal | Code::Unknown)
            {
                failures.push(format!(
                    "{}/{} {}: {:?} {}",
                    method.parent_service().name(),
                    method.name(),
                    path.join("."),
                    status.code(),
                    status.message()
                ));
            }
        }
    }
    assert!(calls > 200, "only {calls} calls made");
    assert!(
        failures.is_empty(),
        "INTERNAL for NUL:\n{}",
        failures.join("\n")
    );
}

/// A page token of one List is refused by every other List of the suite.
#[tokio::test]
async fn a_page_token_of_one_list_is_refused_by_every_other_list() {
    use crm_proto::core_v1::ListCustomersRequest;

    let env = Env::new().await;
    for i in 0..3 {
        env.create(&format!("Token {i}")).await;
    }
    let token = env.server.token(env.org, &["org.admin"]);
    let page = env
        .customers()
        .list_customers(env.req(ListCustomersRequest {
            parent: env.parent(),
            page_size: 1,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(!page.next_page_token.is_empty());
    let mut checked = 0;
    let mut accepted = Vec::new();
    for method in methods() {
        let input = method.input();
        let (Some(parent), Some(page_token)) = (
            input.get_field_by_name("parent"),
            input.get_field_by_name("page_token"),
        ) else {
            continue;
        };
        if method.name() == "ListCustomers" {
            continue;
        }
        let mut message = DynamicMessage::new(input.clone());
        message.set_field(&parent, Value::String(env.parent()));
        message.set_field(&page_token, Value::String(page.next_page_token.clone()));
        if let Some(query) = input.get_field_by_name("query") {
            message.set_field(&query, Value::String("token".into()));
        }
        checked += 1;
        match call(&env.server.channel, &method, &token, &message).await {
            Err(status) if status.code() == Code::InvalidArgument => {}
            other => accepted.push(format!("{}: {other:?}", method.name())),
        }
    }
    assert!(checked >= 15, "only {checked} Lists found");
    assert!(
        accepted.is_empty(),
        "a ListCustomers token was not refused by:\n{}",
        accepted.join("\n")
    );
}

/// The message-size limit holds for every service of the descriptor set (it is applied where
/// services are registered, not service by service).
#[tokio::test]
async fn every_rpc_refuses_a_request_over_the_message_limit() {
    use crm_platform::ServerSettings;
    use crm_testkit::server::TestServerOptions;

    let db = crate::support::test_db().await;
    let server = crate::support::start(
        &db,
        TestServerOptions {
            settings: ServerSettings {
                max_message_bytes: 64 * 1024,
                ..TestServerOptions::default().settings
            },
            ..TestServerOptions::default()
        },
    )
    .await;
    let org = Uuid::now_v7();
    // Every role, so that no call is refused for its permission before its body is read.
    let token = server.token(
        org,
        &[
            "org.admin",
            "service.integrations",
            "service.delegate",
            "service.reader",
        ],
    );
    let big = "x".repeat(100 * 1024);
    let mut checked = 0;
    let mut accepted = Vec::new();
    for method in methods() {
        let input = method.input();
        let Some(field) = input
            .fields()
            .find(|f| matches!(f.kind(), Kind::String) && !f.is_list() && !f.is_map())
        else {
            continue;
        };
        let mut message = DynamicMessage::new(input.clone());
        message.set_field(&field, Value::String(big.clone()));
        checked += 1;
        match call(&server.channel, &method, &token, &message).await {
            Err(s) if matches!(s.code(), Code::OutOfRange | Code::ResourceExhausted) => {}
            other => accepted.push(format!(
                "{}/{}: {:?}",
                method.parent_service().name(),
                method.name(),
                other.map(|_| ()).map_err(|s| s.code())
            )),
        }
    }
    assert!(checked > 100, "only {checked} RPCs checked");
    assert!(
        accepted.is_empty(),
        "over the limit but not refused as such:\n{}",
        accepted.join("\n")
    );
}
