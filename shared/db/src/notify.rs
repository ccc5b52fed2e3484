//! LISTEN/NOTIFY wake-ups: writers announce a commit on a channel; one listener per process
//! wakes that process's waiting streams, so streams sleep instead of each polling the pool.

use std::sync::Arc;
use std::time::Duration;

use diesel::sql_types::Text;
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use futures_util::StreamExt;
use tokio::sync::Notify;

use crate::DbPool;

/// Queues a notification on `channel`; PostgreSQL delivers it when the transaction commits
/// (and never if it rolls back).
///
/// # Errors
/// The database error.
pub async fn announce(conn: &AsyncPgConnection, channel: &str) -> diesel::QueryResult<()> {
    crate::fixed::FixedSql(diesel::sql_query("SELECT pg_notify($1, '')").bind::<Text, _>(channel))
        .execute(&mut { conn })
        .await?;
    Ok(())
}

/// A running listener; stops when dropped.
#[derive(Debug)]
pub struct Listener(tokio::task::JoinHandle<()>);

impl Drop for Listener {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Listens on `channel` on a dedicated connection of `pool` until the handle is dropped, waking
/// every waiter of `wake` on each notification, and once after each (re)connection (a
/// notification may have been missed while disconnected). Reconnects with backoff.
#[must_use]
pub fn spawn_listener(pool: DbPool, channel: String, wake: Arc<Notify>) -> Listener {
    Listener(tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            match listen(&pool, &channel, &wake).await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => tracing::debug!(%channel, error = %e, "listener lost; reconnecting"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }))
}

async fn listen(pool: &DbPool, channel: &str, wake: &Notify) -> Result<(), String> {
    let mut conn = pool
        .dedicated_connection()
        .await
        .map_err(|e| e.to_string())?;
    conn.batch_execute(&format!("LISTEN \"{}\"", channel.replace('"', "")))
        .await
        .map_err(|e| e.to_string())?;
    wake.notify_waiters();
    let mut notifications = std::pin::pin!(conn.notifications_stream());
    while let Some(n) = notifications.next().await {
        n.map_err(|e| e.to_string())?;
        wake.notify_waiters();
    }
    Ok(())
}

/// How long a caught-up feed reader waits before reading again: after a wake-up it retries
/// briefly (a committed row is readable only once every older transaction has ended and the
/// snapshot's xmin has passed it), otherwise it waits for the next wake-up or a slow safety read
/// that bounds a lost notification.
#[derive(Debug, Clone)]
pub struct Pacing {
    safety: Duration,
    catch_up_interval: Duration,
    catch_up_tries: u32,
    left: u32,
}

impl Pacing {
    /// Retries every `catch_up_interval`, `catch_up_tries` times after each wake-up; reads at
    /// least every `safety` otherwise.
    #[must_use]
    pub fn new(safety: Duration, catch_up_interval: Duration, catch_up_tries: u32) -> Self {
        Self {
            safety,
            catch_up_interval,
            catch_up_tries,
            left: 0,
        }
    }

    /// The wait before the next read after one that found nothing.
    pub fn next_wait(&mut self) -> Duration {
        if self.left > 0 {
            self.left -= 1;
            self.catch_up_interval
        } else {
            self.safety
        }
    }

    /// A commit was announced: catch up again.
    pub fn woken(&mut self) {
        self.left = self.catch_up_tries;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wake_up_buys_a_few_quick_reads_then_the_safety_interval() {
        let (slow, quick) = (Duration::from_secs(2), Duration::from_millis(50));
        let mut p = Pacing::new(slow, quick, 2);
        assert_eq!(p.next_wait(), slow);
        p.woken();
        assert_eq!(p.next_wait(), quick);
        assert_eq!(p.next_wait(), quick);
        assert_eq!(p.next_wait(), slow);
    }
}
