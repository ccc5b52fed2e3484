//! Signing keys: Ed25519, sealed at rest with AES-256-GCM under the key-encryption key,
//! rotated next → active → retired, published as a JWKS before they sign and kept published
//! after they stop signing for longer than any token they signed can live.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use crm_auth::token::TokenSigner;
use crm_db::{DbError, DbPool};
use crm_proto::identity_v1::{Jwk, Jwks};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use rand::RngCore;
use tokio::sync::watch;

use crate::schema::signing_keys as k;

/// Where a signing key is in its rotation (`signing_keys.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Published ahead of use, so verifiers know it before it signs.
    Next = 1,
    /// The key that signs.
    Active = 2,
    /// No longer signs; published until the tokens it signed expire.
    Retired = 3,
}

impl TryFrom<i32> for KeyState {
    type Error = i32;

    fn try_from(n: i32) -> Result<Self, i32> {
        match n {
            1 => Ok(Self::Next),
            2 => Ok(Self::Active),
            3 => Ok(Self::Retired),
            other => Err(other),
        }
    }
}

crm_db::enum_column!(StoredKeyState, KeyState, "`signing_keys.state`.");

const NEXT: StoredKeyState = StoredKeyState(KeyState::Next);
const ACTIVE: StoredKeyState = StoredKeyState(KeyState::Active);
const RETIRED: StoredKeyState = StoredKeyState(KeyState::Retired);

/// The key-encryption key (32 bytes) that seals private signing keys.
#[derive(Clone)]
pub struct Kek([u8; 32]);

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kek(..)")
    }
}

impl Kek {
    /// A KEK from raw bytes.
    #[must_use]
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A random KEK (tests, and the first start of a local deployment).
    #[must_use]
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// The raw bytes, to persist a generated KEK.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    /// Seals `plain` under `label` (authenticated data: a sealed value cannot be moved to another
    /// row or purpose). Output: 12-byte nonce, then ciphertext and tag.
    pub(crate) fn seal_bytes(&self, label: &str, plain: &[u8]) -> Result<Vec<u8>, KeyError> {
        let cipher = Aes256Gcm::new_from_slice(&self.0).map_err(|_| KeyError::Crypto)?;
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let mut out = nonce.to_vec();
        out.extend(
            cipher
                .encrypt(
                    Nonce::from_slice(&nonce),
                    Payload {
                        msg: plain,
                        aad: label.as_bytes(),
                    },
                )
                .map_err(|_| KeyError::Crypto)?,
        );
        Ok(out)
    }

    /// Opens what [`Kek::seal_bytes`] sealed under `label`.
    pub(crate) fn open_bytes(&self, label: &str, sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < 12 {
            return None;
        }
        let cipher = Aes256Gcm::new_from_slice(&self.0).ok()?;
        let (nonce, body) = sealed.split_at(12);
        cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: label.as_bytes(),
                },
            )
            .ok()
    }

    /// Seals a signing key for key `kid`.
    fn seal(&self, kid: &str, secret: &[u8; 32]) -> Result<Vec<u8>, KeyError> {
        self.seal_bytes(kid, secret)
    }

    /// Opens a sealed key; `None` if it was sealed under another KEK or altered.
    fn open(&self, kid: &str, sealed: &[u8]) -> Option<[u8; 32]> {
        self.open_bytes(kid, sealed)?.try_into().ok()
    }
}

/// Key-store failures.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Database failure.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Encryption failure.
    #[error("key sealing failed")]
    Crypto,
}

impl From<diesel::result::Error> for KeyError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Db(e.into())
    }
}

/// How keys rotate.
#[derive(Debug, Clone)]
pub struct RotationPolicy {
    /// How long a key signs.
    pub active_for: Duration,
    /// How long the next key is published before it signs (longer than JWKS propagation).
    pub publish_lead: Duration,
    /// How long a retired key stays published (longer than the longest token lifetime).
    pub retain_for: Duration,
}

impl Default for RotationPolicy {
    fn default() -> Self {
        Self {
            active_for: Duration::from_secs(7 * 24 * 3600),
            publish_lead: Duration::from_secs(10 * 60),
            retain_for: Duration::from_secs(30 * 60),
        }
    }
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = k)]
struct KeyRow {
    kid: String,
    state: StoredKeyState,
    public_key: Vec<u8>,
    sealed_private_key: Vec<u8>,
    create_time: DateTime<Utc>,
    activate_time: Option<DateTime<Utc>>,
}

/// The signing keys of this process: the active signer and the published set.
pub struct KeyStore {
    pool: DbPool,
    kek: Kek,
    policy: RotationPolicy,
    signer: RwLock<Option<Arc<TokenSigner>>>,
    jwks: watch::Sender<Jwks>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

fn to_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

fn new_kid() -> String {
    format!("k{}", uuid::Uuid::now_v7().simple())
}

impl KeyStore {
    /// A store over `pool` (connected as `identity_app`).
    #[must_use]
    pub fn new(pool: DbPool, kek: Kek, policy: RotationPolicy) -> Self {
        Self {
            pool,
            kek,
            policy,
            signer: RwLock::new(None),
            jwks: watch::channel(Jwks::default()).0,
        }
    }

    /// The key that signs now.
    #[must_use]
    pub fn signer(&self) -> Option<Arc<TokenSigner>> {
        self.signer.read().ok().and_then(|s| s.clone())
    }

    /// The published key set.
    #[must_use]
    pub fn jwks(&self) -> Jwks {
        self.jwks.borrow().clone()
    }

    /// Follows changes of the published key set.
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<Jwks> {
        self.jwks.subscribe()
    }

    /// One rotation step, then a reload: ensures an active key this process can use, publishes
    /// the next key `publish_lead` before it activates, retires the old one, and forgets retired
    /// keys once no token they signed can be alive. Safe to run from several replicas at once.
    ///
    /// # Errors
    /// Database or sealing failures.
    pub async fn rotate_and_reload(&self) -> Result<(), KeyError> {
        self.rotate_and_reload_at(Utc::now()).await
    }

    /// [`KeyStore::rotate_and_reload`] as if the time were `now` (the clock is injected, so a
    /// test can walk through rotations without waiting them out).
    ///
    /// # Errors
    /// Database or sealing failures.
    pub async fn rotate_and_reload_at(&self, now: DateTime<Utc>) -> Result<(), KeyError> {
        let mut conn = self.pool.get().await.map_err(DbError::from)?;
        let kek = self.kek.clone();
        let policy = self.policy.clone();
        let rows = conn
            .transaction::<Vec<KeyRow>, KeyError, _>(async move |conn| {
                // One rotator at a time across replicas.
                diesel::sql_query("SELECT pg_advisory_xact_lock(7126533001)")
                    .execute(conn)
                    .await?;
                let rows: Vec<KeyRow> = k::table.select(KeyRow::as_select()).load(conn).await?;
                let usable_active = rows.iter().find(|r| {
                    r.state == ACTIVE && kek.open(&r.kid, &r.sealed_private_key).is_some()
                });
                let next = rows
                    .iter()
                    .find(|r| r.state == NEXT && kek.open(&r.kid, &r.sealed_private_key).is_some());
                let retire_active = || {
                    diesel::update(k::table.filter(k::state.eq(ACTIVE)))
                        .set((k::state.eq(RETIRED), k::retire_time.eq(now)))
                };
                match (usable_active, next) {
                    // No usable signer (first start, or the KEK changed): sign with a new key
                    // at once; there is no token that could be verified with it yet.
                    (None, _) => {
                        retire_active().execute(conn).await?;
                        let kid = insert_key(conn, &kek, ACTIVE, now).await?;
                        audit_key(conn, "signing_key.activated", &kid, "no usable signing key")
                            .await?;
                    }
                    (Some(active), Some(next)) => {
                        let active_age = now - active.activate_time.unwrap_or(active.create_time);
                        let published = now - next.create_time;
                        if active_age >= to_duration(policy.active_for)
                            && published >= to_duration(policy.publish_lead)
                        {
                            retire_active().execute(conn).await?;
                            diesel::update(k::table.filter(k::kid.eq(&next.kid)))
                                .set((k::state.eq(ACTIVE), k::activate_time.eq(now)))
                                .execute(conn)
                                .await?;
                            let detail = format!("retired {}", active.kid);
                            audit_key(conn, "signing_key.activated", &next.kid, &detail).await?;
                        }
                    }
                    (Some(active), None) => {
                        let active_age = now - active.activate_time.unwrap_or(active.create_time);
                        if active_age + to_duration(policy.publish_lead)
                            >= to_duration(policy.active_for)
                        {
                            let kid = insert_key(conn, &kek, NEXT, now).await?;
                            audit_key(conn, "signing_key.published", &kid, "next key").await?;
                        }
                    }
                }
                diesel::delete(
                    k::table
                        .filter(k::state.eq(RETIRED))
                        .filter(k::retire_time.lt(now - to_duration(policy.retain_for))),
                )
                .execute(conn)
                .await?;
                Ok(k::table
                    .select(KeyRow::as_select())
                    .order(k::create_time.asc())
                    .load(conn)
                    .await?)
            })
            .await?;
        self.apply(&rows);
        Ok(())
    }

    fn apply(&self, rows: &[KeyRow]) {
        let signer = rows.iter().filter(|r| r.state == ACTIVE).find_map(|r| {
            self.kek
                .open(&r.kid, &r.sealed_private_key)
                .map(|s| TokenSigner::from_secret(r.kid.clone(), &s))
        });
        if let Ok(mut slot) = self.signer.write() {
            let changed = match (&*slot, &signer) {
                (Some(a), Some(b)) => a.kid() != b.kid(),
                (None, None) => false,
                _ => true,
            };
            if changed {
                *slot = signer.map(Arc::new);
            }
        }
        let jwks = Jwks {
            keys: rows
                .iter()
                .map(|r| Jwk {
                    kid: r.kid.clone(),
                    kty: "OKP".into(),
                    crv: "Ed25519".into(),
                    x: URL_SAFE_NO_PAD.encode(&r.public_key),
                    alg: "EdDSA".into(),
                    r#use: "sig".into(),
                })
                .collect(),
        };
        self.jwks.send_if_modified(|current| {
            if *current == jwks {
                false
            } else {
                *current = jwks;
                true
            }
        });
    }

    /// Runs [`KeyStore::rotate_and_reload`] every `every` until the process ends.
    pub fn spawn_rotation(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let store = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = store.rotate_and_reload().await {
                    tracing::warn!(error = %e, "signing-key rotation failed; retrying");
                }
            }
        })
    }
}

/// The organization id of the platform's own audit chain (events that belong to no tenant,
/// such as signing-key rotation).
pub const PLATFORM_CHAIN: uuid::Uuid = uuid::Uuid::nil();

/// Records a key event in the platform chain, in the rotation's transaction.
async fn audit_key(
    conn: &mut diesel_async::AsyncPgConnection,
    kind: &str,
    kid: &str,
    detail: &str,
) -> Result<(), KeyError> {
    crm_db::tenant::set_tenant(conn, PLATFORM_CHAIN).await?;
    crate::audit::append(
        conn,
        PLATFORM_CHAIN,
        crate::audit::Entry {
            kind,
            actor: "services/identity",
            subject: kid,
            detail,
        },
    )
    .await?;
    Ok(())
}

/// Creates a key in `state`; returns its kid.
async fn insert_key(
    conn: &mut diesel_async::AsyncPgConnection,
    kek: &Kek,
    state: StoredKeyState,
    now: DateTime<Utc>,
) -> Result<String, KeyError> {
    let kid = new_kid();
    let signer = TokenSigner::generate(kid.clone());
    let sealed = kek.seal(&kid, &signer.secret_bytes())?;
    diesel::insert_into(k::table)
        .values((
            k::kid.eq(&kid),
            k::state.eq(state),
            k::public_key.eq(signer.verifying_key().to_bytes().to_vec()),
            k::sealed_private_key.eq(sealed),
            k::create_time.eq(now),
            k::activate_time.eq((state == ACTIVE).then_some(now)),
        ))
        .execute(conn)
        .await?;
    Ok(kid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealing_round_trips_and_binds_the_kid() {
        let kek = Kek::new([7; 32]);
        let secret = [42u8; 32];
        let sealed = kek.seal("k1", &secret).unwrap();
        assert_eq!(kek.open("k1", &sealed), Some(secret));
        assert_eq!(kek.open("k2", &sealed), None, "moved to another kid");
        assert_eq!(Kek::new([8; 32]).open("k1", &sealed), None, "another KEK");
        let mut tampered = sealed.clone();
        tampered[20] ^= 1;
        assert_eq!(kek.open("k1", &tampered), None);
        assert!(
            !sealed.windows(32).any(|w| w == secret),
            "the secret is not stored in clear"
        );
    }
}
