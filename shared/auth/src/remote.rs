//! Keys and revocations pushed by identity: every service follows `WatchJwks` and
//! `WatchRevocations` in background tasks, so verifying a token needs no database or network
//! call, and a revocation reaches every service within about a second.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use crm_proto::identity_v1::key_service_client::KeyServiceClient;
use crm_proto::identity_v1::revocation_service_client::RevocationServiceClient;
use crm_proto::identity_v1::{
    GetJwksRequest, Jwks, RevocationKind, WatchJwksRequest, WatchRevocationsRequest,
};
use ed25519_dalek::VerifyingKey;
use tokio::sync::{Notify, watch};
use tonic::transport::Channel;

use crate::keys::KeySource;
use crate::revocation::RevocationSet;

/// How often an unknown `kid` may trigger a refresh of the key set.
pub const UNKNOWN_KEY_REFRESH_INTERVAL: Duration = Duration::from_secs(10);

/// The key set last received from identity.
#[derive(Debug)]
pub struct JwksKeys {
    keys: RwLock<HashMap<String, VerifyingKey>>,
    loaded: watch::Sender<bool>,
    refresh: Notify,
    last_refresh: Mutex<Option<Instant>>,
    refreshes: AtomicU64,
}

impl Default for JwksKeys {
    fn default() -> Self {
        Self {
            keys: RwLock::new(HashMap::new()),
            loaded: watch::channel(false).0,
            refresh: Notify::new(),
            last_refresh: Mutex::new(None),
            refreshes: AtomicU64::new(0),
        }
    }
}

impl JwksKeys {
    /// An empty set.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the set with the Ed25519 keys of `jwks` (others are ignored).
    pub fn replace(&self, jwks: &Jwks) {
        let keys: HashMap<String, VerifyingKey> = jwks
            .keys
            .iter()
            .filter(|k| k.kty == "OKP" && k.crv == "Ed25519")
            .filter_map(|k| {
                let bytes: [u8; 32] = URL_SAFE_NO_PAD.decode(&k.x).ok()?.try_into().ok()?;
                Some((k.kid.clone(), VerifyingKey::from_bytes(&bytes).ok()?))
            })
            .collect();
        if let Ok(mut slot) = self.keys.write() {
            *slot = keys;
        }
        self.loaded.send_replace(true);
    }

    /// Waits until a key set has been received at least once.
    pub async fn loaded(&self) {
        let mut rx = self.loaded.subscribe();
        let _ = rx.wait_for(|l| *l).await;
    }
}

impl JwksKeys {
    /// Refreshes asked for by unknown keys so far (after rate limiting).
    #[must_use]
    pub fn refresh_requests(&self) -> u64 {
        self.refreshes.load(Ordering::Relaxed)
    }
}

impl KeySource for JwksKeys {
    fn key(&self, kid: &str) -> Option<VerifyingKey> {
        self.keys.read().ok().and_then(|k| k.get(kid).copied())
    }

    fn on_unknown(&self, kid: &str) {
        let Ok(mut last) = self.last_refresh.lock() else {
            return;
        };
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < UNKNOWN_KEY_REFRESH_INTERVAL) {
            return;
        }
        *last = Some(now);
        self.refreshes.fetch_add(1, Ordering::Relaxed);
        tracing::info!(%kid, "unknown signing key: refreshing the key set once");
        self.refresh.notify_one();
    }
}

/// Several key sources, asked in order.
pub struct KeyChain(pub Vec<Arc<dyn KeySource>>);

impl std::fmt::Debug for KeyChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyChain({} sources)", self.0.len())
    }
}

impl KeySource for KeyChain {
    fn key(&self, kid: &str) -> Option<VerifyingKey> {
        self.0.iter().find_map(|s| s.key(kid))
    }

    fn on_unknown(&self, kid: &str) {
        for s in &self.0 {
            s.on_unknown(kid);
        }
    }
}

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Follows `WatchJwks` on `channel` forever, reconnecting with backoff; an unknown `kid` also
/// triggers a one-shot `GetJwks` (rate-limited by [`JwksKeys`]).
pub fn follow_jwks(channel: Channel, keys: Arc<JwksKeys>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = MIN_BACKOFF;
        loop {
            let mut client = KeyServiceClient::new(channel.clone());
            match client.watch_jwks(WatchJwksRequest {}).await {
                Ok(response) => {
                    let mut stream = response.into_inner();
                    loop {
                        tokio::select! {
                            message = stream.message() => match message {
                                Ok(Some(jwks)) => {
                                    keys.replace(&jwks);
                                    backoff = MIN_BACKOFF;
                                }
                                Ok(None) | Err(_) => break,
                            },
                            () = keys.refresh.notified() => {
                                if let Ok(jwks) = client.clone().get_jwks(GetJwksRequest {}).await {
                                    keys.replace(&jwks.into_inner());
                                }
                            }
                        }
                    }
                }
                Err(status) => tracing::debug!(%status, "WatchJwks unavailable; retrying"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    })
}

/// The metadata key carrying the service credential on internal streams.
pub const SERVICE_KEY_HEADER: &str = "x-crm-service-key";

/// Follows `WatchRevocations` on `channel` forever, presenting `service_key` (the suite's
/// internal credential, base64url), resuming from its cursor after a disconnect, applying each
/// revocation to `set` and marking it fresh on every batch and heartbeat.
pub fn follow_revocations(
    channel: Channel,
    set: Arc<RevocationSet>,
    service_key: String,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut cursor = String::new();
        let mut backoff = MIN_BACKOFF;
        loop {
            let mut client = RevocationServiceClient::new(channel.clone());
            let mut request = tonic::Request::new(WatchRevocationsRequest {
                cursor: cursor.clone(),
            });
            if let Ok(value) = service_key.parse() {
                request.metadata_mut().insert(SERVICE_KEY_HEADER, value);
            }
            match client.watch_revocations(request).await {
                Ok(response) => {
                    let mut stream = response.into_inner();
                    loop {
                        match stream.message().await {
                            Ok(Some(batch)) => {
                                for r in &batch.revocations {
                                    apply(&set, r);
                                }
                                cursor = batch.cursor;
                                set.mark_fresh();
                                backoff = MIN_BACKOFF;
                            }
                            Ok(None) => break,
                            Err(status) => {
                                tracing::debug!(%status, "WatchRevocations ended; resuming");
                                break;
                            }
                        }
                    }
                }
                Err(status) => tracing::debug!(%status, "WatchRevocations unavailable; retrying"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    })
}

fn apply(set: &RevocationSet, r: &crm_proto::identity_v1::Revocation) {
    match RevocationKind::try_from(r.kind) {
        Ok(RevocationKind::Session) => set.revoke_session(r.value.clone()),
        Ok(RevocationKind::Token) => set.revoke_token(r.value.clone()),
        Ok(RevocationKind::Client) => set.revoke_client(r.value.clone()),
        Ok(RevocationKind::Subject) => {
            let before = r.issued_before.as_ref().map_or(i64::MAX, |t| t.seconds);
            // `organizations/{id}` limits it to that organization; empty means all of them. A
            // name that does not parse revokes everywhere (fail closed).
            let org = r
                .organization
                .strip_prefix("organizations/")
                .and_then(|id| uuid::Uuid::parse_str(id).ok());
            set.revoke_subject(r.value.clone(), org, before);
        }
        Ok(RevocationKind::Unspecified) | Err(_) => {
            tracing::warn!(kind = r.kind, "unknown revocation kind ignored");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{AuthError, TokenSigner, TokenVerifier, VerifierSettings};

    #[test]
    fn an_unknown_key_asks_for_one_refresh_and_is_refused() {
        let keys = Arc::new(JwksKeys::new());
        let verifier = TokenVerifier::new(
            VerifierSettings::default(),
            Arc::clone(&keys) as Arc<dyn KeySource>,
            Arc::new(RevocationSet::new()),
        );
        let stranger = TokenSigner::generate("k-unknown");
        let claims = TokenSigner::user_claims(
            &VerifierSettings::default(),
            uuid::Uuid::now_v7(),
            uuid::Uuid::now_v7(),
            &["crm.sales"],
            Duration::from_secs(60),
        );
        for _ in 0..5 {
            assert_eq!(
                verifier.verify(&stranger.sign(&claims)),
                Err(AuthError::UnknownKey)
            );
        }
        assert_eq!(keys.refresh_requests(), 1, "rate-limited to one refresh");
        // Once the key arrives, the same kind of token verifies.
        keys.replace(&Jwks {
            keys: vec![crm_proto::identity_v1::Jwk {
                kid: "k-unknown".into(),
                kty: "OKP".into(),
                crv: "Ed25519".into(),
                x: URL_SAFE_NO_PAD.encode(stranger.verifying_key().to_bytes()),
                alg: "EdDSA".into(),
                r#use: "sig".into(),
            }],
        });
        assert!(verifier.verify(&stranger.sign(&claims)).is_ok());
    }
}
