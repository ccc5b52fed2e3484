//! The price book as standard resources: `CatalogItemService`, `PricingZoneService`,
//! `PricingTierService` and `PricingRuleService`. Every amount of an organization is in one
//! currency (the first one it uses); fractions are decimals kept in ten-thousandths.

use chrono::{DateTime, Utc};
use crm_auth::{MethodPolicy, permission};
use crm_db::OrgId;
use crm_platform::ApiError;
use crm_platform::api::names::child_name;
use crm_platform::api::time::optional_timestamp;
use crm_proto::core_v1::{
    CatalogItem, CreateCatalogItemRequest, CreatePricingRuleRequest, CreatePricingTierRequest,
    CreatePricingZoneRequest, DeleteCatalogItemRequest, DeletePricingRuleRequest,
    DeletePricingTierRequest, DeletePricingZoneRequest, GetCatalogItemRequest,
    GetPricingRuleRequest, GetPricingTierRequest, GetPricingZoneRequest, ListCatalogItemsRequest,
    ListCatalogItemsResponse, ListPricingRulesRequest, ListPricingRulesResponse,
    ListPricingTiersRequest, ListPricingTiersResponse, ListPricingZonesRequest,
    ListPricingZonesResponse, PricingRule, PricingRuleKind, PricingTier, PricingZone,
    UndeleteCatalogItemRequest, UndeletePricingRuleRequest, UndeletePricingTierRequest,
    UndeletePricingZoneRequest, UpdateCatalogItemRequest, UpdatePricingRuleRequest,
    UpdatePricingTierRequest, UpdatePricingZoneRequest,
};
use crm_proto::fieldops_v1::JobType;
use crm_resource::input::Amount;
use crm_resource::{BoxFuture, Field, Input, Resource, Row};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::engine::show_e4;
use crate::schema::catalog_items::{self, dsl as ci};
use crate::schema::pricing_rules::{self, dsl as pr};
use crate::schema::pricing_tiers::{self, dsl as pt};
use crate::schema::pricing_zones::{self, dsl as pz};

/// The permission of every RPC of the four services.
#[must_use]
pub fn policy() -> MethodPolicy {
    let (read, write) = (permission::CUSTOMERS_READ, permission::CORE_SETTINGS_WRITE);
    [
        PricingZoneApi::policy(read, write, write),
        PricingTierApi::policy(read, write, write),
        PricingRuleApi::policy(read, write, write),
    ]
    .iter()
    .fold(
        CatalogItemApi::policy(read, write, write),
        MethodPolicy::merge,
    )
}

/// A decimal with at most `places` fraction digits as ten-thousandths (`"1.15"` → 11500).
#[must_use]
pub fn parse_e4(text: &str, places: usize, scale_to_e4: u32) -> Option<i64> {
    let t = text.trim();
    let (neg, t) = t.strip_prefix('-').map_or((false, t), |r| (true, r));
    let (whole, part) = t.split_once('.').unwrap_or((t, ""));
    if whole.is_empty() || whole.len() > 6 || part.len() > places {
        return None;
    }
    if !whole
        .bytes()
        .chain(part.bytes())
        .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let digits = format!("{whole}{part:0<places$}");
    let n: i64 = digits.parse().ok()?;
    let exponent = u32::try_from(places).ok()?;
    let n = n * 10_i64.pow(scale_to_e4.checked_sub(exponent)?);
    Some(if neg { -n } else { n })
}

fn code(i: &mut Input<'_>, value: &str) -> String {
    let message = "lower-case letters, digits and '-', at most 40 characters";
    if value.is_empty() {
        i.push("REQUIRED", "a code is required");
    }
    i.slug(value, "INVALID_CODE", message)
}

/// Fails unless `currency` is the organization's (none used yet, or the same).
pub(crate) async fn require_currency(
    conn: &AsyncPgConnection,
    org: OrgId,
    currency: &str,
    field: &str,
) -> Result<(), ApiError> {
    let items: Option<String> = ci::catalog_items
        .filter(ci::organization_id.eq(org))
        .filter(ci::delete_time.is_null())
        .filter(ci::currency.ne(currency))
        .select(ci::currency)
        .first(&mut { conn })
        .await
        .optional()?;
    let rules: Option<Option<String>> = pr::pricing_rules
        .filter(pr::organization_id.eq(org))
        .filter(pr::delete_time.is_null())
        .filter(pr::currency.ne(currency))
        .select(pr::currency)
        .first(&mut { conn })
        .await
        .optional()?;
    match items.or(rules.flatten()) {
        None => Ok(()),
        Some(other) => Err(ApiError::FailedPrecondition {
            reason: "CURRENCY_MISMATCH",
            message: format!("{field}: the organization prices in {other}, not {currency}"),
        }),
    }
}

/// The columns of `core.catalog_items` besides the standard ones.
#[derive(Debug, Clone, Default, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = catalog_items, treat_none_as_null = true)]
pub struct CatalogFields {
    pub code: String,
    pub display_name: String,
    pub job_type: i16,
    pub unit: String,
    pub currency: String,
    pub base_price_nanos: i64,
    pub included_gallons: i32,
    pub taxable: bool,
    pub active: bool,
}

/// The catalog item resource.
#[derive(Debug)]
pub struct CatalogItems;

impl Resource for CatalogItems {
    type Proto = CatalogItem;
    type Fields = CatalogFields;
    type Table = catalog_items::table;
    const RESOURCE_TYPE: &'static str = "core.crm/CatalogItem";
    const COLLECTION: &'static str = "catalogItems";
    const FIELD: &'static str = "catalog_item";
    const FIELDS: &'static [Field<Self>] = &[
        Field::<Self>::create_only("code", |i, x, f| f.code = code(i, &x.code))
            .filter(|n, op, v| crm_db::filter_text!(ci::code, n, op, v)),
        Field::<Self>::updatable("display_name", |i, x, f| {
            f.display_name = i.required_text(&x.display_name, 200);
        })
        .filter(|n, op, v| crm_db::filter_text!(ci::display_name, n, op, v)),
        Field::<Self>::updatable("job_type", |i, x, f| {
            if let Some(n) = i.enumeration::<JobType>(x.job_type) {
                f.job_type = n;
            }
        })
        .filter(|n, op, v| {
            let number = crm_db::filter::enum_number(v, "JOB_TYPE_", JobType::from_str_name)?;
            crm_db::filter_enum!(ci::job_type, n, op, number)
        }),
        Field::<Self>::updatable("unit", |i, x, f| f.unit = i.trimmed(&x.unit, 20)),
        Field::<Self>::updatable("base_price", |i, x, f| {
            match i.money(x.base_price.as_ref(), false) {
                Some(a) => {
                    f.currency = a.currency;
                    f.base_price_nanos = a.nanos;
                }
                None if x.base_price.is_none() => i.push("REQUIRED", "a base price is required"),
                None => {}
            }
        }),
        Field::<Self>::updatable("included_gallons", |i, x, f| {
            f.included_gallons =
                i.in_range(x.included_gallons, 0..=100_000, "0 to 100,000 gallons");
        }),
        Field::<Self>::updatable("taxable", |_, x, f| f.taxable = x.taxable),
        Field::<Self>::updatable("active", |_, x, f| f.active = x.active)
            .filter(|n, op, v| crm_resource::filter_bool!(ci::active, n, op, v)),
    ];

    fn to_proto(_org: Uuid, f: CatalogFields) -> CatalogItem {
        CatalogItem {
            code: f.code,
            display_name: f.display_name,
            job_type: i32::from(f.job_type),
            unit: f.unit,
            base_price: Some(
                Amount {
                    currency: f.currency,
                    nanos: f.base_price_nanos,
                }
                .to_proto(),
            ),
            included_gallons: f.included_gallons,
            taxable: f.taxable,
            active: f.active,
            ..CatalogItem::default()
        }
    }
    fn order_text(f: &CatalogFields) -> &str {
        &f.display_name
    }
    fn before_write<'a>(
        conn: &'a AsyncPgConnection,
        org: OrgId,
        _current: Option<&'a Row<CatalogFields>>,
        next: &'a mut CatalogFields,
        paths: &'a [&'static str],
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if paths.contains(&"base_price") {
                require_currency(conn, org, &next.currency, "catalog_item.base_price").await?;
            }
            Ok(())
        })
    }
}

crm_resource::standard_store!(
    CatalogItems,
    table = catalog_items,
    time = create_time,
    text = display_name
);

crm_resource::standard_service! {
    service = "crm.core.v1.CatalogItemService",
    server = crm_proto::core_v1::catalog_item_service_server::CatalogItemService,
    resource = CatalogItems,
    api = CatalogItemApi,
    field = catalog_item;
    create = create_catalog_item(CreateCatalogItemRequest, id = catalog_item_id);
    get = get_catalog_item(GetCatalogItemRequest, full = |_| false);
    list = list_catalog_items(ListCatalogItemsRequest, full = |_| false)
        -> ListCatalogItemsResponse.catalog_items;
    update = update_catalog_item(UpdateCatalogItemRequest);
    delete = delete_catalog_item(DeleteCatalogItemRequest);
    undelete = undelete_catalog_item(UndeleteCatalogItemRequest);
}

/// The columns of `core.pricing_zones` besides the standard ones.
#[derive(Debug, Clone, Default, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = pricing_zones, treat_none_as_null = true)]
pub struct ZoneFields {
    pub code: String,
    pub display_name: String,
    pub multiplier_e4: i32,
    pub travel_band: i16,
}

/// The pricing zone resource.
#[derive(Debug)]
pub struct PricingZones;

impl Resource for PricingZones {
    type Proto = PricingZone;
    type Fields = ZoneFields;
    type Table = pricing_zones::table;
    const RESOURCE_TYPE: &'static str = "core.crm/PricingZone";
    const COLLECTION: &'static str = "pricingZones";
    const FIELD: &'static str = "pricing_zone";
    const FIELDS: &'static [Field<Self>] = &[
        Field::<Self>::create_only("code", |i, x, f| f.code = code(i, &x.code))
            .filter(|n, op, v| crm_db::filter_text!(pz::code, n, op, v)),
        Field::<Self>::updatable("display_name", |i, x, f| {
            f.display_name = i.required_text(&x.display_name, 200);
        })
        .filter(|n, op, v| crm_db::filter_text!(pz::display_name, n, op, v)),
        Field::<Self>::updatable("multiplier", |i, x, f| {
            match parse_e4(&x.multiplier, 4, 4).filter(|m| (5_000..=50_000).contains(m)) {
                Some(m) => f.multiplier_e4 = i32::try_from(m).unwrap_or_default(),
                None => i.push(
                    "INVALID_MULTIPLIER",
                    "a decimal from 0.5 to 5 with at most 4 places",
                ),
            }
        }),
        Field::<Self>::updatable("travel_band", |i, x, f| {
            let band = i.in_range(x.travel_band, 0..=9, "0 to 9");
            f.travel_band = i16::try_from(band).unwrap_or_default();
        })
        .filter(|n, op, v| {
            let band: i16 = v.text().parse().map_err(|_| {
                crm_db::filter::FilterError::new(format!("'{n}' takes a number from 0 to 9"))
            })?;
            crm_db::filter_enum!(pz::travel_band, n, op, band)
        }),
    ];

    fn to_proto(_org: Uuid, f: ZoneFields) -> PricingZone {
        PricingZone {
            code: f.code,
            display_name: f.display_name,
            multiplier: show_e4(i64::from(f.multiplier_e4)),
            travel_band: i32::from(f.travel_band),
            ..PricingZone::default()
        }
    }
    fn order_text(f: &ZoneFields) -> &str {
        &f.display_name
    }
}

crm_resource::standard_store!(
    PricingZones,
    table = pricing_zones,
    time = create_time,
    text = display_name
);

crm_resource::standard_service! {
    service = "crm.core.v1.PricingZoneService",
    server = crm_proto::core_v1::pricing_zone_service_server::PricingZoneService,
    resource = PricingZones,
    api = PricingZoneApi,
    field = pricing_zone;
    create = create_pricing_zone(CreatePricingZoneRequest, id = pricing_zone_id);
    get = get_pricing_zone(GetPricingZoneRequest, full = |_| false);
    list = list_pricing_zones(ListPricingZonesRequest, full = |_| false)
        -> ListPricingZonesResponse.pricing_zones;
    update = update_pricing_zone(UpdatePricingZoneRequest);
    delete = delete_pricing_zone(DeletePricingZoneRequest);
    undelete = undelete_pricing_zone(UndeletePricingZoneRequest);
}

/// The columns of `core.pricing_tiers` besides the standard ones.
#[derive(Debug, Clone, Default, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = pricing_tiers, treat_none_as_null = true)]
pub struct TierFields {
    pub code: String,
    pub display_name: String,
    pub discount_e4: i32,
}

/// The pricing tier resource.
#[derive(Debug)]
pub struct PricingTiers;

impl Resource for PricingTiers {
    type Proto = PricingTier;
    type Fields = TierFields;
    type Table = pricing_tiers::table;
    const RESOURCE_TYPE: &'static str = "core.crm/PricingTier";
    const COLLECTION: &'static str = "pricingTiers";
    const FIELD: &'static str = "pricing_tier";
    const FIELDS: &'static [Field<Self>] = &[
        Field::<Self>::create_only("code", |i, x, f| f.code = code(i, &x.code))
            .filter(|n, op, v| crm_db::filter_text!(pt::code, n, op, v)),
        Field::<Self>::updatable("display_name", |i, x, f| {
            f.display_name = i.required_text(&x.display_name, 200);
        })
        .filter(|n, op, v| crm_db::filter_text!(pt::display_name, n, op, v)),
        Field::<Self>::updatable("discount_percent", |i, x, f| {
            match parse_e4(&x.discount_percent, 2, 2).filter(|d| (0..=10_000).contains(d)) {
                Some(d) => f.discount_e4 = i32::try_from(d).unwrap_or_default(),
                None => i.push(
                    "INVALID_PERCENT",
                    "a percentage from 0 to 100 with at most 2 places",
                ),
            }
        }),
    ];

    fn to_proto(_org: Uuid, f: TierFields) -> PricingTier {
        PricingTier {
            code: f.code,
            display_name: f.display_name,
            discount_percent: show_e4(i64::from(f.discount_e4) * 100),
            ..PricingTier::default()
        }
    }
    fn order_text(f: &TierFields) -> &str {
        &f.display_name
    }
}

crm_resource::standard_store!(
    PricingTiers,
    table = pricing_tiers,
    time = create_time,
    text = display_name
);

crm_resource::standard_service! {
    service = "crm.core.v1.PricingTierService",
    server = crm_proto::core_v1::pricing_tier_service_server::PricingTierService,
    resource = PricingTiers,
    api = PricingTierApi,
    field = pricing_tier;
    create = create_pricing_tier(CreatePricingTierRequest, id = pricing_tier_id);
    get = get_pricing_tier(GetPricingTierRequest, full = |_| false);
    list = list_pricing_tiers(ListPricingTiersRequest, full = |_| false)
        -> ListPricingTiersResponse.pricing_tiers;
    update = update_pricing_tier(UpdatePricingTierRequest);
    delete = delete_pricing_tier(DeletePricingTierRequest);
    undelete = undelete_pricing_tier(UndeletePricingTierRequest);
}

/// The columns of `core.pricing_rules` besides the standard ones.
#[derive(Debug, Clone, Default, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = pricing_rules, treat_none_as_null = true)]
pub struct RuleFields {
    pub display_name: String,
    pub kind: i16,
    pub catalog_item_id: Option<Uuid>,
    pub currency: Option<String>,
    pub amount_nanos: Option<i64>,
    pub percent_e4: Option<i32>,
    pub rule_order: i32,
    pub valid_from: Option<DateTime<Utc>>,
    pub valid_until: Option<DateTime<Utc>>,
    pub business_start_minute: Option<i16>,
    pub business_end_minute: Option<i16>,
    pub travel_band: i16,
    pub min_gallons: i32,
    pub max_gallons: i32,
    pub active: bool,
}

/// Minutes after midnight of `HH:MM`, none when empty; a violation otherwise.
fn minute_of(i: &mut Input<'_>, text: &str) -> Option<i16> {
    if text.is_empty() {
        return None;
    }
    let parsed = text.split_once(':').and_then(|(h, m)| {
        let (h, m): (i16, i16) = (h.parse().ok()?, m.parse().ok()?);
        ((0..24).contains(&h) && (0..60).contains(&m)).then_some(h * 60 + m)
    });
    if parsed.is_none() {
        i.push("INVALID_TIME_OF_DAY", "HH:MM in 24-hour time");
    }
    parsed
}

fn show_minute(m: Option<i16>) -> String {
    m.map(|m| format!("{:02}:{:02}", m / 60, m % 60))
        .unwrap_or_default()
}

fn bad(field: &str, reason: &'static str, message: &str) -> ApiError {
    ApiError::invalid(format!("pricing_rule.{field}"), reason, message)
}

/// The pricing rule resource.
#[derive(Debug)]
pub struct PricingRules;

impl Resource for PricingRules {
    type Proto = PricingRule;
    type Fields = RuleFields;
    type Table = pricing_rules::table;
    const RESOURCE_TYPE: &'static str = "core.crm/PricingRule";
    const COLLECTION: &'static str = "pricingRules";
    const FIELD: &'static str = "pricing_rule";
    const FIELDS: &'static [Field<Self>] = &[
        Field::<Self>::updatable("display_name", |i, x, f| {
            f.display_name = i.required_text(&x.display_name, 200);
        })
        .filter(|n, op, v| crm_db::filter_text!(pr::display_name, n, op, v)),
        Field::<Self>::updatable("kind", |i, x, f| {
            let message = "a kind such as PRICING_RULE_KIND_AFTER_HOURS";
            if let Some(k) = i.specified::<PricingRuleKind>(x.kind, "INVALID_KIND", message) {
                f.kind = k;
            }
        })
        .filter(|n, op, v| {
            let number = crm_db::filter::enum_number(
                v,
                "PRICING_RULE_KIND_",
                PricingRuleKind::from_str_name,
            )?;
            crm_db::filter_enum!(pr::kind, n, op, number)
        }),
        Field::<Self>::updatable("catalog_item", |i, x, f| {
            f.catalog_item_id = if x.catalog_item.is_empty() {
                None
            } else {
                i.reference(&x.catalog_item, "catalogItems")
            };
        })
        .filter(|n, op, v| {
            crm_resource::filter_optional_reference!(pr::catalog_item_id, n, op, v, "catalogItems")
        }),
        Field::<Self>::updatable("amount", |i, x, f| {
            let a = i.money(x.amount.as_ref(), true);
            f.currency = a.as_ref().map(|a| a.currency.clone());
            f.amount_nanos = a.map(|a| a.nanos);
        }),
        Field::<Self>::updatable("percent", |i, x, f| {
            f.percent_e4 = if x.percent.is_empty() {
                None
            } else {
                match parse_e4(&x.percent, 2, 2).filter(|p| (-10_000..=100_000).contains(p)) {
                    Some(p) => i32::try_from(p).ok(),
                    None => {
                        i.push(
                            "INVALID_PERCENT",
                            "a percentage from -100 to 1000 with at most 2 places",
                        );
                        None
                    }
                }
            };
        }),
        Field::<Self>::updatable("order", |i, x, f| {
            f.rule_order = i.in_range(x.order, 0..=1000, "0 to 1000");
        }),
        Field::<Self>::updatable("valid_from", |i, x, f| {
            f.valid_from = i.optional_time(x.valid_from.as_ref());
        }),
        Field::<Self>::updatable("valid_until", |i, x, f| {
            f.valid_until = i.optional_time(x.valid_until.as_ref());
        }),
        Field::<Self>::updatable("business_start_time", |i, x, f| {
            f.business_start_minute = minute_of(i, &x.business_start_time);
        }),
        Field::<Self>::updatable("business_end_time", |i, x, f| {
            f.business_end_minute = minute_of(i, &x.business_end_time);
        }),
        Field::<Self>::updatable("travel_band", |i, x, f| {
            f.travel_band =
                i16::try_from(i.in_range(x.travel_band, 0..=9, "0 to 9")).unwrap_or_default();
        }),
        Field::<Self>::updatable("min_gallons", |i, x, f| {
            f.min_gallons = i.in_range(x.min_gallons, 0..=100_000, "0 to 100,000 gallons");
        }),
        Field::<Self>::updatable("max_gallons", |i, x, f| {
            f.max_gallons = i.in_range(x.max_gallons, 0..=100_000, "0 to 100,000 gallons");
        }),
        Field::<Self>::updatable("active", |_, x, f| f.active = x.active)
            .filter(|n, op, v| crm_resource::filter_bool!(pr::active, n, op, v)),
    ];

    fn to_proto(org: Uuid, f: RuleFields) -> PricingRule {
        PricingRule {
            display_name: f.display_name,
            kind: i32::from(f.kind),
            catalog_item: f
                .catalog_item_id
                .map(|id| child_name(org, "catalogItems", id))
                .unwrap_or_default(),
            amount: Amount::proto_of(f.currency.as_deref(), f.amount_nanos),
            percent: f
                .percent_e4
                .map(|p| show_e4(i64::from(p) * 100))
                .unwrap_or_default(),
            order: f.rule_order,
            valid_from: optional_timestamp(f.valid_from),
            valid_until: optional_timestamp(f.valid_until),
            business_start_time: show_minute(f.business_start_minute),
            business_end_time: show_minute(f.business_end_minute),
            travel_band: i32::from(f.travel_band),
            min_gallons: f.min_gallons,
            max_gallons: f.max_gallons,
            active: f.active,
            ..PricingRule::default()
        }
    }
    fn order_text(f: &RuleFields) -> &str {
        &f.display_name
    }
    fn before_write<'a>(
        conn: &'a AsyncPgConnection,
        org: OrgId,
        _current: Option<&'a Row<RuleFields>>,
        next: &'a mut RuleFields,
        _paths: &'a [&'static str],
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            check_rule(next)?;
            if let Some(currency) = &next.currency {
                require_currency(conn, org, currency, "pricing_rule.amount").await?;
            }
            if let Some(item) = next.catalog_item_id {
                let name = child_name(org.uuid(), "catalogItems", item);
                crm_resource::require_live::<CatalogItems>(conn, org, item, &name).await?;
            }
            Ok(())
        })
    }
}

/// A rule's fields agree with each other and with its kind.
fn check_rule(f: &RuleFields) -> Result<(), ApiError> {
    if f.amount_nanos.is_some() == f.percent_e4.is_some() {
        return Err(bad(
            "amount",
            "AMOUNT_OR_PERCENT",
            "give an amount or a percent, not both",
        ));
    }
    if let (Some(from), Some(until)) = (f.valid_from, f.valid_until)
        && until <= from
    {
        return Err(bad("valid_until", "INVALID_VALIDITY", "after valid_from"));
    }
    match PricingRuleKind::try_from(i32::from(f.kind)) {
        Ok(PricingRuleKind::VolumeOverIncluded) if f.amount_nanos.is_none() => Err(bad(
            "amount",
            "AMOUNT_REQUIRED",
            "a volume rule charges an amount per gallon over the included ones",
        )),
        Ok(PricingRuleKind::AfterHours) => match (f.business_start_minute, f.business_end_minute) {
            (Some(s), Some(e)) if s < e => Ok(()),
            _ => Err(bad(
                "business_end_time",
                "INVALID_BUSINESS_HOURS",
                "after-hours rules need business_start_time before business_end_time",
            )),
        },
        Ok(PricingRuleKind::TrapSizeBand) if f.min_gallons > f.max_gallons => Err(bad(
            "max_gallons",
            "INVALID_BAND",
            "max_gallons is at least min_gallons",
        )),
        Ok(_) | Err(_) => Ok(()),
    }
}

crm_resource::standard_store!(
    PricingRules,
    table = pricing_rules,
    time = create_time,
    text = display_name
);

crm_resource::standard_service! {
    service = "crm.core.v1.PricingRuleService",
    server = crm_proto::core_v1::pricing_rule_service_server::PricingRuleService,
    resource = PricingRules,
    api = PricingRuleApi,
    field = pricing_rule;
    create = create_pricing_rule(CreatePricingRuleRequest, id = pricing_rule_id);
    get = get_pricing_rule(GetPricingRuleRequest, full = |_| false);
    list = list_pricing_rules(ListPricingRulesRequest, full = |_| false)
        -> ListPricingRulesResponse.pricing_rules;
    update = update_pricing_rule(UpdatePricingRuleRequest);
    delete = delete_pricing_rule(DeletePricingRuleRequest);
    undelete = undelete_pricing_rule(UndeletePricingRuleRequest);
}

#[cfg(test)]
mod tests {
    use super::parse_e4;

    #[test]
    fn decimals_parse_exactly() {
        assert_eq!(parse_e4("1.15", 4, 4), Some(11_500));
        assert_eq!(parse_e4("1", 4, 4), Some(10_000));
        assert_eq!(parse_e4("0.0001", 4, 4), Some(1));
        assert_eq!(parse_e4("7.5", 2, 2), Some(750));
        assert_eq!(parse_e4("-12.25", 2, 2), Some(-1_225));
        for bad in [
            "", ".5", "1.00001", "1e3", "1,5", "--1", "1.2.3", "12345678",
        ] {
            assert_eq!(parse_e4(bad, 4, 4), None, "{bad}");
        }
    }
}
