//! Static verification keys from configuration, until identity's JWKS stream exists.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use crm_auth::keys::StaticKeys;

/// Loads `kid=<base64url key>` pairs separated by commas.
///
/// # Errors
/// A malformed entry.
pub fn load_static(keys: &StaticKeys, spec: &str) -> anyhow::Result<()> {
    for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (kid, key) = entry
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("key entry {entry:?} is not kid=<base64url key>"))?;
        let bytes: [u8; 32] = URL_SAFE_NO_PAD
            .decode(key)?
            .try_into()
            .map_err(|_| anyhow::anyhow!("key {kid:?} is not 32 bytes"))?;
        keys.insert(kid, ed25519_dalek_key(&bytes)?);
    }
    Ok(())
}

fn ed25519_dalek_key(bytes: &[u8; 32]) -> anyhow::Result<crm_auth::token::VerifyingKey> {
    crm_auth::token::VerifyingKey::from_bytes(bytes)
        .map_err(|e| anyhow::anyhow!("invalid key: {e}"))
}
