//! Reads the compiled descriptor set and fails when an RPC breaks our API rules (CONVENTIONS.md):
//! List without page_size/page_token/next_page_token, Update without a FieldMask `update_mask`,
//! a mutating request without `request_id`, an RPC without a `google.api.http` rule.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::wildcard_enum_match_arm,
    reason = "test code"
)]

use prost_reflect::{DescriptorPool, Kind, MethodDescriptor, Value};

fn pool() -> DescriptorPool {
    DescriptorPool::decode(crm_proto::FILE_DESCRIPTOR_SET).expect("descriptor set decodes")
}

/// The `google.api.http` rule of a method: `(verb, path)`.
fn http_rule(pool: &DescriptorPool, method: &MethodDescriptor) -> Option<(String, String)> {
    let ext = pool.get_extension_by_name("google.api.http")?;
    let options = method.options();
    if !options.has_extension(&ext) {
        return None;
    }
    let rule = options.get_extension(&ext);
    let Value::Message(rule) = rule.as_ref() else {
        return None;
    };
    for verb in ["get", "put", "post", "delete", "patch"] {
        if let Some(Value::String(path)) = rule.get_field_by_name(verb).as_deref()
            && !path.is_empty()
        {
            return Some((verb.to_owned(), path.clone()));
        }
    }
    None
}

fn has_field(method_input: &prost_reflect::MessageDescriptor, name: &str, kind: &str) -> bool {
    method_input
        .get_field_by_name(name)
        .is_some_and(|f| match f.kind() {
            Kind::Message(m) => m.full_name() == kind,
            Kind::String => kind == "string",
            Kind::Int32 => kind == "int32",
            _ => false,
        })
}

/// POST methods exempt from `request_id`, each for a stated reason.
const READ_ONLY_POSTS: &[&str] = &[
    // Credential exchanges: idempotency would mean storing the issued tokens. Refresh retries
    // are covered by the rotation grace window; a repeated login simply opens another session;
    // logging out twice ends the same session twice.
    "crm.identity.v1.AuthService.Login",
    "crm.identity.v1.AuthService.RefreshToken",
    "crm.identity.v1.AuthService.ClientCredentials",
    // Answers the same every time; each call issues a new single-use token by design.
    "crm.identity.v1.AuthService.RequestPasswordReset",
    "crm.identity.v1.AuthService.ResetPassword",
    // RFC 8693/7662/7009 operations: exchange issues a new session like a login; introspection
    // only reads; revoking twice is revoking once.
    "crm.identity.v1.OAuthService.ExchangeToken",
    "crm.identity.v1.OAuthService.IntrospectToken",
    "crm.identity.v1.OAuthService.RevokeToken",
    "crm.identity.v1.OAuthService.CreateAuthorizationCode",
    "crm.identity.v1.OAuthService.ExchangeAuthorizationCode",
    // Reads (and audits) a credential; nothing to repeat.
    "crm.identity.v1.IntegrationCredentialService.AccessIntegrationCredential",
    "crm.identity.v1.AuthService.Logout",
    // A computation over the price book: it writes nothing, so there is nothing to repeat.
    "crm.core.v1.PriceService.ComputePrice",
];

fn violations(pool: &DescriptorPool) -> Vec<String> {
    let mut out = Vec::new();
    for service in pool
        .services()
        .filter(|s| s.package_name().starts_with("crm."))
    {
        for method in service.methods() {
            let name = method.full_name().to_owned();
            let input = method.input();
            let rule = http_rule(pool, &method);
            if rule.is_none() {
                out.push(format!("{name}: no google.api.http rule"));
            }
            if method.name().starts_with("List") {
                for (field, kind) in [("page_size", "int32"), ("page_token", "string")] {
                    if !has_field(&input, field, kind) {
                        out.push(format!("{name}: List request lacks {field}"));
                    }
                }
                if !has_field(&method.output(), "next_page_token", "string") {
                    out.push(format!("{name}: List response lacks next_page_token"));
                }
            }
            if method.name().starts_with("Update")
                && !has_field(&input, "update_mask", "google.protobuf.FieldMask")
            {
                out.push(format!(
                    "{name}: Update request lacks a FieldMask update_mask"
                ));
            }
            let mutating = matches!(
                rule.as_ref().map(|(v, _)| v.as_str()),
                Some("post" | "put" | "patch" | "delete")
            ) && !READ_ONLY_POSTS.contains(&name.as_str());
            if mutating && !has_field(&input, "request_id", "string") {
                out.push(format!("{name}: mutating request lacks request_id"));
            }
        }
    }
    out
}

#[test]
fn every_rpc_follows_the_api_rules() {
    let pool = pool();
    assert!(
        pool.get_service_by_name("crm.core.v1.CustomerService")
            .is_some()
    );
    let found = violations(&pool);
    assert!(
        found.is_empty(),
        "API rule violations:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_checker_catches_each_kind_of_violation() {
    // A deliberately broken contract, compiled the same way as ours, must trip every rule.
    let broken = r#"
        syntax = "proto3";
        package crm.broken.v1;
        import "google/api/annotations.proto";
        import "google/protobuf/field_mask.proto";
        service BrokenService {
          rpc ListThings(ListThingsRequest) returns (ListThingsResponse) {
            option (google.api.http) = {get: "/v1/things"};
          }
          rpc UpdateThing(UpdateThingRequest) returns (Thing) {
            option (google.api.http) = {patch: "/v1/things/x" body: "*"};
          }
          rpc NoHttp(UpdateThingRequest) returns (Thing);
        }
        message Thing { string name = 1; }
        message ListThingsRequest { int32 page_size = 1; }
        message ListThingsResponse { repeated Thing things = 1; }
        message UpdateThingRequest { Thing thing = 1; string update_mask = 2; }
    "#;
    let dir = std::env::temp_dir().join(format!("crm-api-rules-{}", std::process::id()));
    let proto_root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    std::fs::create_dir_all(dir.join("crm/broken/v1")).unwrap();
    std::fs::write(dir.join("crm/broken/v1/broken.proto"), broken).unwrap();
    let mut compiler = protox::Compiler::new([dir.as_path(), proto_root.as_path()]).unwrap();
    compiler
        .include_imports(true)
        .open_file("crm/broken/v1/broken.proto")
        .unwrap();
    let pool = DescriptorPool::decode(compiler.encode_file_descriptor_set().as_slice()).unwrap();
    let found = violations(&pool).join("\n");
    for expected in [
        "ListThings: List request lacks page_token",
        "ListThings: List response lacks next_page_token",
        "UpdateThing: Update request lacks a FieldMask update_mask",
        "UpdateThing: mutating request lacks request_id",
        "NoHttp: no google.api.http rule",
    ] {
        assert!(
            found.contains(expected),
            "missing {expected:?} in:\n{found}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
