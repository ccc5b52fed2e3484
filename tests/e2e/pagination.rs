//! Keyset pagination, filters and ordering.

use std::collections::HashSet;

use crm_proto::core_v1::{CreateCustomerRequest, Customer, CustomerKind, ListCustomersRequest};
use tonic::Code;

use crate::support::{Env, assert_invalid_field};

async fn seed(env: &Env, n: usize, prefix: &str) -> Vec<Customer> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(env.create(&format!("{prefix} {i:03}")).await);
    }
    out
}

#[tokio::test]
async fn every_row_exactly_once_across_pages_while_rows_are_inserted() {
    let env = Env::new().await;
    let existing = seed(&env, 60, "Existing").await;
    let writer_env = &env;
    let writer = async {
        for i in 0..40 {
            writer_env.create(&format!("Concurrent {i:03}")).await;
        }
    };
    let reader = async {
        let mut client = env.customers();
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let page = client
                .list_customers(env.req(ListCustomersRequest {
                    parent: env.parent(),
                    page_size: 7,
                    page_token: token.clone(),
                    order_by: "display_name".into(),
                    ..Default::default()
                }))
                .await
                .unwrap()
                .into_inner();
            assert!(page.customers.len() <= 7);
            seen.extend(page.customers.into_iter().map(|c| c.name));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
            tokio::task::yield_now().await;
        }
        seen
    };
    let ((), seen) = tokio::join!(writer, reader);
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a row appeared twice");
    for c in &existing {
        assert!(unique.contains(&c.name), "{} was skipped", c.display_name);
    }
}

#[tokio::test]
async fn orders_and_filters() {
    let env = Env::new().await;
    seed(&env, 5, "Zed").await;
    let mut client = env.customers();
    for (display_name, kind, email) in [
        ("Acme Grease", CustomerKind::Commercial, "ops@acme.example"),
        // Tells the precedences apart: matches the OR's left side but fails the AND.
        ("Acme Diner", CustomerKind::FoodService, ""),
    ] {
        client
            .create_customer(env.req(CreateCustomerRequest {
                parent: env.parent(),
                customer: Some(Customer {
                    display_name: display_name.into(),
                    kind: kind as i32,
                    email: email.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }))
            .await
            .unwrap();
    }
    let list = |filter: &str, order_by: &str| ListCustomersRequest {
        parent: env.parent(),
        filter: filter.to_owned(),
        order_by: order_by.to_owned(),
        ..Default::default()
    };
    let desc = client
        .list_customers(env.req(list("", "display_name desc")))
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = desc
        .customers
        .iter()
        .map(|c| c.display_name.clone())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    sorted.reverse();
    assert_eq!(names, sorted);

    let commercial = client
        .list_customers(env.req(list("kind = CUSTOMER_KIND_COMMERCIAL", "")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(commercial.customers.len(), 1);
    let both = client
        .list_customers(env.req(list("display_name = \"Acme*\" OR display_name = \"Zed 001\" AND kind != CUSTOMER_KIND_FOOD_SERVICE", "")))
        .await
        .unwrap()
        .into_inner();
    let mut names: Vec<&str> = both
        .customers
        .iter()
        .map(|c| c.display_name.as_str())
        .collect();
    names.sort_unstable();
    // (Acme* OR Zed 001) AND kind != FOOD_SERVICE; AND binding tighter would add Acme Diner.
    assert_eq!(names, ["Acme Grease", "Zed 001"]);
    let negated = client
        .list_customers(env.req(list("NOT display_name:zed", "")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(negated.customers.len(), 2);
    let email = client
        .list_customers(env.req(list("email:acme", "")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(email.customers.len(), 1);
    let by_time = client
        .list_customers(env.req(list(
            "create_time > \"2000-01-01T00:00:00Z\"",
            "create_time desc",
        )))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_time.customers.len(), 7);
    let times: Vec<(i64, i32)> = by_time
        .customers
        .iter()
        .map(|c| {
            let t = c.create_time.unwrap();
            (t.seconds, t.nanos)
        })
        .collect();
    let mut newest_first = times.clone();
    newest_first.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(times, newest_first, "create_time desc is newest first");
    assert_eq!(by_time.customers[0].display_name, "Acme Diner");

    for bad in [
        "secret = 1",
        "display_name =",
        "kind = PURPLE",
        "create_time > yesterday",
        "kind > 1",
    ] {
        let status = client
            .list_customers(env.req(list(bad, "")))
            .await
            .unwrap_err();
        assert_invalid_field(&status, "filter", "INVALID_FILTER");
    }
    let status = client
        .list_customers(env.req(list("", "email")))
        .await
        .unwrap_err();
    assert_invalid_field(&status, "order_by", "INVALID_ORDER_BY");
}

#[tokio::test]
async fn page_tokens_are_bound_to_the_query_and_sizes_are_checked() {
    let env = Env::new().await;
    seed(&env, 5, "Tok").await;
    let mut client = env.customers();
    let first = client
        .list_customers(env.req(ListCustomersRequest {
            parent: env.parent(),
            page_size: 2,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.customers.len(), 2);
    assert!(!first.next_page_token.is_empty());

    let other_filter = client
        .list_customers(env.req(ListCustomersRequest {
            parent: env.parent(),
            page_size: 2,
            page_token: first.next_page_token.clone(),
            filter: "display_name = \"Tok*\"".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_invalid_field(&other_filter, "page_token", "PAGE_TOKEN_MISMATCH");

    let mut forged = first.next_page_token.clone();
    forged.insert(5, 'A');
    let forged = client
        .list_customers(env.req(ListCustomersRequest {
            parent: env.parent(),
            page_token: forged,
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_invalid_field(&forged, "page_token", "INVALID_PAGE_TOKEN");

    let negative = client
        .list_customers(env.req(ListCustomersRequest {
            parent: env.parent(),
            page_size: -1,
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(negative.code(), Code::InvalidArgument);
    assert_invalid_field(&negative, "page_size", "NEGATIVE_PAGE_SIZE");

    let huge = client
        .list_customers(env.req(ListCustomersRequest {
            parent: env.parent(),
            page_size: 100_000,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(huge.customers.len(), 5);
    assert!(huge.next_page_token.is_empty());
}
