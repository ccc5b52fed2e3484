//! Revocations known to this process: consulted on every call, in memory.
//!
//! A set followed from identity's feed is only trusted while the feed is fresh: until its first
//! batch arrives, and whenever no batch (or heartbeat) has arrived for longer than an access
//! token lives, authenticated calls are refused and health reports NOT_SERVING (fail closed: a
//! revocation this process has not seen could otherwise leave a revoked token valid).

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

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

/// The longest a followed set may go without a batch or heartbeat: the lifetime of a person's
/// access token (a revocation older than that can only concern expired tokens... or tokens this
/// process must not trust).
pub const DEFAULT_MAX_LAG: Duration = Duration::from_secs(300);

/// How a set followed from a feed knows it is current.
#[derive(Debug)]
struct Feed {
    /// Milliseconds after `base` when the last batch or heartbeat arrived, plus one; 0 before
    /// the first. Atomic: every authenticated call reads it, no lock on that path.
    last: AtomicU64,
    base: Instant,
    /// Longest acceptable silence.
    max_lag: Duration,
    /// Turns true with the first batch.
    loaded: watch::Sender<bool>,
}

/// Whether a followed set can be trusted now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Current (or not fed by a feed at all).
    Fresh,
    /// The first batch has not arrived yet.
    NotLoaded,
    /// Nothing arrived for longer than the allowed lag.
    Stale,
}

/// Revoked sessions, token ids, clients and subjects.
#[derive(Debug, Default)]
pub struct RevocationSet {
    sets: RwLock<Sets>,
    feed: Option<Feed>,
}

impl RevocationSet {
    /// A set with no feed, always [`Freshness::Fresh`]: for tests of verification alone and for
    /// tools that never serve calls. Services use [`RevocationSet::followed`].
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A set fed by identity's revocation stream: not fresh until the first batch, and stale
    /// once `max_lag` (the access-token lifetime) passes without a batch or heartbeat.
    #[must_use]
    pub fn followed(max_lag: Duration) -> Self {
        Self {
            sets: RwLock::default(),
            feed: Some(Feed {
                last: AtomicU64::new(0),
                base: Instant::now(),
                max_lag,
                loaded: watch::channel(false).0,
            }),
        }
    }

    /// Records that the feed delivered a batch (possibly an empty heartbeat) just now.
    pub fn mark_fresh(&self) {
        if let Some(feed) = &self.feed {
            let since = u64::try_from(feed.base.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
            feed.last.store(since + 1, Ordering::Release);
            feed.loaded.send_replace(true);
        }
    }

    /// How long since the feed last delivered a batch or heartbeat (since the set was made,
    /// before the first); `None` for a set without a feed. Every revocation older than this
    /// has been applied.
    #[must_use]
    pub fn since_last_batch(&self) -> Option<Duration> {
        let feed = self.feed.as_ref()?;
        let now = feed.base.elapsed();
        Some(match feed.last.load(Ordering::Acquire) {
            0 => now,
            last => now.saturating_sub(Duration::from_millis(last - 1)),
        })
    }

    /// Whether the set is current.
    #[must_use]
    pub fn freshness(&self) -> Freshness {
        let Some(feed) = &self.feed else {
            return Freshness::Fresh;
        };
        match feed.last.load(Ordering::Acquire) {
            0 => Freshness::NotLoaded,
            last => {
                let now = u64::try_from(feed.base.elapsed().as_millis()).unwrap_or(u64::MAX);
                let max = u64::try_from(feed.max_lag.as_millis()).unwrap_or(u64::MAX);
                if now.saturating_sub(last - 1) > max {
                    Freshness::Stale
                } else {
                    Freshness::Fresh
                }
            }
        }
    }

    /// Waits until the first batch has arrived (at once for a set without a feed).
    pub async fn loaded(&self) {
        if let Some(feed) = &self.feed {
            let mut rx = feed.loaded.subscribe();
            let _ = rx.wait_for(|l| *l).await;
        }
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
    fn the_time_since_the_last_batch_is_known_only_for_a_followed_set() {
        assert_eq!(RevocationSet::new().since_last_batch(), None);
        let set = RevocationSet::followed(Duration::from_secs(300));
        std::thread::sleep(Duration::from_millis(20));
        assert!(set.since_last_batch().unwrap() >= Duration::from_millis(20));
        set.mark_fresh();
        assert!(set.since_last_batch().unwrap() < Duration::from_millis(20));
    }

    #[test]
    fn a_followed_set_is_trusted_only_between_its_first_batch_and_the_allowed_lag() {
        assert_eq!(RevocationSet::new().freshness(), Freshness::Fresh);
        let set = RevocationSet::followed(Duration::from_millis(50));
        assert_eq!(set.freshness(), Freshness::NotLoaded);
        set.mark_fresh();
        assert_eq!(set.freshness(), Freshness::Fresh);
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(set.freshness(), Freshness::Stale);
        set.mark_fresh();
        assert_eq!(set.freshness(), Freshness::Fresh);
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
