//! The outbox reader never skips an event whose transaction commits after a later one.

use crm_db::outbox::{self, Cursor, NewEvent};
use crm_db::tenant;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use uuid::Uuid;

async fn append(conn: &mut AsyncPgConnection, org: Uuid, resource: &str) {
    outbox::append(
        conn,
        org,
        NewEvent {
            event_type: "test.Event",
            resource,
            actor: "services/test",
            request_id: "",
            payload: vec![1, 2, 3],
        },
    )
    .await
    .unwrap();
}

async fn read(conn: &mut AsyncPgConnection, org: Uuid, after: Cursor) -> Vec<outbox::StoredEvent> {
    conn.transaction::<_, diesel::result::Error, _>(async |conn| {
        tenant::set_tenant(conn, org).await?;
        outbox::read_after(conn, org, after, &[], 100).await
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn an_event_committed_late_is_delivered_late_not_skipped() {
    let db = crm_testkit::TestDb::new().await.unwrap();
    let org = Uuid::now_v7();
    let mut early = db.app("core").await.unwrap();
    let mut late = db.app("core").await.unwrap();
    let mut reader = db.app("core").await.unwrap();

    // Transaction "early" takes its id first but commits last.
    early.batch_execute("BEGIN").await.unwrap();
    tenant::set_tenant(&early, org).await.unwrap();
    append(&mut early, org, "early").await;

    late.transaction::<_, diesel::result::Error, _>(async |conn| {
        tenant::set_tenant(conn, org).await?;
        append(conn, org, "late").await;
        Ok(())
    })
    .await
    .unwrap();

    // "late" is committed, but delivering it now would let the cursor pass "early".
    let first = read(&mut reader, org, Cursor::default()).await;
    assert!(
        first.is_empty(),
        "delivered {:?} while an earlier transaction was open",
        first.iter().map(|e| &e.resource).collect::<Vec<_>>()
    );

    early.batch_execute("COMMIT").await.unwrap();
    // Delivery waits for every older transaction in the cluster (other tests' too): poll.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let all = loop {
        let all = read(&mut reader, org, Cursor::default()).await;
        if all.len() == 2 || std::time::Instant::now() > until {
            break all;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let order: Vec<&str> = all.iter().map(|e| e.resource.as_str()).collect();
    assert_eq!(order, ["early", "late"]);
    let after_first = read(&mut reader, org, all[0].cursor()).await;
    assert_eq!(after_first.len(), 1);
    assert_eq!(after_first[0].resource, "late");
    assert!(read(&mut reader, org, all[1].cursor()).await.is_empty());
}
