//! Authentication and authorization shared by every CRM service.
//!
//! - [`token`]: the RFC 9068 access-token format (`typ: at+jwt`, EdDSA) — signing for the issuer
//!   and tests, verification for everyone else, with a cache of verified tokens.
//! - [`keys`]: where verification keys come from ([`keys::KeySource`]).
//! - [`revocation`]: the in-memory set of revoked sessions, tokens, subjects and clients.
//! - [`remote`]: keys and revocations followed from identity's `WatchJwks` and
//!   `WatchRevocations` streams.
//! - [`principal`]: who is calling, and the role → permission catalog.
//! - [`layer`]: the tower layer that authenticates every call and enforces each RPC's declared
//!   permission before the handler runs.
//! - [`password`]: argon2id hashing on a bounded blocking pool.

pub mod keys;
pub mod layer;
pub mod password;
pub mod principal;
pub mod remote;
pub mod revocation;
pub mod token;

pub use layer::{AuthLayer, MethodPolicy, Requirement};
pub use principal::{Principal, permission};
pub use token::{AuthError, TokenVerifier, VerifierSettings};
