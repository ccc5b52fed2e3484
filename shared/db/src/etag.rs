//! Etags derived from a row's `revision`: a stale etag on a write means ABORTED.

/// The etag of a row at `revision`.
#[must_use]
pub fn from_revision(revision: i64) -> String {
    format!("\"{revision}\"")
}

/// Why a client's etag was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EtagError {
    /// Not an etag this service issued.
    #[error("the etag is malformed")]
    Malformed,
    /// Issued for an older (or newer) revision than the current one.
    #[error("the resource changed since the etag was read")]
    Stale,
}

/// Parses an etag back into its revision.
///
/// # Errors
/// [`EtagError::Malformed`] when it is not one of ours.
pub fn parse(etag: &str) -> Result<i64, EtagError> {
    let inner = etag
        .strip_prefix("W/")
        .unwrap_or(etag)
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .ok_or(EtagError::Malformed)?;
    inner.parse::<i64>().map_err(|_| EtagError::Malformed)
}

/// Checks a client's optional etag (empty = no check) against the current revision.
///
/// # Errors
/// [`EtagError::Malformed`] or [`EtagError::Stale`].
pub fn check(provided: &str, current_revision: i64) -> Result<(), EtagError> {
    if provided.is_empty() {
        return Ok(());
    }
    if parse(provided)? == current_revision {
        Ok(())
    } else {
        Err(EtagError::Stale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_staleness() {
        let e = from_revision(7);
        assert_eq!(parse(&e), Ok(7));
        assert_eq!(check(&e, 7), Ok(()));
        assert_eq!(check(&e, 8), Err(EtagError::Stale));
        assert_eq!(check("", 8), Ok(()));
        assert_eq!(check("7", 7), Err(EtagError::Malformed));
        assert_eq!(check("\"x\"", 7), Err(EtagError::Malformed));
    }
}
