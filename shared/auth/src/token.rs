//! RFC 9068 access tokens: JWTs with `typ: at+jwt`, signed with EdDSA (Ed25519).
//!
//! Verification accepts exactly one algorithm and one type: `alg: none`, HMAC algorithms (the
//! "public key as HMAC secret" confusion) and ID tokens presented as access tokens are refused
//! before any key is looked at.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer, SigningKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub use ed25519_dalek::VerifyingKey;

use crate::Principal;
use crate::keys::KeySource;
use crate::revocation::RevocationSet;

/// The JOSE header we issue and accept.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    kid: Option<String>,
    /// RFC 7515 critical extensions: we implement none, so any is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    crit: Option<serde_json::Value>,
}

/// `aud` may be one string or several.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Audience {
    /// One audience.
    One(String),
    /// Several audiences.
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, aud: &str) -> bool {
        self.values().contains(&aud)
    }

    fn values(&self) -> Vec<&str> {
        match self {
            Self::One(a) => vec![a.as_str()],
            Self::Many(list) => list.iter().map(String::as_str).collect(),
        }
    }
}

/// The RFC 9068 claim set plus our `org_id` and `roles`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Subject: `users/{id}`, `clients/{id}` or `services/{name}`.
    pub sub: String,
    /// Audience.
    pub aud: Audience,
    /// Expiry (seconds).
    pub exp: i64,
    /// Issued at (seconds).
    pub iat: i64,
    /// Not before (seconds).
    pub nbf: i64,
    /// Token id.
    pub jti: String,
    /// OAuth client.
    pub client_id: String,
    /// Space-separated scopes.
    #[serde(default)]
    pub scope: String,
    /// The organization (UUID).
    pub org_id: String,
    /// Roles in that organization.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Session id, for user tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// RFC 8693 actor: who acts for the subject in a delegated token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Actor>,
}

/// The `act` claim (RFC 8693 section 4.1).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Actor {
    /// The acting party's subject.
    pub sub: String,
}

/// Why a token was refused. Every variant is UNAUTHENTICATED; the reason goes into `ErrorInfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `authorization: Bearer` metadata.
    #[error("missing bearer token")]
    Missing,
    /// Not a well-formed JWT.
    #[error("malformed token")]
    Malformed,
    /// `alg` other than EdDSA (including `none` and HMAC).
    #[error("unsupported token algorithm")]
    Algorithm,
    /// `typ` other than `at+jwt`.
    #[error("not an access token")]
    WrongType,
    /// `kid` unknown to this service.
    #[error("unknown signing key")]
    UnknownKey,
    /// Signature does not verify.
    #[error("invalid token signature")]
    Signature,
    /// `iss` is not the configured issuer.
    #[error("wrong token issuer")]
    Issuer,
    /// `aud` does not include this service.
    #[error("wrong token audience")]
    Audience,
    /// Past `exp`.
    #[error("token expired")]
    Expired,
    /// Before `nbf` (or `iat` in the future).
    #[error("token not yet valid")]
    NotYetValid,
    /// Revoked session, token, client or subject.
    #[error("token revoked")]
    Revoked,
    /// This service's revocation feed is not current, so no token can be trusted now
    /// (UNAVAILABLE, not UNAUTHENTICATED: the caller should retry, not sign in again).
    #[error("revocations are not current; retry shortly")]
    RevocationsStale,
    /// The token header lists critical extensions (`crit`) this verifier does not process.
    #[error("unsupported critical token header")]
    CriticalHeader,
}

impl AuthError {
    /// Stable reason for `ErrorInfo`.
    #[must_use]
    pub fn reason(self) -> &'static str {
        match self {
            Self::Missing => "TOKEN_MISSING",
            Self::Malformed => "TOKEN_MALFORMED",
            Self::Algorithm => "TOKEN_ALGORITHM_REFUSED",
            Self::WrongType => "TOKEN_TYPE_REFUSED",
            Self::UnknownKey => "TOKEN_KEY_UNKNOWN",
            Self::Signature => "TOKEN_SIGNATURE_INVALID",
            Self::Issuer => "TOKEN_ISSUER_INVALID",
            Self::Audience => "TOKEN_AUDIENCE_INVALID",
            Self::Expired => "TOKEN_EXPIRED",
            Self::NotYetValid => "TOKEN_NOT_YET_VALID",
            Self::Revoked => "TOKEN_REVOKED",
            Self::RevocationsStale => "REVOCATIONS_STALE",
            Self::CriticalHeader => "TOKEN_CRIT_UNSUPPORTED",
        }
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Signs access tokens. Identity holds the real keys; tests and `crm up --demo` use their own.
pub struct TokenSigner {
    key: SigningKey,
    kid: String,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("kid", &self.kid)
            .finish()
    }
}

impl TokenSigner {
    /// A signer with a fresh random key.
    #[must_use]
    pub fn generate(kid: impl Into<String>) -> Self {
        Self {
            key: SigningKey::generate(&mut rand::rngs::OsRng),
            kid: kid.into(),
        }
    }

    /// A signer over an existing private key.
    #[must_use]
    pub fn from_secret(kid: impl Into<String>, secret: &[u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(secret),
            kid: kid.into(),
        }
    }

    /// The private key bytes, for sealing at rest.
    #[must_use]
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The key id.
    #[must_use]
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half.
    #[must_use]
    pub fn verifying_key(&self) -> ed25519_dalek::VerifyingKey {
        self.key.verifying_key()
    }

    /// Signs `claims` as an `at+jwt`.
    #[must_use]
    pub fn sign(&self, claims: &Claims) -> String {
        self.sign_with_header("EdDSA", Some("at+jwt"), claims)
    }

    /// Signs with an arbitrary header: for tests of refusals only.
    #[must_use]
    pub fn sign_with_header(&self, alg: &str, typ: Option<&str>, claims: &Claims) -> String {
        let header = Header {
            alg: alg.to_owned(),
            typ: typ.map(str::to_owned),
            kid: Some(self.kid.clone()),
            crit: None,
        };
        let h = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap_or_default());
        let c = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let input = format!("{h}.{c}");
        let sig: Signature = self.key.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
    }

    /// Claims for a user of `org` with `roles`, valid for `ttl` from now.
    #[must_use]
    pub fn user_claims(
        settings: &VerifierSettings,
        user: Uuid,
        org: Uuid,
        roles: &[&str],
        ttl: Duration,
    ) -> Claims {
        let now = now_secs();
        Claims {
            iss: settings.issuer.clone(),
            sub: format!("users/{user}"),
            aud: Audience::One(settings.audience.clone()),
            exp: now + i64::try_from(ttl.as_secs()).unwrap_or(300),
            iat: now,
            nbf: now,
            jti: Uuid::now_v7().to_string(),
            client_id: "crm-first-party".to_owned(),
            scope: "crm".to_owned(),
            org_id: org.to_string(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            sid: Some(Uuid::now_v7().to_string()),
            act: None,
        }
    }
}

/// What a verifier accepts.
#[derive(Debug, Clone)]
pub struct VerifierSettings {
    /// Expected `iss`.
    pub issuer: String,
    /// This service's audience; must be in `aud`.
    pub audience: String,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`.
    pub leeway: Duration,
}

impl Default for VerifierSettings {
    fn default() -> Self {
        Self {
            issuer: "crm-identity".to_owned(),
            audience: "crm".to_owned(),
            leeway: Duration::from_secs(30),
        }
    }
}

const CACHE_SHARDS: usize = 16;
const CACHE_SHARD_CAPACITY: usize = 8192;

/// A verified token: its principal and the key that verified it.
type CacheEntry = (Arc<Principal>, String, VerifyingKey);
type CacheShard = Mutex<HashMap<[u8; 32], CacheEntry>>;

/// Verifies access tokens and caches verified ones by hash until they expire.
pub struct TokenVerifier {
    settings: VerifierSettings,
    keys: Arc<dyn KeySource>,
    revocations: Arc<RevocationSet>,
    cache: Vec<CacheShard>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl TokenVerifier {
    /// A verifier over `keys`, consulting `revocations` on every call.
    #[must_use]
    pub fn new(
        settings: VerifierSettings,
        keys: Arc<dyn KeySource>,
        revocations: Arc<RevocationSet>,
    ) -> Self {
        Self {
            settings,
            keys,
            revocations,
            cache: (0..CACHE_SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
        }
    }

    /// The suite's audience.
    #[must_use]
    pub fn audience(&self) -> &str {
        &self.settings.audience
    }

    /// The revocation set consulted.
    #[must_use]
    pub fn revocations(&self) -> &Arc<RevocationSet> {
        &self.revocations
    }

    /// Verifies `token` (cached by its SHA-256 until `exp`) and checks revocation.
    ///
    /// # Errors
    /// An [`AuthError`] naming the first check that failed.
    pub fn verify(&self, token: &str) -> Result<Arc<Principal>, AuthError> {
        if self.revocations.freshness() != crate::revocation::Freshness::Fresh {
            return Err(AuthError::RevocationsStale);
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let shard = &self.cache[usize::from(digest[0]) % CACHE_SHARDS];
        let now = now_secs();
        let leeway = i64::try_from(self.settings.leeway.as_secs()).unwrap_or(0);
        let cached = shard.lock().ok().and_then(|m| m.get(&digest).cloned());
        let principal = match cached {
            // Only while the key that verified it is still in the key set: a key withdrawn from
            // the set takes its tokens with it.
            Some((p, kid, key)) if self.keys.key(&kid) == Some(key) => {
                if now >= p.expires_at + leeway {
                    return Err(AuthError::Expired);
                }
                p
            }
            Some(_) => {
                if let Ok(mut m) = shard.lock() {
                    m.remove(&digest);
                }
                return Err(AuthError::UnknownKey);
            }
            None => {
                let (p, kid, key) = self.verify_uncached(token, now)?;
                let p = Arc::new(p);
                if let Ok(mut m) = shard.lock() {
                    if m.len() >= CACHE_SHARD_CAPACITY {
                        m.retain(|_, v| now < v.0.expires_at + leeway);
                        if m.len() >= CACHE_SHARD_CAPACITY {
                            m.clear();
                        }
                    }
                    m.insert(digest, (Arc::clone(&p), kid, key));
                }
                p
            }
        };
        if self.revocations.is_revoked(&principal) {
            return Err(AuthError::Revoked);
        }
        Ok(principal)
    }

    fn verify_uncached(
        &self,
        token: &str,
        now: i64,
    ) -> Result<(Principal, String, VerifyingKey), AuthError> {
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed);
        };
        let header: Header = decode_json(h)?;
        if header.alg != "EdDSA" {
            return Err(AuthError::Algorithm);
        }
        if header.crit.is_some() {
            return Err(AuthError::CriticalHeader);
        }
        match header
            .typ
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("at+jwt" | "application/at+jwt") => {}
            _ => return Err(AuthError::WrongType),
        }
        let kid = header.kid.ok_or(AuthError::UnknownKey)?;
        let Some(key) = self.keys.key(&kid) else {
            self.keys.on_unknown(&kid);
            return Err(AuthError::UnknownKey);
        };
        let sig_bytes = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| AuthError::Malformed)?;
        let sig = Signature::from_slice(&sig_bytes).map_err(|_| AuthError::Malformed)?;
        let signed_len = h.len() + 1 + c.len();
        key.verify_strict(&token.as_bytes()[..signed_len], &sig)
            .map_err(|_| AuthError::Signature)?;
        let claims: Claims = decode_json(c)?;
        if claims.iss != self.settings.issuer {
            return Err(AuthError::Issuer);
        }
        // The suite's audience, or one of its services' (`crm.core`): the layer then checks that
        // a service-narrowed token is used only with that service.
        let service_prefix = format!("{}.", self.settings.audience);
        let audiences: Vec<String> = claims.aud.values().into_iter().map(str::to_owned).collect();
        if !claims.aud.contains(&self.settings.audience)
            && !audiences.iter().any(|a| a.starts_with(&service_prefix))
        {
            return Err(AuthError::Audience);
        }
        let leeway = i64::try_from(self.settings.leeway.as_secs()).unwrap_or(0);
        if now >= claims.exp + leeway {
            return Err(AuthError::Expired);
        }
        if now + leeway < claims.nbf || now + leeway < claims.iat {
            return Err(AuthError::NotYetValid);
        }
        let organization = Uuid::parse_str(&claims.org_id).map_err(|_| AuthError::Malformed)?;
        if claims.sub.is_empty() || claims.jti.is_empty() {
            return Err(AuthError::Malformed);
        }
        let principal = Principal {
            subject: claims.sub,
            organization,
            roles: claims.roles,
            scopes: claims.scope.split_whitespace().map(str::to_owned).collect(),
            client_id: claims.client_id,
            session_id: claims.sid,
            token_id: claims.jti,
            issued_at: claims.iat,
            expires_at: claims.exp,
            actor: claims.act.map(|a| a.sub),
            audiences,
        };
        Ok((principal, kid, key))
    }
}

fn decode_json<T: for<'de> Deserialize<'de>>(part: &str) -> Result<T, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AuthError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::StaticKeys;

    fn setup() -> (TokenSigner, TokenVerifier, VerifierSettings) {
        let signer = TokenSigner::generate("k1");
        let keys = Arc::new(StaticKeys::new());
        keys.insert("k1", signer.verifying_key());
        let settings = VerifierSettings::default();
        let verifier = TokenVerifier::new(settings.clone(), keys, Arc::new(RevocationSet::new()));
        (signer, verifier, settings)
    }

    fn claims(settings: &VerifierSettings) -> Claims {
        TokenSigner::user_claims(
            settings,
            Uuid::now_v7(),
            Uuid::now_v7(),
            &["crm.sales"],
            Duration::from_secs(300),
        )
    }

    #[test]
    fn accepts_a_good_token_and_caches_it() {
        let (signer, verifier, settings) = setup();
        let c = claims(&settings);
        let token = signer.sign(&c);
        let p = verifier.verify(&token).unwrap();
        assert_eq!(p.subject, c.sub);
        assert_eq!(p.roles, vec!["crm.sales".to_owned()]);
        assert!(Arc::ptr_eq(&p, &verifier.verify(&token).unwrap()));
    }

    #[test]
    fn refuses_alg_none_hmac_and_wrong_type() {
        let (signer, verifier, settings) = setup();
        let c = claims(&settings);
        // alg: none with an empty signature.
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"at+jwt","kid":"k1"}"#);
        let b = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).unwrap());
        assert_eq!(
            verifier.verify(&format!("{h}.{b}.")),
            Err(AuthError::Algorithm)
        );
        assert_eq!(
            verifier.verify(&signer.sign_with_header("HS256", Some("at+jwt"), &c)),
            Err(AuthError::Algorithm)
        );
        assert_eq!(
            verifier.verify(&signer.sign_with_header("EdDSA", Some("JWT"), &c)),
            Err(AuthError::WrongType)
        );
        assert_eq!(
            verifier.verify(&signer.sign_with_header("EdDSA", None, &c)),
            Err(AuthError::WrongType)
        );
    }

    #[test]
    fn refuses_unknown_key_tampering_issuer_audience_and_time() {
        let (signer, verifier, settings) = setup();
        let other = TokenSigner::generate("k2");
        assert_eq!(
            verifier.verify(&other.sign(&claims(&settings))),
            Err(AuthError::UnknownKey)
        );
        let impostor = TokenSigner::generate("k1");
        assert_eq!(
            verifier.verify(&impostor.sign(&claims(&settings))),
            Err(AuthError::Signature)
        );

        let token = signer.sign(&claims(&settings));
        let mut parts: Vec<&str> = token.split('.').collect();
        let mut tampered = claims(&settings);
        tampered.roles = vec!["org.admin".into()];
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&tampered).unwrap());
        parts[1] = &body;
        assert_eq!(verifier.verify(&parts.join(".")), Err(AuthError::Signature));

        let mut c = claims(&settings);
        c.iss = "someone-else".into();
        assert_eq!(verifier.verify(&signer.sign(&c)), Err(AuthError::Issuer));
        let mut c = claims(&settings);
        c.aud = Audience::Many(vec!["billing".into()]);
        assert_eq!(verifier.verify(&signer.sign(&c)), Err(AuthError::Audience));
        let mut c = claims(&settings);
        c.exp = now_secs() - 31;
        assert_eq!(verifier.verify(&signer.sign(&c)), Err(AuthError::Expired));
        let mut c = claims(&settings);
        c.exp = now_secs() - 5; // within leeway
        assert!(verifier.verify(&signer.sign(&c)).is_ok());
        let mut c = claims(&settings);
        c.nbf = now_secs() + 120;
        assert_eq!(
            verifier.verify(&signer.sign(&c)),
            Err(AuthError::NotYetValid)
        );
        assert_eq!(verifier.verify("a.b"), Err(AuthError::Malformed));
    }

    #[test]
    fn a_critical_header_is_refused() {
        let (signer, verifier, settings) = setup();
        let c = claims(&settings);
        let h = URL_SAFE_NO_PAD
            .encode(br#"{"alg":"EdDSA","typ":"at+jwt","kid":"k1","crit":["exp"],"exp":1}"#);
        let b = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).unwrap());
        let input = format!("{h}.{b}");
        let sig: Signature = signer.key.sign(input.as_bytes());
        let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()));
        assert_eq!(verifier.verify(&token), Err(AuthError::CriticalHeader));
    }

    #[test]
    fn a_cached_token_dies_with_its_key() {
        let signer = TokenSigner::generate("k1");
        let keys = Arc::new(StaticKeys::new());
        keys.insert("k1", signer.verifying_key());
        let verifier = TokenVerifier::new(
            VerifierSettings::default(),
            Arc::clone(&keys) as Arc<dyn KeySource>,
            Arc::new(RevocationSet::new()),
        );
        let token = signer.sign(&claims(&VerifierSettings::default()));
        assert!(verifier.verify(&token).is_ok());
        keys.remove("k1");
        assert_eq!(verifier.verify(&token), Err(AuthError::UnknownKey));
        // A different key under the same id does not revive it either.
        keys.insert("k1", TokenSigner::generate("k1").verifying_key());
        assert_eq!(verifier.verify(&token), Err(AuthError::Signature));
    }

    #[test]
    fn nothing_verifies_while_the_revocation_feed_is_not_current() {
        let signer = TokenSigner::generate("k1");
        let keys = Arc::new(StaticKeys::new());
        keys.insert("k1", signer.verifying_key());
        let revocations = Arc::new(RevocationSet::followed(Duration::from_secs(300)));
        let verifier =
            TokenVerifier::new(VerifierSettings::default(), keys, Arc::clone(&revocations));
        let token = signer.sign(&claims(&VerifierSettings::default()));
        assert_eq!(verifier.verify(&token), Err(AuthError::RevocationsStale));
        revocations.mark_fresh();
        assert!(verifier.verify(&token).is_ok());
    }

    #[test]
    fn revocation_applies_to_cached_tokens() {
        let (signer, verifier, settings) = setup();
        let c = claims(&settings);
        let token = signer.sign(&c);
        assert!(verifier.verify(&token).is_ok());
        verifier
            .revocations()
            .revoke_session(c.sid.clone().unwrap());
        assert_eq!(verifier.verify(&token), Err(AuthError::Revoked));
    }
}
