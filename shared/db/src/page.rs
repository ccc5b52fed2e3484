//! Keyset pagination: page sizes and opaque, signed page tokens bound to the query and the
//! organization.
//!
//! A token carries the sort key of the last row returned. It is HMAC-signed so a client cannot
//! forge a position, and it embeds a fingerprint of the query (parent, filter, order, flags) and
//! the organization, so a token reused with another query or by another tenant is refused.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

const VERSION: u8 = 1;
const TAG_LEN: usize = 16;
const MAX_TOKEN_LEN: usize = 4096;

/// Why a page request was refused; all of these are INVALID_ARGUMENT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    /// `page_size` was negative.
    #[error("page_size must not be negative")]
    NegativePageSize,
    /// The token was not produced by this service (or was altered).
    #[error("page_token is malformed")]
    MalformedToken,
    /// The token was produced for another query or organization.
    #[error("page_token was issued for a different query")]
    QueryMismatch,
}

/// Applies AIP-158 page-size rules: 0 means `default`, above `max` means `max`.
///
/// # Errors
/// [`PageError::NegativePageSize`].
pub fn page_size(requested: i32, default: u32, max: u32) -> Result<u32, PageError> {
    match u32::try_from(requested) {
        Err(_) => Err(PageError::NegativePageSize),
        Ok(0) => Ok(default),
        Ok(n) => Ok(n.min(max)),
    }
}

/// Fingerprint of everything that defines a list query besides the position.
#[must_use]
pub fn fingerprint(org: Uuid, parts: &[&str]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(org.as_bytes());
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hasher.finalize().into()
}

/// Signs and verifies page tokens with a service secret.
#[derive(Clone)]
pub struct PageTokens {
    key: [u8; 32],
}

impl std::fmt::Debug for PageTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PageTokens(..)")
    }
}

impl PageTokens {
    /// Tokens signed with a key derived from `secret`.
    #[must_use]
    pub fn new(secret: &[u8]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"crm page token key v1");
        hasher.update(secret);
        Self {
            key: hasher.finalize().into(),
        }
    }

    fn tag(&self, body: &[u8]) -> Result<[u8; TAG_LEN], PageError> {
        let mut mac =
            HmacSha256::new_from_slice(&self.key).map_err(|_| PageError::MalformedToken)?;
        mac.update(body);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        Ok(tag)
    }

    /// Encodes the position after a row whose sort key is `key`.
    #[must_use]
    pub fn encode(&self, query: &[u8; 32], key: &[String]) -> String {
        let mut body = vec![VERSION];
        body.extend_from_slice(query);
        for value in key {
            body.extend_from_slice(&(value.len() as u32).to_be_bytes());
            body.extend_from_slice(value.as_bytes());
        }
        match self.tag(&body) {
            Ok(tag) => {
                body.extend_from_slice(&tag);
                URL_SAFE_NO_PAD.encode(body)
            }
            Err(_) => String::new(),
        }
    }

    /// Decodes a token issued for `query`; the empty token is the first page (`None`).
    ///
    /// # Errors
    /// [`PageError::MalformedToken`] or [`PageError::QueryMismatch`].
    pub fn decode(&self, token: &str, query: &[u8; 32]) -> Result<Option<Vec<String>>, PageError> {
        if token.is_empty() {
            return Ok(None);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(PageError::MalformedToken);
        }
        let raw = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| PageError::MalformedToken)?;
        if raw.len() < 1 + 32 + TAG_LEN {
            return Err(PageError::MalformedToken);
        }
        let (body, tag) = raw.split_at(raw.len() - TAG_LEN);
        let expected = self.tag(body)?;
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&expected[..], tag)) {
            return Err(PageError::MalformedToken);
        }
        if body[0] != VERSION {
            return Err(PageError::MalformedToken);
        }
        if &body[1..33] != query {
            return Err(PageError::QueryMismatch);
        }
        let mut rest = &body[33..];
        let mut values = Vec::new();
        while !rest.is_empty() {
            if rest.len() < 4 {
                return Err(PageError::MalformedToken);
            }
            let (len, tail) = rest.split_at(4);
            let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
            if tail.len() < len {
                return Err(PageError::MalformedToken);
            }
            let (value, tail) = tail.split_at(len);
            values.push(String::from_utf8(value.to_vec()).map_err(|_| PageError::MalformedToken)?);
            rest = tail;
        }
        Ok(Some(values))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(page_size(0, 50, 1000), Ok(50));
        assert_eq!(page_size(5, 50, 1000), Ok(5));
        assert_eq!(page_size(5000, 50, 1000), Ok(1000));
        assert_eq!(page_size(-1, 50, 1000), Err(PageError::NegativePageSize));
    }

    #[test]
    fn tokens_are_bound_and_signed() {
        let tokens = PageTokens::new(b"secret");
        let org = Uuid::now_v7();
        let q1 = fingerprint(org, &["filter a"]);
        let q2 = fingerprint(org, &["filter b"]);
        let q3 = fingerprint(Uuid::now_v7(), &["filter a"]);
        let key = vec![
            "2026-01-01T00:00:00Z".to_owned(),
            Uuid::now_v7().to_string(),
        ];
        let token = tokens.encode(&q1, &key);
        assert_eq!(tokens.decode(&token, &q1), Ok(Some(key)));
        assert_eq!(tokens.decode(&token, &q2), Err(PageError::QueryMismatch));
        assert_eq!(tokens.decode(&token, &q3), Err(PageError::QueryMismatch));
        assert_eq!(tokens.decode("", &q1), Ok(None));
        let mut forged = token.clone();
        forged.replace_range(10..11, if &token[10..11] == "A" { "B" } else { "A" });
        assert_eq!(tokens.decode(&forged, &q1), Err(PageError::MalformedToken));
        let other = PageTokens::new(b"other secret");
        assert_eq!(other.decode(&token, &q1), Err(PageError::MalformedToken));
    }
}
