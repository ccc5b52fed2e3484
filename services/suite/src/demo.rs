//! `crm up --demo`: a demo organization with an administrator (a fresh password every start),
//! sample customers created through the public API with that administrator's token, and the
//! next steps printed for a newcomer.

use std::net::SocketAddr;

use crm_proto::core_v1::customer_service_client::CustomerServiceClient;
use crm_proto::core_v1::{CreateCustomerRequest, Customer, CustomerKind};
use crm_proto::identity_v1::LoginRequest;
use crm_proto::identity_v1::auth_service_client::AuthServiceClient;
use rand::RngCore;
use uuid::Uuid;

/// The fixed demo organization, so its data survives restarts of `crm up --demo`.
pub const DEMO_ORG: Uuid = Uuid::from_u128(0x0193_a5b0_0000_7000_8000_0000_0000_0001);
/// The demo administrator.
pub const DEMO_EMAIL: &str = "admin@demo.example";

/// What the banner shows of the demo.
pub struct Demo {
    /// `organizations/{id}`.
    pub organization: String,
    /// The administrator's password of this run.
    pub password: String,
    /// An access token from logging in with it.
    pub token: String,
    /// The demo API client's id.
    pub client_id: String,
    /// Its secret, new at every start.
    pub client_secret: String,
    /// What field operations starts with.
    pub field: Field,
}

/// The seeded field-operations records, by name.
pub struct Field {
    /// Bayside Diner, the first demo customer.
    pub customer: String,
    /// Its kitchen, in zone `downtown`.
    pub property: String,
    /// The seeded technician, on shift 08:00–16:00 UTC for the next 7 days.
    pub technician: String,
    /// The seeded truck.
    pub truck: String,
    /// The seeded disposal facility.
    pub facility: String,
    /// A second member with the technician role and no technician record yet (`users/{id}`).
    pub spare_user: String,
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

fn new_password() -> String {
    let mut bytes = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes)
}

/// Creates (or refreshes) the demo organization and administrator through identity, logs in
/// through the API, and seeds customers through the API; idempotent across runs.
pub async fn seed(
    addr: SocketAddr,
    identity: &crm_identity::IdentityState,
) -> anyhow::Result<Demo> {
    let password = new_password();
    crm_identity::bootstrap::ensure_member(
        &identity.pool,
        &identity.hasher,
        &crm_identity::bootstrap::Member {
            org: DEMO_ORG,
            org_display_name: "Demo Septic & Grease",
            email: DEMO_EMAIL,
            password: &password,
            roles: &["org.admin"],
            reset_password: true,
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("creating the demo administrator: {e}"))?;
    let organization = format!("organizations/{DEMO_ORG}");
    let target = format!("http://{addr}");
    let tokens = AuthServiceClient::connect(target.clone())
        .await?
        .login(LoginRequest {
            email: DEMO_EMAIL.into(),
            password: password.clone(),
            organization: organization.clone(),
            client_id: String::new(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let token = tokens.access_token;
    let mut client = CustomerServiceClient::connect(target).await?;
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
    let (client_id, client_secret) =
        demo_client(&format!("http://{addr}"), &organization, &token).await?;
    let field = seed_field(&format!("http://{addr}"), identity, &password, &token).await?;
    Ok(Demo {
        organization,
        password,
        token,
        client_id,
        client_secret,
        field,
    })
}

/// A fixed id of the demo (`kind` tells the records apart, `n` the instances).
fn demo_id(kind: u128, n: u128) -> Uuid {
    Uuid::from_u128(0x0193_a5b0_0000_7000_8000_0000_0000_0000 + (kind << 32) + n)
}

fn authorized<T>(token: &str, message: T) -> anyhow::Result<tonic::Request<T>> {
    let mut req = tonic::Request::new(message);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(req)
}

/// Ignores "it is there already" (a fixed id from an earlier start; a shift overlapping the
/// one an earlier start made for the same day).
fn seeded<T>(what: &str, r: Result<T, tonic::Status>) -> anyhow::Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(s)
            if matches!(
                s.code(),
                tonic::Code::AlreadyExists | tonic::Code::FailedPrecondition
            ) =>
        {
            Ok(())
        }
        Err(s) => anyhow::bail!("seeding {what}: {s}"),
    }
}

/// Field operations' demo: a property of the first customer, two technician members (one a
/// technician with a week of shifts), a truck and a disposal facility — through the API.
#[allow(clippy::too_many_lines, reason = "one record after the other")]
async fn seed_field(
    target: &str,
    identity: &crm_identity::IdentityState,
    password: &str,
    token: &str,
) -> anyhow::Result<Field> {
    use crm_proto::common_v1::{Money, PostalAddress};
    use crm_proto::core_v1::property_service_client::PropertyServiceClient;
    use crm_proto::core_v1::{CreatePropertyRequest, Property};
    use crm_proto::fieldops_v1::disposal_facility_service_client::DisposalFacilityServiceClient;
    use crm_proto::fieldops_v1::shift_service_client::ShiftServiceClient;
    use crm_proto::fieldops_v1::technician_service_client::TechnicianServiceClient;
    use crm_proto::fieldops_v1::truck_service_client::TruckServiceClient;
    use crm_proto::fieldops_v1::{
        CreateDisposalFacilityRequest, CreateShiftRequest, CreateTechnicianRequest,
        CreateTruckRequest, DisposalFacility, JobType, OpeningHours, Shift, Technician, Truck,
        WasteKind,
    };
    let org = format!("organizations/{DEMO_ORG}");
    let mut users = Vec::new();
    for email in ["tech@demo.example", "tech2@demo.example"] {
        let user = crm_identity::bootstrap::ensure_member(
            &identity.pool,
            &identity.hasher,
            &crm_identity::bootstrap::Member {
                org: DEMO_ORG,
                org_display_name: "Demo Septic & Grease",
                email,
                password,
                roles: &["fieldops.technician"],
                reset_password: true,
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("creating the demo technician {email}: {e}"))?;
        users.push(user);
    }
    let customer = format!(
        "{org}/customers/{}",
        Uuid::from_u128(0x0193_a5b0_0000_7000_8000_0000_0001_0000)
    );
    let address = |line: &str| PostalAddress {
        region_code: "US".into(),
        administrative_area: "TX".into(),
        locality: "Austin".into(),
        address_lines: vec![line.to_owned()],
        ..PostalAddress::default()
    };
    let property_id = demo_id(1, 1);
    seeded(
        "the demo property",
        PropertyServiceClient::connect(target.to_owned())
            .await?
            .create_property(authorized(
                token,
                CreatePropertyRequest {
                    parent: org.clone(),
                    property: Some(Property {
                        customer: customer.clone(),
                        display_name: "Bayside Diner kitchen".into(),
                        address: Some(address("400 Bayside Dr")),
                        zone: "downtown".into(),
                        ..Property::default()
                    }),
                    property_id: property_id.to_string(),
                    request_id: String::new(),
                },
            )?)
            .await,
    )?;
    let technician_id = demo_id(2, 1);
    seeded(
        "the demo technician",
        TechnicianServiceClient::connect(target.to_owned())
            .await?
            .create_technician(authorized(
                token,
                CreateTechnicianRequest {
                    parent: org.clone(),
                    technician: Some(Technician {
                        user: format!("users/{}", users[0]),
                        display_name: "Sam Ortiz".into(),
                        skills: vec![
                            JobType::Pumping as i32,
                            JobType::GreaseTrap as i32,
                            JobType::Maintenance as i32,
                        ],
                        home_zone: "downtown".into(),
                        hourly_cost: Some(Money {
                            currency_code: "USD".into(),
                            units: 38,
                            nanos: 500_000_000,
                        }),
                        ..Technician::default()
                    }),
                    technician_id: technician_id.to_string(),
                    request_id: String::new(),
                },
            )?)
            .await,
    )?;
    let technician = format!("{org}/technicians/{technician_id}");
    let truck_id = demo_id(3, 1);
    seeded(
        "the demo truck",
        TruckServiceClient::connect(target.to_owned())
            .await?
            .create_truck(authorized(
                token,
                CreateTruckRequest {
                    parent: org.clone(),
                    truck: Some(Truck {
                        display_name: "Truck 1".into(),
                        plate: "DEMO-1".into(),
                        tank_capacity_gallons: 3500,
                        technician: technician.clone(),
                        active: true,
                        ..Truck::default()
                    }),
                    truck_id: truck_id.to_string(),
                    request_id: String::new(),
                },
            )?)
            .await,
    )?;
    let facility_id = demo_id(4, 1);
    seeded(
        "the demo disposal facility",
        DisposalFacilityServiceClient::connect(target.to_owned())
            .await?
            .create_disposal_facility(authorized(
                token,
                CreateDisposalFacilityRequest {
                    parent: org.clone(),
                    disposal_facility: Some(DisposalFacility {
                        display_name: "Walnut Creek Receiving Station".into(),
                        address: Some(address("7113 E Hwy 290")),
                        permit_number: "TX-WQ-0001".into(),
                        accepted_waste_kinds: vec![
                            WasteKind::Septage as i32,
                            WasteKind::Grease as i32,
                        ],
                        opening_hours: (1..=6)
                            .map(|day| OpeningHours {
                                day_of_week: day,
                                open_time: "07:00".into(),
                                close_time: "17:00".into(),
                            })
                            .collect(),
                        tipping_fee_per_gallon: Some(Money {
                            currency_code: "USD".into(),
                            units: 0,
                            nanos: 85_000_000,
                        }),
                        active: true,
                        ..DisposalFacility::default()
                    }),
                    disposal_facility_id: facility_id.to_string(),
                    request_id: String::new(),
                },
            )?)
            .await,
    )?;
    // A week of day shifts from tomorrow, one id per calendar day.
    let mut shifts = ShiftServiceClient::connect(target.to_owned()).await?;
    let today = chrono::Utc::now().date_naive();
    for day in 1..=7 {
        let date = today + chrono::Duration::days(day);
        let at = |h: u32| {
            date.and_hms_opt(h, 0, 0)
                .map(|t| crm_platform::api::time::timestamp(t.and_utc()))
        };
        let n = u128::try_from(
            date.and_hms_opt(0, 0, 0)
                .map_or(0, |t| t.and_utc().timestamp() / 86_400),
        )
        .unwrap_or_default();
        seeded(
            "a demo shift",
            shifts
                .create_shift(authorized(
                    token,
                    CreateShiftRequest {
                        parent: org.clone(),
                        shift: Some(Shift {
                            technician: technician.clone(),
                            start_time: at(8),
                            end_time: at(16),
                            zone: "downtown".into(),
                            ..Shift::default()
                        }),
                        shift_id: demo_id(5, n).to_string(),
                        request_id: String::new(),
                    },
                )?)
                .await,
        )?;
    }
    Ok(Field {
        customer,
        property: format!("{org}/properties/{property_id}"),
        technician,
        truck: format!("{org}/trucks/{truck_id}"),
        facility: format!("{org}/disposalFacilities/{facility_id}"),
        spare_user: format!("users/{}", users[1]),
    })
}

const DEMO_CLIENT: &str = "Demo integration";

/// Replaces the demo API client: the previous one (whose secret was shown by an earlier run)
/// is deleted, and a new one with a fresh secret is created.
async fn demo_client(
    target: &str,
    organization: &str,
    token: &str,
) -> anyhow::Result<(String, String)> {
    use crm_proto::identity_v1::api_client_service_client::ApiClientServiceClient;
    use crm_proto::identity_v1::{
        ApiClient, CreateApiClientRequest, DeleteApiClientRequest, ListApiClientsRequest,
    };
    let mut clients = ApiClientServiceClient::connect(target.to_owned()).await?;
    let existing = clients
        .list_api_clients(authorized(
            token,
            ListApiClientsRequest {
                parent: organization.to_owned(),
                page_size: 1000,
                page_token: String::new(),
            },
        )?)
        .await?
        .into_inner();
    for old in existing
        .api_clients
        .into_iter()
        .filter(|c| c.display_name == DEMO_CLIENT)
    {
        clients
            .delete_api_client(authorized(
                token,
                DeleteApiClientRequest {
                    name: old.name,
                    request_id: String::new(),
                },
            )?)
            .await?;
    }
    let created = clients
        .create_api_client(authorized(
            token,
            CreateApiClientRequest {
                parent: organization.to_owned(),
                api_client: Some(ApiClient {
                    display_name: DEMO_CLIENT.into(),
                    roles: vec!["crm.sales".into()],
                    ..ApiClient::default()
                }),
                request_id: String::new(),
            },
        )?)
        .await?
        .into_inner();
    let client_id = created.api_client.map(|c| c.client_id).unwrap_or_default();
    Ok((client_id, created.client_secret))
}

/// Prints where the suite is and how to call it.
pub fn print_next_steps(
    (addr, http): (SocketAddr, SocketAddr),
    database: &str,
    demo: Option<&Demo>,
) {
    println!();
    println!("CRM suite is serving gRPC on {addr} (reflection and grpc.health.v1 enabled)");
    println!("  and HTTP/JSON on http://{http} (every RPC by its google.api.http rule)");
    for package in ["crm.identity.v1", "crm.core.v1", "crm.fieldops.v1"] {
        let services: Vec<String> = crm_proto::json::service_names()
            .iter()
            .filter_map(|n| n.strip_prefix(&format!("{package}.")))
            .map(|n| n.trim_end_matches("Service").to_owned())
            .collect();
        println!("  {package}: {}", services.join(", "));
    }
    println!("  database: {database}");
    println!();
    println!("List the services:");
    println!("  grpcurl -plaintext {addr} list");
    println!("  buf curl --protocol grpc --http2-prior-knowledge --list-services http://{addr}");
    let Some(demo) = demo else {
        println!();
        println!(
            "Sign in with AuthService/Login as a member of an organization; `crm up --demo` creates one."
        );
        println!();
        println!("Stop with Ctrl-C.");
        return;
    };
    println!();
    println!("Demo organization {}", demo.organization);
    println!("  administrator: {DEMO_EMAIL}");
    println!("  password:      {}   (new at every start)", demo.password);
    println!();
    println!("Sign in (the response has an access token for 5 minutes and a refresh token):");
    println!(
        "  grpcurl -plaintext -d '{{\"email\":\"{DEMO_EMAIL}\",\"password\":\"{}\",\"organization\":\"{}\"}}' {addr} crm.identity.v1.AuthService/Login",
        demo.password, demo.organization
    );
    println!();
    println!("Or use this access token, from such a sign-in just now (valid 5 minutes):");
    println!("  export TOKEN={}", demo.token);
    println!();
    println!("Over HTTP/JSON: sign in, list the customers, create one:");
    println!(
        "  curl -s http://{http}/v1/auth:login -d '{{\"email\":\"{DEMO_EMAIL}\",\"password\":\"{}\",\"organization\":\"{}\"}}'",
        demo.password, demo.organization
    );
    println!(
        "  curl -s -H \"authorization: Bearer $TOKEN\" 'http://{http}/v1/{}/customers?pageSize=2'",
        demo.organization
    );
    println!(
        "  curl -s -H \"authorization: Bearer $TOKEN\" http://{http}/v1/{}/customers -d '{{\"displayName\":\"Lakeside Cafe\"}}'",
        demo.organization
    );
    println!();
    println!("List the customers:");
    println!(
        "  grpcurl -plaintext -H \"authorization: Bearer $TOKEN\" -d '{{\"parent\":\"{}\"}}' {addr} crm.core.v1.CustomerService/ListCustomers",
        demo.organization
    );
    println!("Create one:");
    println!(
        "  buf curl --protocol grpc --http2-prior-knowledge -H \"authorization: Bearer $TOKEN\" \\\n    --data '{{\"parent\":\"{}\",\"customer\":{{\"displayName\":\"Lakeside Cafe\",\"kind\":\"CUSTOMER_KIND_FOOD_SERVICE\"}}}}' \\\n    http://{addr}/crm.core.v1.CustomerService/CreateCustomer",
        demo.organization
    );
    println!("An API client (role crm.sales) for integrations; its secret is shown only here:");
    println!("  client_id:     {}", demo.client_id);
    println!("  client_secret: {}", demo.client_secret);
    println!(
        "  grpcurl -plaintext -d '{{\"clientId\":\"{}\",\"clientSecret\":\"{}\"}}' {addr} crm.identity.v1.AuthService/ClientCredentials",
        demo.client_id, demo.client_secret
    );
    println!(
        "  over HTTP: curl -s -u '{}:{}' -d grant_type=client_credentials http://{http}/oauth/token",
        demo.client_id, demo.client_secret
    );
    println!("API reference: http://{http}/docs (OpenAPI 3.1: http://{http}/openapi.json)");
    println!();
    println!("Refresh, then sign out (the old access token is refused within about a second):");
    println!(
        "  grpcurl -plaintext -d '{{\"refreshToken\":\"<refresh token>\"}}' {addr} crm.identity.v1.AuthService/RefreshToken"
    );
    println!(
        "  grpcurl -plaintext -H \"authorization: Bearer $TOKEN\" {addr} crm.identity.v1.AuthService/Logout"
    );
    println!();
    println!(
        "Contacts, properties, equipment, consent, messages, search, tickets, inventory and the audit log:"
    );
    println!("  see \"A first day in core\" in README.md for ready calls.");
    println!(
        "Price, quote, e-signature, work order, invoice and payments: \"From a price to a paid invoice\" in README.md."
    );
    println!();
    let f = &demo.field;
    println!(
        "Field operations (\"A first job in field operations\" in README.md walks a job end to end):"
    );
    println!(
        "  technicians tech@demo.example, tech2@demo.example (same password as the administrator)"
    );
    println!("  export PROPERTY={} CUSTOMER={}", f.property, f.customer);
    println!("  export TECH={} TRUCK={}", f.technician, f.truck);
    println!(
        "  export FACILITY={} SPARE_USER={}",
        f.facility, f.spare_user
    );
    println!(
        "  grpcurl -plaintext -H \"authorization: Bearer $TOKEN\" -d '{{\"parent\":\"{}\",\"jobType\":\"JOB_TYPE_GREASE_TRAP\",\"property\":\"{}\",\"startTime\":\"{}\",\"endTime\":\"{}\"}}' {addr} crm.fieldops.v1.SchedulingService/ListAvailableSlots",
        demo.organization,
        f.property,
        (chrono::Utc::now() + chrono::Duration::days(1)).format("%Y-%m-%dT00:00:00Z"),
        (chrono::Utc::now() + chrono::Duration::days(3)).format("%Y-%m-%dT00:00:00Z"),
    );
    println!();
    println!("Stop with Ctrl-C.");
}
