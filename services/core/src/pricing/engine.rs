//! The pricing engine, pure: `price = base × zone multiplier × (1 − tier discount)`, then every
//! applicable rule in order (a fixed amount, an amount per gallon over the included ones, or a
//! percentage of the running price), computed as exact rationals and rounded half-even to the
//! currency's minor unit once, at the end. Each step is a line; a final `rounding` line makes
//! the lines (each shown exact to the nano unit) sum to the price.

use chrono::{DateTime, Datelike, NaiveDateTime, Timelike, Utc, Weekday};
use num_bigint::BigInt;
use num_rational::BigRational;
use num_traits::{One, Signed, ToPrimitive, Zero};

/// Nano units per unit of money.
pub const NANOS: i64 = 1_000_000_000;
/// Fractions (multipliers, discounts, percentages) are stored in ten-thousandths.
pub const E4: i64 = 10_000;

/// Nano units in the currency's minor unit (a cent is 10,000,000): ISO 4217 exponents.
#[must_use]
pub fn minor_unit(currency: &str) -> i64 {
    match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => NANOS,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => NANOS / 1_000,
        _ => NANOS / 100,
    }
}

/// The zone of the property.
#[derive(Debug, Clone)]
pub struct Zone {
    /// Its resource name.
    pub source: String,
    /// Multiplier in ten-thousandths.
    pub multiplier_e4: i64,
    /// Travel band.
    pub travel_band: i16,
}

/// The customer's tier.
#[derive(Debug, Clone)]
pub struct Tier {
    /// Its resource name.
    pub source: String,
    /// Discount in ten-thousandths.
    pub discount_e4: i64,
}

/// What a rule adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adjustment {
    /// A fixed amount, in nanos (per gallon over the included ones for volume rules).
    Amount(i64),
    /// A fraction of the running price, in ten-thousandths.
    Percent(i64),
}

/// When a rule applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// Outside `[start, end)` minutes of the local day, or on a weekend.
    AfterHours {
        /// Business hours start, minutes after midnight.
        start: u32,
        /// Business hours end.
        end: u32,
    },
    /// The job is an emergency.
    Emergency,
    /// More gallons than the item includes (the adjustment is per gallon over).
    VolumeOverIncluded,
    /// The zone's travel band is this one.
    TravelBand(i16),
    /// The gallons are within these bounds (inclusive).
    TrapSize(i64, i64),
}

/// A pricing rule as the engine sees it.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Its resource name.
    pub source: String,
    /// Its condition.
    pub condition: Condition,
    /// What it adds.
    pub adjustment: Adjustment,
    /// From when it applies.
    pub valid_from: Option<DateTime<Utc>>,
    /// Until when.
    pub valid_until: Option<DateTime<Utc>>,
}

/// What is priced.
#[derive(Debug, Clone)]
pub struct Job {
    /// The catalog item's resource name.
    pub item: String,
    /// ISO 4217.
    pub currency: String,
    /// Base price in nanos.
    pub base_nanos: i64,
    /// Gallons the base price includes.
    pub included_gallons: i64,
    /// Gallons of this job.
    pub gallons: i64,
    /// Emergency.
    pub emergency: bool,
    /// When (for validity).
    pub time: DateTime<Utc>,
    /// The same instant in the customer's time zone (for business hours).
    pub local: NaiveDateTime,
}

/// One step, exact to the nano.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// `base`, `zone`, `tier`, `rule`, `rounding`.
    pub step: &'static str,
    /// Where it comes from.
    pub source: String,
    /// What it applied.
    pub input: String,
    /// What it added, in nanos.
    pub amount_nanos: i64,
    /// The sum of the lines so far, in nanos.
    pub running_nanos: i64,
}

/// A price and its lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Priced {
    /// ISO 4217.
    pub currency: String,
    /// The price, in nanos, a whole number of minor units.
    pub price_nanos: i64,
    /// The lines, summing to the price.
    pub lines: Vec<Line>,
}

/// Why a price cannot be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    /// The result does not fit the money type.
    #[error("the price is out of range")]
    OutOfRange,
}

fn int(n: i64) -> BigRational {
    BigRational::from_integer(BigInt::from(n))
}

fn frac(n: i64, d: i64) -> BigRational {
    BigRational::new(BigInt::from(n), BigInt::from(d))
}

/// `r` rounded half-even to a multiple of `unit` (in the same units as `r`).
#[must_use]
pub fn round_half_even(r: &BigRational, unit: i64) -> BigInt {
    let q = r / int(unit);
    let floor = q.floor();
    let rest = &q - &floor;
    let half = frac(1, 2);
    let up = match rest.cmp(&half) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => (floor.to_integer() % BigInt::from(2)) != BigInt::zero(),
    };
    let n = if up {
        floor + BigRational::one()
    } else {
        floor
    };
    n.to_integer() * BigInt::from(unit)
}

fn nanos_of(r: &BigRational) -> Result<i64, PriceError> {
    round_half_even(r, 1).to_i64().ok_or(PriceError::OutOfRange)
}

/// A fraction in ten-thousandths as text (`11500` → `1.15`).
#[must_use]
pub fn show_e4(n: i64) -> String {
    let sign = if n < 0 { "-" } else { "" };
    let (whole, part) = (n.abs() / E4, n.abs() % E4);
    if part == 0 {
        format!("{sign}{whole}")
    } else {
        let digits = format!("{part:04}");
        format!("{sign}{whole}.{}", digits.trim_end_matches('0'))
    }
}

/// A percentage in ten-thousandths of a whole as text (`750` → `7.5 %`).
fn show_percent(n: i64) -> String {
    format!("{} %", show_e4(n * 100))
}

/// Nanos as a decimal amount (`85_000_000` → `0.085`).
#[must_use]
pub fn show_nanos(n: i64) -> String {
    let sign = if n < 0 { "-" } else { "" };
    let (whole, part) = (
        n.unsigned_abs() / 1_000_000_000,
        n.unsigned_abs() % 1_000_000_000,
    );
    let digits = format!("{part:09}");
    let digits = digits.trim_end_matches('0');
    let digits = if digits.len() < 2 {
        format!("{digits:0<2}")
    } else {
        digits.to_owned()
    };
    format!("{sign}{whole}.{digits}")
}

fn applies(rule: &Rule, job: &Job, zone: Option<&Zone>) -> bool {
    if rule.valid_from.is_some_and(|f| job.time < f)
        || rule.valid_until.is_some_and(|u| job.time >= u)
    {
        return false;
    }
    match rule.condition {
        Condition::AfterHours { start, end } => {
            let weekend = matches!(job.local.weekday(), Weekday::Sat | Weekday::Sun);
            let minute = job.local.hour() * 60 + job.local.minute();
            weekend || minute < start || minute >= end
        }
        Condition::Emergency => job.emergency,
        Condition::VolumeOverIncluded => job.gallons > job.included_gallons,
        Condition::TravelBand(band) => zone.is_some_and(|z| z.travel_band == band),
        Condition::TrapSize(min, max) => (min..=max).contains(&job.gallons),
    }
}

/// Prices `job` in `zone` for `tier` with the organization's `rules` (in the order given).
///
/// # Errors
/// `OutOfRange` when a line or the price does not fit the money type.
pub fn price(
    job: &Job,
    zone: Option<&Zone>,
    tier: Option<&Tier>,
    rules: &[Rule],
) -> Result<Priced, PriceError> {
    let mut exact = int(job.base_nanos);
    let mut lines = Vec::new();
    let mut shown: i64 = 0;
    let mut push =
        |lines: &mut Vec<Line>, step, source: &str, input: String, amount: &BigRational| {
            let amount_nanos = nanos_of(amount)?;
            shown = shown
                .checked_add(amount_nanos)
                .ok_or(PriceError::OutOfRange)?;
            lines.push(Line {
                step,
                source: source.to_owned(),
                input,
                amount_nanos,
                running_nanos: shown,
            });
            Ok::<(), PriceError>(())
        };
    push(
        &mut lines,
        "base",
        &job.item,
        "base price".to_owned(),
        &exact,
    )?;
    if let Some(z) = zone {
        let added = &exact * frac(z.multiplier_e4 - E4, E4);
        push(
            &mut lines,
            "zone",
            &z.source,
            format!("× {}", show_e4(z.multiplier_e4)),
            &added,
        )?;
        exact += added;
    }
    if let Some(t) = tier {
        let added = -(&exact * frac(t.discount_e4, E4));
        push(
            &mut lines,
            "tier",
            &t.source,
            format!("− {}", show_percent(t.discount_e4)),
            &added,
        )?;
        exact += added;
    }
    for rule in rules.iter().filter(|r| applies(r, job, zone)) {
        let (added, input) = match (rule.condition, rule.adjustment) {
            (Condition::VolumeOverIncluded, Adjustment::Amount(per)) => {
                let over = job.gallons - job.included_gallons;
                (
                    int(over) * int(per),
                    format!(
                        "{over} gal over {} × {}",
                        job.included_gallons,
                        show_nanos(per)
                    ),
                )
            }
            (_, Adjustment::Amount(a)) => (int(a), format!("+ {}", show_nanos(a))),
            (_, Adjustment::Percent(p)) => (
                &exact * frac(p, E4),
                format!("{} of the running price", show_percent(p)),
            ),
        };
        push(&mut lines, "rule", &rule.source, input, &added)?;
        exact += added;
    }
    if exact.is_negative() {
        exact = BigRational::zero();
    }
    let price = round_half_even(&exact, minor_unit(&job.currency))
        .to_i64()
        .ok_or(PriceError::OutOfRange)?;
    let rounding = price.checked_sub(shown).ok_or(PriceError::OutOfRange)?;
    lines.push(Line {
        step: "rounding",
        source: String::new(),
        input: format!("half-even to the {} minor unit", job.currency),
        amount_nanos: rounding,
        running_nanos: price,
    });
    Ok(Priced {
        currency: job.currency.clone(),
        price_nanos: price,
        lines,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn job(base_cents: i64, gallons: i64) -> Job {
        // A Tuesday at 10:00.
        let time = Utc.with_ymd_and_hms(2027, 3, 2, 10, 0, 0).unwrap();
        Job {
            item: "item".into(),
            currency: "USD".into(),
            base_nanos: base_cents * 10_000_000,
            included_gallons: 1000,
            gallons,
            emergency: false,
            time,
            local: time.naive_utc(),
        }
    }

    fn rule(condition: Condition, adjustment: Adjustment) -> Rule {
        Rule {
            source: format!("{condition:?}"),
            condition,
            adjustment,
            valid_from: None,
            valid_until: None,
        }
    }

    const CENT: i64 = 10_000_000;

    /// A job, its zone, tier and rules, and the price in cents worked out by hand.
    type Case = (Job, Option<Zone>, Option<Tier>, Vec<Rule>, i64);

    #[test]
    fn hand_computed_cases() {
        let zone = |m, band| Zone {
            source: "zone".into(),
            multiplier_e4: m,
            travel_band: band,
        };
        let tier = |d| Tier {
            source: "tier".into(),
            discount_e4: d,
        };
        let after = rule(
            Condition::AfterHours {
                start: 8 * 60,
                end: 17 * 60,
            },
            Adjustment::Percent(5000),
        );
        let emergency = rule(Condition::Emergency, Adjustment::Amount(150 * NANOS));
        let volume = rule(Condition::VolumeOverIncluded, Adjustment::Amount(10 * CENT));
        let travel = rule(Condition::TravelBand(2), Adjustment::Amount(35 * NANOS));
        let evening = |mut j: Job| {
            j.local = Utc
                .with_ymd_and_hms(2027, 3, 2, 19, 30, 0)
                .unwrap()
                .naive_utc();
            j
        };
        let urgent = |mut j: Job| {
            j.emergency = true;
            j
        };
        // (job, zone, tier, rules, expected price in cents), each worked out by hand:
        let cases: Vec<Case> = vec![
            // 325.00 plain.
            (job(32_500, 800), None, None, vec![], 32_500),
            // 325.00 × 1.15 = 373.75.
            (
                job(32_500, 800),
                Some(zone(11_500, 0)),
                None,
                vec![],
                37_375,
            ),
            // 373.75 × 0.90 = 336.375 → 336.38 (half-even: ...375 → 8 is even).
            (
                job(32_500, 800),
                Some(zone(11_500, 0)),
                Some(tier(1000)),
                vec![],
                33_638,
            ),
            // 299.99 × 1.05 = 314.9895 → 314.99.
            (
                job(29_999, 800),
                Some(zone(10_500, 0)),
                None,
                vec![],
                31_499,
            ),
            // Business hours: no after-hours surcharge.
            (job(30_000, 800), None, None, vec![after.clone()], 30_000),
            // Evening: 300.00 + 50 % = 450.00.
            (
                evening(job(30_000, 800)),
                None,
                None,
                vec![after.clone()],
                45_000,
            ),
            // Emergency flat 150.00 on 300.00 = 450.00; not an emergency: 300.00.
            (
                urgent(job(30_000, 800)),
                None,
                None,
                vec![emergency.clone()],
                45_000,
            ),
            (
                job(30_000, 800),
                None,
                None,
                vec![emergency.clone()],
                30_000,
            ),
            // 1,250 gallons, 1,000 included: 250 × 0.10 = 25.00 → 325.00.
            (job(30_000, 1250), None, None, vec![volume.clone()], 32_500),
            // Travel band 2: + 35.00; band 1: nothing.
            (
                job(30_000, 800),
                Some(zone(10_000, 2)),
                None,
                vec![travel.clone()],
                33_500,
            ),
            (
                job(30_000, 800),
                Some(zone(10_000, 1)),
                None,
                vec![travel.clone()],
                30_000,
            ),
            // All of it, in order: 300.00 × 1.10 = 330.00; − 5 % = 313.50; evening + 50 % =
            // 470.25; emergency + 150.00 = 620.25; 1,250 gal: + 25.00 = 645.25; band 2: + 35.00
            // = 680.25.
            (
                urgent(evening(job(30_000, 1250))),
                Some(zone(11_000, 2)),
                Some(tier(500)),
                vec![after, emergency, volume, travel],
                68_025,
            ),
        ];
        for (n, (j, z, t, rules, cents)) in cases.into_iter().enumerate() {
            let p = price(&j, z.as_ref(), t.as_ref(), &rules).unwrap();
            assert_eq!(p.price_nanos, cents * CENT, "case {n}: {p:#?}");
            let sum: i64 = p.lines.iter().map(|l| l.amount_nanos).sum();
            assert_eq!(
                sum, p.price_nanos,
                "case {n}: the lines do not sum to the price"
            );
            assert_eq!(p.lines.last().unwrap().running_nanos, p.price_nanos);
        }
    }

    #[test]
    fn half_even_rounding_goes_to_the_even_cent() {
        let unit = 10_000_000;
        for (nanos, cents) in [
            (5_000_000, 0),
            (15_000_000, 2),
            (25_000_000, 2),
            (25_000_001, 3),
            (-5_000_000, 0),
            (-15_000_000, -2),
        ] {
            assert_eq!(
                round_half_even(&int(nanos), unit),
                BigInt::from(cents * unit),
                "{nanos}"
            );
        }
    }

    #[test]
    fn a_rule_outside_its_validity_does_not_apply() {
        let mut r = rule(Condition::Emergency, Adjustment::Amount(NANOS));
        let mut j = job(10_000, 0);
        j.emergency = true;
        r.valid_until = Some(j.time);
        assert_eq!(
            price(&j, None, None, &[r.clone()]).unwrap().price_nanos,
            100 * NANOS
        );
        r.valid_until = None;
        r.valid_from = Some(j.time + chrono::Duration::seconds(1));
        assert_eq!(
            price(&j, None, None, &[r]).unwrap().price_nanos,
            100 * NANOS
        );
    }

    #[test]
    fn yen_round_to_whole_units() {
        let mut j = job(0, 0);
        j.currency = "JPY".into();
        j.base_nanos = 1001 * NANOS;
        let z = Zone {
            source: "z".into(),
            multiplier_e4: 10_500,
            travel_band: 0,
        };
        // 1001 × 1.05 = 1051.05 → 1051.
        assert_eq!(
            price(&j, Some(&z), None, &[]).unwrap().price_nanos,
            1051 * NANOS
        );
    }

    proptest::proptest! {
        /// The engine's price is the exact rational price rounded half-even once — computed here
        /// independently as one fraction: base × m × (1 − d) × Π(1 + pᵢ) over one denominator.
        #[test]
        fn the_price_is_the_exact_price_rounded_once(
            base_cents in 0i64..100_000_000,
            sub_cent in 0i64..10_000_000,
            m in 5_000i64..=50_000,
            d in 0i64..=10_000,
            percents in proptest::collection::vec(-5_000i64..=20_000, 0..6),
        ) {
            let mut j = job(0, 0);
            j.base_nanos = base_cents * 10_000_000 + sub_cent;
            let z = Zone { source: "z".into(), multiplier_e4: m, travel_band: 0 };
            let t = Tier { source: "t".into(), discount_e4: d };
            let rules: Vec<Rule> = percents
                .iter()
                .map(|p| rule(Condition::TrapSize(0, 0), Adjustment::Percent(*p)))
                .collect();
            let p = price(&j, Some(&z), Some(&t), &rules).unwrap();
            let mut num = BigInt::from(j.base_nanos) * BigInt::from(m) * BigInt::from(E4 - d);
            let mut den = BigInt::from(E4) * BigInt::from(E4);
            for pct in &percents {
                num *= BigInt::from(E4 + pct);
                den *= BigInt::from(E4);
            }
            // Half-even to the cent, by integer division alone.
            let cent = BigInt::from(10_000_000);
            let scaled_den = &den * &cent;
            let q = &num / &scaled_den;
            let r = &num % &scaled_den;
            let twice = &r * BigInt::from(2);
            let q = if twice > scaled_den || (twice == scaled_den && (&q % BigInt::from(2)) == BigInt::from(1)) {
                q + 1
            } else {
                q
            };
            let expected = (q * cent).to_i64().unwrap();
            proptest::prop_assert_eq!(p.price_nanos, expected);
            let sum: i64 = p.lines.iter().map(|l| l.amount_nanos).sum();
            proptest::prop_assert_eq!(sum, p.price_nanos);
        }
    }
}
