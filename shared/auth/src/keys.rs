//! Sources of token verification keys.

use std::collections::HashMap;
use std::sync::RwLock;

use ed25519_dalek::VerifyingKey;

/// Where verification keys come from: static keys now, identity's JWKS stream later.
pub trait KeySource: Send + Sync + 'static {
    /// The key with id `kid`, if known.
    fn key(&self, kid: &str) -> Option<VerifyingKey>;

    /// Told when a token names a key this source does not know: a source that can fetch keys
    /// may refresh (rate-limited); the token itself is refused either way.
    fn on_unknown(&self, _kid: &str) {}
}

/// A fixed, replaceable set of keys.
#[derive(Debug, Default)]
pub struct StaticKeys {
    keys: RwLock<HashMap<String, VerifyingKey>>,
}

impl StaticKeys {
    /// An empty set.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces key `kid`.
    pub fn insert(&self, kid: impl Into<String>, key: VerifyingKey) {
        if let Ok(mut keys) = self.keys.write() {
            keys.insert(kid.into(), key);
        }
    }

    /// Removes key `kid`.
    pub fn remove(&self, kid: &str) {
        if let Ok(mut keys) = self.keys.write() {
            keys.remove(kid);
        }
    }
}

impl KeySource for StaticKeys {
    fn key(&self, kid: &str) -> Option<VerifyingKey> {
        self.keys.read().ok().and_then(|k| k.get(kid).copied())
    }
}
