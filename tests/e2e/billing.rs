//! Invoices and payments: gapless numbers under concurrent issuing, payments recorded once per
//! request_id and per external reference, a balance that never goes negative, bounded refunds;
//! credit notes (numbered, bounded by the balance, final); invoices from accepted quotes.

use diesel_async::SimpleAsyncConnection as _;
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

#[tokio::test]
async fn concurrent_credit_notes_never_pass_the_balance_and_are_numbered_without_gaps() {
    let env = Env::new().await;
    let customer = env.create("Harbor Grill").await.name;
    let invoice = issued(&env, &customer, 10_000).await;
    let name = invoice["name"].as_str().unwrap().to_owned();
    // A draft takes no credit note.
    let draft = call(
        &env,
        "CreateInvoice",
        json!({"parent": env.parent(), "invoice": {"customer": customer,
        "lines": [{"description": "Pump-out", "quantity": 1, "unit_price": usd_cents(500)}]}}),
    )
    .await
    .unwrap();
    let credit = |invoice: &str, cents: i64| {
        json!({"invoice": invoice, "amount": usd_cents(cents), "reason": "goodwill",
               "request_id": Uuid::now_v7().to_string()})
    };
    let e = call(
        &env,
        "IssueCreditNote",
        credit(draft["name"].as_str().unwrap(), 100),
    )
    .await
    .unwrap_err();
    assert_eq!(reason(&e), "INVOICE_NOT_OPEN");

    // Eight concurrent credits of 20.00 on 100.00: five fit.
    let tries = (0..8).map(|_| call(&env, "IssueCreditNote", credit(&name, 2_000)));
    let results = futures_util::future::join_all(tries).await;
    let mut numbers: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|c| c["number"].as_str().unwrap().to_owned())
        .collect();
    numbers.sort();
    assert_eq!(
        numbers,
        [
            "CN-000001",
            "CN-000002",
            "CN-000003",
            "CN-000004",
            "CN-000005"
        ]
    );
    for e in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(reason(e), "INVOICE_NOT_OPEN", "{e:?}");
    }
    let settled = call(&env, "GetInvoice", json!({"name": name}))
        .await
        .unwrap();
    assert_eq!(settled["status"], "INVOICE_STATUS_PAID", "{settled}");
    assert_eq!(cents(&settled["amount_credited"]), 10_000);
    assert_eq!(cents(&settled["balance"]), 0);
    let listed = call(&env, "ListCreditNotes", json!({"parent": name}))
        .await
        .unwrap();
    assert_eq!(listed["credit_notes"].as_array().unwrap().len(), 5);

    // On a second invoice: a credit past the balance is refused; a payment counts the credit.
    let second = issued(&env, &customer, 10_000).await;
    let second = second["name"].as_str().unwrap().to_owned();
    let e = call(&env, "IssueCreditNote", credit(&second, 10_001))
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "CREDIT_EXCEEDS_BALANCE");
    let c = call(&env, "IssueCreditNote", credit(&second, 2_500))
        .await
        .unwrap();
    assert_eq!(c["number"], "CN-000006");
    let pay = |cents: i64, reference: &str| {
        json!({"invoice": second, "method": "PAYMENT_METHOD_CARD", "amount": usd_cents(cents),
               "external_reference": reference})
    };
    let e = call(&env, "RecordPayment", pay(7_501, "ch_over"))
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "OVERPAYMENT");
    call(&env, "RecordPayment", pay(7_500, "ch_rest"))
        .await
        .unwrap();
    let paid = call(&env, "GetInvoice", json!({"name": second}))
        .await
        .unwrap();
    assert_eq!(paid["status"], "INVOICE_STATUS_PAID");
    assert_eq!(
        (cents(&paid["amount_paid"]), cents(&paid["balance"])),
        (7_500, 0)
    );
    // A credit note is final, for the service's own database role too.
    let mut app = env.db.app("core").await.unwrap();
    for sql in [
        "UPDATE credit_notes SET amount_nanos = 1",
        "DELETE FROM credit_notes",
    ] {
        let denied = app.batch_execute(sql).await.unwrap_err();
        assert!(denied.to_string().contains("permission denied"), "{denied}");
    }
    assert_eq!(
        count(
            &env.db,
            "SELECT count(*) AS n FROM core.audit_entries WHERE action = 'issue_credit_note'"
        )
        .await,
        6
    );
}

#[tokio::test]
async fn an_accepted_quote_is_invoiced_once_from_its_accepted_option() {
    let env = Env::new().await;
    let p = env.parent();
    let customer = env.create("Harbor Grill").await.name;
    let line = |description: &str, dollars: i64, taxable: bool| {
        json!({"description": description, "quantity": 1, "taxable": taxable,
               "unit_price": {"currency_code": "USD", "units": dollars}})
    };
    let quote = rpc(
        &env,
        &env.token,
        "crm.core.v1.QuoteService",
        "CreateQuote",
        json!({"parent": p, "quote": {"customer": customer, "title": "Trap service",
        "tax_percent": "8.25", "valid_until": "2030-01-01T00:00:00Z",
        "options": [
            {"level": "QUOTE_LEVEL_GOOD", "title": "Pump", "lines": [line("Pump-out", 300, true)]},
            {"level": "QUOTE_LEVEL_BETTER", "title": "Pump and jet",
             "lines": [line("Pump-out", 300, true), line("Line jetting", 120, false)]}]}}),
    )
    .await
    .unwrap();
    let q = quote["name"].as_str().unwrap().to_owned();
    let from = |q: &str| json!({"parent": p, "quote": q, "terms_days": 15, "request_id": Uuid::now_v7().to_string()});
    let e = call(&env, "CreateInvoiceFromQuote", from(&q))
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "QUOTE_NOT_ACCEPTED");
    let quotes = "crm.core.v1.QuoteService";
    rpc(
        &env,
        &env.token,
        quotes,
        "TransitionQuote",
        json!({"name": q, "to_status": "QUOTE_STATUS_SENT"}),
    )
    .await
    .unwrap();
    rpc(
        &env,
        &env.token,
        quotes,
        "AcceptQuote",
        json!({"name": q, "level": "QUOTE_LEVEL_BETTER"}),
    )
    .await
    .unwrap();
    let invoice = call(&env, "CreateInvoiceFromQuote", from(&q))
        .await
        .unwrap();
    assert_eq!(invoice["quote"], q.as_str());
    assert_eq!(invoice["customer"], customer.as_str());
    assert_eq!(invoice["status"], "INVOICE_STATUS_DRAFT");
    assert_eq!(invoice["tax_percent"], "8.25");
    assert_eq!(invoice["terms_days"], 15);
    let lines: Vec<&str> = invoice["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["description"].as_str().unwrap())
        .collect();
    assert_eq!(lines, ["Pump-out", "Line jetting"]);
    // 420.00 plus 8.25 % of the taxable 300.00 (24.75).
    assert_eq!(cents(&invoice["total"]), 44_475);
    let again = call(&env, "CreateInvoiceFromQuote", from(&q))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists);
    // A quote of another organization is refused before anything is read.
    let foreign = format!("organizations/{}/quotes/{}", Uuid::now_v7(), Uuid::now_v7());
    let e = call(&env, "CreateInvoiceFromQuote", from(&foreign))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert_eq!(
        count(
            &env.db,
            &format!("SELECT count(*) AS n FROM core.invoices WHERE quote = '{q}'")
        )
        .await,
        1
    );
}
