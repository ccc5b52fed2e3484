//! `crm up --demo`: a demo organization with sample customers, created through the public API,
//! and the next steps printed for a newcomer.

use std::net::SocketAddr;
use std::time::Duration;

use crm_auth::VerifierSettings;
use crm_auth::token::TokenSigner;
use crm_proto::core_v1::customer_service_client::CustomerServiceClient;
use crm_proto::core_v1::{CreateCustomerRequest, Customer, CustomerKind};
use uuid::Uuid;

/// The fixed demo organization, so its data survives restarts of `crm up --demo`.
pub const DEMO_ORG: Uuid = Uuid::from_u128(0x0193_a5b0_0000_7000_8000_0000_0000_0001);

/// What the banner shows of the demo.
pub struct Demo {
    /// `organizations/{id}`.
    pub organization: String,
    /// A token for an `org.admin` of it.
    pub token: String,
}

const SAMPLES: &[(&str, &str, &str, CustomerKind)] = &[
    (
        "Bayside Diner",
        "owner@bayside-diner.example",
        "+15555550101",
        CustomerKind::FoodService,
    ),
    (
        "Miller Residence",
        "jo.miller@example.com",
        "+15555550102",
        CustomerKind::Residential,
    ),
    (
        "Harbor Lift Station Co.",
        "ops@harborlift.example",
        "+15555550103",
        CustomerKind::Commercial,
    ),
    (
        "Golden Wok",
        "manager@goldenwok.example",
        "+15555550104",
        CustomerKind::FoodService,
    ),
    (
        "Pine Ridge HOA",
        "board@pineridge.example",
        "+15555550105",
        CustomerKind::Commercial,
    ),
];

/// Seeds the demo organization through the running server; idempotent across runs.
pub async fn seed(
    addr: SocketAddr,
    signer: &TokenSigner,
    settings: &VerifierSettings,
) -> anyhow::Result<Demo> {
    let claims = TokenSigner::user_claims(
        settings,
        Uuid::now_v7(),
        DEMO_ORG,
        &["org.admin"],
        Duration::from_secs(12 * 3600),
    );
    let token = signer.sign(&claims);
    let organization = format!("organizations/{DEMO_ORG}");
    let mut client = CustomerServiceClient::connect(format!("http://{addr}")).await?;
    for (i, (name, email, phone, kind)) in SAMPLES.iter().enumerate() {
        let mut req = tonic::Request::new(CreateCustomerRequest {
            parent: organization.clone(),
            customer: Some(Customer {
                display_name: (*name).to_owned(),
                email: (*email).to_owned(),
                phone: (*phone).to_owned(),
                kind: *kind as i32,
                ..Customer::default()
            }),
            // Fixed ids make the seed idempotent: a second `crm up --demo` changes nothing.
            customer_id: Uuid::from_u128(0x0193_a5b0_0000_7000_8000_0000_0001_0000 + i as u128)
                .to_string(),
            request_id: Uuid::from_u128(0x0193_a5b0_0000_4000_8000_0000_0002_0000 + i as u128)
                .to_string(),
        });
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
        match client.create_customer(req).await {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::AlreadyExists => {}
            Err(s) => anyhow::bail!("seeding {name}: {s}"),
        }
    }
    Ok(Demo {
        organization,
        token,
    })
}

/// Prints where the suite is and how to call it.
pub fn print_next_steps(addr: SocketAddr, database: &str, demo: Option<&Demo>) {
    println!();
    println!("CRM suite is serving gRPC on {addr} (reflection and grpc.health.v1 enabled)");
    println!("  services: crm.core.v1.CustomerService, crm.core.v1.EventService");
    println!("  database: {database}");
    println!();
    println!("List the services:");
    println!("  grpcurl -plaintext {addr} list");
    println!("  buf curl --protocol grpc --http2-prior-knowledge --list-services http://{addr}");
    match demo {
        Some(demo) => {
            println!();
            println!(
                "Demo organization {} (token valid 12 h, signed by a key of this process only):",
                demo.organization
            );
            println!("  export TOKEN={}", demo.token);
            println!();
            println!("List its customers:");
            println!(
                "  grpcurl -plaintext -H \"authorization: Bearer $TOKEN\" -d '{{\"parent\":\"{}\"}}' {addr} crm.core.v1.CustomerService/ListCustomers",
                demo.organization
            );
            println!("Create one:");
            println!(
                "  buf curl --protocol grpc --http2-prior-knowledge -H \"authorization: Bearer $TOKEN\" \\\n    --data '{{\"parent\":\"{}\",\"customer\":{{\"displayName\":\"Lakeside Cafe\",\"kind\":\"CUSTOMER_KIND_FOOD_SERVICE\"}}}}' \\\n    http://{addr}/crm.core.v1.CustomerService/CreateCustomer",
                demo.organization
            );
        }
        None => {
            println!();
            println!(
                "Calls need an access token signed by a key in CRM_TOKEN_PUBLIC_KEYS; `crm up --demo` prints one."
            );
        }
    }
    println!();
    println!("Stop with Ctrl-C.");
}
