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
    let db = crate::support::test_db().await;
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

/// A power of ten below the cluster's current transaction id, so rows written with transaction
/// ids around it are all below every snapshot's xmin (ended transactions).
pub async fn power_of_ten_below_current_xid(admin: &mut AsyncPgConnection) -> u64 {
    use diesel::sql_types::Text;
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Xid {
        #[diesel(sql_type = Text)]
        xid: String,
    }
    let current: Xid = diesel::sql_query("SELECT pg_current_xact_id()::text AS xid")
        .get_result(admin)
        .await
        .unwrap();
    let current: u64 = current.xid.parse().unwrap();
    let mut boundary = 10;
    while boundary * 10 + 2 < current {
        boundary *= 10;
    }
    assert!(boundary + 2 < current, "cluster too young: xid {current}");
    boundary
}

#[tokio::test]
async fn events_whose_txids_straddle_a_power_of_ten_come_in_number_order() {
    let db = crate::support::test_db().await;
    let org = Uuid::now_v7();
    let mut admin = db.admin().await.unwrap();
    let boundary = power_of_ten_below_current_xid(&mut admin).await;
    // Written out of order on purpose: ids must not decide the order either.
    let txids = [boundary + 1, boundary - 2, boundary, boundary - 1];
    for (i, txid) in txids.iter().enumerate() {
        admin
            .batch_execute(&format!(
                "INSERT INTO core.outbox (organization_id, event_id, txid, event_type, resource, \
                 actor, payload) VALUES ('{org}', '{}', '{txid}'::xid8, 'test.Event', 'e{i}', \
                 'services/test', '\\x01')",
                Uuid::now_v7()
            ))
            .await
            .unwrap();
    }
    let mut reader = db.app("core").await.unwrap();
    // Page through two at a time, as a resumed cursor does.
    let mut seen = Vec::new();
    let mut cursor = Cursor::default();
    loop {
        let page = reader
            .transaction::<_, diesel::result::Error, _>(async |conn| {
                tenant::set_tenant(conn, org).await?;
                outbox::read_after(conn, org, cursor, &[], 2).await
            })
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        cursor = last.cursor();
        seen.extend(page.iter().map(|e| e.cursor().txid));
        assert!(seen.len() <= 4, "delivered twice: {seen:?}");
    }
    assert_eq!(
        seen,
        [boundary - 2, boundary - 1, boundary, boundary + 1],
        "every event once, in transaction-id order"
    );
}

#[tokio::test]
async fn a_transaction_left_idle_is_ended_by_the_server_so_it_cannot_stall_readers() {
    let db = crate::support::test_db().await;
    let mut settings = crm_db::pool::PoolSettings::new(db.app_url("core"), "core");
    assert_eq!(
        settings.idle_in_transaction_timeout,
        std::time::Duration::from_secs(10),
        "the production default"
    );
    settings.idle_in_transaction_timeout = std::time::Duration::from_millis(200);
    settings.acquire_timeout = std::time::Duration::from_secs(3);
    let pool = crm_db::pool::build(&settings);
    let mut conn = pool.get().await.unwrap();
    conn.batch_execute("BEGIN").await.unwrap();
    conn.batch_execute("SELECT 1").await.unwrap();
    // Idle inside the transaction for longer than the limit: the server ends the session.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(
        conn.batch_execute("SELECT 1").await.is_err(),
        "the idle transaction was still open"
    );
}
