//! Resource names rooted at the tenant: `organizations/{org}/{collection}/{id}`, ids are UUIDs.

use uuid::Uuid;

use crate::error::ApiError;
use crm_auth::Principal;

fn parse_uuid(s: &str) -> Option<Uuid> {
    // Only the canonical hyphenated lower-case form: one spelling per resource.
    let id = Uuid::parse_str(s).ok()?;
    (id.hyphenated().to_string() == s).then_some(id)
}

/// Parses `organizations/{org}`.
///
/// # Errors
/// INVALID_ARGUMENT on `field`.
pub fn parse_organization(name: &str, field: &str) -> Result<Uuid, ApiError> {
    name.strip_prefix("organizations/")
        .and_then(parse_uuid)
        .ok_or_else(|| {
            ApiError::invalid(
                field,
                "INVALID_RESOURCE_NAME",
                format!("must be organizations/{{organization}} with a UUID, got {name:?}"),
            )
        })
}

/// Parses `organizations/{org}/{collection}/{id}` into `(org, id)`.
///
/// # Errors
/// INVALID_ARGUMENT on `field`.
pub fn parse_child(name: &str, collection: &str, field: &str) -> Result<(Uuid, Uuid), ApiError> {
    let mut parts = name.split('/');
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some("organizations"), Some(org), Some(c), Some(id), None) if c == collection => {
            if let (Some(org), Some(id)) = (parse_uuid(org), parse_uuid(id)) {
                return Ok((org, id));
            }
        }
        _ => {}
    }
    Err(ApiError::invalid(
        field,
        "INVALID_RESOURCE_NAME",
        format!(
            "must be organizations/{{organization}}/{collection}/{{id}} with UUIDs, got {name:?}"
        ),
    ))
}

/// `organizations/{org}/{collection}/{id}`.
#[must_use]
pub fn child_name(org: Uuid, collection: &str, id: Uuid) -> String {
    format!("organizations/{org}/{collection}/{id}")
}

/// Refuses a name of another organization than the caller's token (checked before any
/// database access, so existence in another tenant is never revealed).
///
/// # Errors
/// PERMISSION_DENIED.
pub fn require_same_organization(principal: &Principal, org: Uuid) -> Result<(), ApiError> {
    if principal.organization == org {
        Ok(())
    } else {
        Err(ApiError::PermissionDenied {
            reason: "ORGANIZATION_MISMATCH",
            message: "the resource belongs to another organization than the caller's token"
                .to_owned(),
        })
    }
}

/// `organizations/{org}`.
#[must_use]
pub fn organization_name(org: Uuid) -> String {
    format!("organizations/{org}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_canonical_names() {
        let org = Uuid::now_v7();
        let id = Uuid::now_v7();
        assert_eq!(
            parse_organization(&format!("organizations/{org}"), "parent").unwrap(),
            org
        );
        assert_eq!(
            parse_child(&child_name(org, "customers", id), "customers", "name").unwrap(),
            (org, id)
        );
        for bad in [
            String::new(),
            format!("organizations/{org}/"),
            format!("organizations/{org}/contacts/{id}"),
            format!("organizations/{}/customers/{id}", org.simple()),
            format!("organizations/{org}/customers/{id}/x"),
            format!("orgs/{org}/customers/{id}"),
        ] {
            assert!(parse_child(&bad, "customers", "name").is_err(), "{bad}");
        }
    }
}
