//! argon2id password hashing on a bounded blocking pool.
//!
//! A hash costs about 15 ms of one core (m=19456 KiB, t=2, p=1). Hashes never run on a tokio
//! worker: they run under `spawn_blocking`, at most `permits` at a time; a caller that finds
//! every permit taken is refused at once with [`HashError::Busy`] (RESOURCE_EXHAUSTED) instead
//! of queueing, so a login storm cannot starve the rest of the service. Verification against an
//! unknown user hashes against a dummy PHC string so it costs the same as a real one.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

/// Why hashing could not be done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// Every hashing slot is busy: retry later.
    #[error("password hashing is saturated")]
    Busy,
    /// The stored hash is unusable or the hasher failed.
    #[error("password hashing failed: {0}")]
    Internal(String),
}

/// The outcome of a verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verification {
    /// Whether the password matched.
    pub matches: bool,
    /// Whether the stored hash uses other parameters than the current ones (rehash on login).
    pub needs_rehash: bool,
}

/// One hashing slot, held until dropped or used.
#[derive(Debug)]
pub struct Slot(tokio::sync::OwnedSemaphorePermit);

/// The bounded argon2id hashing pool.
#[derive(Clone)]
pub struct PasswordHasher {
    permits: Arc<Semaphore>,
    params: Params,
    dummy: Arc<String>,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("available", &self.permits.available_permits())
            .finish_non_exhaustive()
    }
}

/// The parameters of ARCHITECTURE.md: m=19456 KiB, t=2, p=1.
///
/// # Errors
/// Never for these constants; kept fallible because `Params::new` is.
pub fn default_params() -> Result<Params, HashError> {
    Params::new(19_456, 2, 1, None).map_err(|e| HashError::Internal(e.to_string()))
}

fn argon(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

fn hash_blocking(params: &Params, password: &[u8]) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    argon(params)
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError::Internal(e.to_string()))
}

impl PasswordHasher {
    /// A pool of `permits` concurrent hashes with `params`.
    ///
    /// # Errors
    /// When the dummy hash cannot be computed.
    pub fn new(permits: usize, params: Params) -> Result<Self, HashError> {
        let dummy = hash_blocking(&params, b"dummy password for unknown users")?;
        Ok(Self {
            permits: Arc::new(Semaphore::new(permits.max(1))),
            params,
            dummy: Arc::new(dummy),
        })
    }

    /// Takes one hashing slot without hashing, until the returned permit is dropped: callers
    /// meanwhile see the pool as that much fuller (used to prove that a saturated pool refuses
    /// at once instead of queueing). `None` when no slot is free.
    #[must_use]
    pub fn occupy(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        Arc::clone(&self.permits).try_acquire_owned().ok()
    }

    /// Takes a hashing slot before the work that leads to the hash (reading the user, say), so
    /// that a saturated pool refuses a caller before it costs anything else.
    ///
    /// # Errors
    /// [`HashError::Busy`] when every slot is taken.
    pub fn reserve(&self) -> Result<Slot, HashError> {
        Arc::clone(&self.permits)
            .try_acquire_owned()
            .map(Slot)
            .map_err(|_| HashError::Busy)
    }

    async fn run<T, F>(&self, work: F) -> Result<T, HashError>
    where
        F: FnOnce() -> Result<T, HashError> + Send + 'static,
        T: Send + 'static,
    {
        let slot = self.reserve()?;
        Self::run_in(slot, work).await
    }

    async fn run_in<T, F>(Slot(permit): Slot, work: F) -> Result<T, HashError>
    where
        F: FnOnce() -> Result<T, HashError> + Send + 'static,
        T: Send + 'static,
    {
        tokio::task::spawn_blocking(move || {
            let out = work();
            drop(permit);
            out
        })
        .await
        .map_err(|e| HashError::Internal(e.to_string()))?
    }

    /// Hashes a new password into a PHC string.
    ///
    /// # Errors
    /// [`HashError::Busy`] when saturated.
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        let params = self.params.clone();
        self.run(move || hash_blocking(&params, password.as_bytes()))
            .await
    }

    /// Verifies `password` against `stored`, or against the dummy hash when the user is unknown
    /// (`None`, which never matches).
    ///
    /// # Errors
    /// [`HashError::Busy`] when saturated; [`HashError::Internal`] for an unparsable hash.
    pub async fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<Verification, HashError> {
        let slot = self.reserve()?;
        self.verify_in(slot, password, stored).await
    }

    /// [`Self::verify`] in a slot taken earlier with [`Self::reserve`].
    ///
    /// # Errors
    /// [`HashError::Internal`] for an unparsable hash.
    pub async fn verify_in(
        &self,
        slot: Slot,
        password: String,
        stored: Option<String>,
    ) -> Result<Verification, HashError> {
        let known = stored.is_some();
        let phc = stored.unwrap_or_else(|| self.dummy.as_ref().clone());
        let params = self.params.clone();
        Self::run_in(slot, move || {
            let parsed = PasswordHash::new(&phc).map_err(|e| HashError::Internal(e.to_string()))?;
            let matches = argon(&params)
                .verify_password(password.as_bytes(), &parsed)
                .is_ok();
            let current = Params::try_from(&parsed).ok();
            let needs_rehash = parsed.algorithm.as_str() != "argon2id"
                || current.is_none_or(|p| {
                    p.m_cost() != params.m_cost()
                        || p.t_cost() != params.t_cost()
                        || p.p_cost() != params.p_cost()
                });
            Ok(Verification {
                matches: known && matches,
                needs_rehash: known && matches && needs_rehash,
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Params {
        Params::new(1024, 1, 1, None).unwrap()
    }

    #[tokio::test]
    async fn phc_round_trip_and_rehash_detection() {
        let hasher = PasswordHasher::new(2, small()).unwrap();
        let phc = hasher.hash("correct horse".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"));
        let ok = hasher
            .verify("correct horse".into(), Some(phc.clone()))
            .await
            .unwrap();
        assert_eq!(
            ok,
            Verification {
                matches: true,
                needs_rehash: false
            }
        );
        let bad = hasher
            .verify("wrong".into(), Some(phc.clone()))
            .await
            .unwrap();
        assert!(!bad.matches);
        let unknown = hasher.verify("correct horse".into(), None).await.unwrap();
        assert!(!unknown.matches);
        let stronger = PasswordHasher::new(2, Params::new(2048, 1, 1, None).unwrap()).unwrap();
        let v = stronger
            .verify("correct horse".into(), Some(phc))
            .await
            .unwrap();
        assert_eq!(
            v,
            Verification {
                matches: true,
                needs_rehash: true
            }
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn saturation_is_refused_fast() {
        let hasher = PasswordHasher::new(1, default_params().unwrap()).unwrap();
        let busy = hasher.clone();
        let first = tokio::spawn(async move { busy.hash("a".into()).await });
        // Wait until the only permit is taken.
        while hasher.permits.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        // Refused without waiting for the running hash to finish: no queueing.
        assert_eq!(hasher.hash("b".into()).await, Err(HashError::Busy));
        assert!(!first.is_finished());
        assert!(first.await.unwrap().is_ok());
    }
}
