//! The price book (catalog items, pricing zones and tiers, pricing rules: [`book`]) and the
//! pricing engine ([`engine`]) behind `PriceService/ComputePrice`, which reads the item, the
//! customer (tier, time zone), the property (zone) and the rules in one read transaction.

pub mod book;
pub mod engine;

use chrono::{DateTime, Utc};
use crm_auth::{MethodPolicy, Principal, permission};
use crm_db::OrgId;
use crm_platform::ApiError;
use crm_platform::api::names::{self, child_name};
use crm_platform::api::validate::Violations;
use crm_proto::core_v1::price_service_server::PriceService;
use crm_proto::core_v1::{ComputePriceRequest, PriceExplanation, PriceLine, PricingRuleKind};
use crm_resource::input::Amount;
use crm_resource::{Context, Input};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::schema::catalog_items::dsl as ci;
use crate::schema::customers::dsl as cu;
use crate::schema::pricing_rules::dsl as pr;
use crate::schema::pricing_tiers::dsl as pt;
use crate::schema::pricing_zones::dsl as pz;
use crate::schema::properties::dsl as pp;

const SERVICE: &str = "crm.core.v1.PriceService";

/// The permission of every pricing RPC (the price book's and ComputePrice).
#[must_use]
pub fn policy() -> MethodPolicy {
    crm_resource::policy(SERVICE, &[("ComputePrice", permission::CUSTOMERS_READ)])
        .merge(&book::policy())
}

/// What ComputePrice prices.
#[derive(Debug, Clone, Copy)]
pub struct Request {
    /// The catalog item.
    pub item: Uuid,
    /// The customer.
    pub customer: Uuid,
    /// The property, if any.
    pub property: Option<Uuid>,
    /// When.
    pub time: DateTime<Utc>,
    /// Gallons.
    pub gallons: i64,
    /// Emergency.
    pub emergency: bool,
}

fn refused(reason: &'static str, message: String) -> ApiError {
    ApiError::FailedPrecondition { reason, message }
}

/// A catalog item's currency, base price, included gallons, activity and deletion.
type ItemRow = (String, i64, i32, bool, Option<DateTime<Utc>>);

/// A rule's id, kind, amount or percent, validity and condition fields.
type RuleRow = (
    Uuid,
    i16,
    Option<i64>,
    Option<i32>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    (Option<i16>, Option<i16>, i16, i32, i32),
);

/// Prices `r` in organization `org`, inside a read transaction.
///
/// # Errors
/// FAILED_PRECONDITION for a missing, deleted or inactive item, customer or property, or a
/// property of another customer; INTERNAL when the result does not fit.
pub async fn compute(
    conn: &AsyncPgConnection,
    org: OrgId,
    r: Request,
) -> Result<engine::Priced, ApiError> {
    let o = org.uuid();
    let item_name = child_name(o, "catalogItems", r.item);
    let item: Option<ItemRow> = ci::catalog_items
        .filter(ci::organization_id.eq(org))
        .filter(ci::id.eq(r.item))
        .select((
            ci::currency,
            ci::base_price_nanos,
            ci::included_gallons,
            ci::active,
            ci::delete_time,
        ))
        .first(&mut { conn })
        .await
        .optional()?;
    let (currency, base, included) = match item {
        Some((c, b, g, true, None)) => (c, b, g),
        Some(_) => {
            return Err(refused(
                "CATALOG_ITEM_INACTIVE",
                format!("{item_name} is not for sale"),
            ));
        }
        None => {
            return Err(refused(
                "REFERENCE_NOT_FOUND",
                format!("{item_name} does not exist"),
            ));
        }
    };
    let customer_name = child_name(o, "customers", r.customer);
    let (tier, time_zone): (String, String) = cu::customers
        .filter(cu::organization_id.eq(org))
        .filter(cu::id.eq(r.customer))
        .filter(cu::delete_time.is_null())
        .select((cu::tier, cu::time_zone))
        .first(&mut { conn })
        .await
        .optional()?
        .ok_or_else(|| {
            refused(
                "REFERENCE_NOT_FOUND",
                format!("{customer_name} does not exist"),
            )
        })?;
    let zone_code = match r.property {
        None => None,
        Some(p) => {
            let name = child_name(o, "properties", p);
            let (owner, zone): (Uuid, String) = pp::properties
                .filter(pp::organization_id.eq(org))
                .filter(pp::id.eq(p))
                .filter(pp::delete_time.is_null())
                .select((pp::customer_id, pp::zone))
                .first(&mut { conn })
                .await
                .optional()?
                .ok_or_else(|| refused("REFERENCE_NOT_FOUND", format!("{name} does not exist")))?;
            if owner != r.customer {
                return Err(refused(
                    "PROPERTY_OF_ANOTHER_CUSTOMER",
                    format!("{name} is not {customer_name}'s"),
                ));
            }
            Some(zone).filter(|z| !z.is_empty())
        }
    };
    let zone = match zone_code {
        None => None,
        Some(code) => pz::pricing_zones
            .filter(pz::organization_id.eq(org))
            .filter(pz::code.eq(code))
            .filter(pz::delete_time.is_null())
            .select((pz::id, pz::multiplier_e4, pz::travel_band))
            .first::<(Uuid, i32, i16)>(&mut { conn })
            .await
            .optional()?
            .map(|(id, m, band)| engine::Zone {
                source: child_name(o, "pricingZones", id),
                multiplier_e4: i64::from(m),
                travel_band: band,
            }),
    };
    let tier = if tier.is_empty() {
        None
    } else {
        pt::pricing_tiers
            .filter(pt::organization_id.eq(org))
            .filter(pt::code.eq(tier))
            .filter(pt::delete_time.is_null())
            .select((pt::id, pt::discount_e4))
            .first::<(Uuid, i32)>(&mut { conn })
            .await
            .optional()?
            .map(|(id, d)| engine::Tier {
                source: child_name(o, "pricingTiers", id),
                discount_e4: i64::from(d),
            })
    };
    let rows: Vec<RuleRow> = pr::pricing_rules
        .filter(pr::organization_id.eq(org))
        .filter(pr::delete_time.is_null())
        .filter(pr::active.eq(true))
        .filter(
            pr::catalog_item_id
                .is_null()
                .or(pr::catalog_item_id.eq(r.item)),
        )
        .order((pr::rule_order.asc(), pr::display_name.asc(), pr::id.asc()))
        .select((
            pr::id,
            pr::kind,
            pr::amount_nanos,
            pr::percent_e4,
            pr::valid_from,
            pr::valid_until,
            (
                pr::business_start_minute,
                pr::business_end_minute,
                pr::travel_band,
                pr::min_gallons,
                pr::max_gallons,
            ),
        ))
        .load(&mut { conn })
        .await?;
    let rules: Vec<engine::Rule> = rows
        .into_iter()
        .filter_map(
            |(id, kind, amount, percent, from, until, (start, end, band, min, max))| {
                use engine::Condition as C;
                let condition = match PricingRuleKind::try_from(i32::from(kind)).ok()? {
                    PricingRuleKind::AfterHours => C::AfterHours {
                        start: u32::try_from(start?).ok()?,
                        end: u32::try_from(end?).ok()?,
                    },
                    PricingRuleKind::Emergency => C::Emergency,
                    PricingRuleKind::VolumeOverIncluded => C::VolumeOverIncluded,
                    PricingRuleKind::TravelBand => C::TravelBand(band),
                    PricingRuleKind::TrapSizeBand => C::TrapSize(i64::from(min), i64::from(max)),
                    PricingRuleKind::Unspecified => return None,
                };
                let adjustment = match (amount, percent) {
                    (Some(a), _) => engine::Adjustment::Amount(a),
                    (None, Some(p)) => engine::Adjustment::Percent(i64::from(p)),
                    (None, None) => return None,
                };
                Some(engine::Rule {
                    source: child_name(o, "pricingRules", id),
                    condition,
                    adjustment,
                    valid_from: from,
                    valid_until: until,
                })
            },
        )
        .collect();
    let tz: chrono_tz::Tz = time_zone.parse().unwrap_or(chrono_tz::UTC);
    let job = engine::Job {
        item: item_name,
        currency,
        base_nanos: base,
        included_gallons: i64::from(included),
        gallons: r.gallons,
        emergency: r.emergency,
        time: r.time,
        local: r.time.with_timezone(&tz).naive_local(),
    };
    engine::price(&job, zone.as_ref(), tier.as_ref(), &rules)
        .map_err(|e| ApiError::Internal(format!("pricing: {e}")))
}

/// The handlers.
#[derive(Debug, Clone)]
pub struct PriceApi {
    ctx: Context,
}

impl PriceApi {
    /// Handlers over `ctx`.
    #[must_use]
    pub fn new(ctx: Context) -> Self {
        Self { ctx }
    }

    async fn price(
        &self,
        principal: &Principal,
        body: ComputePriceRequest,
    ) -> Result<PriceExplanation, ApiError> {
        let mut v = Violations::new();
        let org = names::parse_organization(&body.parent, "parent")
            .map_err(|e| v.absorb(e))
            .ok();
        let item = Input::new(&mut v, org, "catalog_item".to_owned())
            .reference(&body.catalog_item, "catalogItems");
        let customer =
            Input::new(&mut v, org, "customer".to_owned()).reference(&body.customer, "customers");
        let property = if body.property.is_empty() {
            None
        } else {
            Input::new(&mut v, org, "property".to_owned()).reference(&body.property, "properties")
        };
        let time = Input::new(&mut v, org, "time".to_owned()).optional_time(body.time.as_ref());
        if !(0..=100_000).contains(&body.gallons) {
            v.push("gallons", "OUT_OF_RANGE", "0 to 100,000 gallons");
        }
        v.finish()?;
        let (Some(org), Some(item), Some(customer)) = (org, item, customer) else {
            return Err(ApiError::Internal("parsed without violation".into()));
        };
        names::require_same_organization(principal, org)?;
        let request = Request {
            item,
            customer,
            property,
            time: time.unwrap_or_else(Utc::now),
            gallons: i64::from(body.gallons),
            emergency: body.emergency,
        };
        let priced = crm_db::tenant::read(&self.ctx.pool, org, move |conn| {
            Box::pin(async move { compute(conn, OrgId(org), request).await })
        })
        .await?;
        let currency = priced.currency.clone();
        Ok(PriceExplanation {
            price: Amount::money(&currency, priced.price_nanos),
            lines: priced
                .lines
                .iter()
                .map(|l| PriceLine {
                    step: l.step.to_owned(),
                    source: l.source.clone(),
                    input: l.input.clone(),
                    amount: Amount::money(&currency, l.amount_nanos),
                    running: Amount::money(&currency, l.running_nanos),
                })
                .collect(),
        })
    }
}

#[tonic::async_trait]
impl PriceService for PriceApi {
    async fn compute_price(
        &self,
        req: tonic::Request<ComputePriceRequest>,
    ) -> Result<tonic::Response<PriceExplanation>, tonic::Status> {
        let principal = crm_auth::layer::principal_of(&req)?;
        self.price(&principal, req.into_inner())
            .await
            .map(tonic::Response::new)
            .map_err(|e| self.ctx.status(e))
    }
}
