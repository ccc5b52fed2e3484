//! `crm.core.v1.ConversationService`: a thread with a customer on one channel and address.
//! Messages live in [`crate::messages`].

use chrono::{DateTime, Utc};
use crm_auth::{MethodPolicy, permission};
use crm_db::OrgId;
use crm_platform::ApiError;
use crm_platform::api::names::child_name;
use crm_platform::api::time::optional_timestamp;
use crm_platform::api::validate::{self, Violations};
use crm_proto::core_v1::{
    Channel, Conversation, CreateConversationRequest, DeleteConversationRequest,
    GetConversationRequest, ListConversationsRequest, ListConversationsResponse,
    UndeleteConversationRequest, UpdateConversationRequest,
};
use crm_resource::{BoxFuture, Field, Resource, Row};
use diesel::prelude::*;
use diesel_async::AsyncPgConnection;
use uuid::Uuid;

use crate::schema::conversations::{self, dsl as cv};

/// The permission of every RPC.
#[must_use]
pub fn policy() -> MethodPolicy {
    let send = permission::MESSAGES_SEND;
    ConversationApi::policy(
        permission::MESSAGES_READ,
        send,
        permission::CUSTOMERS_DELETE,
    )
}

/// The columns of `core.conversations` besides the standard ones.
#[derive(Debug, Clone, Default, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = conversations, treat_none_as_null = true)]
pub struct ConversationFields {
    pub customer_id: Uuid,
    pub channel: i16,
    pub participant: String,
    pub subject: String,
    pub last_message_time: Option<DateTime<Utc>>,
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

/// Validates the customer's address on `channel`.
pub fn validate_participant(v: &mut Violations, field: &str, channel: i32, value: &str) {
    if value.trim().is_empty() {
        let message = "the customer's address on the channel is required";
        v.push(field, "REQUIRED", message);
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

/// The conversation resource.
#[derive(Debug)]
pub struct Conversations;

impl Resource for Conversations {
    type Proto = Conversation;
    type Fields = ConversationFields;
    type Table = conversations::table;
    const RESOURCE_TYPE: &'static str = "core.crm/Conversation";
    const COLLECTION: &'static str = "conversations";
    const FIELD: &'static str = "conversation";
    const TEXT_ORDER: &'static str = "subject";
    const FIELDS: &'static [Field<Self>] = &[
        Field::<Self>::updatable("customer", |i, x, f| {
            if let Some(id) = i.reference(&x.customer, "customers") {
                f.customer_id = id;
            }
        })
        .filter(|n, op, v| crm_resource::filter_reference!(cv::customer_id, n, op, v, "customers")),
        Field::<Self>::create_only("channel", |i, x, f| {
            let message = "SMS, EMAIL or CHAT";
            if let Some(c) = i.specified::<Channel>(x.channel, "INVALID_CHANNEL", message) {
                f.channel = c;
            }
        })
        .filter(|n, op, v| {
            let number = crm_db::filter::enum_number(v, "CHANNEL_", Channel::from_str_name)?;
            crm_db::filter_enum!(cv::channel, n, op, number)
        }),
        Field::<Self>::create_only("participant", |i, x, f| {
            let field = i.field().to_owned();
            i.check(|v| validate_participant(v, &field, x.channel, &x.participant));
            f.participant = normalized_participant(x.channel, &x.participant);
        })
        .filter(|n, op, v| crm_db::filter_text!(cv::participant, n, op, v)),
        Field::<Self>::updatable("subject", |i, x, f| f.subject = i.trimmed(&x.subject, 200))
            .filter(|n, op, v| crm_db::filter_text!(cv::subject, n, op, v)),
        Field::<Self>::output("last_message_time"),
    ];

    fn to_proto(org: Uuid, f: ConversationFields) -> Conversation {
        Conversation {
            customer: child_name(org, "customers", f.customer_id),
            channel: i32::from(f.channel),
            participant: f.participant,
            subject: f.subject,
            last_message_time: optional_timestamp(f.last_message_time),
            ..Conversation::default()
        }
    }
    fn order_text(f: &ConversationFields) -> &str {
        &f.subject
    }
    fn before_write<'a>(
        conn: &'a AsyncPgConnection,
        org: OrgId,
        _current: Option<&'a Row<ConversationFields>>,
        next: &'a mut ConversationFields,
        paths: &'a [&'static str],
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if paths.contains(&"customer") {
                crate::customers::require_live(conn, org, next.customer_id).await?;
            }
            Ok(())
        })
    }
}

crm_resource::standard_store!(
    Conversations,
    table = conversations,
    time = create_time,
    text = subject
);

crm_resource::standard_service! {
    service = "crm.core.v1.ConversationService",
    server = crm_proto::core_v1::conversation_service_server::ConversationService,
    resource = Conversations,
    api = ConversationApi,
    field = conversation;
    create = create_conversation(CreateConversationRequest, id = conversation_id);
    get = get_conversation(GetConversationRequest, full = |_| false);
    list = list_conversations(ListConversationsRequest, full = |_| false)
        -> ListConversationsResponse.conversations;
    update = update_conversation(UpdateConversationRequest);
    delete = delete_conversation(DeleteConversationRequest);
    undelete = undelete_conversation(UndeleteConversationRequest);
}
