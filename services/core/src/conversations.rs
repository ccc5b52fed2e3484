//! `crm.core.v1.ConversationService`: a thread with a customer on one channel and address.
//! Messages live in [`crate::messages`].

use chrono::{DateTime, Utc};
use crm_auth::{MethodPolicy, permission};
use crm_db::filter::{self, BoxedPredicate, Filter, FilterError, Op, Value};
use crm_platform::ApiError;
use crm_platform::api::names::child_name;
use crm_platform::api::time::{optional_timestamp, timestamp};
use crm_platform::api::validate::{self, Violations};
use crm_proto::core_v1::{
    Channel, Conversation, CreateConversationRequest, DeleteConversationRequest,
    GetConversationRequest, ListConversationsRequest, ListConversationsResponse,
    UndeleteConversationRequest, UpdateConversationRequest,
};
use diesel::prelude::*;
use diesel_async::AsyncPgConnection;
use uuid::Uuid;

use crate::contacts::require_live_customer;
use crate::schema::conversations::{self, dsl as cv};
use crm_resource::id_in;
use crm_resource::{BoxFuture, Meta, Order, OrderField, Resource, reference};

const SERVICE: &str = "crm.core.v1.ConversationService";

/// The permission of every RPC.
#[must_use]
pub fn policy() -> MethodPolicy {
    crm_resource::policy(
        SERVICE,
        &[
            ("CreateConversation", permission::MESSAGES_SEND),
            ("GetConversation", permission::MESSAGES_READ),
            ("ListConversations", permission::MESSAGES_READ),
            ("UpdateConversation", permission::MESSAGES_SEND),
            ("DeleteConversation", permission::CUSTOMERS_DELETE),
            ("UndeleteConversation", permission::CUSTOMERS_DELETE),
        ],
    )
}

/// A row of `core.conversations`.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = conversations)]
pub struct ConversationRow {
    pub organization_id: Uuid,
    pub id: Uuid,
    pub customer_id: Uuid,
    pub channel: i16,
    pub participant: String,
    pub subject: String,
    pub last_message_time: Option<DateTime<Utc>>,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
    pub delete_time: Option<DateTime<Utc>>,
    pub purge_time: Option<DateTime<Utc>>,
    pub revision: i64,
    pub created_by: String,
    pub updated_by: String,
}

/// A conversation to insert.
#[derive(Debug, Insertable)]
#[diesel(table_name = conversations)]
pub struct NewConversation {
    pub organization_id: Uuid,
    pub id: Uuid,
    pub customer_id: Uuid,
    pub channel: i16,
    pub participant: String,
    pub subject: String,
    pub created_by: String,
    pub updated_by: String,
}

/// Changes to a conversation.
#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = conversations)]
pub struct ConversationChanges {
    customer_id: Option<Uuid>,
    subject: Option<String>,
}

/// The participant address as stored: phones as given (E.164), emails lower-cased.
#[must_use]
pub fn normalized_participant(channel: i32, participant: &str) -> String {
    if channel == Channel::Email as i32 {
        participant.trim().to_lowercase()
    } else {
        participant.trim().to_owned()
    }
}

impl NewConversation {
    fn from_proto(org: Uuid, id: Uuid, x: &Conversation, actor: &str) -> Self {
        Self {
            organization_id: org,
            id,
            customer_id: id_in(&x.customer, "customers"),
            channel: i16::try_from(x.channel).unwrap_or(0),
            participant: normalized_participant(x.channel, &x.participant),
            subject: x.subject.trim().to_owned(),
            created_by: actor.to_owned(),
            updated_by: actor.to_owned(),
        }
    }
}

impl ConversationChanges {
    fn from_mask(x: &Conversation, paths: &[&str]) -> Self {
        let mut ch = Self::default();
        for path in paths {
            match *path {
                "customer" => ch.customer_id = Some(id_in(&x.customer, "customers")),
                "subject" => ch.subject = Some(x.subject.trim().to_owned()),
                _ => {}
            }
        }
        ch
    }
}

/// The conversation resource.
#[derive(Debug)]
pub struct Conversations;

const FILTER_FIELDS: &[&str] = &[
    "customer",
    "channel",
    "participant",
    "subject",
    "create_time",
    "update_time",
];

fn leaf(
    field: &str,
    op: Op,
    value: &Value,
) -> Result<BoxedPredicate<conversations::table>, FilterError> {
    match field {
        "customer" => {
            crm_resource::filter_reference!(cv::customer_id, field, op, value, "customers")
        }
        "channel" => crm_db::filter_enum!(
            cv::channel,
            field,
            op,
            crm_db::filter::enum_number(value, "CHANNEL_", Channel::from_str_name)?
        ),
        "participant" => crm_db::filter_text!(cv::participant, field, op, value),
        "subject" => crm_db::filter_text!(cv::subject, field, op, value),
        "create_time" => crm_db::filter_time!(cv::create_time, field, op, value),
        "update_time" => crm_db::filter_time!(cv::update_time, field, op, value),
        other => Err(filter::unknown_field(other, FILTER_FIELDS)),
    }
}

/// Validates a participant address for `channel`.
pub fn validate_participant(v: &mut Violations, field: &str, channel: i32, value: &str) {
    if value.trim().is_empty() {
        v.push(
            field,
            "REQUIRED",
            "the customer's address on the channel is required",
        );
        return;
    }
    match Channel::try_from(channel) {
        Ok(Channel::Sms) => validate::optional_phone(v, field, value.trim()),
        Ok(Channel::Email) => validate::optional_email(v, field, value.trim()),
        Ok(Channel::Chat | Channel::Unspecified) | Err(_) => {
            validate::optional_text(v, field, value, 320);
        }
    }
}

impl Resource for Conversations {
    type Proto = Conversation;
    type Row = ConversationRow;
    const RESOURCE_TYPE: &'static str = "core.crm/Conversation";
    const COLLECTION: &'static str = "conversations";
    const FIELD: &'static str = "conversation";
    const UPDATABLE: &'static [&'static str] = &["customer", "subject"];
    const CREATE_ONLY: &'static [&'static str] = &["channel", "participant"];
    const OUTPUT_ONLY: &'static [&'static str] = &[
        "name",
        "last_message_time",
        "create_time",
        "update_time",
        "delete_time",
        "purge_time",
        "etag",
        "creator",
        "last_modifier",
    ];
    const TEXT_ORDER: &'static str = "subject";

    fn name(x: &Conversation) -> &str {
        &x.name
    }
    fn etag(x: &Conversation) -> &str {
        &x.etag
    }
    fn meta(row: &ConversationRow) -> Meta {
        Meta {
            revision: row.revision,
            deleted: row.delete_time.is_some(),
        }
    }
    fn sort_key(row: &ConversationRow, field: OrderField) -> Vec<String> {
        let value = match field {
            OrderField::CreateTime => row.create_time.to_rfc3339(),
            OrderField::UpdateTime => row.update_time.to_rfc3339(),
            OrderField::DisplayName => row.subject.clone(),
        };
        Order::key(value, row.id)
    }
    fn to_proto(row: ConversationRow) -> Conversation {
        let ConversationRow {
            organization_id,
            id,
            customer_id,
            channel,
            participant,
            subject,
            last_message_time,
            create_time,
            update_time,
            delete_time,
            purge_time,
            revision,
            created_by,
            updated_by,
        } = row;
        Conversation {
            name: child_name(organization_id, "conversations", id),
            customer: child_name(organization_id, "customers", customer_id),
            channel: i32::from(channel),
            participant,
            subject,
            last_message_time: optional_timestamp(last_message_time),
            create_time: Some(timestamp(create_time)),
            update_time: Some(timestamp(update_time)),
            delete_time: optional_timestamp(delete_time),
            purge_time: optional_timestamp(purge_time),
            etag: crm_db::etag::from_revision(revision),
            creator: created_by,
            last_modifier: updated_by,
        }
    }
    fn validate(v: &mut Violations, org: Option<Uuid>, x: &Conversation, paths: &[&str]) {
        for path in paths {
            let field = format!("conversation.{path}");
            match *path {
                "customer" => {
                    reference(v, org, &field, &x.customer, "customers");
                }
                "channel" => match Channel::try_from(x.channel) {
                    Ok(Channel::Unspecified) | Err(_) => {
                        v.push(field, "INVALID_CHANNEL", "SMS, EMAIL or CHAT");
                    }
                    Ok(_) => {}
                },
                "participant" => validate_participant(v, &field, x.channel, &x.participant),
                "subject" => validate::optional_text(v, &field, &x.subject, 200),
                _ => {}
            }
        }
    }
    fn check_filter(f: &Filter) -> Result<(), FilterError> {
        filter::compile(f, &leaf).map(|_| ())
    }
    fn before_write<'a>(
        conn: &'a AsyncPgConnection,
        org: Uuid,
        _current: Option<&'a ConversationRow>,
        x: &'a Conversation,
        paths: &'a [&'static str],
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if paths.contains(&"customer") {
                require_live_customer(conn, org, id_in(&x.customer, "customers"), &x.customer)
                    .await?;
            }
            Ok(())
        })
    }
}

crm_resource::standard_store!(
    Conversations,
    conversations,
    create_time,
    subject,
    ConversationRow,
    NewConversation,
    ConversationChanges,
    leaf
);

crm_resource::standard_service! {
    crm_proto::core_v1::conversation_service_server::ConversationService, Conversations => ConversationApi,
    "crm.core.v1.ConversationService", conversation;
    create_conversation(CreateConversationRequest, conversation_id);
    get_conversation(GetConversationRequest, |_| false);
    list_conversations(ListConversationsRequest, |_| false)
        -> ListConversationsResponse.conversations;
    update_conversation(UpdateConversationRequest);
    delete_conversation(DeleteConversationRequest);
    undelete_conversation(UndeleteConversationRequest);
}
