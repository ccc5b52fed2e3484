//! The contract sweep. Each tick it finds the organizations with active contracts (a
//! read-only discovery policy) and, in each organization's own transaction, claims the
//! contracts whose `next_check_time` has come (`FOR UPDATE SKIP LOCKED`, so replicas share
//! them and never repeat one):
//!
//! - every visit of the schedule within [`SERVICE_DUE_LEAD`] of its date and not yet announced
//!   is announced by a `crm.core.v1.ServiceDue.announced` event (the count of announced visits
//!   moves on in the same transaction: once per visit);
//! - at the term's end the contract renews (`auto_renew`: one more term, a `renewed` event) or
//!   expires (an `expired` event), with an audit entry either way.

use chrono::{DateTime, Utc};
use crm_db::{DbPool, OrgId};
use crm_platform::ApiError;
use crm_platform::api::names::child_name;
use crm_platform::api::time::timestamp;
use crm_proto::core_v1::{ContractStatus, ScheduledService, ServiceDue};
use crm_resource::input::Amount;
use crm_resource::{Store, Write};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::{ContractFields, Contracts, SERVICE_DUE_LEAD, contract_status};
use crate::schema::contracts::dsl as co;

/// Who the sweep's writes are recorded as.
pub const ACTOR: &str = "services/contract-sweep";
/// Contracts claimed per organization per transaction.
const BATCH: i64 = 100;
/// Renewals a contract can have (the column's limit).
const MAX_RENEWALS: i32 = 1_000;

/// What one tick did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tick {
    /// Visits announced.
    pub announced: usize,
    /// Terms renewed.
    pub renewed: usize,
    /// Contracts expired.
    pub expired: usize,
}

/// Runs one tick as of `now`.
///
/// # Errors
/// A pool or database failure (work already committed stays done).
pub async fn tick(pool: &DbPool, now: DateTime<Utc>) -> Result<Tick, ApiError> {
    let mut out = Tick::default();
    for org in discover(pool, now).await? {
        loop {
            let done = batch(pool, org, now).await?;
            out.announced += done.announced;
            out.renewed += done.renewed;
            out.expired += done.expired;
            if done.claimed < BATCH {
                break;
            }
        }
    }
    Ok(out)
}

/// Ticks every `every` until the handle is dropped.
#[must_use]
pub fn spawn(pool: DbPool, every: std::time::Duration) -> tokio::task::JoinHandle<()> {
    crate::spawn_every(pool, every, "contract sweep", |pool| async move {
        tick(&pool, Utc::now()).await
    })
}

async fn discover(pool: &DbPool, now: DateTime<Utc>) -> Result<Vec<Uuid>, ApiError> {
    let mut conn = pool.get().await.map_err(crm_db::DbError::from)?;
    let orgs = diesel_async::AsyncConnection::transaction::<_, diesel::result::Error, _>(
        &mut *conn,
        async |conn| {
            diesel::sql_query("SELECT set_config('app.scheduler', 'on', true)")
                .execute(conn)
                .await?;
            co::contracts
                .filter(co::next_check_time.le(now))
                .select(co::organization_id)
                .distinct()
                .load(conn)
                .await
        },
    )
    .await?;
    Ok(orgs)
}

struct Batch {
    claimed: i64,
    announced: usize,
    renewed: usize,
    expired: usize,
}

/// Claims up to [`BATCH`] due contracts of `org` and brings each up to `now`.
async fn batch(pool: &DbPool, org: Uuid, now: DateTime<Utc>) -> Result<Batch, ApiError> {
    crm_db::tenant::transaction(pool, org, move |conn| {
        Box::pin(async move {
            let ids: Vec<Uuid> = co::contracts
                .filter(co::organization_id.eq(org))
                .filter(co::status.eq(contract_status(ContractStatus::Active)))
                .filter(co::delete_time.is_null())
                .filter(co::next_check_time.le(now))
                .order(co::next_check_time.asc())
                .limit(BATCH)
                .select(co::id)
                .for_update()
                .skip_locked()
                .load(&mut { conn })
                .await?;
            let call = crate::background_call(org, ACTOR, "crm.core.v1.ContractService/Sweep");
            let w = Write {
                org: OrgId(org),
                call: &call,
                request_id: "",
            };
            let mut out = Batch {
                claimed: i64::try_from(ids.len()).unwrap_or(BATCH),
                announced: 0,
                renewed: 0,
                expired: 0,
            };
            for id in ids {
                let Some(current) = Contracts::find(conn, w.org, id, false).await? else {
                    continue;
                };
                let name = child_name(org, "contracts", id);
                let before = crm_resource::to_proto::<Contracts>(current.clone());
                let mut next = current.fields;
                let mut change = None;
                loop {
                    out.announced += announce(conn, w, &name, &mut next, now).await?;
                    match end_of_term(&mut next, now) {
                        // The new term's visits due within the lead are announced at once.
                        Some(c @ "renewed") => {
                            out.renewed += 1;
                            change = Some(c);
                        }
                        Some(c) => {
                            out.expired += 1;
                            change = Some(c);
                            break;
                        }
                        None => break,
                    }
                }
                next.next_check_time = next.next_check();
                let row = Contracts::update(conn, w.org, id, &next, ACTOR).await?;
                let Some(change) = change else {
                    continue;
                };
                let after = crm_resource::to_proto::<Contracts>(row);
                crm_resource::emit(conn, w, change, &after, &name, None).await?;
                crm_resource::audit::record_change::<Contracts>(
                    conn,
                    w.org,
                    w.entry(&name, crm_resource::audit::Action::Custom(change)),
                    Some(&before),
                    &after,
                    &["status", "renewals", "end_time", "schedule"],
                )
                .await?;
            }
            Ok::<_, ApiError>(out)
        })
    })
    .await
}

/// Announces the visits of `f` due within the lead as of `now` that were not yet announced;
/// answers how many.
async fn announce(
    conn: &diesel_async::AsyncPgConnection,
    w: Write<'_>,
    name: &str,
    f: &mut ContractFields,
    now: DateTime<Utc>,
) -> Result<usize, ApiError> {
    let org = w.org.uuid();
    let visits = f.visits();
    let from = usize::try_from(f.announced).unwrap_or(usize::MAX);
    let mut n = 0;
    for (seq, due) in visits.iter().enumerate().skip(from) {
        if *due - SERVICE_DUE_LEAD > now {
            break;
        }
        let sequence = i32::try_from(seq + 1).unwrap_or(i32::MAX);
        let event = ServiceDue {
            contract: name.to_owned(),
            customer: child_name(org, "customers", f.customer_id),
            service: Some(ScheduledService {
                sequence,
                due_time: Some(timestamp(*due)),
                catalog_item: f
                    .catalog_item_id
                    .map(|id| child_name(org, "catalogItems", id))
                    .unwrap_or_default(),
                property: child_name(org, "properties", f.property_id),
            }),
            price: Amount::proto_of(Some(&f.currency), f.price_nanos),
        };
        crm_resource::emit(conn, w, "announced", &event, name, None).await?;
        f.announced = sequence;
        n += 1;
    }
    Ok(n)
}

/// At or past the term's end: renews an auto-renewing contract or expires it; answers the
/// change, if any.
fn end_of_term(f: &mut ContractFields, now: DateTime<Utc>) -> Option<&'static str> {
    let end = f.end_time()?;
    if now < end {
        return None;
    }
    if f.auto_renew && f.renewals < MAX_RENEWALS {
        f.renewals += 1;
        Some("renewed")
    } else {
        f.status = contract_status(ContractStatus::Expired);
        Some("expired")
    }
}
