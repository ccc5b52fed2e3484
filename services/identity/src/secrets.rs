//! Refresh tokens: 256-bit random values, stored only as HMAC-SHA-256 digests.
//!
//! Format: `rt1.<organization uuid>.<43 base64url characters>`. The organization lets the
//! lookup run in that tenant's transaction. The successor of a token is derived from it with the
//! server key, so a retry inside the grace window gets the same successor without the server
//! ever storing a token.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

/// The server-side key of refresh tokens.
#[derive(Clone)]
pub struct TokenSecrets {
    key: [u8; 32],
}

impl std::fmt::Debug for TokenSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSecrets(..)")
    }
}

fn mac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length; this cannot fail for a 32-byte key.
    let Ok(mut m) = HmacSha256::new_from_slice(key) else {
        return Sha256::digest(parts.concat()).into();
    };
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

impl TokenSecrets {
    /// Secrets derived from a configured secret.
    #[must_use]
    pub fn new(secret: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(b"crm identity refresh-token key v1");
        h.update(secret);
        Self {
            key: h.finalize().into(),
        }
    }

    /// A new random refresh token for `org`.
    #[must_use]
    pub fn mint(&self, org: Uuid) -> String {
        Self::mint_prefixed("rt1", org)
    }

    /// A new random `<prefix>.<org>.<256 random bits>` credential (refresh tokens `rt1`,
    /// authorization codes `ac1`).
    #[must_use]
    pub fn mint_prefixed(prefix: &str, org: Uuid) -> String {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        format!("{prefix}.{org}.{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    /// The successor of `token`: always the same for the same token.
    #[must_use]
    pub fn successor(&self, org: Uuid, token: &str) -> String {
        let derived = mac(&self.key, &[b"successor:", token.as_bytes()]);
        format!("rt1.{org}.{}", URL_SAFE_NO_PAD.encode(derived))
    }

    /// The stored digest of a token.
    #[must_use]
    pub fn digest(&self, token: &str) -> Vec<u8> {
        mac(&self.key, &[b"digest:", token.as_bytes()]).to_vec()
    }

    /// The organization a well-formed token belongs to.
    #[must_use]
    pub fn organization_of(token: &str) -> Option<Uuid> {
        Self::organization_with_prefix("rt1", token)
    }

    /// The organization of a well-formed `<prefix>.<org>.<random>` credential.
    #[must_use]
    pub fn organization_with_prefix(prefix: &str, token: &str) -> Option<Uuid> {
        let mut parts = token.split('.');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(p), Some(org), Some(random), None) if p == prefix && random.len() == 43 => {
                Uuid::parse_str(org).ok()
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_digests_and_successors() {
        let s = TokenSecrets::new(b"secret");
        let org = Uuid::now_v7();
        let t = s.mint(org);
        assert_eq!(TokenSecrets::organization_of(&t), Some(org));
        assert_ne!(s.mint(org), t);
        assert_eq!(s.successor(org, &t), s.successor(org, &t));
        assert_ne!(s.successor(org, &t), t);
        assert_eq!(
            TokenSecrets::organization_of(&s.successor(org, &t)),
            Some(org)
        );
        assert_eq!(s.digest(&t), s.digest(&t));
        assert_ne!(s.digest(&t), TokenSecrets::new(b"other").digest(&t));
        assert_eq!(TokenSecrets::organization_of("rt1.nope.x"), None);
    }
}
