//! `crm_db::tenant::read`: a read-only tenant transaction sent in one flight. The setting is
//! visible to the work and to nothing after it, writes are refused, and a caller that goes away
//! half-way leaves the connection outside any transaction.

use std::time::Duration;

use crm_db::tenant;
use diesel::sql_types::{Bool, Nullable, Text};
use diesel_async::RunQueryDsl;
use uuid::Uuid;

#[derive(diesel::QueryableByName)]
struct Setting {
    #[diesel(sql_type = Nullable<Text>)]
    org: Option<String>,
    #[diesel(sql_type = Bool)]
    fresh: bool,
}

/// The org setting on `conn`, and whether the statement runs outside the read's (read-only)
/// transaction.
const PROBE: &str = "SELECT NULLIF(current_setting('app.org_id', true), '') AS org, \
                     current_setting('transaction_read_only') = 'off' AS fresh";

fn one_connection_pool(db: &crm_testkit::TestDb) -> crm_db::DbPool {
    let mut settings = crm_db::pool::PoolSettings::new(db.app_url("core"), "core");
    settings.max_size = 1;
    settings.acquire_timeout = Duration::from_secs(5);
    crm_db::pool::build(&settings)
}

async fn probe_outside(pool: &crm_db::DbPool) -> Setting {
    let mut conn = pool.get().await.unwrap();
    diesel::sql_query(PROBE)
        .get_result::<Setting>(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_work_sees_its_organization_and_the_next_user_of_the_connection_does_not() {
    let db = crate::support::test_db().await;
    let pool = one_connection_pool(&db);
    let org = Uuid::now_v7();
    for _ in 0..3 {
        let inside: Setting = tenant::read::<_, crm_db::DbError, _>(&pool, org, |conn| {
            Box::pin(async move {
                let mut conn = conn;
                Ok(diesel::sql_query(PROBE)
                    .get_result::<Setting>(&mut conn)
                    .await?)
            })
        })
        .await
        .unwrap();
        assert_eq!(inside.org.as_deref(), Some(org.to_string().as_str()));
        assert!(
            !inside.fresh,
            "the read ran outside a read-only transaction"
        );
        let after = probe_outside(&pool).await;
        assert_eq!(after.org, None, "the setting outlived its transaction");
        assert!(
            after.fresh,
            "the connection came back inside the read's transaction"
        );
    }
}

#[tokio::test]
async fn a_write_inside_a_read_is_refused() {
    let db = crate::support::test_db().await;
    let pool = one_connection_pool(&db);
    let org = Uuid::now_v7();
    let result = tenant::read::<_, crm_db::DbError, _>(&pool, org, |conn| {
        Box::pin(async move {
            let mut conn = conn;
            diesel::sql_query(
                "UPDATE customers SET notes = 'x' WHERE organization_id = current_setting('app.org_id')::uuid",
            )
            .execute(&mut conn)
            .await?;
            Ok(())
        })
    })
    .await;
    assert!(result.is_err(), "a read-only transaction accepted a write");
    let after = probe_outside(&pool).await;
    assert!(after.fresh && after.org.is_none());
}

#[tokio::test]
async fn a_read_dropped_half_way_leaves_no_transaction_behind() {
    let db = crate::support::test_db().await;
    let pool = one_connection_pool(&db);
    let org = Uuid::now_v7();
    let slow = tenant::read::<(), crm_db::DbError, _>(&pool, org, |conn| {
        Box::pin(async move {
            let mut conn = conn;
            diesel::sql_query("SELECT pg_sleep(0.5)")
                .execute(&mut conn)
                .await?;
            Ok(())
        })
    });
    // The caller gives up while the statement runs.
    assert!(
        tokio::time::timeout(Duration::from_millis(100), slow)
            .await
            .is_err()
    );
    let after = probe_outside(&pool).await;
    assert_eq!(
        after.org, None,
        "the dropped read's setting reached the next user"
    );
    assert!(
        after.fresh,
        "the dropped read's transaction reached the next user"
    );
}
