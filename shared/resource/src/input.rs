//! [`Input`]: what a field's `set` function validates and converts with. Every violation is
//! recorded under the field's path (`contact.email`); a write with any violation never runs,
//! so the value a `set` function leaves after a violation is never stored.

use chrono::{DateTime, Utc};
use crm_platform::api::names;
use crm_platform::api::time::from_timestamp;
use crm_platform::api::validate::{self, Violations};
use uuid::Uuid;

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
}
