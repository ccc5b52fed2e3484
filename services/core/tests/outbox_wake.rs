//! Core's own database-backed test (crm-testkit needs no service crate): a committed event
//! wakes the listener on core's outbox channel, which is how streams of every replica learn of
//! events written by another.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use crm_db::outbox::{self, NewEvent};
use crm_db::pool::{self, PoolSettings};
use uuid::Uuid;

#[tokio::test]
async fn a_committed_event_wakes_the_listener_of_cores_outbox_channel() {
    let db = crm_testkit::TestDb::new(&[crm_core::SCHEMA]).await.unwrap();
    let mut settings = PoolSettings::new(db.app_url("core"), "core");
    settings.acquire_timeout = Duration::from_secs(3);
    let pool = pool::build(&settings);
    let wake = Arc::new(tokio::sync::Notify::new());
    let _listener = crm_db::notify::spawn_listener(
        pool.clone(),
        outbox::channel(crm_core::SCHEMA.name),
        Arc::clone(&wake),
    );
    let org = Uuid::now_v7();
    // Write until heard: the listener may still be connecting when the first commit lands.
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let woken = wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        crm_db::tenant::transaction(&pool, org, move |conn| {
            Box::pin(async move {
                outbox::append(
                    conn,
                    org,
                    NewEvent {
                        event_type: "test.Event",
                        resource: "r",
                        actor: "services/test",
                        request_id: "",
                        payload: vec![1],
                    },
                )
                .await
                .map_err(crm_db::DbError::from)
            })
        })
        .await
        .unwrap();
        if tokio::time::timeout(Duration::from_millis(200), woken)
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            Instant::now() < until,
            "no wake-up on {}",
            outbox::channel("core")
        );
    }
}
