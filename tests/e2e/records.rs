//! Contacts, properties, equipment (with readings) and the core audit log: the standard methods
//! through the shared engine, per-resource validation, references, views, audit.

use crm_proto::common_v1::{GeoPoint, PostalAddress};
use crm_proto::core_v1::audit_service_client::AuditServiceClient;
use crm_proto::core_v1::contact_service_client::ContactServiceClient;
use crm_proto::core_v1::equipment_service_client::EquipmentServiceClient;
use crm_proto::core_v1::property_service_client::PropertyServiceClient;
use crm_proto::core_v1::{
    ActorKind, Contact, CreateContactRequest, CreateEquipmentRequest, CreatePropertyRequest,
    DeleteContactRequest, DeleteCustomerRequest, Equipment, EquipmentKind, EquipmentReading,
    GetContactRequest, GetPropertyRequest, ListAuditEntriesRequest, ListContactsRequest,
    ListEquipmentReadingsRequest, ListPropertiesRequest, Property, PropertyView,
    RecordEquipmentReadingRequest, UndeleteContactRequest, UpdateContactRequest,
    UpdatePropertyRequest, VerifyAuditChainRequest,
};
use prost_types::{FieldMask, Timestamp};
use tonic::Code;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::support::{Env, assert_invalid_field, reason};

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    })
}

fn contacts(env: &Env) -> ContactServiceClient<Channel> {
    ContactServiceClient::new(env.server.channel.clone())
}

fn properties(env: &Env) -> PropertyServiceClient<Channel> {
    PropertyServiceClient::new(env.server.channel.clone())
}

fn equipment(env: &Env) -> EquipmentServiceClient<Channel> {
    EquipmentServiceClient::new(env.server.channel.clone())
}

fn audit(env: &Env) -> AuditServiceClient<Channel> {
    AuditServiceClient::new(env.server.channel.clone())
}

fn contact(customer: &str, name: &str) -> Contact {
    Contact {
        customer: customer.to_owned(),
        display_name: name.to_owned(),
        email: "pat@bayside.example".into(),
        phone: "+15551230001".into(),
        ..Contact::default()
    }
}

fn property(customer: &str) -> Property {
    Property {
        customer: customer.to_owned(),
        display_name: "Bayside kitchen".into(),
        address: Some(PostalAddress {
            region_code: "US".into(),
            postal_code: "78701".into(),
            administrative_area: "TX".into(),
            locality: "Austin".into(),
            address_lines: vec!["12 Harbor Rd".into()],
            recipient: String::new(),
        }),
        location: Some(GeoPoint {
            latitude: 30.27,
            longitude: -97.74,
        }),
        zone: "central".into(),
        access_notes: "Trap lid behind the dumpster".into(),
        gate_code: "4321#".into(),
        ..Property::default()
    }
}

async fn new_contact(env: &Env, c: Contact) -> Contact {
    contacts(env)
        .create_contact(env.req(CreateContactRequest {
            parent: env.parent(),
            contact: Some(c),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
}

async fn new_property(env: &Env, customer: &str) -> Property {
    properties(env)
        .create_property(env.req(CreatePropertyRequest {
            parent: env.parent(),
            property: Some(property(customer)),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn contact_round_trip_with_filter_update_delete_undelete() {
    let env = Env::new().await;
    let customer = env.create("Bayside Diner").await;
    let other = env.create("Harbor Cafe").await;
    let created = new_contact(&env, contact(&customer.name, "Pat Owner")).await;
    new_contact(&env, contact(&other.name, "Sam Elsewhere")).await;
    assert!(
        created
            .name
            .starts_with(&format!("{}/contacts/", env.parent()))
    );
    assert_eq!(created.customer, customer.name);
    let got = contacts(&env)
        .get_contact(env.req(GetContactRequest {
            name: created.name.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, created);

    let listed = contacts(&env)
        .list_contacts(env.req(ListContactsRequest {
            parent: env.parent(),
            filter: format!("customer = \"{}\"", customer.name),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.contacts, vec![created.clone()]);

    let updated = contacts(&env)
        .update_contact(env.req(UpdateContactRequest {
            contact: Some(Contact {
                name: created.name.clone(),
                title: "Owner".into(),
                etag: created.etag.clone(),
                ..Contact::default()
            }),
            update_mask: mask(&["title"]),
            request_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.title, "Owner");
    assert_eq!(updated.display_name, "Pat Owner");
    assert_ne!(updated.etag, created.etag);

    // A stale etag is refused and changes nothing.
    let stale = contacts(&env)
        .update_contact(env.req(UpdateContactRequest {
            contact: Some(Contact {
                name: created.name.clone(),
                title: "Manager".into(),
                etag: created.etag.clone(),
                ..Contact::default()
            }),
            update_mask: mask(&["title"]),
            request_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted, "{stale:?}");

    let deleted = contacts(&env)
        .delete_contact(env.req(DeleteContactRequest {
            name: created.name.clone(),
            etag: updated.etag.clone(),
            request_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(deleted.delete_time.is_some());
    let live = contacts(&env)
        .list_contacts(env.req(ListContactsRequest {
            parent: env.parent(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(live.contacts.len(), 1, "the deleted contact is hidden");
    let restored = contacts(&env)
        .undelete_contact(env.req(UndeleteContactRequest {
            name: created.name.clone(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(restored.delete_time.is_none());
    assert_eq!(restored.title, "Owner");
}

#[tokio::test]
async fn contact_fields_are_validated_each_by_name() {
    let env = Env::new().await;
    let status = contacts(&env)
        .create_contact(env.req(CreateContactRequest {
            parent: env.parent(),
            contact: Some(Contact {
                customer: "customers/nope".into(),
                display_name: " ".into(),
                email: "not-an-email".into(),
                phone: "555-1234".into(),
                title: "x".repeat(201),
                ..Contact::default()
            }),
            contact_id: "not-a-uuid".into(),
            request_id: "nope".into(),
        }))
        .await
        .unwrap_err();
    for (field, reason) in [
        ("contact.customer", "INVALID_RESOURCE_NAME"),
        ("contact.display_name", "REQUIRED"),
        ("contact.email", "INVALID_EMAIL"),
        ("contact.phone", "INVALID_PHONE"),
        ("contact.title", "TOO_LONG"),
        ("contact_id", "INVALID_UUID"),
        ("request_id", "INVALID_UUID"),
    ] {
        assert_invalid_field(&status, field, reason);
    }
    // A customer of another organization is refused as a reference.
    let foreign = format!(
        "organizations/{}/customers/{}",
        Uuid::now_v7(),
        Uuid::now_v7()
    );
    let status = contacts(&env)
        .create_contact(env.req(CreateContactRequest {
            parent: env.parent(),
            contact: Some(contact(&foreign, "Pat")),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_invalid_field(&status, "contact.customer", "CROSS_ORGANIZATION_REFERENCE");
    // A customer that does not exist, or is deleted, is a failed precondition.
    let missing = format!("{}/customers/{}", env.parent(), Uuid::now_v7());
    let status = contacts(&env)
        .create_contact(env.req(CreateContactRequest {
            parent: env.parent(),
            contact: Some(contact(&missing, "Pat")),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let customer = env.create("Soon gone").await;
    env.customers()
        .delete_customer(env.req(DeleteCustomerRequest {
            name: customer.name.clone(),
            ..Default::default()
        }))
        .await
        .unwrap();
    let status = contacts(&env)
        .create_contact(env.req(CreateContactRequest {
            parent: env.parent(),
            contact: Some(contact(&customer.name, "Pat")),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "CUSTOMER_DELETED");
}

#[tokio::test]
async fn one_primary_contact_per_customer() {
    let env = Env::new().await;
    let customer = env.create("Bayside Diner").await;
    let first = new_contact(
        &env,
        Contact {
            primary: true,
            ..contact(&customer.name, "First")
        },
    )
    .await;
    let second = new_contact(
        &env,
        Contact {
            primary: true,
            ..contact(&customer.name, "Second")
        },
    )
    .await;
    assert!(second.primary);
    let first_now = contacts(&env)
        .get_contact(env.req(GetContactRequest {
            name: first.name.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(!first_now.primary, "the previous primary gave way");
    assert_ne!(first_now.etag, first.etag, "and its etag moved");
}

#[tokio::test]
async fn duplicate_request_id_returns_the_original_contact() {
    let env = Env::new().await;
    let customer = env.create("Bayside Diner").await;
    let request = CreateContactRequest {
        parent: env.parent(),
        contact: Some(contact(&customer.name, "Pat")),
        contact_id: String::new(),
        request_id: Uuid::now_v7().to_string(),
    };
    let first = contacts(&env)
        .create_contact(env.req(request.clone()))
        .await
        .unwrap()
        .into_inner();
    let again = contacts(&env)
        .create_contact(env.req(request.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, again);
    let all = contacts(&env)
        .list_contacts(env.req(ListContactsRequest {
            parent: env.parent(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.contacts.len(), 1);
    let mut changed = request;
    changed.contact.as_mut().unwrap().display_name = "Someone else".into();
    let status = contacts(&env)
        .create_contact(env.req(changed))
        .await
        .unwrap_err();
    assert_invalid_field(&status, "request_id", "REQUEST_ID_REUSED");
}

#[tokio::test]
async fn other_tenants_and_read_only_roles_are_refused() {
    let env = Env::new().await;
    let customer = env.create("Bayside Diner").await;
    let created = new_contact(&env, contact(&customer.name, "Pat")).await;
    let stranger = env.server.token(Uuid::now_v7(), &["org.admin"]);
    let status = contacts(&env)
        .get_contact(crm_testkit::TestServer::request(
            &stranger,
            GetContactRequest {
                name: created.name.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = contacts(&env)
        .delete_contact(crm_testkit::TestServer::request(
            &stranger,
            DeleteContactRequest {
                name: created.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    let viewer = env.server.token(env.org, &["crm.viewer"]);
    contacts(&env)
        .get_contact(crm_testkit::TestServer::request(
            &viewer,
            GetContactRequest {
                name: created.name.clone(),
            },
        ))
        .await
        .unwrap();
    let status = contacts(&env)
        .create_contact(crm_testkit::TestServer::request(
            &viewer,
            CreateContactRequest {
                parent: env.parent(),
                contact: Some(contact(&customer.name, "Nope")),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let support = env.server.token(env.org, &["crm.support"]);
    let status = contacts(&env)
        .delete_contact(crm_testkit::TestServer::request(
            &support,
            DeleteContactRequest {
                name: created.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::PermissionDenied,
        "support may write but not delete"
    );
    let still = contacts(&env)
        .get_contact(env.req(GetContactRequest {
            name: created.name.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(still, created, "nothing changed");
}

#[tokio::test]
async fn gate_codes_only_with_the_full_view_and_never_in_the_audit_log() {
    let env = Env::new().await;
    let customer = env.create("Bayside Diner").await;
    let created = new_property(&env, &customer.name).await;
    assert_eq!(created.gate_code, "4321#", "the creator sees what it sent");
    let basic = properties(&env)
        .get_property(env.req(GetPropertyRequest {
            name: created.name.clone(),
            view: PropertyView::Unspecified as i32,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(basic.gate_code, "");
    assert_eq!(basic.access_notes, created.access_notes);
    let full = properties(&env)
        .get_property(env.req(GetPropertyRequest {
            name: created.name.clone(),
            view: PropertyView::Full as i32,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(full, created);
    let listed = properties(&env)
        .list_properties(env.req(ListPropertiesRequest {
            parent: env.parent(),
            filter: "zone = central".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.properties.len(), 1);
    assert_eq!(listed.properties[0].gate_code, "");

    properties(&env)
        .update_property(env.req(UpdatePropertyRequest {
            property: Some(Property {
                name: created.name.clone(),
                gate_code: "9999".into(),
                ..Property::default()
            }),
            update_mask: mask(&["gate_code"]),
            request_id: String::new(),
        }))
        .await
        .unwrap();
    let entries = audit(&env)
        .list_audit_entries(env.req(ListAuditEntriesRequest {
            parent: env.parent(),
            filter: format!("resource = \"{}\"", created.name),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .audit_entries;
    assert_eq!(entries.len(), 2);
    let text = format!("{entries:?}");
    assert!(!text.contains("4321") && !text.contains("9999"), "{text}");
    let change = entries[1]
        .changes
        .iter()
        .find(|c| c.field == "gate_code")
        .expect("the change is recorded, redacted");
    assert_eq!(change.after, "\"[redacted]\"");

    // Nor in the events any reader of the stream sees.
    let in_outbox = crate::support::count(
        &env.db,
        "SELECT count(*) AS n FROM core.outbox WHERE position(convert_to('4321#', 'UTF8') in \
         payload) > 0 OR position(convert_to('9999', 'UTF8') in payload) > 0",
    )
    .await;
    assert_eq!(in_outbox, 0, "a gate code reached the outbox");
    assert!(
        crate::support::count(
            &env.db,
            "SELECT count(*) AS n FROM core.outbox WHERE event_type LIKE 'crm.core.v1.Property.%'"
        )
        .await
            >= 2
    );

    // Reading the FULL view is a permission of its own: readers and analysts do not have it.
    for role in ["crm.viewer", "analytics.viewer"] {
        let token = env.server.token(env.org, &[role]);
        let refused = properties(&env)
            .get_property(crm_testkit::TestServer::request(
                &token,
                GetPropertyRequest {
                    name: created.name.clone(),
                    view: PropertyView::Full as i32,
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{role}");
        assert_eq!(
            crate::support::reason(&refused),
            "FULL_VIEW_PERMISSION_MISSING"
        );
        let refused = properties(&env)
            .list_properties(crm_testkit::TestServer::request(
                &token,
                ListPropertiesRequest {
                    parent: env.parent(),
                    view: PropertyView::Full as i32,
                    ..Default::default()
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{role}");
    }
    let viewer = env.server.token(env.org, &["crm.viewer"]);
    let basic = properties(&env)
        .get_property(crm_testkit::TestServer::request(
            &viewer,
            GetPropertyRequest {
                name: created.name.clone(),
                view: PropertyView::Basic as i32,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(basic.gate_code, "");
    let support = env.server.token(env.org, &["crm.support"]);
    let full = properties(&env)
        .get_property(crm_testkit::TestServer::request(
            &support,
            GetPropertyRequest {
                name: created.name.clone(),
                view: PropertyView::Full as i32,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(full.gate_code, "9999", "support crews see where they go");
}

#[tokio::test]
async fn property_address_and_location_are_validated() {
    let env = Env::new().await;
    let customer = env.create("Bayside Diner").await;
    let status = properties(&env)
        .create_property(env.req(CreatePropertyRequest {
            parent: env.parent(),
            property: Some(Property {
                address: Some(PostalAddress {
                    region_code: "USA".into(),
                    ..PostalAddress::default()
                }),
                location: Some(GeoPoint {
                    latitude: 91.0,
                    longitude: -200.0,
                }),
                zone: "Central Zone".into(),
                ..property(&customer.name)
            }),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    for (field, reason) in [
        ("property.address.region_code", "INVALID_REGION_CODE"),
        ("property.address.address_lines", "REQUIRED"),
        ("property.location.latitude", "OUT_OF_RANGE"),
        ("property.location.longitude", "OUT_OF_RANGE"),
        ("property.zone", "INVALID_ZONE"),
    ] {
        assert_invalid_field(&status, field, reason);
    }
}

#[tokio::test]
async fn a_grease_trap_with_readings() {
    let env = Env::new().await;
    let customer = env.create("Bayside Diner").await;
    let site = new_property(&env, &customer.name).await;
    let trap = equipment(&env)
        .create_equipment(env.req(CreateEquipmentRequest {
            parent: env.parent(),
            equipment: Some(Equipment {
                property: site.name.clone(),
                kind: EquipmentKind::GreaseTrap as i32,
                display_name: "Kitchen trap".into(),
                capacity_gallons: 1000,
                compartments: 2,
                install_date: "2019-04-01".into(),
                ..Equipment::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(trap.latest_reading.is_none());
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    for (i, solids) in [(2, 6.5), (1, 8.0)] {
        equipment(&env)
            .record_equipment_reading(env.req(RecordEquipmentReadingRequest {
                name: trap.name.clone(),
                reading: Some(EquipmentReading {
                    solids_depth_inches: solids,
                    grease_depth_inches: 3.0,
                    read_time: Some(Timestamp {
                        seconds: now - i * 86_400,
                        nanos: 0,
                    }),
                    ..EquipmentReading::default()
                }),
                request_id: Uuid::now_v7().to_string(),
            }))
            .await
            .unwrap();
    }
    // Entered late: an older reading joins the history but does not replace the latest.
    let after = equipment(&env)
        .record_equipment_reading(env.req(RecordEquipmentReadingRequest {
            name: trap.name.clone(),
            reading: Some(EquipmentReading {
                solids_depth_inches: 1.0,
                grease_depth_inches: 1.0,
                read_time: Some(Timestamp {
                    seconds: now - 30 * 86_400,
                    nanos: 0,
                }),
                ..EquipmentReading::default()
            }),
            request_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    let latest = after.latest_reading.expect("latest reading");
    assert!((latest.solids_depth_inches - 8.0).abs() < f64::EPSILON);
    assert!(latest.recorder.starts_with("users/"));
    let history = equipment(&env)
        .list_equipment_readings(env.req(ListEquipmentReadingsRequest {
            parent: trap.name.clone(),
            page_size: 2,
            page_token: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(history.readings.len(), 2);
    assert!((history.readings[0].solids_depth_inches - 8.0).abs() < f64::EPSILON);
    assert!(!history.next_page_token.is_empty());

    let status = equipment(&env)
        .create_equipment(env.req(CreateEquipmentRequest {
            parent: env.parent(),
            equipment: Some(Equipment {
                property: site.name.clone(),
                kind: 0,
                capacity_gallons: -5,
                compartments: 50,
                install_date: "2019-13-01".into(),
                last_service_date: "2999-01-01".into(),
                ..Equipment::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    for (field, reason) in [
        ("equipment.kind", "REQUIRED"),
        ("equipment.capacity_gallons", "OUT_OF_RANGE"),
        ("equipment.compartments", "OUT_OF_RANGE"),
        ("equipment.install_date", "INVALID_DATE"),
        ("equipment.last_service_date", "DATE_IN_FUTURE"),
    ] {
        assert_invalid_field(&status, field, reason);
    }
    let status = equipment(&env)
        .record_equipment_reading(env.req(RecordEquipmentReadingRequest {
            name: trap.name.clone(),
            reading: Some(EquipmentReading {
                solids_depth_inches: -1.0,
                grease_depth_inches: f64::NAN,
                read_time: None,
                ..EquipmentReading::default()
            }),
            request_id: String::new(),
        }))
        .await
        .unwrap_err();
    for (field, reason) in [
        ("reading.solids_depth_inches", "OUT_OF_RANGE"),
        ("reading.grease_depth_inches", "OUT_OF_RANGE"),
        ("reading.read_time", "REQUIRED"),
    ] {
        assert_invalid_field(&status, field, reason);
    }
}

#[tokio::test]
async fn every_mutation_is_audited_once_in_order_and_tampering_is_detected() {
    let env = Env::new().await;
    let customer = env.create("Bayside Diner").await;
    let c = new_contact(&env, contact(&customer.name, "Pat")).await;
    let c = contacts(&env)
        .update_contact(env.req(UpdateContactRequest {
            contact: Some(Contact {
                name: c.name.clone(),
                display_name: "Pat Owner".into(),
                ..Contact::default()
            }),
            update_mask: mask(&["display_name"]),
            request_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    let request_id = Uuid::now_v7().to_string();
    for _ in 0..2 {
        // The retry replays the stored response and writes no second entry.
        contacts(&env)
            .delete_contact(env.req(DeleteContactRequest {
                name: c.name.clone(),
                etag: String::new(),
                request_id: request_id.clone(),
            }))
            .await
            .unwrap();
    }
    let entries = audit(&env)
        .list_audit_entries(env.req(ListAuditEntriesRequest {
            parent: env.parent(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .audit_entries;
    let summary: Vec<(String, String)> = entries
        .iter()
        .map(|e| (e.resource.clone(), e.action.clone()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (customer.name.clone(), "create".to_owned()),
            (c.name.clone(), "create".to_owned()),
            (c.name.clone(), "update".to_owned()),
            (c.name.clone(), "delete".to_owned()),
        ]
    );
    assert_eq!(
        entries.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    let update = &entries[2];
    assert_eq!(update.method, "crm.core.v1.ContactService/UpdateContact");
    assert_eq!(update.actor_kind, ActorKind::User as i32);
    assert_eq!(update.changes.len(), 1);
    assert_eq!(update.changes[0].field, "display_name");
    assert_eq!(update.changes[0].before, "\"Pat\"");
    assert_eq!(update.changes[0].after, "\"Pat Owner\"");
    assert_eq!(entries[3].request_id, request_id);

    let verify = || async {
        audit(&env)
            .verify_audit_chain(env.req(VerifyAuditChainRequest {
                parent: env.parent(),
            }))
            .await
            .unwrap()
            .into_inner()
    };
    let ok = verify().await;
    assert!(ok.intact, "{ok:?}");
    assert_eq!(ok.entries_checked, 4);

    // Tampering, as the database owner (the app role cannot update the log at all).
    use diesel_async::RunQueryDsl;
    let mut admin = env.db.admin().await.unwrap();
    diesel::sql_query(
        "UPDATE core.audit_entries SET changes = replace(changes, 'Pat Owner', 'Mallory') \
         WHERE seq = 3",
    )
    .execute(&mut admin)
    .await
    .unwrap();
    let bad = verify().await;
    assert!(!bad.intact);
    assert_eq!(bad.first_bad_sequence, 3, "{bad:?}");

    // Removing the newest entry is caught through the head.
    diesel::sql_query(
        "UPDATE core.audit_entries SET changes = replace(changes, 'Mallory', 'Pat Owner') \
         WHERE seq = 3",
    )
    .execute(&mut admin)
    .await
    .unwrap();
    assert!(verify().await.intact);
    diesel::sql_query("DELETE FROM core.audit_entries WHERE seq = 4")
        .execute(&mut admin)
        .await
        .unwrap();
    let cut = verify().await;
    assert!(!cut.intact);
    assert_eq!(cut.first_bad_sequence, 4, "{cut:?}");
}

#[tokio::test]
async fn concurrent_writes_extend_one_intact_chain() {
    let env = Env::new().await;
    // The organization's first entries, all at once: the head row does not exist yet.
    let names: Vec<String> = (0..24).map(|i| format!("Concurrent {i:02}")).collect();
    futures_util::future::join_all(names.iter().map(|n| env.create(n))).await;
    let mut sequences = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = audit(&env)
            .list_audit_entries(env.req(ListAuditEntriesRequest {
                parent: env.parent(),
                page_size: 10,
                page_token: page_token.clone(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        sequences.extend(page.audit_entries.iter().map(|e| e.sequence));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    sequences.sort_unstable();
    assert_eq!(sequences, (1..=24).collect::<Vec<i64>>());
    let verdict = audit(&env)
        .verify_audit_chain(env.req(VerifyAuditChainRequest {
            parent: env.parent(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(verdict.intact, "{verdict:?}");
    assert_eq!(verdict.entries_checked, 24);
}
