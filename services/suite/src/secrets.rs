//! Secrets of a deployment: from the environment when set, else (for a local deployment) from
//! files created once in the data directory with mode 0600.

use std::path::Path;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;

/// 32 secret bytes: `env` (base64url) when set, else `<dir>/<file>`, created if missing.
///
/// # Errors
/// A malformed variable or an unreadable/unwritable file.
pub fn load_or_create(env: &str, dir: &Path, file: &str) -> anyhow::Result<[u8; 32]> {
    match from_env(env)? {
        Some(bytes) => Ok(bytes),
        None => load_or_create_file(dir, file),
    }
}

/// 32 secret bytes from `env` (base64url), `None` when unset.
///
/// # Errors
/// A malformed variable.
pub fn from_env(env: &str) -> anyhow::Result<Option<[u8; 32]>> {
    match std::env::var(env) {
        Ok(value) if !value.trim().is_empty() => URL_SAFE_NO_PAD
            .decode(value.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .map(Some)
            .with_context(|| format!("{env} must be 32 bytes, base64url without padding")),
        _ => Ok(None),
    }
}

/// 32 secret bytes from `<dir>/<file>`, created (mode 0600) if missing.
///
/// # Errors
/// An unreadable/unwritable file or one that is not 32 base64url bytes.
pub fn load_or_create_file(dir: &Path, file: &str) -> anyhow::Result<[u8; 32]> {
    let path = dir.join(file);
    if let Ok(text) = std::fs::read_to_string(&path) {
        return URL_SAFE_NO_PAD
            .decode(text.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .with_context(|| format!("{} is not 32 base64url bytes", path.display()));
    }
    std::fs::create_dir_all(dir)?;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    write_private(&path, &URL_SAFE_NO_PAD.encode(bytes))?;
    Ok(bytes)
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text)?;
    Ok(())
}
