//! Queries of SMS consents and their history, and of the time zone of whoever has a phone.
//! Each runs in the caller's tenant transaction, filters on the organization explicitly and
//! returns a `QueryResult`.

use chrono::{DateTime, Utc};
use crm_db::{AsyncPgConnection, OrgId};
use crm_proto::core_v1::{ConsentMethod, ConsentStatus, MessagePurpose};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use crate::ids::MessageId;
pub use crate::messages::store::PurposeColumn;
use crate::schema::consent_events::{self, dsl as ev};
use crate::schema::contacts::dsl as ct;
use crate::schema::customers::dsl as cu;
use crate::schema::sms_consents::{self, dsl as sc};

crm_db::enum_column!(ConsentState, ConsentStatus, "`sms_consents.status`.");
crm_db::enum_column!(
    MethodColumn,
    ConsentMethod,
    "How consent was given or withdrawn."
);

/// A row of `core.sms_consents`.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = sms_consents)]
pub struct ConsentRow {
    pub phone: String,
    pub purpose: PurposeColumn,
    pub status: ConsentState,
    pub method: MethodColumn,
    pub source: String,
    pub disclosure_version: String,
    pub update_time: DateTime<Utc>,
    pub updated_by: String,
}

/// A row of `core.consent_events`.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = consent_events)]
pub struct EventRow {
    pub id: Uuid,
    pub phone: String,
    pub purpose: PurposeColumn,
    pub kind: String,
    pub method: MethodColumn,
    pub source: String,
    pub disclosure_version: String,
    pub detail: String,
    pub message_id: Option<MessageId>,
    pub actor: String,
    pub occur_time: DateTime<Utc>,
}

/// The status of the consent of `phone` for `purpose`, if one was ever recorded.
pub async fn status(
    conn: &AsyncPgConnection,
    org: OrgId,
    phone: &str,
    purpose: MessagePurpose,
) -> QueryResult<Option<ConsentStatus>> {
    let status: Option<ConsentState> = sc::sms_consents
        .filter(sc::organization_id.eq(org))
        .filter(sc::phone.eq(phone))
        .filter(sc::purpose.eq(PurposeColumn(purpose)))
        .select(sc::status)
        .first(&mut { conn })
        .await
        .optional()?;
    Ok(status.map(ConsentStatus::from))
}

/// The consent of `phone` for `purpose`, locked for this transaction.
pub async fn lock(
    conn: &AsyncPgConnection,
    org: OrgId,
    phone: &str,
    purpose: MessagePurpose,
) -> QueryResult<Option<ConsentRow>> {
    sc::sms_consents
        .filter(sc::organization_id.eq(org))
        .filter(sc::phone.eq(phone))
        .filter(sc::purpose.eq(PurposeColumn(purpose)))
        .select(ConsentRow::as_select())
        .for_update()
        .first(&mut { conn })
        .await
        .optional()
}

/// A consent as it is to be stored.
#[derive(Debug, Clone, Copy)]
pub struct Upsert<'a> {
    pub phone: &'a str,
    pub purpose: MessagePurpose,
    pub status: ConsentStatus,
    pub method: ConsentMethod,
    pub source: &'a str,
    pub disclosure_version: &'a str,
    pub revoked_by_keyword: bool,
    pub update_time: DateTime<Utc>,
    pub updated_by: &'a str,
}

/// Stores a consent, new or changed.
pub async fn upsert(
    conn: &AsyncPgConnection,
    org: OrgId,
    c: Upsert<'_>,
) -> QueryResult<ConsentRow> {
    let (status, method) = (ConsentState(c.status), MethodColumn(c.method));
    diesel::insert_into(sc::sms_consents)
        .values((
            sc::organization_id.eq(org),
            sc::phone.eq(c.phone),
            sc::purpose.eq(PurposeColumn(c.purpose)),
            sc::status.eq(status),
            sc::method.eq(method),
            sc::source.eq(c.source),
            sc::disclosure_version.eq(c.disclosure_version),
            sc::revoked_by_keyword.eq(c.revoked_by_keyword),
            sc::update_time.eq(c.update_time),
            sc::updated_by.eq(c.updated_by),
        ))
        .on_conflict((sc::organization_id, sc::phone, sc::purpose))
        .do_update()
        .set((
            sc::status.eq(status),
            sc::method.eq(method),
            sc::source.eq(c.source),
            sc::disclosure_version.eq(c.disclosure_version),
            sc::revoked_by_keyword.eq(c.revoked_by_keyword),
            sc::update_time.eq(c.update_time),
            sc::updated_by.eq(c.updated_by),
        ))
        .returning(ConsentRow::as_returning())
        .get_result(&mut { conn })
        .await
}

/// The purposes STOP revoked for `phone`, with the disclosure version each was granted under.
pub async fn revoked_by_keyword(
    conn: &AsyncPgConnection,
    org: OrgId,
    phone: &str,
) -> QueryResult<Vec<(PurposeColumn, String)>> {
    sc::sms_consents
        .filter(sc::organization_id.eq(org))
        .filter(sc::phone.eq(phone))
        .filter(sc::status.eq(ConsentState(ConsentStatus::Revoked)))
        .filter(sc::revoked_by_keyword.eq(true))
        .select((sc::purpose, sc::disclosure_version))
        .load(&mut { conn })
        .await
}

/// One entry of the consent history.
#[derive(Debug, Clone, Default)]
pub struct NewEvent<'a> {
    /// Phone.
    pub phone: &'a str,
    /// Purpose (unspecified for events about every purpose, such as HELP).
    pub purpose: MessagePurpose,
    /// `granted`, `revoked`, `help_requested`, `refused`.
    pub kind: &'a str,
    /// Method (unspecified when none applies).
    pub method: ConsentMethod,
    /// Source.
    pub source: &'a str,
    /// Disclosure version.
    pub disclosure_version: &'a str,
    /// Detail.
    pub detail: &'a str,
    /// A message involved.
    pub message_id: Option<MessageId>,
    /// Who.
    pub actor: &'a str,
}

/// Appends to the consent history.
pub async fn insert_event(
    conn: &AsyncPgConnection,
    org: OrgId,
    e: NewEvent<'_>,
) -> QueryResult<()> {
    diesel::insert_into(ev::consent_events)
        .values((
            ev::organization_id.eq(org),
            ev::id.eq(Uuid::now_v7()),
            ev::phone.eq(e.phone),
            ev::purpose.eq(PurposeColumn(e.purpose)),
            ev::kind.eq(e.kind),
            ev::method.eq(MethodColumn(e.method)),
            ev::source.eq(e.source),
            ev::disclosure_version.eq(e.disclosure_version),
            ev::detail.eq(e.detail),
            ev::message_id.eq(e.message_id),
            ev::actor.eq(e.actor),
        ))
        .execute(&mut { conn })
        .await
        .map(|_| ())
}

/// Up to `limit` history entries, newest first (ids are UUIDv7), before `before`, of `phone`
/// when given.
pub async fn events(
    conn: &AsyncPgConnection,
    org: OrgId,
    phone: &str,
    before: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<EventRow>> {
    let mut q = ev::consent_events
        .filter(ev::organization_id.eq(org))
        .order(ev::id.desc())
        .limit(limit)
        .select(EventRow::as_select())
        .into_boxed();
    if !phone.is_empty() {
        q = q.filter(ev::phone.eq(phone.to_owned()));
    }
    if let Some(id) = before {
        q = q.filter(ev::id.lt(id));
    }
    q.load(&mut { conn }).await
}

/// The time zone set on a live customer with `phone`, else on the customer of a live contact
/// with it (the oldest of each).
pub async fn time_zone_of(
    conn: &AsyncPgConnection,
    org: OrgId,
    phone: &str,
) -> QueryResult<Option<String>> {
    let direct: Option<String> = cu::customers
        .filter(cu::organization_id.eq(org))
        .filter(cu::phone.eq(phone))
        .filter(cu::delete_time.is_null())
        .filter(cu::time_zone.ne(""))
        .order(cu::id)
        .select(cu::time_zone)
        .first(&mut { conn })
        .await
        .optional()?;
    if direct.is_some() {
        return Ok(direct);
    }
    ct::contacts
        .inner_join(
            cu::customers.on(cu::organization_id
                .eq(ct::organization_id)
                .and(cu::id.eq(ct::customer_id))),
        )
        .filter(ct::organization_id.eq(org))
        .filter(ct::phone.eq(phone))
        .filter(ct::delete_time.is_null())
        .filter(cu::time_zone.ne(""))
        .order(ct::id)
        .select(cu::time_zone)
        .first(&mut { conn })
        .await
        .optional()
}
