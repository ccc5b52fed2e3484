//! Revocations known to this process: consulted on every call, in memory.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use crate::Principal;

#[derive(Debug, Default)]
struct Sets {
    sessions: HashSet<String>,
    tokens: HashSet<String>,
    clients: HashSet<String>,
    /// Tokens of the subject issued at or before this time (seconds) are revoked.
    subjects: HashMap<String, i64>,
}

/// Revoked sessions, token ids, clients and subjects.
#[derive(Debug, Default)]
pub struct RevocationSet {
    sets: RwLock<Sets>,
}

impl RevocationSet {
    /// An empty set.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Revokes every token of session `sid`.
    pub fn revoke_session(&self, sid: impl Into<String>) {
        if let Ok(mut s) = self.sets.write() {
            s.sessions.insert(sid.into());
        }
    }

    /// Revokes one token by `jti`.
    pub fn revoke_token(&self, jti: impl Into<String>) {
        if let Ok(mut s) = self.sets.write() {
            s.tokens.insert(jti.into());
        }
    }

    /// Revokes every token of an OAuth client.
    pub fn revoke_client(&self, client_id: impl Into<String>) {
        if let Ok(mut s) = self.sets.write() {
            s.clients.insert(client_id.into());
        }
    }

    /// Revokes the subject's tokens issued at or before `issued_before` (seconds).
    pub fn revoke_subject(&self, subject: impl Into<String>, issued_before: i64) {
        if let Ok(mut s) = self.sets.write() {
            let entry = s.subjects.entry(subject.into()).or_insert(issued_before);
            *entry = (*entry).max(issued_before);
        }
    }

    /// Whether the principal's token is revoked. Fails closed if the lock is poisoned.
    #[must_use]
    pub fn is_revoked(&self, p: &Principal) -> bool {
        let Ok(s) = self.sets.read() else {
            return true;
        };
        s.tokens.contains(&p.token_id)
            || p.session_id
                .as_ref()
                .is_some_and(|sid| s.sessions.contains(sid))
            || (!p.client_id.is_empty() && s.clients.contains(&p.client_id))
            || s.subjects
                .get(&p.subject)
                .is_some_and(|cut| p.issued_at <= *cut)
    }
}
