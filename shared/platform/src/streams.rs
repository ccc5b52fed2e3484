//! Limits on long-lived server streams: how many are open at once in this process and per
//! caller, so that no caller can hold the process's connections and permits with streams.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::ApiError;

/// The caller key of an unauthenticated stream: the client's IP address (every caller whose
/// address is unknown shares one key).
#[must_use]
pub fn peer<T>(req: &tonic::Request<T>) -> String {
    req.remote_addr()
        .map_or_else(|| "unknown".to_owned(), |a| a.ip().to_string())
}

/// Open streams, in total and per caller key.
#[derive(Debug)]
pub struct StreamLimiter {
    open: Mutex<(usize, HashMap<String, usize>)>,
    total: usize,
    per_caller: usize,
}

/// One open stream; releases its place when dropped (the stream ended or its client left).
#[derive(Debug)]
pub struct StreamGuard {
    limiter: Arc<StreamLimiter>,
    caller: String,
}

impl StreamLimiter {
    /// At most `total` streams at once, `per_caller` of them for one caller.
    #[must_use]
    pub fn new(total: usize, per_caller: usize) -> Arc<Self> {
        Arc::new(Self {
            open: Mutex::new((0, HashMap::new())),
            total,
            per_caller,
        })
    }

    /// Opens a stream for `caller`.
    ///
    /// # Errors
    /// RESOURCE_EXHAUSTED `TOO_MANY_STREAMS` when either limit is reached (or the lock is
    /// poisoned: fail closed).
    pub fn open(self: &Arc<Self>, caller: impl Into<String>) -> Result<StreamGuard, ApiError> {
        let caller = caller.into();
        let refused = || ApiError::ResourceExhausted {
            reason: "TOO_MANY_STREAMS",
            message: "too many streams are open; close one or retry later".into(),
            retry_after: Some(Duration::from_secs(1)),
        };
        let mut open = self.open.lock().map_err(|_| refused())?;
        let (total, per) = &mut *open;
        let mine = per.entry(caller.clone()).or_insert(0);
        if *total >= self.total || *mine >= self.per_caller {
            if *mine == 0 {
                per.remove(&caller);
            }
            return Err(refused());
        }
        *mine += 1;
        *total += 1;
        Ok(StreamGuard {
            limiter: Arc::clone(self),
            caller,
        })
    }

    /// Streams open now.
    #[must_use]
    pub fn open_count(&self) -> usize {
        self.open.lock().map_or(0, |o| o.0)
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if let Ok(mut open) = self.limiter.open.lock() {
            let (total, per) = &mut *open;
            *total = total.saturating_sub(1);
            if let Some(n) = per.get_mut(&self.caller) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    per.remove(&self.caller);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_hold_per_caller_and_in_total_and_places_come_back() {
        let limiter = StreamLimiter::new(3, 2);
        let a1 = limiter.open("a").unwrap();
        let _a2 = limiter.open("a").unwrap();
        assert!(limiter.open("a").is_err(), "per caller");
        let _b1 = limiter.open("b").unwrap();
        assert!(limiter.open("c").is_err(), "in total");
        drop(a1);
        assert_eq!(limiter.open_count(), 2);
        let _c1 = limiter.open("c").unwrap();
    }
}
