//! Retention: rows that grow with every call (idempotency keys, outbox events, expired
//! revocations and throttles, soft-deleted resources past their purge time) are deleted by a
//! periodic job.
//!
//! - Each service lists its [`Rule`]s; a rule is a table and a condition over a retention.
//! - One replica at a time purges a table: each rule runs in a transaction holding a
//!   transaction-level advisory lock keyed by the table (`pg_try_advisory_xact_lock`); a replica
//!   that does not get it skips the rule this round. Deletes are idempotent, so a restart or a
//!   crash mid-way loses nothing: the next run goes on.
//! - Tenant tables are behind row-level security; the job sets `app.purge = on` for its own
//!   transaction only, which the `purge` policies of each table accept for reads and deletes.
//! - A parent that children still reference (foreign keys restrict deletes) is kept: the batch
//!   falls back to one row at a time, each in a savepoint, and skips the rows it may not delete.

use std::time::Duration;

use diesel::sql_types::{BigInt, Bool, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use crate::{DbError, DbPool};

/// Rows deleted per statement.
const BATCH: i64 = 500;
/// Rows tried one by one when a batch is refused by a foreign key.
const ROW_BY_ROW: i64 = 2000;

/// What to purge from one table.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The table (in the service's schema, first on the pool's `search_path`).
    pub table: &'static str,
    /// Which rows go: an SQL condition over the table's columns in which `$1` is the retention
    /// in seconds, e.g. `create_time < now() - make_interval(secs => $1)`. Static text of the
    /// service, never request input.
    pub condition: &'static str,
    /// How long rows are kept (bound as `$1`).
    pub keep: Duration,
}

/// What one run removed from one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purged {
    /// The table.
    pub table: &'static str,
    /// Rows deleted.
    pub deleted: u64,
    /// Rows kept because something still references them.
    pub kept: u64,
    /// Whether another replica held the table's purge lock (nothing was done).
    pub skipped: bool,
}

#[derive(diesel::QueryableByName)]
struct Locked {
    #[diesel(sql_type = Bool)]
    locked: bool,
}

#[derive(diesel::QueryableByName)]
struct RowId {
    #[diesel(sql_type = Text)]
    ctid: String,
}

fn seconds(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Runs every rule once, in order (children before parents).
///
/// # Errors
/// A pool or database failure (rules already done stay done).
pub async fn run_once(pool: &DbPool, rules: &[Rule]) -> Result<Vec<Purged>, DbError> {
    let mut conn = pool.get().await?;
    let mut out = Vec::with_capacity(rules.len());
    for rule in rules {
        out.push(purge_table(&mut conn, rule).await?);
    }
    Ok(out)
}

async fn purge_table(conn: &mut AsyncPgConnection, rule: &Rule) -> Result<Purged, DbError> {
    let rule = rule.clone();
    conn.transaction::<_, diesel::result::Error, _>(async move |conn| {
        let locked: Locked = diesel::sql_query(
            "SELECT pg_try_advisory_xact_lock(hashtext('crm.purge.' || current_schema() || '.' \
             || $1)) AS locked",
        )
        .bind::<Text, _>(rule.table)
        .get_result(conn)
        .await?;
        let mut purged = Purged {
            table: rule.table,
            deleted: 0,
            kept: 0,
            skipped: !locked.locked,
        };
        if purged.skipped {
            return Ok(purged);
        }
        diesel::sql_query("SELECT set_config('app.purge', 'on', true)")
            .execute(conn)
            .await?;
        let keep = seconds(rule.keep);
        let batch = format!(
            "DELETE FROM {t} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {t} WHERE {c} LIMIT {BATCH}))",
            t = rule.table,
            c = rule.condition
        );
        loop {
            // In a savepoint: a foreign-key refusal must not end the whole transaction.
            let attempt = conn
                .transaction::<_, diesel::result::Error, _>(async |conn| {
                    diesel::sql_query(&batch)
                        .bind::<BigInt, _>(keep)
                        .execute(conn)
                        .await
                })
                .await;
            match attempt {
                Ok(0) => break,
                Ok(n) => purged.deleted += n as u64,
                Err(diesel::result::Error::DatabaseError(
                    diesel::result::DatabaseErrorKind::ForeignKeyViolation,
                    _,
                )) => {
                    let (deleted, kept) = row_by_row(conn, &rule, keep).await?;
                    purged.deleted += deleted;
                    purged.kept += kept;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(purged)
    })
    .await
    .map_err(DbError::from)
}

async fn row_by_row(
    conn: &mut AsyncPgConnection,
    rule: &Rule,
    keep: i64,
) -> Result<(u64, u64), diesel::result::Error> {
    let candidates: Vec<RowId> = diesel::sql_query(format!(
        "SELECT ctid::text AS ctid FROM {t} WHERE {c} LIMIT {ROW_BY_ROW}",
        t = rule.table,
        c = rule.condition
    ))
    .bind::<BigInt, _>(keep)
    .load(conn)
    .await?;
    let delete = format!("DELETE FROM {} WHERE ctid = $1::tid", rule.table);
    let (mut deleted, mut kept) = (0u64, 0u64);
    for row in candidates {
        let one = conn
            .transaction::<_, diesel::result::Error, _>(async |conn| {
                diesel::sql_query(&delete)
                    .bind::<Text, _>(&row.ctid)
                    .execute(conn)
                    .await
            })
            .await;
        match one {
            Ok(n) => deleted += n as u64,
            Err(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::ForeignKeyViolation,
                _,
            )) => kept += 1,
            Err(e) => return Err(e),
        }
    }
    Ok((deleted, kept))
}

/// A running purge job; stops when dropped.
#[derive(Debug)]
pub struct PurgeJob(tokio::task::JoinHandle<()>);

impl Drop for PurgeJob {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs [`run_once`] a minute after start and then every `every`, logging what it removed.
#[must_use]
pub fn spawn(pool: DbPool, rules: Vec<Rule>, every: Duration) -> PurgeJob {
    PurgeJob(tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(60).min(every)).await;
        loop {
            match run_once(&pool, &rules).await {
                Ok(done) => {
                    for p in done.iter().filter(|p| p.deleted > 0 || p.kept > 0) {
                        tracing::info!(
                            table = p.table,
                            deleted = p.deleted,
                            kept = p.kept,
                            "purged"
                        );
                    }
                }
                Err(e) => tracing::warn!(error = %e, "purge failed; retrying next round"),
            }
            tokio::time::sleep(every).await;
        }
    }))
}

/// Rules every service has: idempotency keys and outbox events past their retention.
#[must_use]
pub fn standard_rules(retention: &Retention) -> Vec<Rule> {
    vec![
        Rule {
            table: "idempotency_keys",
            condition: "create_time < now() - make_interval(secs => $1)",
            keep: retention.idempotency,
        },
        Rule {
            table: "outbox",
            condition: "occur_time < now() - make_interval(secs => $1)",
            keep: retention.outbox,
        },
    ]
}

/// How long what grows per call is kept.
#[derive(Debug, Clone)]
pub struct Retention {
    /// Idempotency keys: a retry after this is a new request.
    pub idempotency: Duration,
    /// Outbox events: a consumer must resume within this (the relay to NATS keeps them longer).
    pub outbox: Duration,
    /// Expired revocations, expired sessions, codes and reset tokens are kept this long past
    /// their expiry (for investigation), throttles this long past their last use.
    pub expired: Duration,
    /// How often the job runs.
    pub every: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            idempotency: Duration::from_secs(24 * 3600),
            outbox: Duration::from_secs(7 * 24 * 3600),
            expired: Duration::from_secs(24 * 3600),
            every: Duration::from_secs(3600),
        }
    }
}
