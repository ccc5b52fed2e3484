//! Invoices and payments: gapless numbers under concurrent issuing, payments recorded once per
//! request_id and per external reference, a balance that never goes negative, bounded refunds.

use serde_json::{Value, json};
use tonic::Code;
use uuid::Uuid;

use crate::conformance::rpc;
use crate::support::{Env, cents, count, reason, usd_cents};

const S: &str = "crm.core.v1.InvoiceService";

async fn call(env: &Env, method: &str, body: Value) -> Result<Value, tonic::Status> {
    rpc(env, &env.token, S, method, body).await
}

/// An issued invoice of one untaxed line of `cents`.
async fn issued(env: &Env, customer: &str, cents: i64) -> Value {
    let draft = call(
        env,
        "CreateInvoice",
        json!({"parent": env.parent(), "invoice": {
        "customer": customer,
        "lines": [{"description": "Pump-out", "quantity": 1, "unit_price": usd_cents(cents)}]}}),
    )
    .await
    .unwrap();
    call(env, "IssueInvoice", json!({"name": draft["name"]}))
        .await
        .unwrap()
}

#[tokio::test]
async fn invoice_numbers_have_no_gaps_under_concurrent_issuing() {
    let env = Env::new().await;
    let customer = env.create("Harbor Grill").await.name;
    let mut drafts = Vec::new();
    for i in 0..20 {
        // Every fourth one has no lines: its issue fails and must not take a number.
        let lines = if i % 4 == 3 {
            json!([])
        } else {
            json!([{"description": "Pump-out", "quantity": 1, "unit_price": usd_cents(32_500), "taxable": true}])
        };
        let d = call(
            &env,
            "CreateInvoice",
            json!({"parent": env.parent(), "invoice": {
            "customer": customer, "lines": lines, "tax_percent": "8.25", "terms_days": 30}}),
        )
        .await
        .unwrap();
        assert_eq!(d["status"], "INVOICE_STATUS_DRAFT");
        // 325.00 × 8.25 % = 26.8125 → 26.81 (half-even), total 351.81.
        if i % 4 != 3 {
            assert_eq!(cents(&d["tax"]), 2_681, "{d:#}");
            assert_eq!(cents(&d["total"]), 35_181);
        }
        drafts.push(d["name"].as_str().unwrap().to_owned());
    }
    let mut tasks = Vec::new();
    for name in drafts {
        let (channel, token) = (env.server.channel.clone(), env.token.clone());
        tasks.push(tokio::spawn(async move {
            let m = crate::every_rpc::methods()
                .into_iter()
                .find(|m| m.full_name() == format!("{S}.IssueInvoice"))
                .unwrap();
            let msg = prost_reflect::DynamicMessage::deserialize(m.input(), json!({"name": name}))
                .unwrap();
            crate::every_rpc::call(&channel, &m, &token, &msg).await
        }));
    }
    let (mut ok, mut empty) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(s) => {
                assert_eq!(reason(&s), "INVOICE_EMPTY", "{s:?}");
                empty += 1;
            }
        }
    }
    assert_eq!((ok, empty), (15, 5));
    let listed = call(
        &env,
        "ListInvoices",
        json!({"parent": env.parent(), "order_by": "number",
        "filter": "status = INVOICE_STATUS_ISSUED", "page_size": 100}),
    )
    .await
    .unwrap();
    let numbers: Vec<&str> = listed["invoices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["number"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (1..=15).map(|n| format!("INV-{n:06}")).collect();
    assert_eq!(numbers, expected);
}

#[tokio::test]
async fn a_payment_retried_twenty_times_is_recorded_once() {
    let env = Env::new().await;
    let customer = env.create("Harbor Grill").await.name;
    let invoice = issued(&env, &customer, 50_000).await;
    let name = invoice["name"].as_str().unwrap().to_owned();
    // Same request_id twenty times at once; then the same external reference with twenty ids.
    for (label, same_request) in [("request_id", true), ("external_reference", false)] {
        let request_id = Uuid::new_v4().to_string();
        let reference = format!("ch_{}", Uuid::new_v4().simple());
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let rid = if same_request {
                request_id.clone()
            } else {
                Uuid::new_v4().to_string()
            };
            let body = json!({"invoice": name, "method": "PAYMENT_METHOD_CARD", "amount": usd_cents(10_000),
                              "external_reference": reference, "request_id": rid});
            let (channel, token) = (env.server.channel.clone(), env.token.clone());
            tasks.push(tokio::spawn(async move {
                let m = crate::every_rpc::methods()
                    .into_iter()
                    .find(|m| m.full_name() == format!("{S}.RecordPayment"))
                    .unwrap();
                let msg = prost_reflect::DynamicMessage::deserialize(m.input(), body).unwrap();
                crate::every_rpc::call(&channel, &m, &token, &msg).await
            }));
        }
        let mut answers = Vec::new();
        for t in tasks {
            answers.push(
                t.await
                    .unwrap()
                    .unwrap_or_else(|e| panic!("{label}: {e:?}")),
            );
        }
        assert!(
            answers.windows(2).all(|w| w[0] == w[1]),
            "{label}: the retries answered differently"
        );
        let rows = count(
            &env.db,
            &format!(
                "SELECT count(*) AS n FROM core.payments WHERE external_reference = '{reference}'"
            ),
        )
        .await;
        assert_eq!(rows, 1, "{label}: recorded {rows} times");
    }
    let inv = call(&env, "GetInvoice", json!({"name": name}))
        .await
        .unwrap();
    assert_eq!(cents(&inv["amount_paid"]), 20_000);
    assert_eq!(cents(&inv["balance"]), 30_000);
    assert_eq!(inv["status"], "INVOICE_STATUS_PARTIALLY_PAID");
    // The same reference with another amount is another payment's: refused.
    let first = call(&env, "ListPayments", json!({"parent": name}))
        .await
        .unwrap();
    let reference = first["payments"][0]["external_reference"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = call(
        &env,
        "RecordPayment",
        json!({"invoice": name, "method": "PAYMENT_METHOD_CARD",
        "amount": usd_cents(5_000), "external_reference": reference}),
    )
    .await
    .unwrap_err();
    assert_eq!(r.code(), Code::AlreadyExists, "{r:?}");
}

#[tokio::test]
async fn concurrent_partial_payments_never_overpay_and_refunds_are_bounded() {
    let env = Env::new().await;
    let customer = env.create("Harbor Grill").await.name;
    let invoice = issued(&env, &customer, 10_000).await;
    let name = invoice["name"].as_str().unwrap().to_owned();
    let mut tasks = Vec::new();
    for k in 0..20 {
        let body = json!({"invoice": name, "method": "PAYMENT_METHOD_CHECK", "amount": usd_cents(1_000),
                          "external_reference": format!("check-{k}")});
        let (channel, token) = (env.server.channel.clone(), env.token.clone());
        tasks.push(tokio::spawn(async move {
            let m = crate::every_rpc::methods()
                .into_iter()
                .find(|m| m.full_name() == format!("{S}.RecordPayment"))
                .unwrap();
            let msg = prost_reflect::DynamicMessage::deserialize(m.input(), body).unwrap();
            crate::every_rpc::call(&channel, &m, &token, &msg).await
        }));
    }
    let (mut paid, mut refused) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => paid += 1,
            Err(s) => {
                assert_eq!(
                    (s.code(), reason(&s).as_str()),
                    (Code::FailedPrecondition, "OVERPAYMENT"),
                    "{s:?}"
                );
                refused += 1;
            }
        }
    }
    assert_eq!((paid, refused), (10, 10));
    let inv = call(&env, "GetInvoice", json!({"name": name}))
        .await
        .unwrap();
    assert_eq!(
        (cents(&inv["balance"]), inv["status"].as_str().unwrap()),
        (0, "INVOICE_STATUS_PAID")
    );
    let payment = call(&env, "ListPayments", json!({"parent": name}))
        .await
        .unwrap()["payments"][0]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    // Refund more than paid: refused; part of it: back to partly paid; the rest: then no more.
    let refund =
        |cents: i64| json!({"name": payment, "amount": usd_cents(cents), "reason": "damaged lid"});
    let r = call(&env, "RefundPayment", refund(1_001))
        .await
        .unwrap_err();
    assert_eq!(reason(&r), "REFUND_EXCEEDS_PAYMENT", "{r:?}");
    let p = call(&env, "RefundPayment", refund(400)).await.unwrap();
    assert_eq!(cents(&p["refunded"]), 400);
    let inv = call(&env, "GetInvoice", json!({"name": name}))
        .await
        .unwrap();
    assert_eq!(
        (cents(&inv["balance"]), inv["status"].as_str().unwrap()),
        (400, "INVOICE_STATUS_PARTIALLY_PAID")
    );
    call(&env, "RefundPayment", refund(600)).await.unwrap();
    let r = call(&env, "RefundPayment", refund(1)).await.unwrap_err();
    assert_eq!(reason(&r), "REFUND_EXCEEDS_PAYMENT", "{r:?}");
    // An issued invoice changes only through payments: updates, deletes and voids with
    // payments on it are refused.
    let mut changed = call(&env, "GetInvoice", json!({"name": name}))
        .await
        .unwrap();
    changed["notes"] = json!("edited");
    let r = call(
        &env,
        "UpdateInvoice",
        json!({"invoice": changed, "update_mask": "notes"}),
    )
    .await
    .unwrap_err();
    assert_eq!(reason(&r), "INVOICE_ISSUED", "{r:?}");
    let r = call(&env, "DeleteInvoice", json!({"name": name}))
        .await
        .unwrap_err();
    assert_eq!(reason(&r), "INVOICE_ISSUED", "{r:?}");
    let r = call(
        &env,
        "VoidInvoice",
        json!({"name": name, "reason": "duplicate"}),
    )
    .await
    .unwrap_err();
    assert_eq!(reason(&r), "INVOICE_HAS_PAYMENTS", "{r:?}");
    // The database keeps the balance too, even against the app role's own statements.
    let over = count(
        &env.db,
        "SELECT count(*) AS n FROM core.invoices WHERE paid_nanos > total_nanos OR paid_nanos < 0",
    )
    .await;
    assert_eq!(over, 0);
}
