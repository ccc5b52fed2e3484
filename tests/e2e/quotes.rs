//! Quotes: lines priced by the engine, overrides only with a reason, the status table, accepting
//! one option declines the others, an expired quote cannot be accepted.

use serde_json::{Value, json};
use tonic::Code;

use crate::conformance::rpc;
use crate::support::{Env, assert_invalid_field, cents, reason, usd_cents};

async fn core(env: &Env, service: &str, method: &str, body: Value) -> Result<Value, tonic::Status> {
    rpc(
        env,
        &env.token,
        &format!("crm.core.v1.{service}"),
        method,
        body,
    )
    .await
}

#[tokio::test]
async fn a_good_better_best_quote_is_priced_sent_and_accepted_once() {
    let env = Env::new().await;
    let p = env.parent();
    core(
        &env,
        "PricingZoneService",
        "CreatePricingZone",
        json!({"parent": p, "pricing_zone":
        {"code": "downtown", "display_name": "Downtown", "multiplier": "1.1"}}),
    )
    .await
    .unwrap();
    let item = core(
        &env,
        "CatalogItemService",
        "CreateCatalogItem",
        json!({"parent": p, "catalog_item":
        {"code": "pump", "display_name": "Grease trap pump-out", "base_price": usd_cents(30000),
         "included_gallons": 1000, "active": true}}),
    )
    .await
    .unwrap()["name"]
        .as_str()
        .unwrap()
        .to_owned();
    core(
        &env,
        "PricingRuleService",
        "CreatePricingRule",
        json!({"parent": p, "pricing_rule":
        {"display_name": "Over 1,000 gallons", "kind": "PRICING_RULE_KIND_VOLUME_OVER_INCLUDED",
         "amount": {"currency_code": "USD", "nanos": 100_000_000}, "active": true}}),
    )
    .await
    .unwrap();
    let customer = env.create("Harbor Grill").await.name;
    let property = core(
        &env,
        "PropertyService",
        "CreateProperty",
        json!({"parent": p, "property":
        {"customer": customer, "display_name": "Kitchen", "zone": "downtown",
         "address": {"region_code": "US", "address_lines": ["1 Harbor Rd"]}}}),
    )
    .await
    .unwrap()["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let option =
        |level: &str, lines: Value| json!({"level": level, "title": level, "lines": lines});
    let mut quote = json!({"customer": customer, "property": property, "title": "Grease trap service",
    "tax_percent": "8.25", "valid_until": "2030-01-01T00:00:00Z", "options": [
        option("QUOTE_LEVEL_GOOD", json!([{"catalog_item": item, "quantity": 1, "gallons": 1000, "taxable": true}])),
        option("QUOTE_LEVEL_BETTER", json!([{"catalog_item": item, "quantity": 1, "gallons": 1250, "taxable": true},
            {"description": "Baffle inspection", "quantity": 1, "unit_price": usd_cents(4500)}])),
        option("QUOTE_LEVEL_BEST", json!([{"catalog_item": item, "quantity": 1, "gallons": 1000,
            "unit_price": usd_cents(30000), "taxable": true}])),
    ]});
    // A price other than the engine's needs a reason.
    let r = core(
        &env,
        "QuoteService",
        "CreateQuote",
        json!({"parent": p, "quote": quote.clone()}),
    )
    .await
    .unwrap_err();
    assert_invalid_field(
        &r,
        "quote.options[2].lines[0].override_reason",
        "OVERRIDE_REASON_REQUIRED",
    );
    quote["options"][2]["lines"][0]["override_reason"] =
        json!("loyal customer, matched competitor");
    let q = core(
        &env,
        "QuoteService",
        "CreateQuote",
        json!({"parent": p, "quote": quote}),
    )
    .await
    .unwrap();
    let name = q["name"].as_str().unwrap().to_owned();
    let opts = q["options"].as_array().unwrap();
    // Good: 300 × 1.1 = 330.00, tax 8.25 % = 27.2250 → 27.22 (half-even), total 357.22.
    assert_eq!(cents(&opts[0]["lines"][0]["unit_price"]), 33_000);
    assert_eq!(opts[0]["lines"][0]["description"], "Grease trap pump-out");
    assert_eq!(
        (cents(&opts[0]["tax"]), cents(&opts[0]["total"])),
        (2_722, 35_722)
    );
    // Better: 330.00 + 250 × 0.10 = 355.00, plus 45.00 untaxed; tax on 355.00 = 29.29.
    assert_eq!(cents(&opts[1]["lines"][0]["unit_price"]), 35_500);
    assert_eq!(
        (cents(&opts[1]["subtotal"]), cents(&opts[1]["total"])),
        (40_000, 42_929)
    );
    // Best: overridden to 300.00; the engine's 330.00 is kept beside it.
    assert_eq!(cents(&opts[2]["lines"][0]["unit_price"]), 30_000);
    assert_eq!(cents(&opts[2]["lines"][0]["engine_price"]), 33_000);

    let move_to = |to: &str| json!({"name": name, "to_status": to});
    let r = core(
        &env,
        "QuoteService",
        "TransitionQuote",
        move_to("QUOTE_STATUS_VIEWED"),
    )
    .await
    .unwrap_err();
    assert_eq!(
        reason(&r),
        "TRANSITION_NOT_ALLOWED",
        "a draft is not viewed: {r:?}"
    );
    let r = core(
        &env,
        "QuoteService",
        "AcceptQuote",
        json!({"name": name, "level": "QUOTE_LEVEL_BETTER"}),
    )
    .await
    .unwrap_err();
    assert_eq!(
        reason(&r),
        "TRANSITION_NOT_ALLOWED",
        "a draft is not accepted: {r:?}"
    );
    core(
        &env,
        "QuoteService",
        "TransitionQuote",
        move_to("QUOTE_STATUS_SENT"),
    )
    .await
    .unwrap();
    core(
        &env,
        "QuoteService",
        "TransitionQuote",
        move_to("QUOTE_STATUS_VIEWED"),
    )
    .await
    .unwrap();
    let accepted = core(
        &env,
        "QuoteService",
        "AcceptQuote",
        json!({"name": name, "level": "QUOTE_LEVEL_BETTER"}),
    )
    .await
    .unwrap();
    assert_eq!(accepted["status"], "QUOTE_STATUS_ACCEPTED");
    assert_eq!(accepted["accepted_level"], "QUOTE_LEVEL_BETTER");
    let states: Vec<&str> = accepted["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        [
            "QUOTE_OPTION_STATE_DECLINED",
            "QUOTE_OPTION_STATE_ACCEPTED",
            "QUOTE_OPTION_STATE_DECLINED"
        ]
    );
    let r = core(
        &env,
        "QuoteService",
        "AcceptQuote",
        json!({"name": name, "level": "QUOTE_LEVEL_BEST"}),
    )
    .await
    .unwrap_err();
    assert_eq!(
        reason(&r),
        "TRANSITION_NOT_ALLOWED",
        "accepted twice: {r:?}"
    );
    let mut edit = accepted.clone();
    edit["title"] = json!("changed");
    let r = core(
        &env,
        "QuoteService",
        "UpdateQuote",
        json!({"quote": edit, "update_mask": "title"}),
    )
    .await
    .unwrap_err();
    assert_eq!(reason(&r), "QUOTE_NOT_DRAFT", "{r:?}");

    // An expired quote cannot be accepted.
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let short = core(&env, "QuoteService", "CreateQuote", json!({"parent": p, "quote": {
        "customer": customer, "title": "Short offer", "valid_until": soon, "options": [
            option("QUOTE_LEVEL_GOOD", json!([{"description": "Pump-out", "quantity": 1, "unit_price": usd_cents(30000)}]))]}}))
        .await
        .unwrap();
    let short_name = short["name"].as_str().unwrap();
    core(
        &env,
        "QuoteService",
        "TransitionQuote",
        json!({"name": short_name, "to_status": "QUOTE_STATUS_SENT"}),
    )
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    let r = core(
        &env,
        "QuoteService",
        "AcceptQuote",
        json!({"name": short_name, "level": "QUOTE_LEVEL_GOOD"}),
    )
    .await
    .unwrap_err();
    assert_eq!(
        (r.code(), reason(&r).as_str()),
        (Code::FailedPrecondition, "QUOTE_EXPIRED"),
        "{r:?}"
    );

    // Accepting can create the draft work order in fieldops, through its API.
    let job_item = core(
        &env,
        "CatalogItemService",
        "CreateCatalogItem",
        json!({"parent": p, "catalog_item":
        {"code": "trap", "display_name": "Grease trap service", "job_type": "JOB_TYPE_GREASE_TRAP",
         "base_price": usd_cents(30000), "active": true}}),
    )
    .await
    .unwrap()["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let q2 = core(
        &env,
        "QuoteService",
        "CreateQuote",
        json!({"parent": p, "quote": {
        "customer": customer, "property": property, "title": "Quarterly service",
        "valid_until": "2030-01-01T00:00:00Z", "options": [
            option("QUOTE_LEVEL_GOOD", json!([{"catalog_item": job_item, "quantity": 1}]))]}}),
    )
    .await
    .unwrap();
    let q2_name = q2["name"].as_str().unwrap().to_owned();
    core(
        &env,
        "QuoteService",
        "TransitionQuote",
        json!({"name": q2_name, "to_status": "QUOTE_STATUS_SENT"}),
    )
    .await
    .unwrap();
    let accepted = core(
        &env,
        "QuoteService",
        "AcceptQuote",
        json!({"name": q2_name,
        "level": "QUOTE_LEVEL_GOOD", "create_work_order": true}),
    )
    .await
    .unwrap();
    let wo_name = accepted["work_order"].as_str().unwrap().to_owned();
    assert!(wo_name.contains("/workOrders/"), "{accepted:#}");
    let wo = rpc(
        &env,
        &env.token,
        "crm.fieldops.v1.WorkOrderService",
        "GetWorkOrder",
        json!({"name": wo_name}),
    )
    .await
    .unwrap();
    assert_eq!(wo["status"], "WORK_ORDER_STATUS_DRAFT");
    assert_eq!(wo["job_type"], "JOB_TYPE_GREASE_TRAP");
    assert_eq!(
        (wo["customer"].as_str(), wo["property"].as_str()),
        (Some(customer.as_str()), Some(property.as_str()))
    );
    assert_eq!(
        cents(&wo["line_items"][0]["unit_price"]),
        33_000,
        "priced by the engine: 300 × 1.1"
    );
}
