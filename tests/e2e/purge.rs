//! Retention: what grows per call is purged, across organizations, once per table at a time,
//! and what is still referenced or still young stays.

use std::time::Duration;

use crm_db::purge::{self, Retention};
use crm_testkit::TestDb;
use diesel_async::SimpleAsyncConnection;
use uuid::Uuid;

use crate::support::count;

async fn n(db: &TestDb, table: &str, condition: &str) -> i64 {
    count(
        db,
        &format!("SELECT count(*) AS n FROM {table} WHERE {condition}"),
    )
    .await
}

fn app_pool(db: &TestDb, schema: &str) -> crm_db::DbPool {
    let mut settings = crm_db::pool::PoolSettings::new(db.app_url(schema), schema);
    settings.acquire_timeout = Duration::from_secs(3);
    crm_db::pool::build(&settings)
}

#[tokio::test]
async fn core_purges_old_keys_and_events_and_soft_deleted_rows_past_their_purge_time() {
    let db = crate::support::test_db().await;
    let mut admin = db.admin().await.unwrap();
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let customer = |org: Uuid, id: Uuid, name: &str, purge: &str| {
        format!(
            "INSERT INTO core.customers (organization_id, id, display_name, created_by, \
             updated_by, delete_time, purge_time) VALUES ('{org}', '{id}', '{name}', 't', 't', \
             {purge}, {purge});"
        )
    };
    let (gone, referenced, young, live) = (
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
    );
    let (property, equipment) = (Uuid::now_v7(), Uuid::now_v7());
    let mut sql = String::new();
    for org in [a, b] {
        sql.push_str(&format!(
            "INSERT INTO core.idempotency_keys (organization_id, request_id, method, \
             request_hash, create_time) VALUES \
             ('{org}', '{}', 'm', '\\x00', now() - interval '2 days'), \
             ('{org}', '{}', 'm', '\\x00', now() - interval '1 hour'); \
             INSERT INTO core.outbox (organization_id, event_id, event_type, resource, actor, \
             payload, occur_time) VALUES \
             ('{org}', '{}', 't', 'r', 'a', '\\x00', now() - interval '8 days'), \
             ('{org}', '{}', 't', 'r', 'a', '\\x00', now() - interval '1 day');",
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7()
        ));
    }
    sql.push_str(&customer(a, gone, "Gone", "now() - interval '1 day'"));
    sql.push_str(&customer(
        b,
        referenced,
        "Referenced",
        "now() - interval '1 day'",
    ));
    sql.push_str(&customer(a, young, "Young", "now() + interval '1 day'"));
    sql.push_str(&customer(b, live, "Live", "NULL"));
    // A live contact keeps its (purgeable) customer; equipment past its purge time goes with
    // its readings, and then its property and customer can go too.
    sql.push_str(&format!(
        "INSERT INTO core.contacts (organization_id, id, customer_id, display_name, created_by, \
         updated_by) VALUES ('{b}', '{}', '{referenced}', 'Still here', 't', 't'); \
         INSERT INTO core.properties (organization_id, id, customer_id, display_name, \
         region_code, address_lines, created_by, updated_by, delete_time, purge_time) VALUES \
         ('{a}', '{property}', '{gone}', 'Yard', 'US', '{{}}', 't', 't', now() - interval '40 days', \
         now() - interval '10 days'); \
         INSERT INTO core.equipment (organization_id, id, property_id, kind, created_by, \
         updated_by, delete_time, purge_time) VALUES ('{a}', '{equipment}', '{property}', 1, \
         't', 't', now() - interval '40 days', now() - interval '10 days'); \
         INSERT INTO core.equipment_readings (organization_id, id, equipment_id, \
         solids_depth_inches, grease_depth_inches, read_time, recorder) VALUES \
         ('{a}', '{}', '{equipment}', 1, 1, now() - interval '50 days', 'r');",
        Uuid::now_v7(),
        Uuid::now_v7()
    ));
    admin.batch_execute(&sql).await.unwrap();

    let done = purge::run_once(
        &app_pool(&db, "core"),
        &crm_core::purge_rules(&Retention::default()),
    )
    .await
    .unwrap();
    let deleted = |table: &str| done.iter().find(|p| p.table == table).unwrap().deleted;
    assert_eq!(
        deleted("idempotency_keys"),
        2,
        "one old key of each organization"
    );
    assert_eq!(deleted("outbox"), 2, "one old event of each organization");
    assert_eq!(n(&db, "core.idempotency_keys", "true").await, 2);
    assert_eq!(n(&db, "core.outbox", "true").await, 2);
    assert_eq!(n(&db, "core.equipment_readings", "true").await, 0);
    assert_eq!(n(&db, "core.equipment", "true").await, 0);
    assert_eq!(n(&db, "core.properties", "true").await, 0);
    let remaining: Vec<Uuid> = [gone, referenced, young, live].to_vec();
    for (id, stays) in remaining.iter().zip([false, true, true, true]) {
        assert_eq!(
            n(&db, "core.customers", &format!("id = '{id}'")).await == 1,
            stays,
            "customer {id}"
        );
    }
    let customers = done.iter().find(|p| p.table == "customers").unwrap();
    assert_eq!(
        customers.kept, 1,
        "the referenced one is kept, not an error"
    );

    // Running again finds nothing more and fails on nothing.
    let again = purge::run_once(
        &app_pool(&db, "core"),
        &crm_core::purge_rules(&Retention::default()),
    )
    .await
    .unwrap();
    assert!(again.iter().all(|p| p.deleted == 0), "{again:?}");
}

#[tokio::test]
async fn identity_purges_expired_revocations_tokens_codes_and_idle_throttles() {
    let db = crate::support::test_db().await;
    let mut admin = db.admin().await.unwrap();
    admin
        .batch_execute(
            "INSERT INTO identity.revocations (kind, value, expire_time) VALUES \
             (2, 'old', now() - interval '2 days'), (2, 'current', now() + interval '5 minutes'); \
             INSERT INTO identity.login_throttle (email_key, failures, update_time, locked_until) \
             VALUES ('idle@example.com', 1, now() - interval '3 days', NULL), \
                    ('locked@example.com', 5, now() - interval '3 days', now() + interval '1 day'), \
                    ('recent@example.com', 1, now(), NULL);",
        )
        .await
        .unwrap();
    let done = purge::run_once(
        &app_pool(&db, "identity"),
        &crm_identity::purge_rules(&Retention::default()),
    )
    .await
    .unwrap();
    assert!(done.iter().all(|p| !p.skipped));
    assert_eq!(n(&db, "identity.revocations", "value = 'old'").await, 0);
    assert_eq!(n(&db, "identity.revocations", "value = 'current'").await, 1);
    assert_eq!(
        n(
            &db,
            "identity.login_throttle",
            "email_key = 'idle@example.com'"
        )
        .await,
        0
    );
    assert_eq!(
        n(
            &db,
            "identity.login_throttle",
            "email_key <> 'idle@example.com'"
        )
        .await,
        2,
        "a lockout in force and a recent throttle stay"
    );
}

#[tokio::test]
async fn one_replica_at_a_time_purges_a_table() {
    let db = crate::support::test_db().await;
    let mut other = db.app("core").await.unwrap();
    // Another replica is purging the idempotency keys right now.
    other
        .batch_execute(
            "BEGIN; SELECT pg_advisory_xact_lock(hashtext('crm.purge.core.idempotency_keys'))",
        )
        .await
        .unwrap();
    let done = purge::run_once(
        &app_pool(&db, "core"),
        &crm_core::purge_rules(&Retention::default()),
    )
    .await
    .unwrap();
    let keys = done.iter().find(|p| p.table == "idempotency_keys").unwrap();
    assert!(keys.skipped, "{keys:?}");
    assert!(
        done.iter()
            .filter(|p| p.table != "idempotency_keys")
            .all(|p| !p.skipped)
    );
    other.batch_execute("COMMIT").await.unwrap();
}
