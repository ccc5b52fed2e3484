//! Revocations known to this process: consulted on every call, in memory.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use uuid::Uuid;

use crate::Principal;

#[derive(Debug, Default)]
struct Sets {
    sessions: HashSet<String>,
    tokens: HashSet<String>,
    clients: HashSet<String>,
    /// Tokens of the subject issued at or before this time (seconds) are revoked: in one
    /// organization, or in all (`None`).
    subjects: HashMap<(Option<Uuid>, String), i64>,
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

    /// Revokes the subject's tokens issued at or before `issued_before` (seconds) for
    /// organization `org`, or for every organization when `None`.
    pub fn revoke_subject(
        &self,
        subject: impl Into<String>,
        org: Option<Uuid>,
        issued_before: i64,
    ) {
        if let Ok(mut s) = self.sets.write() {
            let entry = s
                .subjects
                .entry((org, subject.into()))
                .or_insert(issued_before);
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
            || [None, Some(p.organization)].into_iter().any(|org| {
                s.subjects
                    .get(&(org, p.subject.clone()))
                    .is_some_and(|cut| p.issued_at <= *cut)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(org: Uuid, subject: &str, issued_at: i64) -> Principal {
        Principal {
            subject: subject.to_owned(),
            organization: org,
            roles: vec![],
            scopes: vec![],
            client_id: "c".into(),
            session_id: None,
            token_id: Uuid::now_v7().to_string(),
            issued_at,
            expires_at: issued_at + 300,
            actor: None,
            audiences: vec!["crm".into()],
        }
    }

    #[test]
    fn a_subject_revocation_for_one_organization_leaves_the_others_alone() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let set = RevocationSet::new();
        set.revoke_subject("users/1", Some(b), 100);
        assert!(set.is_revoked(&principal(b, "users/1", 100)));
        assert!(
            !set.is_revoked(&principal(b, "users/1", 101)),
            "issued after"
        );
        assert!(
            !set.is_revoked(&principal(a, "users/1", 100)),
            "other organization"
        );
        assert!(
            !set.is_revoked(&principal(b, "users/2", 100)),
            "other person"
        );
        set.revoke_subject("users/1", None, 100);
        assert!(set.is_revoked(&principal(a, "users/1", 100)), "everywhere");
    }
}
