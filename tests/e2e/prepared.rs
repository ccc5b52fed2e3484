//! Write statements diesel would prepare afresh at every execution (UPDATEs, upserts, raw SQL)
//! stay prepared on their connection (`crm_db::fixed::FixedSql`): after several writes each
//! such statement exists once in the connection's `pg_prepared_statements`. Without the
//! wrapper diesel-async closes them after each use and none would be there.

use std::time::Duration;

use crm_db::{chain, idempotency, tenant};
use diesel::sql_types::{BigInt, Text};
use diesel_async::RunQueryDsl;
use uuid::Uuid;

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn prepared(conn: &diesel_async::AsyncPgConnection, prefix: &str) -> i64 {
    diesel::sql_query(
        "SELECT count(*)::bigint AS n FROM pg_prepared_statements WHERE statement LIKE $1 || '%'",
    )
    .bind::<Text, _>(prefix)
    .get_result::<Count>(&mut { conn })
    .await
    .unwrap()
    .n
}

#[tokio::test]
async fn idempotency_responses_and_audit_heads_are_prepared_once_per_connection() {
    let db = crate::support::test_db().await;
    let mut settings = crm_db::pool::PoolSettings::new(db.app_url("core"), "core");
    settings.max_size = 1;
    settings.acquire_timeout = Duration::from_secs(5);
    let pool = crm_db::pool::build(&settings);
    let org = Uuid::now_v7();
    for _ in 0..3 {
        tenant::transaction::<_, crm_db::DbError, _>(&pool, org, |conn| {
            Box::pin(async move {
                let key = Uuid::now_v7();
                idempotency::claim(conn, org, key, "test/Method", b"hash").await?;
                idempotency::complete(conn, org, key, b"response").await?;
                let (seq, _) = chain::next(conn, org).await?;
                chain::advance(conn, org, seq, &[1; 32]).await?;
                Ok(())
            })
        })
        .await
        .unwrap();
    }
    let conn = pool.get().await.unwrap();
    assert_eq!(prepared(&conn, "UPDATE \"idempotency_keys\"").await, 1);
    // The head's lock-and-read and its move: two statements, each prepared once.
    assert_eq!(prepared(&conn, "INSERT INTO audit_heads").await, 2);
}
