//! Field validation shared by every resource. Each check pushes a [`Violation`] naming the
//! field, so a request with several bad fields hears about all of them at once.

use uuid::Uuid;

use crate::error::{ApiError, Violation};

/// Collects violations across a request.
#[derive(Debug, Default)]
pub struct Violations(Vec<Violation>);

impl Violations {
    /// No violations yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a violation.
    pub fn push(
        &mut self,
        field: impl Into<String>,
        reason: &'static str,
        description: impl Into<String>,
    ) {
        self.0.push(Violation::new(field, reason, description));
    }

    /// Records the violations of a failed check.
    pub fn absorb(&mut self, error: ApiError) {
        if let ApiError::InvalidArgument(v) = error {
            self.0.extend(v);
        } else {
            self.0
                .push(Violation::new("", "INVALID", error.to_string()));
        }
    }

    /// `Ok` when nothing was recorded.
    ///
    /// # Errors
    /// INVALID_ARGUMENT with every violation.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::InvalidArgument(self.0))
        }
    }
}

/// A required, trimmed, printable text of at most `max` characters.
pub fn required_text(v: &mut Violations, field: &str, value: &str, max: usize) {
    if value.trim().is_empty() {
        v.push(field, "REQUIRED", "must not be empty");
    } else {
        optional_text(v, field, value, max);
    }
}

/// An optional printable text of at most `max` characters.
pub fn optional_text(v: &mut Violations, field: &str, value: &str, max: usize) {
    if value.chars().count() > max {
        v.push(
            field,
            "TOO_LONG",
            format!("must be at most {max} characters"),
        );
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        v.push(
            field,
            "CONTROL_CHARACTERS",
            "must not contain control characters",
        );
    }
}

/// Whether `s` is a plausible email address: one `@`, a non-empty local part of at most 64
/// characters without spaces, a domain of dot-separated labels of letters, digits and hyphens
/// with at least two labels; 254 characters at most.
#[must_use]
pub fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    s.len() <= 254
        && !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c))
        && domain.split('.').count() >= 2
        && domain.split('.').all(label_ok)
}

/// Whether `s` is an E.164 phone number: `+`, a non-zero digit, 7 to 15 digits in all.
#[must_use]
pub fn is_e164(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else {
        return false;
    };
    (7..=15).contains(&digits.len())
        && digits.chars().all(|c| c.is_ascii_digit())
        && !digits.starts_with('0')
}

/// An optional email field.
pub fn optional_email(v: &mut Violations, field: &str, value: &str) {
    if !value.is_empty() && !is_email(value) {
        v.push(
            field,
            "INVALID_EMAIL",
            "must be an email address such as name@example.com",
        );
    }
}

/// An optional E.164 phone field.
pub fn optional_phone(v: &mut Violations, field: &str, value: &str) {
    if !value.is_empty() && !is_e164(value) {
        v.push(
            field,
            "INVALID_PHONE",
            "must be an E.164 number such as +15551234567",
        );
    }
}

/// Parses an optional UUID field (empty = `None`).
pub fn optional_uuid(v: &mut Violations, field: &str, value: &str) -> Option<Uuid> {
    if value.is_empty() {
        return None;
    }
    match Uuid::parse_str(value) {
        Ok(id) => Some(id),
        Err(_) => {
            v.push(field, "INVALID_UUID", "must be a UUID");
            None
        }
    }
}

/// Whether `s` names a user: `users/{uuid}`.
#[must_use]
pub fn is_user_name(s: &str) -> bool {
    s.strip_prefix("users/")
        .is_some_and(|id| uuid::Uuid::parse_str(id).is_ok())
}

/// Whether `s` is a slug: 1 to 40 lower-case ASCII letters, digits and '-'.
#[must_use]
pub fn is_slug(s: &str) -> bool {
    (1..=40).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        for ok in ["a@b.co", "first.last+tag@sub.example.com", "x_y@a-b.io"] {
            assert!(is_email(ok), "{ok}");
        }
        for bad in [
            "",
            "a",
            "a@",
            "@b.co",
            "a@b",
            "a@@b.co",
            "a b@c.co",
            "a@-b.co",
            "a..b@c.co",
            ".a@b.co",
            "a@b..co",
        ] {
            assert!(!is_email(bad), "{bad}");
        }
    }

    #[test]
    fn phones() {
        assert!(is_e164("+15551234567"));
        assert!(is_e164("+442071838750"));
        for bad in [
            "15551234567",
            "+0555123456",
            "+1 555 123 4567",
            "+123",
            "+1234567890123456",
            "+1555abc4567",
        ] {
            assert!(!is_e164(bad), "{bad}");
        }
    }

    #[test]
    fn collects_every_violation() {
        let mut v = Violations::new();
        required_text(&mut v, "customer.display_name", "  ", 200);
        optional_email(&mut v, "customer.email", "nope");
        optional_phone(&mut v, "customer.phone", "123");
        match v.finish() {
            Err(ApiError::InvalidArgument(list)) => {
                let fields: Vec<_> = list.iter().map(|x| x.field.as_str()).collect();
                assert_eq!(
                    fields,
                    ["customer.display_name", "customer.email", "customer.phone"]
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
