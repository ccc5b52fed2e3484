//! The pricing engine through ComputePrice: a grease-trap job priced from the price book, the
//! customer's tier and time zone and the property's zone, every line explained.

use serde_json::{Value, json};
use tonic::Code;

use crate::conformance::rpc;
use crate::support::{Env, cents, nanos, reason};

const CORE: &str = "crm.core.v1";

async fn create(env: &Env, service: &str, method: &str, field: &str, body: Value) -> String {
    let mut req = json!({"parent": env.parent()});
    req[field] = body;
    let made = rpc(env, &env.token, &format!("{CORE}.{service}"), method, req)
        .await
        .unwrap_or_else(|e| panic!("{method}: {e:?}"));
    made["name"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_price_is_reproducible_from_its_lines() {
    let env = Env::new().await;
    create(&env, "PricingZoneService", "CreatePricingZone", "pricing_zone",
        json!({"code": "downtown", "display_name": "Downtown", "multiplier": "1.1", "travel_band": 2})).await;
    create(
        &env,
        "PricingTierService",
        "CreatePricingTier",
        "pricing_tier",
        json!({"code": "gold", "display_name": "Gold", "discount_percent": "5"}),
    )
    .await;
    let item = create(
        &env,
        "CatalogItemService",
        "CreateCatalogItem",
        "catalog_item",
        json!({"code": "grease-trap-pump", "display_name": "Grease trap pump-out",
               "base_price": {"currency_code": "USD", "units": 300}, "included_gallons": 1000,
               "active": true}),
    )
    .await;
    let other_item = create(
        &env,
        "CatalogItemService",
        "CreateCatalogItem",
        "catalog_item",
        json!({"code": "camera", "display_name": "Camera inspection",
               "base_price": {"currency_code": "USD", "units": 200}, "active": true}),
    )
    .await;
    let rule = |name: &str, body: Value| {
        let mut b = body;
        b["display_name"] = json!(name);
        b["active"] = json!(true);
        b
    };
    for (order, body) in [
        (
            10,
            rule(
                "After hours",
                json!({"kind": "PRICING_RULE_KIND_AFTER_HOURS", "percent": "50",
            "business_start_time": "08:00", "business_end_time": "17:00"}),
            ),
        ),
        (
            20,
            rule(
                "Emergency call-out",
                json!({"kind": "PRICING_RULE_KIND_EMERGENCY",
            "amount": {"currency_code": "USD", "units": 150}}),
            ),
        ),
        (
            30,
            rule(
                "Over 1,000 gallons",
                json!({"kind": "PRICING_RULE_KIND_VOLUME_OVER_INCLUDED",
            "amount": {"currency_code": "USD", "nanos": 100_000_000}}),
            ),
        ),
        (
            40,
            rule(
                "Travel band 2",
                json!({"kind": "PRICING_RULE_KIND_TRAVEL_BAND", "travel_band": 2,
            "amount": {"currency_code": "USD", "units": 35}}),
            ),
        ),
        // Neither applies: another item's, and one that expired.
        (
            50,
            rule(
                "Camera only",
                json!({"kind": "PRICING_RULE_KIND_EMERGENCY", "percent": "100",
            "catalog_item": other_item}),
            ),
        ),
        (
            60,
            rule(
                "Last year's promo",
                json!({"kind": "PRICING_RULE_KIND_EMERGENCY", "percent": "-20",
            "valid_until": "2026-01-01T00:00:00Z"}),
            ),
        ),
    ] {
        let mut b = body;
        b["order"] = json!(order);
        create(
            &env,
            "PricingRuleService",
            "CreatePricingRule",
            "pricing_rule",
            b,
        )
        .await;
    }
    let customer = create(
        &env,
        "CustomerService",
        "CreateCustomer",
        "customer",
        json!({"display_name": "Harbor Grill", "tier": "gold", "time_zone": "America/Chicago"}),
    )
    .await;
    let property = create(
        &env,
        "PropertyService",
        "CreateProperty",
        "property",
        json!({"customer": customer, "display_name": "Kitchen", "zone": "downtown",
               "address": {"region_code": "US", "address_lines": ["1 Harbor Rd"]}}),
    )
    .await;
    // Tuesday 19:30 in Chicago (Wednesday 01:30 UTC): after hours there.
    let ask = json!({"parent": env.parent(), "catalog_item": item, "customer": customer,
        "property": property, "time": "2027-03-03T01:30:00Z", "gallons": 1250, "emergency": true});
    let priced = rpc(
        &env,
        &env.token,
        &format!("{CORE}.PriceService"),
        "ComputePrice",
        ask.clone(),
    )
    .await
    .unwrap();
    // By hand: 300.00 × 1.1 = 330.00; − 5 % = 313.50; + 50 % = 470.25; + 150.00 = 620.25;
    // 250 gal × 0.10 = + 25.00 → 645.25; band 2: + 35.00 = 680.25.
    assert_eq!(cents(&priced["price"]), 68_025, "{priced:#}");
    let lines = priced["lines"].as_array().unwrap();
    let steps: Vec<(&str, i64)> = lines
        .iter()
        .map(|l| (l["step"].as_str().unwrap(), cents(&l["amount"])))
        .collect();
    assert_eq!(
        steps,
        [
            ("base", 30_000),
            ("zone", 3_000),
            ("tier", -1_650),
            ("rule", 15_675),
            ("rule", 15_000),
            ("rule", 2_500),
            ("rule", 3_500),
            ("rounding", 0)
        ]
    );
    let sum: i64 = lines.iter().map(|l| nanos(&l["amount"])).sum();
    assert_eq!(sum, nanos(&priced["price"]), "the lines sum to the price");
    assert!(
        lines[5]["input"].as_str().unwrap().contains("250 gal"),
        "{:?}",
        lines[5]
    );
    // In business hours and no emergency: 330.00 − 5 % = 313.50, + 25.00 + 35.00 = 373.50.
    let mut calm = ask.clone();
    calm["time"] = json!("2027-03-02T16:00:00Z");
    calm["emergency"] = json!(false);
    let priced = rpc(
        &env,
        &env.token,
        &format!("{CORE}.PriceService"),
        "ComputePrice",
        calm,
    )
    .await
    .unwrap();
    assert_eq!(cents(&priced["price"]), 37_350, "{priced:#}");
    // Another organization's caller is refused; one currency per organization.
    let other = env.server.token(uuid::Uuid::now_v7(), &["org.admin"]);
    let r = rpc(
        &env,
        &other,
        &format!("{CORE}.PriceService"),
        "ComputePrice",
        ask,
    )
    .await
    .unwrap_err();
    assert_eq!(r.code(), Code::PermissionDenied, "{r:?}");
    let r = rpc(
        &env,
        &env.token,
        &format!("{CORE}.CatalogItemService"),
        "CreateCatalogItem",
        json!({"parent": env.parent(), "catalog_item": {"code": "euro", "display_name": "Euro item",
               "base_price": {"currency_code": "EUR", "units": 10}}}),
    )
    .await
    .unwrap_err();
    assert_eq!(
        (r.code(), reason(&r).as_str()),
        (Code::FailedPrecondition, "CURRENCY_MISMATCH")
    );
}
