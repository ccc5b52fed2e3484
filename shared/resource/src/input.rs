//! [`Input`]: what a field's `set` function validates and converts with. Every violation is
//! recorded under the field's path (`contact.email`); a write with any violation never runs,
//! so the value a `set` function leaves after a violation is never stored.

use chrono::{DateTime, Utc};
use crm_platform::api::names;
use crm_platform::api::time::from_timestamp;
use crm_platform::api::validate::{self, Violations};
use crm_proto::common_v1::{GeoPoint, Money, PostalAddress};
use uuid::Uuid;

/// A validated postal address, trimmed, as its columns store it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Address {
    /// ISO 3166-1 alpha-2, upper case.
    pub region_code: String,
    /// Postal code.
    pub postal_code: String,
    /// State, province.
    pub administrative_area: String,
    /// City, town.
    pub locality: String,
    /// Street lines, none empty.
    pub address_lines: Vec<String>,
    /// Addressee.
    pub recipient: String,
}

impl Address {
    /// The address as its message.
    #[must_use]
    pub fn to_proto(&self) -> PostalAddress {
        PostalAddress {
            region_code: self.region_code.clone(),
            postal_code: self.postal_code.clone(),
            administrative_area: self.administrative_area.clone(),
            locality: self.locality.clone(),
            address_lines: self.address_lines.clone(),
            recipient: self.recipient.clone(),
        }
    }
}

/// The largest amount of money a field holds, in major units (a billion).
pub const MAX_MONEY_UNITS: i64 = 1_000_000_000;

/// An exact amount of money as stored: the currency and the amount in nano units (10^-9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Amount {
    /// ISO 4217 code, upper case.
    pub currency: String,
    /// `units * 10^9 + nanos`.
    pub nanos: i64,
}

impl Amount {
    /// The amount as its message.
    #[must_use]
    pub fn to_proto(&self) -> Money {
        Money {
            currency_code: self.currency.clone(),
            units: self.nanos / 1_000_000_000,
            // The remainder of a division by 10^9 fits an i32.
            nanos: i32::try_from(self.nanos % 1_000_000_000).unwrap_or_default(),
        }
    }

    /// `nanos` of `currency` as a message.
    #[must_use]
    pub fn money(currency: &str, nanos: i64) -> Option<Money> {
        Some(
            Self {
                currency: currency.to_owned(),
                nanos,
            }
            .to_proto(),
        )
    }

    /// The message of stored columns, none when either is missing.
    #[must_use]
    pub fn proto_of(currency: Option<&str>, nanos: Option<i64>) -> Option<Money> {
        Some(
            Self {
                currency: currency?.to_owned(),
                nanos: nanos?,
            }
            .to_proto(),
        )
    }
}

/// The violations of one write and the field being read.
#[derive(Debug)]
pub struct Input<'a> {
    v: &'a mut Violations,
    org: Option<Uuid>,
    field: String,
}

impl<'a> Input<'a> {
    /// Reads the field `field` (full path) of a request in organization `org`.
    pub fn new(v: &'a mut Violations, org: Option<Uuid>, field: String) -> Self {
        Self { v, org, field }
    }

    /// The part `suffix` of this field (`[2]`, `.unit_price`), recording into the same
    /// violations.
    pub fn sub(&mut self, suffix: &str) -> Input<'_> {
        Input {
            v: self.v,
            org: self.org,
            field: format!("{}{suffix}", self.field),
        }
    }

    /// The field's full path.
    #[must_use]
    pub fn field(&self) -> &str {
        &self.field
    }

    /// The request's organization, when its name parsed.
    #[must_use]
    pub fn org(&self) -> Option<Uuid> {
        self.org
    }

    /// Records a violation of this field.
    pub fn push(&mut self, reason: &'static str, message: impl Into<String>) {
        self.v.push(self.field.clone(), reason, message);
    }

    /// Records a violation of a part of this field (`address.region_code`).
    pub fn push_at(&mut self, part: &str, reason: &'static str, message: impl Into<String>) {
        self.v
            .push(format!("{}.{part}", self.field), reason, message);
    }

    /// Runs a validation written against [`Violations`] directly.
    pub fn check(&mut self, validate: impl FnOnce(&mut Violations)) {
        validate(self.v);
    }

    /// Text that must not be empty, at most `max` characters; trimmed.
    pub fn required_text(&mut self, value: &str, max: usize) -> String {
        validate::required_text(self.v, &self.field, value, max);
        value.trim().to_owned()
    }

    /// Text of at most `max` characters, as given.
    pub fn text(&mut self, value: &str, max: usize) -> String {
        validate::optional_text(self.v, &self.field, value, max);
        value.to_owned()
    }

    /// Text of at most `max` characters; trimmed.
    pub fn trimmed(&mut self, value: &str, max: usize) -> String {
        validate::optional_text(self.v, &self.field, value, max);
        value.trim().to_owned()
    }

    /// Text of a part of this field, at most `max` characters, as given.
    pub fn text_at(&mut self, part: &str, value: &str, max: usize) -> String {
        validate::optional_text(self.v, &format!("{}.{part}", self.field), value, max);
        value.to_owned()
    }

    /// An optional e-mail address (`None` when empty).
    pub fn email(&mut self, value: &str) -> Option<String> {
        validate::optional_email(self.v, &self.field, value);
        (!value.is_empty()).then(|| value.to_owned())
    }

    /// An optional E.164 phone number (`None` when empty).
    pub fn phone(&mut self, value: &str) -> Option<String> {
        validate::optional_phone(self.v, &self.field, value);
        (!value.is_empty()).then(|| value.to_owned())
    }

    /// A required E.164 phone number; `what` says whose.
    pub fn required_phone(&mut self, value: &str, what: &str) -> String {
        if value.is_empty() {
            self.push("REQUIRED", what.to_owned());
        } else {
            validate::optional_phone(self.v, &self.field, value);
        }
        value.to_owned()
    }

    /// An optional user resource name (`users/{uuid}`); `reason` names the violation.
    pub fn user(&mut self, value: &str, reason: &'static str) -> String {
        if !value.is_empty() && !validate::is_user_name(value) {
            self.push(reason, "a user resource name: users/{uuid}");
        }
        value.to_owned()
    }

    /// An optional slug (lower-case letters, digits and '-'); `reason` and `message` name the
    /// violation.
    pub fn slug(&mut self, value: &str, reason: &'static str, message: &str) -> String {
        if !value.is_empty() && !validate::is_slug(value) {
            self.push(reason, message.to_owned());
        }
        value.to_owned()
    }

    /// An optional https URI of at most 2,000 characters.
    pub fn https_uri(&mut self, value: &str) -> String {
        if !value.is_empty() && (!value.starts_with("https://") || value.len() > 2_000) {
            self.push("INVALID_URI", "an https URI");
        }
        value.to_owned()
    }

    /// A name of a resource of `collection` in the request's organization: its id.
    pub fn reference(&mut self, value: &str, collection: &str) -> Option<Uuid> {
        let (ref_org, id) = names::parse_child(value, collection, &self.field)
            .map_err(|e| self.v.absorb(e))
            .ok()?;
        if self.org.is_some_and(|o| o != ref_org) {
            self.push(
                "CROSS_ORGANIZATION_REFERENCE",
                "the referenced resource belongs to another organization",
            );
            return None;
        }
        Some(id)
    }

    /// A number of enum `E` (`UNKNOWN_ENUM_VALUE` otherwise), as its `smallint` column value.
    pub fn enumeration<E: TryFrom<i32>>(&mut self, n: i32) -> Option<i16> {
        let known = E::try_from(n).is_ok();
        match i16::try_from(n) {
            Ok(small) if known => Some(small),
            Ok(_) | Err(_) => {
                let name = std::any::type_name::<E>();
                let name = name.rsplit("::").next().unwrap_or(name);
                self.push("UNKNOWN_ENUM_VALUE", format!("{n} is not a {name}"));
                None
            }
        }
    }

    /// A number of enum `E` as its `smallint` column value, the unspecified value (0) read as
    /// `unspecified`.
    pub fn enumeration_or<E: TryFrom<i32> + Into<i32>>(
        &mut self,
        n: i32,
        unspecified: E,
    ) -> Option<i16> {
        if n == 0 {
            let n = unspecified.into();
            return i16::try_from(n).ok();
        }
        self.enumeration::<E>(n)
    }

    /// A number of enum `E` other than the unspecified 0, as its `smallint` column value;
    /// `reason` and `message` name the violation otherwise.
    pub fn specified<E: TryFrom<i32>>(
        &mut self,
        n: i32,
        reason: &'static str,
        message: &str,
    ) -> Option<i16> {
        match i16::try_from(n) {
            Ok(small) if n != 0 && E::try_from(n).is_ok() => Some(small),
            Ok(_) | Err(_) => {
                self.push(reason, message.to_owned());
                None
            }
        }
    }

    /// A number in `range` (`OUT_OF_RANGE` with `message` otherwise).
    pub fn in_range<T: PartialOrd + Copy>(
        &mut self,
        value: T,
        range: std::ops::RangeInclusive<T>,
        message: &str,
    ) -> T {
        if !range.contains(&value) {
            self.push("OUT_OF_RANGE", message.to_owned());
        }
        value
    }

    /// A required time that is a valid timestamp; `what` says what it is.
    pub fn required_time(
        &mut self,
        value: Option<&prost_types::Timestamp>,
        what: &str,
    ) -> Option<DateTime<Utc>> {
        match value.map(from_timestamp) {
            None => {
                self.push("REQUIRED", what.to_owned());
                None
            }
            Some(None) => {
                self.push("INVALID_TIME", "not a valid time");
                None
            }
            Some(Some(t)) => Some(t),
        }
    }

    /// An optional time that is a valid timestamp when given.
    pub fn optional_time(
        &mut self,
        value: Option<&prost_types::Timestamp>,
    ) -> Option<DateTime<Utc>> {
        let t = value.map(from_timestamp)?;
        if t.is_none() {
            self.push("INVALID_TIME", "not a valid time");
        }
        t
    }

    /// A required postal address: a region code and at least one line, each part bounded.
    pub fn address(&mut self, a: Option<&PostalAddress>) -> Address {
        let Some(a) = a else {
            self.push("REQUIRED", "an address is required");
            return Address::default();
        };
        let region = a.region_code.trim();
        if region.len() != 2 || !region.bytes().all(|b| b.is_ascii_alphabetic()) {
            let message = "an ISO 3166-1 alpha-2 code such as US";
            self.push_at("region_code", "INVALID_REGION_CODE", message);
        }
        if a.address_lines.iter().all(|l| l.trim().is_empty()) {
            let message = "at least one address line is required";
            self.push_at("address_lines", "REQUIRED", message);
        }
        if a.address_lines.len() > 5 || a.address_lines.iter().any(|l| l.len() > 200) {
            let message = "at most 5 lines of 200 characters";
            self.push_at("address_lines", "TOO_LONG", message);
        }
        for (i, line) in a.address_lines.iter().enumerate() {
            validate::optional_text(
                self.v,
                &format!("{}.address_lines[{i}]", self.field),
                line,
                200,
            );
        }
        Address {
            region_code: region.to_ascii_uppercase(),
            postal_code: self.text_at("postal_code", a.postal_code.trim(), 200),
            administrative_area: self.text_at(
                "administrative_area",
                a.administrative_area.trim(),
                200,
            ),
            locality: self.text_at("locality", a.locality.trim(), 200),
            recipient: self.text_at("recipient", a.recipient.trim(), 200),
            address_lines: (a.address_lines.iter().map(|l| l.trim().to_owned()))
                .filter(|l| !l.is_empty())
                .collect(),
        }
    }

    /// An optional geo point: (latitude, longitude), each finite and in range.
    pub fn geo(&mut self, g: Option<&GeoPoint>) -> Option<(f64, f64)> {
        let g = g?;
        if !(-90.0..=90.0).contains(&g.latitude) || !g.latitude.is_finite() {
            self.push_at("latitude", "OUT_OF_RANGE", "-90 to 90");
        }
        if !(-180.0..=180.0).contains(&g.longitude) || !g.longitude.is_finite() {
            self.push_at("longitude", "OUT_OF_RANGE", "-180 to 180");
        }
        Some((g.latitude, g.longitude))
    }

    /// An optional amount of money: an ISO 4217 code, `units` and `nanos` of one sign, `nanos`
    /// within ±999,999,999, at most [`MAX_MONEY_UNITS`], negative only when `negative` may be.
    pub fn money(&mut self, m: Option<&Money>, negative: bool) -> Option<Amount> {
        let m = m?;
        let code = m.currency_code.as_str();
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
            let message = "an ISO 4217 code of three upper-case letters, such as USD";
            self.push_at("currency_code", "INVALID_CURRENCY", message);
        }
        if !(-999_999_999..=999_999_999).contains(&m.nanos) {
            self.push_at("nanos", "OUT_OF_RANGE", "-999,999,999 to 999,999,999");
            return None;
        }
        if (m.units > 0 && m.nanos < 0) || (m.units < 0 && m.nanos > 0) {
            let message = "units and nanos must have the same sign";
            self.push("MIXED_SIGNS", message);
            return None;
        }
        if m.units.abs() > MAX_MONEY_UNITS {
            self.push_at(
                "units",
                "OUT_OF_RANGE",
                format!("at most {MAX_MONEY_UNITS}"),
            );
            return None;
        }
        let nanos = m.units * 1_000_000_000 + i64::from(m.nanos);
        if nanos < 0 && !negative {
            self.push("NEGATIVE_AMOUNT", "must not be negative");
        }
        Some(Amount {
            currency: code.to_owned(),
            nanos,
        })
    }
}
