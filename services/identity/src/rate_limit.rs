//! Token-bucket rate limits for the credential endpoints: per account (email), per client
//! address and per API client. Buckets live in this replica's memory (N replicas allow N times
//! the rate; the lockout, which is in the database, is the hard limit for password guessing).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crm_platform::ApiError;

/// Requests per minute allowed for each kind of key, with a burst of the same size.
#[derive(Debug, Clone, Copy)]
pub struct RateLimits {
    /// Sign-in attempts per account.
    pub login_per_account: u32,
    /// Sign-in, refresh and reset attempts per client address.
    pub per_address: u32,
    /// `client_credentials` grants per API client.
    pub per_api_client: u32,
    /// Whether this replica sits behind one trusted gateway that appends the peer it saw to
    /// `x-forwarded-for`: then the last entry is the client (entries before it are whatever
    /// the client sent, and are never trusted).
    pub trust_forwarded_for: bool,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            login_per_account: 20,
            per_address: 120,
            per_api_client: 120,
            trust_forwarded_for: false,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

const MAX_BUCKETS: usize = 100_000;

/// The buckets of this replica.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// No buckets yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one token from `key`'s bucket of `per_minute`; when empty, RESOURCE_EXHAUSTED with
    /// the time until the next token.
    ///
    /// # Errors
    /// `RATE_LIMITED` with a retry delay.
    pub fn take(&self, key: &str, per_minute: u32) -> Result<(), ApiError> {
        let capacity = f64::from(per_minute.max(1));
        let per_second = capacity / 60.0;
        let now = Instant::now();
        // A panic elsewhere while holding the lock leaves counts that are still counts: keep
        // limiting with them rather than letting everything through.
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= MAX_BUCKETS {
            // Full buckets carry no information: forget them first.
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.updated).as_secs_f64() * per_second < capacity
            });
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: capacity,
            updated: now,
        });
        bucket.tokens = (bucket.tokens
            + now.duration_since(bucket.updated).as_secs_f64() * per_second)
            .min(capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = Duration::from_secs_f64((1.0 - bucket.tokens) / per_second);
            Err(ApiError::ResourceExhausted {
                reason: "RATE_LIMITED",
                message: "too many requests; retry later".into(),
                retry_after: Some(wait.max(Duration::from_millis(100))),
            })
        }
    }
}

/// The client address of a request: behind the trusted gateway, the last `x-forwarded-for`
/// entry (the one the gateway appended; a client can put anything before it), else the TCP
/// peer.
#[must_use]
pub fn client_address<T>(req: &tonic::Request<T>, trust_forwarded_for: bool) -> Option<IpAddr> {
    if trust_forwarded_for
        && let Some(last) = req
            .metadata()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .next_back()
            .and_then(|v| v.trim().parse().ok())
    {
        return Some(last);
    }
    req.remote_addr().map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_address_the_gateway_appended_is_believed() {
        let mut req = tonic::Request::new(());
        req.metadata_mut()
            .insert("x-forwarded-for", "1.2.3.4, 10.0.0.7".parse().unwrap());
        assert_eq!(
            client_address(&req, true),
            Some("10.0.0.7".parse().unwrap()),
            "a client-supplied first hop is not the client"
        );
        assert_eq!(
            client_address(&req, false),
            None,
            "no peer without a socket"
        );
    }

    #[test]
    fn a_poisoned_lock_still_limits() {
        let limiter = std::sync::Arc::new(RateLimiter::new());
        limiter.take("k", 1).unwrap();
        let l = std::sync::Arc::clone(&limiter);
        let _ = std::thread::spawn(move || {
            let _guard = l.buckets.lock().unwrap();
            panic!("poison the lock");
        })
        .join();
        assert!(limiter.buckets.is_poisoned());
        assert!(
            limiter.take("k", 1).is_err(),
            "the empty bucket stays empty"
        );
    }

    #[test]
    fn buckets_refuse_when_empty_and_tell_when_to_retry() {
        let limiter = RateLimiter::new();
        for _ in 0..3 {
            limiter.take("k", 3).unwrap();
        }
        match limiter.take("k", 3) {
            Err(ApiError::ResourceExhausted {
                retry_after: Some(d),
                ..
            }) => {
                assert!(
                    d > Duration::from_secs(15) && d <= Duration::from_secs(20),
                    "{d:?}"
                );
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        limiter.take("other", 3).unwrap();
    }
}
