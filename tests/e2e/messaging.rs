//! Conversations, messages, SMS consent (grants, keywords, quiet hours, refusals) and
//! full-text search.

use chrono::{DateTime, Timelike, Utc};
use crm_proto::core_v1::consent_service_client::ConsentServiceClient;
use crm_proto::core_v1::conversation_service_client::ConversationServiceClient;
use crm_proto::core_v1::customer_service_client::CustomerServiceClient;
use crm_proto::core_v1::message_service_client::MessageServiceClient;
use crm_proto::core_v1::{
    Channel, CheckConsentRequest, ConsentMethod, Conversation, CreateConversationRequest,
    CreateCustomerRequest, Customer, CustomerKind, DeliveryStatus, GrantConsentRequest,
    ListConsentEventsRequest, ListMessagesRequest, MessagePurpose, RecordDeliveryReportRequest,
    RecordInboundMessageRequest, RevokeConsentRequest, SearchCustomersRequest,
    SearchMessagesRequest, SendMessageRequest,
};
use crm_testkit::TestServer;
use prost_types::Timestamp;
use tonic::Code;
use tonic::transport::Channel as GrpcChannel;
use uuid::Uuid;

use crate::support::{Env, assert_invalid_field, reason};

fn conversations(env: &Env) -> ConversationServiceClient<GrpcChannel> {
    ConversationServiceClient::new(env.server.channel.clone())
}

fn messages(env: &Env) -> MessageServiceClient<GrpcChannel> {
    MessageServiceClient::new(env.server.channel.clone())
}

fn consents(env: &Env) -> ConsentServiceClient<GrpcChannel> {
    ConsentServiceClient::new(env.server.channel.clone())
}

/// A time zone where it is now between 10:00 and 19:59 (`day`) or between 23:00 and 05:59.
fn zone_where(day: bool) -> &'static str {
    const ZONES: &[&str] = &[
        "Pacific/Kiritimati",
        "Pacific/Auckland",
        "Asia/Tokyo",
        "Asia/Kolkata",
        "Europe/Moscow",
        "Europe/London",
        "America/Sao_Paulo",
        "America/New_York",
        "America/Chicago",
        "America/Los_Angeles",
        "Pacific/Honolulu",
        "Pacific/Pago_Pago",
    ];
    ZONES
        .iter()
        .copied()
        .find(|z| {
            let tz: chrono_tz::Tz = z.parse().unwrap();
            let hour = Utc::now().with_timezone(&tz).hour();
            if day {
                (10..20).contains(&hour)
            } else {
                !(6..23).contains(&hour)
            }
        })
        .expect("some zone is in the wanted part of the day")
}

async fn customer_with_phone(env: &Env, name: &str, phone: &str, zone: &str) -> Customer {
    CustomerServiceClient::new(env.server.channel.clone())
        .create_customer(env.req(CreateCustomerRequest {
            parent: env.parent(),
            customer: Some(Customer {
                display_name: name.into(),
                phone: phone.into(),
                time_zone: zone.into(),
                kind: CustomerKind::FoodService as i32,
                ..Customer::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
}

async fn sms_conversation(env: &Env, customer: &Customer) -> Conversation {
    conversations(env)
        .create_conversation(env.req(CreateConversationRequest {
            parent: env.parent(),
            conversation: Some(Conversation {
                customer: customer.name.clone(),
                channel: Channel::Sms as i32,
                participant: customer.phone.clone(),
                ..Conversation::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
}

fn send(conversation: &Conversation, body: &str, purpose: MessagePurpose) -> SendMessageRequest {
    SendMessageRequest {
        parent: conversation.name.clone(),
        body: body.into(),
        purpose: purpose as i32,
        attachment_uris: vec![],
        request_id: Uuid::now_v7().to_string(),
    }
}

async fn grant(env: &Env, phone: &str, purpose: MessagePurpose) {
    consents(env)
        .grant_consent(env.req(GrantConsentRequest {
            parent: env.parent(),
            phone: phone.into(),
            purpose: purpose as i32,
            method: ConsentMethod::WebForm as i32,
            source: "203.0.113.7".into(),
            disclosure_version: "sms-terms-v3".into(),
            ..Default::default()
        }))
        .await
        .unwrap();
}

async fn inbound(env: &Env, from: &str, body: &str) -> crm_proto::core_v1::Message {
    messages(env)
        .record_inbound_message(env.req(RecordInboundMessageRequest {
            parent: env.parent(),
            channel: Channel::Sms as i32,
            from: from.into(),
            body: body.into(),
            provider_message_id: format!("SM{}", Uuid::now_v7().simple()),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
}

async fn check(
    env: &Env,
    phone: &str,
    purpose: MessagePurpose,
    at: Option<&str>,
) -> (bool, String) {
    let r = consents(env)
        .check_consent(env.req(CheckConsentRequest {
            parent: env.parent(),
            phone: phone.into(),
            purpose: purpose as i32,
            time: at.map(|t| {
                let t = DateTime::parse_from_rfc3339(t).unwrap();
                Timestamp {
                    seconds: t.timestamp(),
                    nanos: 0,
                }
            }),
        }))
        .await
        .unwrap()
        .into_inner();
    (r.allowed, r.reason)
}

#[tokio::test]
async fn marketing_needs_marketing_consent_and_refusals_are_recorded() {
    let env = Env::new().await;
    let phone = "+15551230002";
    let customer = customer_with_phone(&env, "Bayside Diner", phone, zone_where(true)).await;
    let conversation = sms_conversation(&env, &customer).await;

    // Nothing granted: refused, with the reason, and the refusal is kept.
    let status = messages(&env)
        .send_message(env.req(send(
            &conversation,
            "Your pump-out is tomorrow",
            MessagePurpose::Transactional,
        )))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(reason(&status), "CONSENT_MISSING");

    grant(&env, phone, MessagePurpose::Transactional).await;
    let sent = messages(&env)
        .send_message(env.req(send(
            &conversation,
            "Your pump-out is tomorrow",
            MessagePurpose::Transactional,
        )))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sent.delivery_status, DeliveryStatus::Queued as i32);

    let request = send(
        &conversation,
        "20% off trap cleaning",
        MessagePurpose::Marketing,
    );
    let status = messages(&env)
        .send_message(env.req(request.clone()))
        .await
        .unwrap_err();
    assert_eq!(
        reason(&status),
        "CONSENT_MISSING",
        "transactional consent is not marketing consent"
    );
    // A retry of the refused request answers the same refusal and records nothing new.
    let again = messages(&env)
        .send_message(env.req(request))
        .await
        .unwrap_err();
    assert_eq!(reason(&again), "CONSENT_MISSING");

    grant(&env, phone, MessagePurpose::Marketing).await;
    let promo = messages(&env)
        .send_message(env.req(send(
            &conversation,
            "20% off trap cleaning",
            MessagePurpose::Marketing,
        )))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(promo.delivery_status, DeliveryStatus::Queued as i32);

    let history = consents(&env)
        .list_consent_events(env.req(ListConsentEventsRequest {
            parent: env.parent(),
            phone: phone.into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .consent_events;
    let kinds: Vec<(&str, &str)> = history
        .iter()
        .map(|e| (e.kind.as_str(), e.detail.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("granted", ""),
            ("refused", "CONSENT_MISSING"),
            ("granted", ""),
            ("refused", "CONSENT_MISSING"),
        ],
        "newest first, one refusal per refused request"
    );
    assert!(
        history[1]
            .message
            .starts_with(&format!("{}/messages/", env.parent()))
    );

    let thread = messages(&env)
        .list_messages(env.req(ListMessagesRequest {
            parent: conversation.name.clone(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .messages;
    let statuses: Vec<i32> = thread.iter().map(|m| m.delivery_status).collect();
    assert_eq!(
        statuses,
        vec![
            DeliveryStatus::Refused as i32,
            DeliveryStatus::Queued as i32,
            DeliveryStatus::Refused as i32,
            DeliveryStatus::Queued as i32,
        ]
    );
    assert_eq!(thread[0].status_reason, "CONSENT_MISSING");
}

#[tokio::test]
async fn stop_revokes_start_restores_help_is_recorded() {
    let env = Env::new().await;
    let phone = "+15551230003";
    let customer = customer_with_phone(&env, "Harbor Cafe", phone, zone_where(true)).await;
    let conversation = sms_conversation(&env, &customer).await;
    grant(&env, phone, MessagePurpose::Transactional).await;
    grant(&env, phone, MessagePurpose::Marketing).await;
    consents(&env)
        .revoke_consent(env.req(RevokeConsentRequest {
            parent: env.parent(),
            phone: phone.into(),
            purpose: MessagePurpose::Marketing as i32,
            method: ConsentMethod::Verbal as i32,
            source: "users/dispatcher".into(),
            request_id: String::new(),
        }))
        .await
        .unwrap();

    let stop = inbound(&env, phone, "Stop").await;
    assert_eq!(
        stop.conversation, conversation.name,
        "the inbound message joins the thread"
    );
    assert_eq!(
        check(&env, phone, MessagePurpose::Transactional, None).await,
        (false, "CONSENT_REVOKED".into())
    );
    let status = messages(&env)
        .send_message(env.req(send(
            &conversation,
            "Tech arriving",
            MessagePurpose::Transactional,
        )))
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "CONSENT_REVOKED");

    inbound(&env, phone, "START").await;
    assert_eq!(
        check(&env, phone, MessagePurpose::Transactional, None).await,
        (true, String::new())
    );
    assert_eq!(
        check(&env, phone, MessagePurpose::Marketing, None).await,
        (false, "CONSENT_REVOKED".into()),
        "START restores what STOP revoked, not what staff revoked before"
    );
    inbound(&env, phone, "help").await;
    let history = consents(&env)
        .list_consent_events(env.req(ListConsentEventsRequest {
            parent: env.parent(),
            phone: phone.into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .consent_events;
    let kinds: Vec<&str> = history.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        vec![
            "help_requested",
            "granted",
            "refused",
            "revoked",
            "revoked",
            "granted",
            "granted"
        ]
    );
    assert_eq!(history[3].method, ConsentMethod::Keyword as i32);
}

#[tokio::test]
async fn quiet_hours_are_judged_in_the_customers_time_zone() {
    let env = Env::new().await;
    let chicago = "+15551230004";
    let tokyo = "+815012345678";
    customer_with_phone(&env, "Chicago Grill", chicago, "America/Chicago").await;
    customer_with_phone(&env, "Tokyo Ramen", tokyo, "Asia/Tokyo").await;
    grant(&env, chicago, MessagePurpose::Marketing).await;
    grant(&env, tokyo, MessagePurpose::Marketing).await;
    grant(&env, chicago, MessagePurpose::Transactional).await;
    // 20:59 and 21:00 in Chicago in January (CST, UTC-6).
    assert_eq!(
        check(
            &env,
            chicago,
            MessagePurpose::Marketing,
            Some("2026-01-16T02:59:00Z")
        )
        .await,
        (true, String::new())
    );
    assert_eq!(
        check(
            &env,
            chicago,
            MessagePurpose::Marketing,
            Some("2026-01-16T03:00:00Z")
        )
        .await,
        (false, "QUIET_HOURS".into())
    );
    // The same instant is noon in Tokyo.
    assert_eq!(
        check(
            &env,
            tokyo,
            MessagePurpose::Marketing,
            Some("2026-01-16T03:00:00Z")
        )
        .await,
        (true, String::new())
    );
    // In July Chicago is on CDT (UTC-5): 07:59 local is 12:59 UTC, 08:00 is 13:00 UTC.
    assert_eq!(
        check(
            &env,
            chicago,
            MessagePurpose::Marketing,
            Some("2026-07-16T12:59:00Z")
        )
        .await,
        (false, "QUIET_HOURS".into())
    );
    assert_eq!(
        check(
            &env,
            chicago,
            MessagePurpose::Marketing,
            Some("2026-07-16T13:00:00Z")
        )
        .await,
        (true, String::new())
    );
    // Transactional messages are not held for quiet hours.
    assert_eq!(
        check(
            &env,
            chicago,
            MessagePurpose::Transactional,
            Some("2026-01-16T03:00:00Z")
        )
        .await,
        (true, String::new())
    );
    let r = consents(&env)
        .check_consent(
            env.req(CheckConsentRequest {
                parent: env.parent(),
                phone: chicago.into(),
                purpose: MessagePurpose::Marketing as i32,
                time: Some(Timestamp {
                    seconds: DateTime::parse_from_rfc3339("2026-01-16T03:00:00Z")
                        .unwrap()
                        .timestamp(),
                    nanos: 0,
                }),
            }),
        )
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.time_zone, "America/Chicago");
    assert_eq!(
        r.next_allowed_time.unwrap().seconds,
        DateTime::parse_from_rfc3339("2026-01-16T14:00:00Z")
            .unwrap()
            .timestamp()
    );

    // And SendMessage applies it now: a customer where it is night is refused with the reason.
    let night = "+15551230005";
    let sleeper = customer_with_phone(&env, "Night Owl", night, zone_where(false)).await;
    grant(&env, night, MessagePurpose::Marketing).await;
    let conversation = sms_conversation(&env, &sleeper).await;
    let status = messages(&env)
        .send_message(env.req(send(&conversation, "Flash sale", MessagePurpose::Marketing)))
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "QUIET_HOURS");
}

#[tokio::test]
async fn delivery_reports_move_forward_only() {
    let env = Env::new().await;
    let phone = "+15551230006";
    let customer = customer_with_phone(&env, "Bayside Diner", phone, "America/Chicago").await;
    grant(&env, phone, MessagePurpose::Transactional).await;
    let conversation = sms_conversation(&env, &customer).await;
    let sent = messages(&env)
        .send_message(env.req(send(
            &conversation,
            "On our way",
            MessagePurpose::Transactional,
        )))
        .await
        .unwrap()
        .into_inner();
    let report = |status: DeliveryStatus, message: &str| RecordDeliveryReportRequest {
        parent: env.parent(),
        provider_message_id: "SM-1".into(),
        message: message.into(),
        status: status as i32,
        error_code: String::new(),
        request_id: String::new(),
    };
    let m = messages(&env)
        .record_delivery_report(env.req(report(DeliveryStatus::Sent, &sent.name)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(m.delivery_status, DeliveryStatus::Sent as i32);
    assert_eq!(m.provider_message_id, "SM-1");
    let m = messages(&env)
        .record_delivery_report(env.req(report(DeliveryStatus::Delivered, "")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(m.delivery_status, DeliveryStatus::Delivered as i32);
    let m = messages(&env)
        .record_delivery_report(env.req(report(DeliveryStatus::Sent, "")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        m.delivery_status,
        DeliveryStatus::Delivered as i32,
        "a late SENT does not move it back"
    );
    let status = messages(&env)
        .record_delivery_report(env.req(report(DeliveryStatus::Received, "")))
        .await
        .unwrap_err();
    assert_invalid_field(&status, "status", "INVALID_STATUS");
    let missing = RecordDeliveryReportRequest {
        provider_message_id: "SM-unknown".into(),
        ..report(DeliveryStatus::Sent, "")
    };
    let status = messages(&env)
        .record_delivery_report(env.req(missing))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    // Inbound from an address nobody has is refused; a provider retry returns the same message.
    let status = messages(&env)
        .record_inbound_message(env.req(RecordInboundMessageRequest {
            parent: env.parent(),
            channel: Channel::Sms as i32,
            from: "+15559999999".into(),
            body: "hello?".into(),
            provider_message_id: "SM-x".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "UNKNOWN_SENDER");
    // An opt-out from a number no customer has is still honoured.
    let stranger = "+15559999998";
    grant(&env, stranger, MessagePurpose::Transactional).await;
    let status = messages(&env)
        .record_inbound_message(env.req(RecordInboundMessageRequest {
            parent: env.parent(),
            channel: Channel::Sms as i32,
            from: stranger.into(),
            body: "STOP".into(),
            provider_message_id: "SM-stop".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "UNKNOWN_SENDER");
    assert_eq!(
        check(&env, stranger, MessagePurpose::Transactional, None).await,
        (false, "CONSENT_REVOKED".into())
    );
    let callback = RecordInboundMessageRequest {
        parent: env.parent(),
        channel: Channel::Sms as i32,
        from: phone.into(),
        body: "thanks".into(),
        provider_message_id: "SM-2".into(),
        ..Default::default()
    };
    let first = messages(&env)
        .record_inbound_message(env.req(callback.clone()))
        .await
        .unwrap()
        .into_inner();
    let second = messages(&env)
        .record_inbound_message(env.req(callback))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, second);
}

#[tokio::test]
async fn search_ranks_better_matches_first_and_stays_in_the_tenant() {
    let env = Env::new().await;
    let phone = "+15551230007";
    let customer = customer_with_phone(&env, "Bayside Diner", phone, "America/Chicago").await;
    sms_conversation(&env, &customer).await;
    inbound(&env, phone, "The kitchen sink drains slowly").await;
    inbound(
        &env,
        phone,
        "Grease trap overflowing again, the grease smell reaches the kitchen",
    )
    .await;
    inbound(&env, phone, "Invoice paid, thanks").await;

    // Another organization with the same words.
    let other = Uuid::now_v7();
    let other_token = env.server.token(other, &["org.admin"]);
    CustomerServiceClient::new(env.server.channel.clone())
        .create_customer(TestServer::request(
            &other_token,
            CreateCustomerRequest {
                parent: format!("organizations/{other}"),
                customer: Some(Customer {
                    display_name: "Grease Trap Kings".into(),
                    phone: "+15551230008".into(),
                    ..Customer::default()
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    messages(&env)
        .record_inbound_message(TestServer::request(
            &other_token,
            RecordInboundMessageRequest {
                parent: format!("organizations/{other}"),
                channel: Channel::Sms as i32,
                from: "+15551230008".into(),
                body: "grease grease grease trap kitchen".into(),
                provider_message_id: "SM-other".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();

    let hits = messages(&env)
        .search_messages(env.req(SearchMessagesRequest {
            parent: env.parent(),
            query: "grease kitchen".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .hits;
    assert_eq!(
        hits.len(),
        1,
        "both words are required; the other tenant's message never appears"
    );
    assert!(
        hits[0]
            .message
            .as_ref()
            .unwrap()
            .body
            .starts_with("Grease trap")
    );
    assert_eq!(hits[0].message.as_ref().unwrap().customer, customer.name);

    let hits = messages(&env)
        .search_messages(env.req(SearchMessagesRequest {
            parent: env.parent(),
            query: "kitchen or grease".into(),
            page_size: 1,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hits.hits.len(), 1);
    assert!(
        hits.hits[0]
            .message
            .as_ref()
            .unwrap()
            .body
            .starts_with("Grease trap"),
        "more matches rank higher"
    );
    let page2 = messages(&env)
        .search_messages(env.req(SearchMessagesRequest {
            parent: env.parent(),
            query: "kitchen or grease".into(),
            page_size: 1,
            page_token: hits.next_page_token.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page2.hits.len(), 1);
    assert!(
        page2.hits[0]
            .message
            .as_ref()
            .unwrap()
            .body
            .starts_with("The kitchen sink")
    );
    assert!(page2.hits[0].rank <= hits.hits[0].rank);

    for hostile in [
        "\"unterminated",
        "&|!()",
        "a & | ! b",
        "'; DROP TABLE messages; --",
        "\0nul",
        ":*",
        "!!!!",
        &"grease ".repeat(70),
    ] {
        let r = messages(&env)
            .search_messages(env.req(SearchMessagesRequest {
                parent: env.parent(),
                query: hostile.to_owned(),
                ..Default::default()
            }))
            .await;
        if let Err(status) = &r {
            assert_eq!(
                status.code(),
                Code::InvalidArgument,
                "{hostile:?}: {status:?}"
            );
        }
    }
    let long = messages(&env)
        .search_messages(env.req(SearchMessagesRequest {
            parent: env.parent(),
            query: "x".repeat(501),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_invalid_field(&long, "query", "TOO_LONG");

    let customers = messages(&env)
        .search_customers(env.req(SearchCustomersRequest {
            parent: env.parent(),
            query: "bayside".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .hits;
    assert_eq!(customers.len(), 1);
    assert_eq!(customers[0].customer.as_ref().unwrap().name, customer.name);
    let stranger = messages(&env)
        .search_customers(env.req(SearchCustomersRequest {
            parent: env.parent(),
            query: "kings".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .hits;
    assert!(stranger.is_empty());
}
