//! `crm.core.v1.MessageService`: sending (through the consent check), inbound messages with
//! SMS keywords, provider delivery reports, reads, and full-text search over messages and
//! customers.

pub mod store;

use chrono::Utc;
use crm_auth::layer::principal_of;
use crm_auth::{MethodPolicy, permission};
use crm_db::OrgId;
use crm_platform::ApiError;
use crm_platform::api::listing::Listing;
use crm_platform::api::names::{self, child_name};
use crm_platform::api::time::timestamp;
use crm_platform::api::validate::{self, Violations};
use crm_platform::mutation::{self, IdempotencyKey};
use crm_proto::core_v1::message_service_server::MessageService;
use crm_proto::core_v1::{
    Channel, Conversation, CustomerHit, DeliveryStatus, Direction, GetMessageRequest,
    ListMessagesRequest, ListMessagesResponse, Message, MessageHit, MessagePurpose,
    RecordDeliveryReportRequest, RecordInboundMessageRequest, SearchCustomersRequest,
    SearchCustomersResponse, SearchMessagesRequest, SearchMessagesResponse, SendMessageRequest,
};
use diesel_async::AsyncPgConnection;
use tonic::{Request, Response, Status};
use uuid::Uuid;

pub use self::store::MessageRow;
use self::store::{Delivery, NewMessage};
use crate::consent::{self, Keyword, Refusal};
use crate::conversations::{ConversationFields, Conversations, normalized_participant};
use crate::ids::{ConversationId, CustomerId, MessageId};
use crate::status;
use crate::{CoreState, search};
use crm_resource::audit::{self, Action, Change};
use crm_resource::column;
use crm_resource::{Call, Store, Write, emit, not_found};

const SERVICE: &str = "crm.core.v1.MessageService";
const MAX_ATTACHMENTS: usize = 10;

/// RPC requirements.
#[must_use]
pub fn policy() -> MethodPolicy {
    crm_resource::policy(
        SERVICE,
        &[
            ("SendMessage", permission::MESSAGES_SEND),
            ("RecordInboundMessage", permission::MESSAGES_SEND),
            ("RecordDeliveryReport", permission::MESSAGES_SEND),
            ("GetMessage", permission::MESSAGES_READ),
            ("ListMessages", permission::MESSAGES_READ),
            ("SearchMessages", permission::MESSAGES_READ),
            ("SearchCustomers", permission::CUSTOMERS_READ),
        ],
    )
}

impl From<MessageRow> for Message {
    fn from(r: MessageRow) -> Self {
        let MessageRow {
            organization_id,
            id,
            conversation_id,
            customer_id,
            channel,
            direction,
            purpose,
            body,
            attachment_uris,
            delivery_status,
            status_reason,
            provider_message_id,
            sender,
            create_time,
            status_time,
        } = r;
        let org = organization_id.uuid();
        Self {
            name: child_name(org, "messages", id.uuid()),
            conversation: child_name(org, "conversations", conversation_id.uuid()),
            customer: child_name(org, "customers", customer_id.uuid()),
            channel: i32::from(channel),
            direction: i32::from(direction),
            purpose: i32::from(purpose),
            body,
            attachment_uris,
            delivery_status: i32::from(delivery_status),
            status_reason,
            provider_message_id: provider_message_id.unwrap_or_default(),
            sender,
            create_time: Some(timestamp(create_time)),
            status_time: Some(timestamp(status_time)),
        }
    }
}

fn validate_body(v: &mut Violations, channel: Option<Channel>, body: &str) {
    let max = if channel == Some(Channel::Sms) {
        1_600
    } else {
        10_000
    };
    if body.trim().is_empty() {
        v.push("body", "REQUIRED", "the message text is required");
    } else if body.chars().count() > max {
        v.push("body", "TOO_LONG", format!("at most {max} characters"));
    }
    if body.contains('\0') {
        v.push(
            "body",
            "INVALID_CHARACTER",
            "NUL characters are not allowed",
        );
    }
}

fn validate_attachments(v: &mut Violations, uris: &[String]) {
    if uris.len() > MAX_ATTACHMENTS {
        v.push("attachment_uris", "TOO_MANY", "at most 10 attachments");
    }
    if uris.iter().any(|u| {
        !u.starts_with("https://") || u.len() > 2_000 || u.chars().any(char::is_whitespace)
    }) {
        v.push(
            "attachment_uris",
            "INVALID_URI",
            "attachments are https URIs of stored files",
        );
    }
}

/// Records the change of a message in the outbox and the audit log.
async fn record(
    conn: &AsyncPgConnection,
    w: Write<'_>,
    message: &Message,
    change: &str,
    action: Action,
    changes: &[Change],
) -> Result<(), ApiError> {
    emit(conn, w, change, message, &message.name, None).await?;
    audit::record(conn, w.org, w.entry(&message.name, action), changes).await
}

fn status_change(before: i32, after: &Message) -> Vec<Change> {
    let text = |s: i32| {
        DeliveryStatus::try_from(s)
            .map(|s| format!("\"{}\"", s.as_str_name()))
            .unwrap_or_default()
    };
    vec![Change {
        field: "delivery_status".into(),
        before: if before == 0 {
            String::new()
        } else {
            text(before)
        },
        after: text(after.delivery_status),
    }]
}

/// An outbound message's content.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outgoing<'a> {
    /// The message's id, when the caller fixed it.
    pub id: Option<MessageId>,
    pub purpose: MessagePurpose,
    pub body: &'a str,
    pub attachment_uris: &'a [String],
    /// The number whose consent the send needs, when not the SMS recipient's (marketing
    /// email needs the customer's marketing consent, recorded on their phone).
    pub consent_phone: Option<&'a str>,
}

/// Sends `o` in the conversation `row` (`conversation` is its proto) in the caller's
/// transaction: SMS passes CheckConsent; a refusal is recorded (message, consent history,
/// audit) and answered as a REFUSED message, which the caller turns into an error after commit.
pub(crate) async fn deliver(
    conn: &AsyncPgConnection,
    w: Write<'_>,
    row: &crm_resource::Row<ConversationFields>,
    conversation: &Conversation,
    o: Outgoing<'_>,
) -> Result<Message, ApiError> {
    let org = w.org.uuid();
    let channel = Channel::try_from(conversation.channel).ok();
    let mut v = Violations::new();
    validate_body(&mut v, channel, o.body);
    v.finish()?;
    let consent_phone = o
        .consent_phone
        .or((channel == Some(Channel::Sms)).then_some(row.fields.participant.as_str()));
    let refusal = match consent_phone {
        Some(phone) => {
            consent::check(conn, org, phone, o.purpose, Utc::now())
                .await?
                .refusal
        }
        None => None,
    };
    let (status, reason) = match refusal {
        Some(r) => (DeliveryStatus::Refused, r.reason()),
        None => (DeliveryStatus::Queued, ""),
    };
    let stored = channel.ok_or_else(|| ApiError::Internal("a stored channel is unknown".into()))?;
    let message: Message = store::insert(
        conn,
        OrgId(org),
        NewMessage {
            id: o.id.unwrap_or_else(|| MessageId(Uuid::now_v7())),
            conversation_id: ConversationId(row.std.id),
            customer_id: CustomerId(row.fields.customer_id),
            channel: stored,
            direction: Direction::Outbound,
            purpose: o.purpose,
            body: o.body,
            attachment_uris: o.attachment_uris,
            status,
            status_reason: reason,
            provider_message_id: None,
            sender: w.call.actor(),
        },
    )
    .await?
    .into();
    if let Some(r) = refusal {
        // The refusal is evidence too: it commits, and the caller gets the error.
        consent::append_event(
            conn,
            org,
            consent::NewEvent {
                phone: consent_phone.unwrap_or(&row.fields.participant),
                purpose: o.purpose,
                kind: "refused",
                detail: r.reason(),
                message_id: Uuid::parse_str(message.name.rsplit('/').next().unwrap_or_default())
                    .ok()
                    .map(MessageId),
                actor: w.call.actor(),
                ..consent::NewEvent::default()
            },
        )
        .await?;
        record(
            conn,
            w,
            &message,
            "refused",
            Action::Custom("send_refused"),
            &status_change(0, &message),
        )
        .await?;
    } else {
        record(
            conn,
            w,
            &message,
            "queued",
            Action::Custom("send"),
            &status_change(0, &message),
        )
        .await?;
    }
    Ok(message)
}

/// Sends `o` to `address` on `channel` for customer `customer` in the caller's transaction,
/// in the live conversation with that address (started when there is none); see [`deliver`].
pub(crate) async fn send_to(
    conn: &AsyncPgConnection,
    w: Write<'_>,
    customer: Uuid,
    (channel, address): (Channel, &str),
    o: Outgoing<'_>,
) -> Result<Message, ApiError> {
    let org = w.org.uuid();
    let conversation = find_or_start(
        conn,
        org,
        w.call,
        w.request_id,
        channel as i32,
        address,
        Some(customer),
    )
    .await?
    .ok_or_else(|| ApiError::Internal("a conversation for a known customer".into()))?;
    let (_, id) = names::parse_child(&conversation.name, "conversations", "conversation")?;
    let row = Conversations::find(conn, w.org, id, false)
        .await?
        .ok_or_else(|| ApiError::Internal("the conversation just found".into()))?;
    deliver(conn, w, &row, &conversation, o).await
}

/// The error a refused send answers (also on replays).
pub(crate) fn refused(message: &Message) -> Option<ApiError> {
    (message.delivery_status == DeliveryStatus::Refused as i32).then(|| {
        let refusal =
            Refusal::from_reason(&message.status_reason).unwrap_or(Refusal::ConsentMissing);
        ApiError::FailedPrecondition {
            reason: refusal.reason(),
            message: format!("{} (recorded as {})", refusal.detail(), message.name),
        }
    })
}

/// The handlers.
#[derive(Debug, Clone)]
pub struct MessageApi {
    state: CoreState,
}

impl MessageApi {
    /// Handlers over `state`.
    #[must_use]
    pub fn new(state: CoreState) -> Self {
        Self { state }
    }

    async fn send(&self, call: Call, b: SendMessageRequest) -> Result<Message, ApiError> {
        let mut v = Violations::new();
        let parsed = names::parse_child(&b.parent, "conversations", "parent")
            .map_err(|e| v.absorb(e))
            .ok();
        let purpose = match MessagePurpose::try_from(b.purpose) {
            Ok(MessagePurpose::Unspecified) | Err(_) => {
                v.push("purpose", "INVALID_PURPOSE", "TRANSACTIONAL or MARKETING");
                MessagePurpose::Unspecified
            }
            Ok(p) => p,
        };
        validate_body(&mut v, None, &b.body);
        validate_attachments(&mut v, &b.attachment_uris);
        let mut fingerprint = b.clone();
        fingerprint.request_id.clear();
        let key = IdempotencyKey::from_request(&mut v, &call.method, &b.request_id, &fingerprint);
        v.finish()?;
        let (org, conversation_id) =
            parsed.ok_or_else(|| ApiError::Internal("parent parsed without violation".into()))?;
        names::require_same_organization(&call.principal, org)?;
        let deadline = call.deadline;
        let write = mutation::idempotent(self.state.ctx.pool.clone(), org, key, move |conn| {
            Box::pin(async move {
                let row = Conversations::find(conn, OrgId(org), conversation_id, true)
                    .await?
                    .ok_or_else(|| not_found::<Conversations>(&b.parent))?;
                let conversation = crm_resource::to_proto::<Conversations>(row.clone());
                if row.std.deleted() {
                    return Err(ApiError::FailedPrecondition {
                        reason: "RESOURCE_DELETED",
                        message: "the conversation is deleted".into(),
                    });
                }
                let w = Write {
                    org: OrgId(org),
                    call: &call,
                    request_id: &b.request_id,
                };
                let outgoing = Outgoing {
                    id: None,
                    consent_phone: None,
                    purpose,
                    body: &b.body,
                    attachment_uris: &b.attachment_uris,
                };
                let message = deliver(conn, w, &row, &conversation, outgoing).await?;
                Ok(message)
            })
        });
        let message = mutation::detached(deadline, write).await?;
        self.state.ctx.events_written.notify_waiters();
        // Replays of a refused send answer the same refusal.
        if let Some(e) = refused(&message) {
            return Err(e);
        }
        Ok(message)
    }

    async fn inbound(
        &self,
        call: Call,
        b: RecordInboundMessageRequest,
    ) -> Result<Message, ApiError> {
        let mut v = Violations::new();
        let org = names::parse_organization(&b.parent, "parent")
            .map_err(|e| v.absorb(e))
            .ok();
        let channel = match Channel::try_from(b.channel) {
            Ok(Channel::Unspecified) | Err(_) => {
                v.push("channel", "INVALID_CHANNEL", "SMS, EMAIL or CHAT");
                None
            }
            Ok(c) => Some(c),
        };
        crate::conversations::validate_participant(&mut v, "from", b.channel, &b.from);
        validate_body(&mut v, channel, &b.body);
        validate_attachments(&mut v, &b.attachment_uris);
        validate::required_text(&mut v, "provider_message_id", &b.provider_message_id, 200);
        let customer = (!b.customer.is_empty())
            .then(|| crm_resource::reference(&mut v, org, "customer", &b.customer, "customers"))
            .flatten();
        let mut fingerprint = b.clone();
        fingerprint.request_id.clear();
        let key = IdempotencyKey::from_request(&mut v, &call.method, &b.request_id, &fingerprint);
        v.finish()?;
        let org =
            org.ok_or_else(|| ApiError::Internal("parent parsed without violation".into()))?;
        names::require_same_organization(&call.principal, org)?;
        let from = normalized_participant(b.channel, &b.from);
        let deadline = call.deadline;
        let write = mutation::idempotent(self.state.ctx.pool.clone(), org, key, move |conn| {
            Box::pin(async move {
                // A provider retrying its callback gets the message it already delivered.
                let seen = store::by_provider_id(conn, OrgId(org), &b.provider_message_id).await?;
                if let Some(seen) = seen {
                    return Ok(Message::from(seen));
                }
                let Some(conversation) =
                    find_or_start(conn, org, &call, &b.request_id, b.channel, &from, customer)
                        .await?
                else {
                    // Nobody has this address, so the message has no conversation to join. An
                    // opt-out must still be honoured: the keyword acts on consent and the
                    // caller is told the message itself was not stored.
                    return match Keyword::of(&b.body) {
                        Some(keyword) if channel == Some(Channel::Sms) => {
                            consent::apply_keyword(
                                conn,
                                org,
                                &call,
                                &b.request_id,
                                &from,
                                keyword,
                                None,
                            )
                            .await?;
                            Ok(Message::default())
                        }
                        Some(_) | None => Err(unknown_sender()),
                    };
                };
                let (conversation_id, customer_id) = ids_of(&conversation)?;
                let channel_of = channel
                    .ok_or_else(|| ApiError::Internal("channel validated without value".into()))?;
                let message: Message = store::insert(
                    conn,
                    OrgId(org),
                    NewMessage {
                        id: MessageId(Uuid::now_v7()),
                        conversation_id,
                        customer_id,
                        channel: channel_of,
                        direction: Direction::Inbound,
                        purpose: MessagePurpose::Unspecified,
                        body: &b.body,
                        attachment_uris: &b.attachment_uris,
                        status: DeliveryStatus::Received,
                        status_reason: "",
                        provider_message_id: Some(&b.provider_message_id),
                        sender: &from,
                    },
                )
                .await?
                .into();
                record(
                    conn,
                    Write {
                        org: OrgId(org),
                        call: &call,
                        request_id: &b.request_id,
                    },
                    &message,
                    "received",
                    Action::Custom("receive"),
                    &status_change(0, &message),
                )
                .await?;
                if channel == Some(Channel::Sms)
                    && let Some(keyword) = Keyword::of(&b.body)
                {
                    let id = ids_of_message(&message)?;
                    consent::apply_keyword(
                        conn,
                        org,
                        &call,
                        &b.request_id,
                        &from,
                        keyword,
                        Some(id),
                    )
                    .await?;
                }
                Ok(message)
            })
        });
        let message = mutation::detached(deadline, write).await?;
        self.state.ctx.events_written.notify_waiters();
        if message.name.is_empty() {
            return Err(ApiError::FailedPrecondition {
                reason: "UNKNOWN_SENDER",
                message: "no customer or contact has this address, so the message was not \
                          stored; its keyword was applied to the number's consent"
                    .into(),
            });
        }
        Ok(message)
    }

    async fn delivery(
        &self,
        call: Call,
        b: RecordDeliveryReportRequest,
    ) -> Result<Message, ApiError> {
        let mut v = Violations::new();
        let org = names::parse_organization(&b.parent, "parent")
            .map_err(|e| v.absorb(e))
            .ok();
        validate::required_text(&mut v, "provider_message_id", &b.provider_message_id, 200);
        let named = (!b.message.is_empty())
            .then(|| crm_resource::reference(&mut v, org, "message", &b.message, "messages"))
            .flatten();
        let new_status = match DeliveryStatus::try_from(b.status) {
            Ok(s @ (DeliveryStatus::Sent | DeliveryStatus::Delivered | DeliveryStatus::Failed)) => {
                s
            }
            Ok(_) | Err(_) => {
                v.push("status", "INVALID_STATUS", "SENT, DELIVERED or FAILED");
                DeliveryStatus::Unspecified
            }
        };
        validate::optional_text(&mut v, "error_code", &b.error_code, 100);
        let mut fingerprint = b.clone();
        fingerprint.request_id.clear();
        let key = IdempotencyKey::from_request(&mut v, &call.method, &b.request_id, &fingerprint);
        v.finish()?;
        let org =
            org.ok_or_else(|| ApiError::Internal("parent parsed without violation".into()))?;
        names::require_same_organization(&call.principal, org)?;
        let deadline = call.deadline;
        let write = mutation::idempotent(self.state.ctx.pool.clone(), org, key, move |conn| {
            Box::pin(async move {
                let found = store::lock_reported(
                    conn,
                    OrgId(org),
                    named.map(MessageId),
                    &b.provider_message_id,
                )
                .await?;
                let row: MessageRow = found.ok_or_else(|| ApiError::NotFound {
                    resource_type: "core.crm/Message",
                    name: if b.message.is_empty() {
                        b.provider_message_id.clone()
                    } else {
                        b.message.clone()
                    },
                })?;
                match row.provider_message_id.as_deref() {
                    Some(p) if p != b.provider_message_id => {
                        return Err(ApiError::FailedPrecondition {
                            reason: "PROVIDER_ID_MISMATCH",
                            message: "the message has another provider id".into(),
                        });
                    }
                    Some(_) | None => {}
                }
                let current = DeliveryStatus::from(row.delivery_status);
                if !matches!(
                    current,
                    DeliveryStatus::Queued
                        | DeliveryStatus::Sent
                        | DeliveryStatus::Delivered
                        | DeliveryStatus::Failed
                ) {
                    return Err(ApiError::FailedPrecondition {
                        reason: "NOT_AN_OUTBOUND_MESSAGE",
                        message: "only sent messages get delivery reports".into(),
                    });
                }
                let before = i32::from(row.delivery_status);
                let rank = |s: DeliveryStatus| match s {
                    DeliveryStatus::Queued => 1,
                    DeliveryStatus::Sent => 2,
                    DeliveryStatus::Delivered | DeliveryStatus::Failed => 3,
                    DeliveryStatus::Unspecified
                    | DeliveryStatus::Refused
                    | DeliveryStatus::Received => 0,
                };
                let moves = rank(new_status) > rank(current);
                let delivery = if moves {
                    let reason = if new_status == DeliveryStatus::Failed {
                        b.error_code.as_str()
                    } else {
                        row.status_reason.as_str()
                    };
                    Delivery {
                        provider_id: &b.provider_message_id,
                        status: new_status,
                        reason,
                        time: Utc::now(),
                    }
                } else {
                    Delivery {
                        provider_id: &b.provider_message_id,
                        status: current,
                        reason: &row.status_reason,
                        time: row.status_time,
                    }
                };
                let updated = store::set_delivery(conn, OrgId(org), row.id, delivery).await?;
                let message = Message::from(updated);
                if moves {
                    record(
                        conn,
                        Write {
                            org: OrgId(org),
                            call: &call,
                            request_id: &b.request_id,
                        },
                        &message,
                        "delivery_updated",
                        Action::Custom("delivery_report"),
                        &status_change(before, &message),
                    )
                    .await?;
                }
                Ok(message)
            })
        });
        let message = mutation::detached(deadline, write).await?;
        self.state.ctx.events_written.notify_waiters();
        Ok(message)
    }
}

fn unknown_sender() -> ApiError {
    ApiError::FailedPrecondition {
        reason: "UNKNOWN_SENDER",
        message: "no customer or contact has this address; name the customer".into(),
    }
}

fn ids_of(c: &Conversation) -> Result<(ConversationId, CustomerId), ApiError> {
    let (_, conversation) = names::parse_child(&c.name, "conversations", "conversation")?;
    let (_, customer) = names::parse_child(&c.customer, "customers", "customer")?;
    Ok((ConversationId(conversation), CustomerId(customer)))
}

fn ids_of_message(m: &Message) -> Result<MessageId, ApiError> {
    names::parse_child(&m.name, "messages", "message").map(|(_, id)| MessageId(id))
}

/// The live conversation on `channel` with `from`, or a new one for the named customer or the
/// customer whose phone (or contact's phone) is `from`.
async fn find_or_start(
    conn: &AsyncPgConnection,
    org: Uuid,
    call: &Call,
    request_id: &str,
    channel: i32,
    from: &str,
    customer: Option<Uuid>,
) -> Result<Option<Conversation>, ApiError> {
    let channel_of = Channel::try_from(channel)
        .map_err(|_| ApiError::Internal("channel validated without value".into()))?;
    if let Some(row) = store::live_conversation(conn, OrgId(org), channel_of, from).await? {
        return Ok(Some(crm_resource::to_proto::<Conversations>(
            crm_resource::Row::from_pair(row),
        )));
    }
    let customer = match customer {
        Some(c) => Some(c),
        None => store::customer_at(conn, OrgId(org), from)
            .await?
            .map(CustomerId::uuid),
    };
    let Some(customer) = customer else {
        return Ok(None);
    };
    let start = ConversationFields {
        customer_id: customer,
        channel: column(channel)?,
        participant: from.to_owned(),
        ..ConversationFields::default()
    };
    let w = Write {
        org: OrgId(org),
        call,
        request_id,
    };
    crm_resource::create_in::<Conversations>(conn, w, Uuid::now_v7(), start)
        .await
        .map(Some)
}

#[tonic::async_trait]
impl MessageService for MessageApi {
    async fn send_message(
        &self,
        req: Request<SendMessageRequest>,
    ) -> Result<Response<Message>, Status> {
        let call = Call::of(&req, SERVICE, "send_message")?;
        self.send(call, req.into_inner())
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn record_inbound_message(
        &self,
        req: Request<RecordInboundMessageRequest>,
    ) -> Result<Response<Message>, Status> {
        let call = Call::of(&req, SERVICE, "record_inbound_message")?;
        self.inbound(call, req.into_inner())
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn record_delivery_report(
        &self,
        req: Request<RecordDeliveryReportRequest>,
    ) -> Result<Response<Message>, Status> {
        let call = Call::of(&req, SERVICE, "record_delivery_report")?;
        self.delivery(call, req.into_inner())
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn get_message(
        &self,
        req: Request<GetMessageRequest>,
    ) -> Result<Response<Message>, Status> {
        let principal = principal_of(&req)?;
        let name = req.into_inner().name;
        let (org, id) = names::parse_child(&name, "messages", "name").map_err(status)?;
        names::require_same_organization(&principal, org).map_err(status)?;
        let row = crm_db::tenant::read(&self.state.ctx.pool, org, move |conn| {
            Box::pin(async move {
                store::get(conn, OrgId(org), MessageId(id))
                    .await
                    .map_err(ApiError::from)
            })
        })
        .await
        .map_err(status)?
        .ok_or_else(|| {
            status(ApiError::NotFound {
                resource_type: "core.crm/Message",
                name: name.clone(),
            })
        })?;
        Ok(Response::new(row.into()))
    }

    async fn list_messages(
        &self,
        req: Request<ListMessagesRequest>,
    ) -> Result<Response<ListMessagesResponse>, Status> {
        let principal = principal_of(&req)?;
        let b = req.into_inner();
        let (org, conversation) =
            names::parse_child(&b.parent, "conversations", "parent").map_err(status)?;
        let listing = Listing::begin(
            &principal,
            &self.state.ctx.page_tokens,
            "ListMessages",
            &names::organization_name(org),
            b.page_size,
            &b.page_token,
            &[&b.parent],
            50,
            crm_platform::api::listing::MAX_PAGE_SIZE,
        )
        .map_err(status)?;
        // Message ids are UUIDv7, so id order is creation order.
        let after = listing.after_uuid().map_err(status)?.map(MessageId);
        let limit = listing.limit();
        let parent = b.parent.clone();
        let mut rows: Vec<MessageRow> =
            crm_db::tenant::read(&self.state.ctx.pool, org, move |conn| {
                Box::pin(async move {
                    if Conversations::find(conn, OrgId(org), conversation, false)
                        .await?
                        .is_none()
                    {
                        return Err(not_found::<Conversations>(&parent));
                    }
                    let conversation = ConversationId(conversation);
                    Ok(store::page(conn, OrgId(org), conversation, after, limit).await?)
                })
            })
            .await
            .map_err(status)?;
        let next_page_token = listing.finish(&self.state.ctx.page_tokens, &mut rows, |r| {
            vec![r.id.to_string()]
        });
        Ok(Response::new(ListMessagesResponse {
            messages: rows.into_iter().map(Message::from).collect(),
            next_page_token,
        }))
    }

    async fn search_messages(
        &self,
        req: Request<SearchMessagesRequest>,
    ) -> Result<Response<SearchMessagesResponse>, Status> {
        let principal = principal_of(&req)?;
        let b = req.into_inner();
        let (hits, next_page_token) = search::page::<search::MessageHit>(
            &self.state,
            &principal,
            search::Page::of(&b.parent, &b.query, b.page_size, &b.page_token),
        )
        .await
        .map_err(status)?;
        Ok(Response::new(SearchMessagesResponse {
            hits: hits
                .into_iter()
                .map(|h| MessageHit {
                    message: Some(h.message.into()),
                    rank: h.rank,
                })
                .collect(),
            next_page_token,
        }))
    }

    async fn search_customers(
        &self,
        req: Request<SearchCustomersRequest>,
    ) -> Result<Response<SearchCustomersResponse>, Status> {
        let principal = principal_of(&req)?;
        let b = req.into_inner();
        let (hits, next_page_token) = search::page::<search::CustomerHit>(
            &self.state,
            &principal,
            search::Page::of(&b.parent, &b.query, b.page_size, &b.page_token),
        )
        .await
        .map_err(status)?;
        Ok(Response::new(SearchCustomersResponse {
            hits: hits
                .into_iter()
                .map(|h| CustomerHit {
                    customer: Some(crm_resource::to_proto::<crate::customers::Customers>(
                        crm_resource::Row::from_pair((h.std, h.customer)),
                    )),
                    rank: h.rank,
                })
                .collect(),
            next_page_token,
        }))
    }
}
