//! For every core resource: another organization's token is refused, a read-only role cannot
//! write, and nothing of the owner changes.

use crm_proto::common_v1::PostalAddress;
use crm_proto::core_v1::activity_service_client::ActivityServiceClient;
use crm_proto::core_v1::call_log_service_client::CallLogServiceClient;
use crm_proto::core_v1::conversation_service_client::ConversationServiceClient;
use crm_proto::core_v1::equipment_service_client::EquipmentServiceClient;
use crm_proto::core_v1::inventory_item_service_client::InventoryItemServiceClient;
use crm_proto::core_v1::property_service_client::PropertyServiceClient;
use crm_proto::core_v1::ticket_service_client::TicketServiceClient;
use crm_proto::core_v1::*;
use crm_testkit::TestServer;
use prost_types::Timestamp;
use tonic::{Code, Status};

use crate::support::{Env, count};

fn denied<T: std::fmt::Debug>(what: &str, r: Result<tonic::Response<T>, Status>) {
    let status = r.expect_err(what);
    assert_eq!(status.code(), Code::PermissionDenied, "{what}: {status:?}");
}

#[tokio::test]
async fn every_core_resource_refuses_other_tenants_and_read_only_writers() {
    let env = Env::new().await;
    let ch = env.server.channel.clone();
    let customer = env.create("Bayside Diner").await;
    let parent = env.parent();
    let property = PropertyServiceClient::new(ch.clone())
        .create_property(env.req(CreatePropertyRequest {
            parent: parent.clone(),
            property: Some(Property {
                customer: customer.name.clone(),
                display_name: "Kitchen".into(),
                address: Some(PostalAddress {
                    region_code: "US".into(),
                    address_lines: vec!["1 Main St".into()],
                    ..PostalAddress::default()
                }),
                ..Property::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let equipment = EquipmentServiceClient::new(ch.clone())
        .create_equipment(env.req(CreateEquipmentRequest {
            parent: parent.clone(),
            equipment: Some(Equipment {
                property: property.name.clone(),
                kind: EquipmentKind::SepticTank as i32,
                ..Equipment::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let ticket = TicketServiceClient::new(ch.clone())
        .create_ticket(env.req(CreateTicketRequest {
            parent: parent.clone(),
            ticket: Some(Ticket {
                customer: customer.name.clone(),
                subject: "Smell".into(),
                ..Ticket::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let activity = ActivityServiceClient::new(ch.clone())
        .create_activity(env.req(CreateActivityRequest {
            parent: parent.clone(),
            activity: Some(Activity {
                customer: customer.name.clone(),
                kind: ActivityKind::Note as i32,
                ..Activity::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let item = InventoryItemServiceClient::new(ch.clone())
        .create_inventory_item(env.req(CreateInventoryItemRequest {
            parent: parent.clone(),
            inventory_item: Some(InventoryItem {
                sku: "LID-24".into(),
                display_name: "Riser lid".into(),
                unit: "each".into(),
                ..InventoryItem::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let conversation = ConversationServiceClient::new(ch.clone())
        .create_conversation(env.req(CreateConversationRequest {
            parent: parent.clone(),
            conversation: Some(Conversation {
                customer: customer.name.clone(),
                channel: Channel::Sms as i32,
                participant: "+15551230099".into(),
                ..Conversation::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let call = CallLogServiceClient::new(ch.clone())
        .create_call_log(env.req(CreateCallLogRequest {
            parent: parent.clone(),
            call_log: Some(CallLog {
                customer: customer.name.clone(),
                direction: Direction::Outbound as i32,
                phone: "+15551230099".into(),
                start_time: Some(Timestamp {
                    seconds: 1_790_000_000,
                    nanos: 0,
                }),
                ..CallLog::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let audit_before = count(&env.db, "SELECT count(*) AS n FROM core.audit_entries").await;

    let stranger = env.server.token(uuid::Uuid::now_v7(), &["org.admin"]);
    macro_rules! s {
        ($m:expr) => {
            TestServer::request(&stranger, $m)
        };
    }
    denied(
        "property",
        PropertyServiceClient::new(ch.clone())
            .get_property(s!(GetPropertyRequest {
                name: property.name.clone(),
                view: 2,
            }))
            .await,
    );
    denied(
        "equipment",
        EquipmentServiceClient::new(ch.clone())
            .get_equipment(s!(GetEquipmentRequest {
                name: equipment.name.clone(),
            }))
            .await,
    );
    denied(
        "ticket",
        TicketServiceClient::new(ch.clone())
            .get_ticket(s!(GetTicketRequest {
                name: ticket.name.clone(),
            }))
            .await,
    );
    denied(
        "activity",
        ActivityServiceClient::new(ch.clone())
            .get_activity(s!(GetActivityRequest {
                name: activity.name.clone(),
            }))
            .await,
    );
    denied(
        "item",
        InventoryItemServiceClient::new(ch.clone())
            .get_inventory_item(s!(GetInventoryItemRequest {
                name: item.name.clone(),
            }))
            .await,
    );
    denied(
        "adjust",
        InventoryItemServiceClient::new(ch.clone())
            .adjust_stock(s!(AdjustStockRequest {
                name: item.name.clone(),
                location: "main".into(),
                delta: 5,
                reason: "x".into(),
                ..Default::default()
            }))
            .await,
    );
    denied(
        "conversation",
        ConversationServiceClient::new(ch.clone())
            .get_conversation(s!(GetConversationRequest {
                name: conversation.name.clone(),
            }))
            .await,
    );
    denied(
        "send",
        crm_proto::core_v1::message_service_client::MessageServiceClient::new(ch.clone())
            .send_message(s!(SendMessageRequest {
                parent: conversation.name.clone(),
                body: "hi".into(),
                purpose: 1,
                ..Default::default()
            }))
            .await,
    );
    denied(
        "call",
        CallLogServiceClient::new(ch.clone())
            .get_call_log(s!(GetCallLogRequest {
                name: call.name.clone(),
            }))
            .await,
    );
    denied(
        "delete call",
        CallLogServiceClient::new(ch.clone())
            .delete_call_log(s!(DeleteCallLogRequest {
                name: call.name.clone(),
                ..Default::default()
            }))
            .await,
    );
    denied(
        "audit",
        crm_proto::core_v1::audit_service_client::AuditServiceClient::new(ch.clone())
            .list_audit_entries(s!(ListAuditEntriesRequest {
                parent: parent.clone(),
                ..Default::default()
            }))
            .await,
    );

    let viewer = env.server.token(env.org, &["crm.viewer"]);
    macro_rules! v {
        ($m:expr) => {
            TestServer::request(&viewer, $m)
        };
    }
    PropertyServiceClient::new(ch.clone())
        .get_property(v!(GetPropertyRequest {
            name: property.name.clone(),
            view: 0,
        }))
        .await
        .unwrap();
    denied(
        "viewer property",
        PropertyServiceClient::new(ch.clone())
            .delete_property(v!(DeletePropertyRequest {
                name: property.name.clone(),
                ..Default::default()
            }))
            .await,
    );
    denied(
        "viewer equipment",
        EquipmentServiceClient::new(ch.clone())
            .record_equipment_reading(v!(RecordEquipmentReadingRequest {
                name: equipment.name.clone(),
                reading: Some(EquipmentReading {
                    read_time: Some(Timestamp {
                        seconds: 1_790_000_000,
                        nanos: 0,
                    }),
                    ..EquipmentReading::default()
                }),
                ..Default::default()
            }))
            .await,
    );
    denied(
        "viewer ticket",
        TicketServiceClient::new(ch.clone())
            .delete_ticket(v!(DeleteTicketRequest {
                name: ticket.name.clone(),
                ..Default::default()
            }))
            .await,
    );
    denied(
        "viewer activity",
        ActivityServiceClient::new(ch.clone())
            .delete_activity(v!(DeleteActivityRequest {
                name: activity.name.clone(),
                ..Default::default()
            }))
            .await,
    );
    denied(
        "viewer stock",
        InventoryItemServiceClient::new(ch.clone())
            .adjust_stock(v!(AdjustStockRequest {
                name: item.name.clone(),
                location: "main".into(),
                delta: 5,
                reason: "x".into(),
                ..Default::default()
            }))
            .await,
    );
    denied(
        "viewer send",
        crm_proto::core_v1::message_service_client::MessageServiceClient::new(ch.clone())
            .send_message(v!(SendMessageRequest {
                parent: conversation.name.clone(),
                body: "hi".into(),
                purpose: 1,
                ..Default::default()
            }))
            .await,
    );
    denied(
        "viewer consent",
        crm_proto::core_v1::consent_service_client::ConsentServiceClient::new(ch.clone())
            .grant_consent(v!(GrantConsentRequest {
                parent: parent.clone(),
                phone: "+15551230099".into(),
                purpose: 1,
                method: 1,
                source: "x".into(),
                disclosure_version: "v1".into(),
                ..Default::default()
            }))
            .await,
    );
    denied(
        "viewer call",
        CallLogServiceClient::new(ch.clone())
            .delete_call_log(v!(DeleteCallLogRequest {
                name: call.name.clone(),
                ..Default::default()
            }))
            .await,
    );
    denied(
        "viewer audit",
        crm_proto::core_v1::audit_service_client::AuditServiceClient::new(ch.clone())
            .list_audit_entries(v!(ListAuditEntriesRequest {
                parent: parent.clone(),
                ..Default::default()
            }))
            .await,
    );

    assert_eq!(
        count(&env.db, "SELECT count(*) AS n FROM core.audit_entries").await,
        audit_before,
        "no refused call changed anything"
    );
    assert_eq!(
        count(&env.db, "SELECT count(*) AS n FROM core.stock_adjustments").await,
        0
    );
    assert_eq!(
        count(&env.db, "SELECT count(*) AS n FROM core.messages").await,
        0
    );
}
