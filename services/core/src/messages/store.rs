//! Queries of messages, and of the conversation a message joins. Each runs in the caller's
//! tenant transaction, filters on the organization explicitly and returns a `QueryResult`.

use chrono::{DateTime, Utc};
use crm_db::{AsyncPgConnection, OrgId};
use crm_proto::core_v1::{Channel, DeliveryStatus, Direction, MessagePurpose};
use crm_resource::Standard;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::conversations::ConversationFields;
use crate::ids::{ConversationId, CustomerId, MessageId};
use crate::schema::contacts::dsl as ct;
use crate::schema::conversations::dsl as cv;
use crate::schema::customers::dsl as cu;
use crate::schema::messages::{self, dsl as m};

crm_db::enum_column!(ChannelColumn, Channel, "`messages.channel`.");
crm_db::enum_column!(DirectionColumn, Direction, "`messages.direction`.");
crm_db::enum_column!(PurposeColumn, MessagePurpose, "`messages.purpose`.");
crm_db::enum_column!(
    DeliveryColumn,
    DeliveryStatus,
    "`messages.delivery_status`."
);

/// A row of `core.messages`.
#[derive(Debug, Clone, Queryable, Selectable, QueryableByName)]
#[diesel(table_name = messages)]
pub struct MessageRow {
    pub organization_id: OrgId,
    pub id: MessageId,
    pub conversation_id: ConversationId,
    pub customer_id: CustomerId,
    pub channel: ChannelColumn,
    pub direction: DirectionColumn,
    pub purpose: PurposeColumn,
    pub body: String,
    pub attachment_uris: Vec<String>,
    pub delivery_status: DeliveryColumn,
    pub status_reason: String,
    pub provider_message_id: Option<String>,
    pub sender: String,
    pub create_time: DateTime<Utc>,
    pub status_time: DateTime<Utc>,
}

/// A message to insert.
#[derive(Debug, Clone, Copy)]
pub struct NewMessage<'a> {
    pub id: MessageId,
    pub conversation_id: ConversationId,
    pub customer_id: CustomerId,
    pub channel: Channel,
    pub direction: Direction,
    pub purpose: MessagePurpose,
    pub body: &'a str,
    pub attachment_uris: &'a [String],
    pub status: DeliveryStatus,
    pub status_reason: &'a str,
    pub provider_message_id: Option<&'a str>,
    pub sender: &'a str,
}

/// Inserts a message and moves its conversation's last-message time.
pub async fn insert(
    conn: &AsyncPgConnection,
    org: OrgId,
    n: NewMessage<'_>,
) -> QueryResult<MessageRow> {
    let row = diesel::insert_into(m::messages)
        .values((
            m::organization_id.eq(org),
            m::id.eq(n.id),
            m::conversation_id.eq(n.conversation_id),
            m::customer_id.eq(n.customer_id),
            m::channel.eq(ChannelColumn(n.channel)),
            m::direction.eq(DirectionColumn(n.direction)),
            m::purpose.eq(PurposeColumn(n.purpose)),
            m::body.eq(n.body),
            m::attachment_uris.eq(n.attachment_uris),
            m::delivery_status.eq(DeliveryColumn(n.status)),
            m::status_reason.eq(n.status_reason),
            m::provider_message_id.eq(n.provider_message_id),
            m::sender.eq(n.sender),
        ))
        .returning(MessageRow::as_returning())
        .get_result(&mut { conn })
        .await?;
    diesel::update(cv::conversations)
        .filter(cv::organization_id.eq(org))
        .filter(cv::id.eq(n.conversation_id))
        .set(cv::last_message_time.eq(row.create_time))
        .execute(&mut { conn })
        .await?;
    Ok(row)
}

/// Message `id` of `org`.
pub async fn get(
    conn: &AsyncPgConnection,
    org: OrgId,
    id: MessageId,
) -> QueryResult<Option<MessageRow>> {
    m::messages
        .filter(m::organization_id.eq(org))
        .filter(m::id.eq(id))
        .select(MessageRow::as_select())
        .first(&mut { conn })
        .await
        .optional()
}

/// The message a provider knows as `provider_id`.
pub async fn by_provider_id(
    conn: &AsyncPgConnection,
    org: OrgId,
    provider_id: &str,
) -> QueryResult<Option<MessageRow>> {
    m::messages
        .filter(m::organization_id.eq(org))
        .filter(m::provider_message_id.eq(provider_id))
        .select(MessageRow::as_select())
        .first(&mut { conn })
        .await
        .optional()
}

/// The message a delivery report is about, locked for this transaction: `id` when the report
/// names it, else the one with `provider_id`.
pub async fn lock_reported(
    conn: &AsyncPgConnection,
    org: OrgId,
    id: Option<MessageId>,
    provider_id: &str,
) -> QueryResult<Option<MessageRow>> {
    let base = m::messages
        .filter(m::organization_id.eq(org))
        .select(MessageRow::as_select());
    match id {
        Some(id) => {
            base.filter(m::id.eq(id))
                .for_update()
                .first(&mut { conn })
                .await
        }
        None => {
            base.filter(m::provider_message_id.eq(provider_id))
                .for_update()
                .first(&mut { conn })
                .await
        }
    }
    .optional()
}

/// A delivery report's effect on a message.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    pub provider_id: &'a str,
    pub status: DeliveryStatus,
    pub reason: &'a str,
    pub time: DateTime<Utc>,
}

/// Records a delivery report's effect on message `id`.
pub async fn set_delivery(
    conn: &AsyncPgConnection,
    org: OrgId,
    id: MessageId,
    d: Delivery<'_>,
) -> QueryResult<MessageRow> {
    diesel::update(m::messages)
        .filter(m::organization_id.eq(org))
        .filter(m::id.eq(id))
        .set((
            m::provider_message_id.eq(d.provider_id),
            m::delivery_status.eq(DeliveryColumn(d.status)),
            m::status_reason.eq(d.reason),
            m::status_time.eq(d.time),
        ))
        .returning(MessageRow::as_returning())
        .get_result(&mut { conn })
        .await
}

/// Up to `limit` messages of `conversation` after `after`, oldest first (ids are UUIDv7).
pub async fn page(
    conn: &AsyncPgConnection,
    org: OrgId,
    conversation: ConversationId,
    after: Option<MessageId>,
    limit: i64,
) -> QueryResult<Vec<MessageRow>> {
    let mut q = m::messages
        .filter(m::organization_id.eq(org))
        .filter(m::conversation_id.eq(conversation))
        .order(m::id.asc())
        .limit(limit)
        .select(MessageRow::as_select())
        .into_boxed();
    if let Some(id) = after {
        q = q.filter(m::id.gt(id));
    }
    q.load(&mut { conn }).await
}

/// The live conversation on `channel` with `from`.
pub async fn live_conversation(
    conn: &AsyncPgConnection,
    org: OrgId,
    channel: Channel,
    from: &str,
) -> QueryResult<Option<(Standard, ConversationFields)>> {
    cv::conversations
        .filter(cv::organization_id.eq(org))
        .filter(cv::channel.eq(ChannelColumn(channel)))
        .filter(cv::participant.eq(from))
        .filter(cv::delete_time.is_null())
        .select((
            crm_resource::standard_columns!(cv),
            ConversationFields::as_select(),
        ))
        .first(&mut { conn })
        .await
        .optional()
}

/// The live customer whose phone or e-mail is `address`, else the customer of a live contact
/// with it (the oldest of each).
pub async fn customer_at(
    conn: &AsyncPgConnection,
    org: OrgId,
    address: &str,
) -> QueryResult<Option<CustomerId>> {
    let direct: Option<CustomerId> = cu::customers
        .filter(cu::organization_id.eq(org))
        .filter(cu::phone.eq(address).or(cu::email.eq(address)))
        .filter(cu::delete_time.is_null())
        .order(cu::id)
        .select(cu::id)
        .first(&mut { conn })
        .await
        .optional()?;
    if direct.is_some() {
        return Ok(direct);
    }
    ct::contacts
        .filter(ct::organization_id.eq(org))
        .filter(ct::phone.eq(address).or(ct::email.eq(address)))
        .filter(ct::delete_time.is_null())
        .order(ct::id)
        .select(ct::customer_id)
        .first(&mut { conn })
        .await
        .optional()
}
