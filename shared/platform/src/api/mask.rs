//! Update masks (AIP-134): `*` means every updatable field; unknown paths are refused;
//! output-only paths are ignored.

use prost_types::FieldMask;

use crate::error::ApiError;

/// The paths of a mask that the update applies, in the order of `updatable`.
///
/// # Errors
/// INVALID_ARGUMENT on `update_mask` when it is missing or empty, or names a path that is
/// neither updatable nor output-only.
pub fn resolve(
    mask: Option<&FieldMask>,
    updatable: &[&'static str],
    output_only: &[&'static str],
) -> Result<Vec<&'static str>, ApiError> {
    let paths = mask.map(|m| m.paths.as_slice()).unwrap_or_default();
    if paths.is_empty() {
        return Err(ApiError::invalid(
            "update_mask",
            "MISSING_UPDATE_MASK",
            "name the fields to change, or `*` for all",
        ));
    }
    if paths.iter().any(|p| p == "*") {
        if paths.len() > 1 {
            return Err(ApiError::invalid(
                "update_mask",
                "INVALID_UPDATE_MASK",
                "`*` must be the only path",
            ));
        }
        return Ok(updatable.to_vec());
    }
    let unknown: Vec<&String> = paths
        .iter()
        .filter(|p| !updatable.contains(&p.as_str()) && !output_only.contains(&p.as_str()))
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::invalid(
            "update_mask",
            "UNKNOWN_MASK_PATH",
            format!(
                "unknown or immutable field(s) {unknown:?}; updatable: {}",
                updatable.join(", ")
            ),
        ));
    }
    Ok(updatable
        .iter()
        .copied()
        .filter(|u| paths.iter().any(|p| p == u))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(paths: &[&str]) -> FieldMask {
        FieldMask {
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    #[test]
    fn resolves() {
        let up = &["display_name", "email"];
        let out = &["create_time"];
        assert_eq!(
            resolve(Some(&mask(&["*"])), up, out).unwrap(),
            vec!["display_name", "email"]
        );
        assert_eq!(
            resolve(Some(&mask(&["email", "create_time"])), up, out).unwrap(),
            vec!["email"]
        );
        assert!(resolve(Some(&mask(&["nope"])), up, out).is_err());
        assert!(resolve(Some(&mask(&[])), up, out).is_err());
        assert!(resolve(None, up, out).is_err());
    }
}
