//! CustomerService: round trip, validation, etags, idempotency, permissions.

use crm_proto::core_v1::{
    CreateCustomerRequest, Customer, CustomerKind, DeleteCustomerRequest, GetCustomerRequest,
    ListCustomersRequest, UndeleteCustomerRequest, UpdateCustomerRequest,
};
use crm_testkit::TestServer;
use prost_types::FieldMask;
use tonic::Code;
use uuid::Uuid;

use crate::support::{Env, assert_invalid_field, count, reason};

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    })
}

#[tokio::test]
async fn create_get_list_update_delete_undelete_round_trip() {
    let env = Env::new().await;
    let mut client = env.customers();
    let created = client
        .create_customer(env.req(CreateCustomerRequest {
            parent: env.parent(),
            customer: Some(Customer {
                display_name: "Bayside Diner".into(),
                email: "owner@bayside.example".into(),
                phone: "+15551230000".into(),
                kind: CustomerKind::FoodService as i32,
                notes: "Grease trap behind the kitchen".into(),
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(
        created
            .name
            .starts_with(&format!("{}/customers/", env.parent()))
    );
    assert!(created.create_time.is_some());
    assert!(created.creator.starts_with("users/"));

    let got = client
        .get_customer(env.req(GetCustomerRequest {
            name: created.name.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, created);

    let updated = client
        .update_customer(env.req(UpdateCustomerRequest {
            customer: Some(Customer {
                name: created.name.clone(),
                display_name: "Bayside Diner & Grill".into(),
                email: String::new(),
                etag: created.etag.clone(),
                ..Default::default()
            }),
            update_mask: mask(&["display_name", "email", "create_time"]),
            request_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.display_name, "Bayside Diner & Grill");
    assert_eq!(updated.email, "");
    assert_eq!(
        updated.phone, "+15551230000",
        "fields outside the mask are kept"
    );
    assert_eq!(
        updated.create_time, created.create_time,
        "output-only paths are ignored"
    );
    assert_ne!(updated.etag, created.etag);

    let deleted = client
        .delete_customer(env.req(DeleteCustomerRequest {
            name: created.name.clone(),
            etag: updated.etag.clone(),
            request_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(deleted.delete_time.is_some() && deleted.purge_time.is_some());

    let live = client
        .list_customers(env.req(ListCustomersRequest {
            parent: env.parent(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(live.customers.is_empty());
    let all = client
        .list_customers(env.req(ListCustomersRequest {
            parent: env.parent(),
            show_deleted: true,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.customers.len(), 1);

    let again = client
        .delete_customer(env.req(DeleteCustomerRequest {
            name: created.name.clone(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);

    let restored = client
        .undelete_customer(env.req(UndeleteCustomerRequest {
            name: created.name.clone(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(restored.delete_time.is_none());
    let live = client
        .list_customers(env.req(ListCustomersRequest {
            parent: env.parent(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(live.customers.len(), 1);

    let missing = format!("{}/customers/{}", env.parent(), Uuid::now_v7());
    let nf = client
        .get_customer(env.req(GetCustomerRequest { name: missing }))
        .await
        .unwrap_err();
    assert_eq!(nf.code(), Code::NotFound);
}

#[tokio::test]
async fn stale_etag_on_update_and_delete_is_aborted() {
    let env = Env::new().await;
    let mut client = env.customers();
    let c = env.create("Etag Co").await;
    let fresh = client
        .update_customer(env.req(UpdateCustomerRequest {
            customer: Some(Customer {
                name: c.name.clone(),
                notes: "first".into(),
                etag: c.etag.clone(),
                ..Default::default()
            }),
            update_mask: mask(&["notes"]),
            request_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    let stale_update = client
        .update_customer(env.req(UpdateCustomerRequest {
            customer: Some(Customer {
                name: c.name.clone(),
                notes: "second".into(),
                etag: c.etag.clone(),
                ..Default::default()
            }),
            update_mask: mask(&["notes"]),
            request_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(stale_update.code(), Code::Aborted);
    assert_eq!(reason(&stale_update), "ETAG_MISMATCH");
    let stale_delete = client
        .delete_customer(env.req(DeleteCustomerRequest {
            name: c.name.clone(),
            etag: c.etag.clone(),
            request_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(stale_delete.code(), Code::Aborted);
    let now = client
        .get_customer(env.req(GetCustomerRequest {
            name: c.name.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(now.notes, "first");
    assert_eq!(now.etag, fresh.etag);
    assert!(now.delete_time.is_none());
}

#[tokio::test]
async fn duplicate_request_id_returns_the_original_and_writes_once() {
    let env = Env::new().await;
    let mut client = env.customers();
    let request_id = Uuid::new_v4().to_string();
    let request = || CreateCustomerRequest {
        parent: env.parent(),
        customer: Some(Customer {
            display_name: "Once Only".into(),
            ..Default::default()
        }),
        customer_id: String::new(),
        request_id: request_id.clone(),
    };
    // Concurrent duplicates as well as a later retry.
    let (mut c1, mut c2) = (env.customers(), env.customers());
    let (a, b) = tokio::join!(
        c1.create_customer(env.req(request())),
        c2.create_customer(env.req(request()))
    );
    let first = a.unwrap().into_inner();
    assert_eq!(b.unwrap().into_inner(), first);
    let retry = client
        .create_customer(env.req(request()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retry, first);
    assert_eq!(env.customer_rows().await, 1);
    assert_eq!(
        count(&env.db, "SELECT count(*) AS n FROM core.outbox").await,
        1
    );

    let mut other = request();
    other.customer = Some(Customer {
        display_name: "Something Else".into(),
        ..Default::default()
    });
    let reused = client.create_customer(env.req(other)).await.unwrap_err();
    assert_invalid_field(&reused, "request_id", "REQUEST_ID_REUSED");
    assert_eq!(env.customer_rows().await, 1);
}

#[tokio::test]
async fn every_invalid_field_is_named_and_nothing_is_written() {
    let env = Env::new().await;
    let mut client = env.customers();
    let good = || Customer {
        display_name: "Valid".into(),
        ..Default::default()
    };
    let create = |customer: Customer| CreateCustomerRequest {
        parent: env.parent(),
        customer: Some(customer),
        ..Default::default()
    };
    let cases: Vec<(CreateCustomerRequest, &str, &str)> = vec![
        (
            create(Customer {
                display_name: "  ".into(),
                ..good()
            }),
            "customer.display_name",
            "REQUIRED",
        ),
        (
            create(Customer {
                display_name: "x".repeat(201),
                ..good()
            }),
            "customer.display_name",
            "TOO_LONG",
        ),
        (
            create(Customer {
                email: "not-an-email".into(),
                ..good()
            }),
            "customer.email",
            "INVALID_EMAIL",
        ),
        (
            create(Customer {
                phone: "555-1234".into(),
                ..good()
            }),
            "customer.phone",
            "INVALID_PHONE",
        ),
        (
            create(Customer { kind: 42, ..good() }),
            "customer.kind",
            "UNKNOWN_ENUM_VALUE",
        ),
        (
            CreateCustomerRequest {
                parent: "organizations/not-a-uuid".into(),
                ..create(good())
            },
            "parent",
            "INVALID_RESOURCE_NAME",
        ),
        (
            CreateCustomerRequest {
                customer_id: "nope".into(),
                ..create(good())
            },
            "customer_id",
            "INVALID_UUID",
        ),
        (
            CreateCustomerRequest {
                request_id: "nope".into(),
                ..create(good())
            },
            "request_id",
            "INVALID_UUID",
        ),
        (
            CreateCustomerRequest {
                customer: None,
                ..create(good())
            },
            "customer",
            "REQUIRED",
        ),
    ];
    for (request, field, reason) in cases {
        let status = client.create_customer(env.req(request)).await.unwrap_err();
        assert_invalid_field(&status, field, reason);
    }
    // Several bad fields at once are all reported.
    let status = client
        .create_customer(env.req(create(Customer {
            display_name: String::new(),
            email: "x".into(),
            phone: "1".into(),
            ..good()
        })))
        .await
        .unwrap_err();
    for (field, reason) in [
        ("customer.display_name", "REQUIRED"),
        ("customer.email", "INVALID_EMAIL"),
        ("customer.phone", "INVALID_PHONE"),
    ] {
        assert_invalid_field(&status, field, reason);
    }
    assert_eq!(env.customer_rows().await, 0);

    let c = env.create("Target").await;
    let update = |paths: &[&str], customer: Customer| UpdateCustomerRequest {
        customer: Some(customer),
        update_mask: mask(paths),
        request_id: String::new(),
    };
    let cases: Vec<(UpdateCustomerRequest, &str, &str)> = vec![
        (
            update(
                &["nonexistent"],
                Customer {
                    name: c.name.clone(),
                    ..Default::default()
                },
            ),
            "update_mask",
            "UNKNOWN_MASK_PATH",
        ),
        (
            update(
                &[],
                Customer {
                    name: c.name.clone(),
                    ..Default::default()
                },
            ),
            "update_mask",
            "MISSING_UPDATE_MASK",
        ),
        (
            update(
                &["email"],
                Customer {
                    name: c.name.clone(),
                    email: "bad@".into(),
                    ..Default::default()
                },
            ),
            "customer.email",
            "INVALID_EMAIL",
        ),
        (
            update(
                &["kind"],
                Customer {
                    name: c.name.clone(),
                    kind: -3,
                    ..Default::default()
                },
            ),
            "customer.kind",
            "UNKNOWN_ENUM_VALUE",
        ),
        (
            update(
                &["notes"],
                Customer {
                    name: "customers/123".into(),
                    ..Default::default()
                },
            ),
            "customer.name",
            "INVALID_RESOURCE_NAME",
        ),
        (
            update(
                &["notes"],
                Customer {
                    name: c.name.clone(),
                    etag: "garbage".into(),
                    ..Default::default()
                },
            ),
            "customer.etag",
            "INVALID_ETAG",
        ),
    ];
    for (request, field, reason) in cases {
        let status = client.update_customer(env.req(request)).await.unwrap_err();
        assert_invalid_field(&status, field, reason);
    }
    let unchanged = client
        .get_customer(env.req(GetCustomerRequest {
            name: c.name.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unchanged.etag, c.etag);

    for bad in [
        "",
        "customers/x",
        &format!("{}/customers/not-a-uuid", env.parent()),
        &format!("{}/contacts/{}", env.parent(), Uuid::now_v7()),
    ] {
        let status = client
            .get_customer(env.req(GetCustomerRequest {
                name: bad.to_owned(),
            }))
            .await
            .unwrap_err();
        assert_invalid_field(&status, "name", "INVALID_RESOURCE_NAME");
    }

    // A name of another organization is refused before the database is touched.
    let foreign = format!(
        "organizations/{}/customers/{}",
        Uuid::now_v7(),
        Uuid::now_v7()
    );
    let status = client
        .get_customer(env.req(GetCustomerRequest { name: foreign }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn roles_without_the_permission_are_refused() {
    let env = Env::new().await;
    let c = env.create("Perm Test").await;
    let viewer = env.server.token(env.org, &["crm.viewer"]);
    let mut client = env.customers();
    let read = client
        .get_customer(TestServer::request(
            &viewer,
            GetCustomerRequest {
                name: c.name.clone(),
            },
        ))
        .await;
    assert!(read.is_ok());
    let write = client
        .create_customer(TestServer::request(
            &viewer,
            CreateCustomerRequest {
                parent: env.parent(),
                customer: Some(Customer {
                    display_name: "No".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(write.code(), Code::PermissionDenied);
    assert_eq!(reason(&write), "PERMISSION_MISSING");
    let support = env.server.token(env.org, &["crm.support"]);
    let delete = client
        .delete_customer(TestServer::request(
            &support,
            DeleteCustomerRequest {
                name: c.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(delete.code(), Code::PermissionDenied);

    let anonymous = client
        .get_customer(tonic::Request::new(GetCustomerRequest {
            name: c.name.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let garbage = client
        .get_customer(TestServer::request(
            "not.a.jwt",
            GetCustomerRequest { name: c.name },
        ))
        .await
        .unwrap_err();
    assert_eq!(garbage.code(), Code::Unauthenticated);
    assert_eq!(env.customer_rows().await, 1);
}

#[tokio::test]
async fn lifecycle_follows_the_allowed_transitions_and_new_fields_are_validated_and_filterable() {
    use crm_proto::core_v1::LifecycleStage;

    let env = Env::new().await;
    let mut client = env.customers();
    let lead = env.create("Lifecycle Co").await;
    assert_eq!(
        lead.lifecycle_stage,
        LifecycleStage::Lead as i32,
        "new customers are leads"
    );
    let churned_at_birth = client
        .create_customer(env.req(CreateCustomerRequest {
            parent: env.parent(),
            customer: Some(Customer {
                display_name: "Ghost".into(),
                lifecycle_stage: LifecycleStage::Churned as i32,
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_invalid_field(
        &churned_at_birth,
        "customer.lifecycle_stage",
        "INVALID_INITIAL_STAGE",
    );

    let mut current = lead;
    let move_to = |stage: LifecycleStage, etag: String, name: String| {
        let mut client = env.customers();
        let req = env.req(UpdateCustomerRequest {
            customer: Some(Customer {
                name,
                lifecycle_stage: stage as i32,
                etag,
                ..Default::default()
            }),
            update_mask: mask(&["lifecycle_stage"]),
            request_id: String::new(),
        });
        async move {
            client
                .update_customer(req)
                .await
                .map(tonic::Response::into_inner)
        }
    };
    current = move_to(
        LifecycleStage::Active,
        current.etag.clone(),
        current.name.clone(),
    )
    .await
    .unwrap();
    let back = move_to(
        LifecycleStage::Lead,
        current.etag.clone(),
        current.name.clone(),
    )
    .await
    .unwrap_err();
    assert_eq!(back.code(), Code::FailedPrecondition);
    assert_eq!(reason(&back), "LIFECYCLE_TRANSITION_NOT_ALLOWED");
    current = move_to(
        LifecycleStage::Churned,
        current.etag.clone(),
        current.name.clone(),
    )
    .await
    .unwrap();
    assert_eq!(
        move_to(
            LifecycleStage::Inactive,
            current.etag.clone(),
            current.name.clone()
        )
        .await
        .unwrap_err()
        .code(),
        Code::FailedPrecondition
    );
    current = move_to(
        LifecycleStage::Active,
        current.etag.clone(),
        current.name.clone(),
    )
    .await
    .unwrap();
    assert_eq!(
        current.lifecycle_stage,
        LifecycleStage::Active as i32,
        "won back"
    );

    let update = |customer: Customer, paths: &[&str]| UpdateCustomerRequest {
        customer: Some(customer),
        update_mask: mask(paths),
        request_id: String::new(),
    };
    let tagged = client
        .update_customer(env.req(update(
            Customer {
                name: current.name.clone(),
                tags: vec!["vip".into(), "grease-trap".into()],
                time_zone: "America/Chicago".into(),
                tier: "gold".into(),
                source: "referral".into(),
                ..Default::default()
            },
            &["tags", "time_zone", "tier", "source"],
        )))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(tagged.tags, ["vip", "grease-trap"]);
    assert_eq!(tagged.time_zone, "America/Chicago");
    for (customer, paths, field, reason) in [
        (
            Customer {
                name: current.name.clone(),
                time_zone: "Mars/Olympus".into(),
                ..Default::default()
            },
            &["time_zone"][..],
            "customer.time_zone",
            "UNKNOWN_TIME_ZONE",
        ),
        (
            Customer {
                name: current.name.clone(),
                tags: vec!["Not A Slug".into()],
                ..Default::default()
            },
            &["tags"][..],
            "customer.tags",
            "INVALID_TAG",
        ),
        (
            Customer {
                name: current.name.clone(),
                tags: vec!["x".into(), "x".into()],
                ..Default::default()
            },
            &["tags"][..],
            "customer.tags",
            "DUPLICATE_TAG",
        ),
        (
            Customer {
                name: current.name.clone(),
                tier: "GOLD!".into(),
                ..Default::default()
            },
            &["tier"][..],
            "customer.tier",
            "INVALID_SLUG",
        ),
        (
            Customer {
                name: current.name.clone(),
                lifecycle_stage: 99,
                ..Default::default()
            },
            &["lifecycle_stage"][..],
            "customer.lifecycle_stage",
            "UNKNOWN_ENUM_VALUE",
        ),
    ] {
        assert_invalid_field(
            &client
                .update_customer(env.req(update(customer, paths)))
                .await
                .unwrap_err(),
            field,
            reason,
        );
    }

    env.create("Plain Lead").await;
    let list = |filter: &str| ListCustomersRequest {
        parent: env.parent(),
        filter: filter.into(),
        ..Default::default()
    };
    let vip = client
        .list_customers(env.req(list("tags:vip")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(vip.customers.len(), 1);
    let leads = client
        .list_customers(env.req(list("lifecycle_stage = LEAD")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(leads.customers.len(), 1);
    assert_eq!(leads.customers[0].display_name, "Plain Lead");
    let gold = client
        .list_customers(env.req(list("tier = gold AND source = referral")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(gold.customers.len(), 1);
}
