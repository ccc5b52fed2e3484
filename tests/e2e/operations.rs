//! Tickets (transitions, SLA, reopens) and inventory (SKUs, stock that never goes negative and
//! never loses a concurrent adjustment).

use crm_proto::core_v1::inventory_item_service_client::InventoryItemServiceClient;
use crm_proto::core_v1::ticket_service_client::TicketServiceClient;
use crm_proto::core_v1::{
    AdjustStockRequest, CreateInventoryItemRequest, CreateTicketRequest, InventoryItem,
    ListInventoryItemsRequest, ListStockAdjustmentsRequest, ListStockLevelsRequest, Ticket,
    TicketPriority, TicketStatus, UpdateTicketRequest,
};
use crm_testkit::TestServer;
use prost_types::FieldMask;
use tonic::Code;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::support::{Env, assert_invalid_field, reason};

fn tickets(env: &Env) -> TicketServiceClient<Channel> {
    TicketServiceClient::new(env.server.channel.clone())
}

fn inventory(env: &Env) -> InventoryItemServiceClient<Channel> {
    InventoryItemServiceClient::new(env.server.channel.clone())
}

async fn new_ticket(env: &Env, customer: &str, priority: TicketPriority) -> Ticket {
    tickets(env)
        .create_ticket(env.req(CreateTicketRequest {
            parent: env.parent(),
            ticket: Some(Ticket {
                customer: customer.into(),
                subject: "Trap smells after pump-out".into(),
                priority: priority as i32,
                ..Ticket::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
}

async fn move_to(env: &Env, t: &Ticket, status: TicketStatus) -> Result<Ticket, tonic::Status> {
    tickets(env)
        .update_ticket(env.req(UpdateTicketRequest {
            ticket: Some(Ticket {
                name: t.name.clone(),
                status: status as i32,
                ..Ticket::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["status".into()],
            }),
            request_id: String::new(),
        }))
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn ticket_sla_follows_priority_and_only_allowed_moves_happen() {
    let env = Env::new().await;
    let customer = env.create("Bayside Diner").await;
    let t = new_ticket(&env, &customer.name, TicketPriority::Urgent).await;
    assert_eq!(t.status, TicketStatus::Open as i32);
    let created = t.create_time.unwrap().seconds;
    assert_eq!(t.sla_due_time.unwrap().seconds - created, 4 * 3600);

    let lowered = tickets(&env)
        .update_ticket(env.req(UpdateTicketRequest {
            ticket: Some(Ticket {
                name: t.name.clone(),
                priority: TicketPriority::Low as i32,
                ..Ticket::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["priority".into()],
            }),
            request_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(lowered.sla_due_time.unwrap().seconds - created, 7 * 86_400);

    use TicketStatus::{Closed, Open, Pending, Resolved};
    // Every disallowed move from every state is refused and changes nothing.
    let disallowed = [
        (Open, Closed),
        (Pending, Closed),
        (Closed, Open),
        (Closed, Pending),
        (Closed, Resolved),
        (Resolved, Pending),
    ];
    for (from, to) in disallowed {
        let t = new_ticket(&env, &customer.name, TicketPriority::Normal).await;
        let t = match from {
            Open => t,
            Pending => move_to(&env, &t, Pending).await.unwrap(),
            Resolved => move_to(&env, &t, Resolved).await.unwrap(),
            Closed => {
                let r = move_to(&env, &t, Resolved).await.unwrap();
                move_to(&env, &r, Closed).await.unwrap()
            }
            TicketStatus::Unspecified => unreachable!(),
        };
        let status = move_to(&env, &t, to).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::FailedPrecondition,
            "{from:?} -> {to:?}"
        );
        assert_eq!(reason(&status), "TICKET_TRANSITION_NOT_ALLOWED");
    }

    // Resolve, reopen, resolve again.
    let t = new_ticket(&env, &customer.name, TicketPriority::High).await;
    let resolved = move_to(&env, &t, Resolved).await.unwrap();
    assert!(resolved.resolve_time.is_some());
    let reopened = move_to(&env, &resolved, Open).await.unwrap();
    assert_eq!(reopened.reopen_count, 1);
    assert!(reopened.resolve_time.is_none());
    let pending = move_to(&env, &reopened, Pending).await.unwrap();
    let resolved = move_to(&env, &pending, Resolved).await.unwrap();
    let reopened = move_to(&env, &resolved, Open).await.unwrap();
    assert_eq!(reopened.reopen_count, 2);

    // A new ticket starts OPEN.
    let status = tickets(&env)
        .create_ticket(env.req(CreateTicketRequest {
            parent: env.parent(),
            ticket: Some(Ticket {
                customer: customer.name.clone(),
                subject: "Born closed".into(),
                status: Closed as i32,
                ..Ticket::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "INVALID_INITIAL_STATUS");
}

#[tokio::test]
async fn ticket_fields_and_roles() {
    let env = Env::new().await;
    let customer = env.create("Bayside Diner").await;
    let status = tickets(&env)
        .create_ticket(env.req(CreateTicketRequest {
            parent: env.parent(),
            ticket: Some(Ticket {
                customer: customer.name.clone(),
                subject: String::new(),
                priority: 42,
                assignee: "bob".into(),
                ..Ticket::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    for (field, reason) in [
        ("ticket.subject", "REQUIRED"),
        ("ticket.priority", "UNKNOWN_ENUM_VALUE"),
        ("ticket.assignee", "INVALID_ASSIGNEE"),
    ] {
        assert_invalid_field(&status, field, reason);
    }
    let sales = env.server.token(env.org, &["crm.sales"]);
    let status = tickets(&env)
        .create_ticket(TestServer::request(
            &sales,
            CreateTicketRequest {
                parent: env.parent(),
                ticket: Some(Ticket {
                    customer: customer.name.clone(),
                    subject: "From sales".into(),
                    ..Ticket::default()
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::PermissionDenied,
        "sales reads tickets, support writes them"
    );
    let support = env.server.token(env.org, &["crm.support"]);
    tickets(&env)
        .create_ticket(TestServer::request(
            &support,
            CreateTicketRequest {
                parent: env.parent(),
                ticket: Some(Ticket {
                    customer: customer.name.clone(),
                    subject: "From support".into(),
                    assignee: format!("users/{}", Uuid::now_v7()),
                    ..Ticket::default()
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
}

async fn new_item(env: &Env, sku: &str) -> InventoryItem {
    inventory(env)
        .create_inventory_item(env.req(CreateInventoryItemRequest {
            parent: env.parent(),
            inventory_item: Some(InventoryItem {
                sku: sku.into(),
                display_name: "Bacteria treatment".into(),
                unit: "gallon".into(),
                reorder_point: 5,
                ..InventoryItem::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
}

/// Adjusts as a well-behaved client does: UNAVAILABLE (the pool is busy behind the item's row
/// lock) is retried with the same request_id, which the server applies at most once.
async fn adjust(
    env: &Env,
    req: AdjustStockRequest,
) -> Result<crm_proto::core_v1::StockAdjustment, tonic::Status> {
    let mut client = inventory(env);
    for attempt in 0..50 {
        match client.adjust_stock(env.req(req.clone())).await {
            Err(s) if s.code() == Code::Unavailable && attempt < 49 => {
                tokio::time::sleep(std::time::Duration::from_millis(20 * (attempt % 5 + 1))).await;
            }
            other => return other.map(tonic::Response::into_inner),
        }
    }
    unreachable!("the loop returns on its last attempt")
}

fn adjustment(item: &InventoryItem, location: &str, delta: i64) -> AdjustStockRequest {
    AdjustStockRequest {
        name: item.name.clone(),
        location: location.into(),
        delta,
        reason: "test".into(),
        reference: String::new(),
        request_id: Uuid::now_v7().to_string(),
    }
}

#[tokio::test]
async fn stock_never_goes_negative_under_concurrent_adjustments() {
    let env = Env::new().await;
    let item = new_item(&env, "BT-1").await;
    inventory(&env)
        .adjust_stock(env.req(adjustment(&item, "main-yard", 10)))
        .await
        .unwrap();
    let tries = (0..25).map(|_| adjust(&env, adjustment(&item, "main-yard", -1)));
    let results = futures_util::future::join_all(tries).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 10, "exactly the stock on hand could be taken");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(r.code(), Code::FailedPrecondition);
        assert_eq!(reason(r), "INSUFFICIENT_STOCK");
    }
    let mut after: Vec<i64> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|a| a.quantity_after))
        .collect();
    after.sort_unstable();
    assert_eq!(
        after,
        (0..10).collect::<Vec<_>>(),
        "each adjustment saw the one before"
    );
    let levels = inventory(&env)
        .list_stock_levels(env.req(ListStockLevelsRequest {
            parent: item.name.clone(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .stock_levels;
    assert_eq!(levels.len(), 1);
    assert_eq!(levels[0].quantity, 0);
}

#[tokio::test]
async fn concurrent_adjustments_lose_no_update_and_retries_apply_once() {
    let env = Env::new().await;
    let item = new_item(&env, "BT-2").await;
    inventory(&env)
        .adjust_stock(env.req(adjustment(&item, "truck-7", 50)))
        .await
        .unwrap();
    let mixed = (0..40).map(|i| {
        let delta = if i % 2 == 0 { 3 } else { -2 };
        adjust(&env, adjustment(&item, "truck-7", delta))
    });
    for r in futures_util::future::join_all(mixed).await {
        r.unwrap();
    }
    // A retried adjustment (same request_id) is applied once.
    let once = adjustment(&item, "main-yard", 4);
    for _ in 0..3 {
        inventory(&env)
            .adjust_stock(env.req(once.clone()))
            .await
            .unwrap();
    }
    let items = inventory(&env)
        .list_inventory_items(env.req(ListInventoryItemsRequest {
            parent: env.parent(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .inventory_items;
    assert_eq!(items[0].total_on_hand, 50 + 20 * 3 - 20 * 2 + 4);
    assert!(!items[0].needs_reorder);
    let adjustments = inventory(&env)
        .list_stock_adjustments(env.req(ListStockAdjustmentsRequest {
            parent: item.name.clone(),
            page_size: 1000,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .stock_adjustments;
    assert_eq!(adjustments.len(), 1 + 40 + 1);

    // SKUs are unique per organization, and stock is validated.
    let duplicate = inventory(&env)
        .create_inventory_item(env.req(CreateInventoryItemRequest {
            parent: env.parent(),
            inventory_item: Some(InventoryItem {
                sku: "BT-2".into(),
                display_name: "Again".into(),
                unit: "each".into(),
                ..InventoryItem::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(duplicate.code(), Code::AlreadyExists);
    let status = inventory(&env)
        .adjust_stock(env.req(AdjustStockRequest {
            location: "Main Yard".into(),
            delta: 0,
            reason: String::new(),
            ..adjustment(&item, "x", 1)
        }))
        .await
        .unwrap_err();
    for (field, reason) in [
        ("location", "INVALID_LOCATION"),
        ("delta", "OUT_OF_RANGE"),
        ("reason", "REQUIRED"),
    ] {
        assert_invalid_field(&status, field, reason);
    }
}

#[tokio::test]
async fn the_timeline_is_newest_first_and_filters_by_kind_and_time() {
    use crm_proto::core_v1::activity_service_client::ActivityServiceClient;
    use crm_proto::core_v1::{
        Activity, ActivityKind, CreateActivityRequest, ListActivitiesRequest,
    };
    let env = Env::new().await;
    let customer = env.create("Bayside Diner").await;
    let ticket = new_ticket(&env, &customer.name, TicketPriority::Normal).await;
    let mut client = ActivityServiceClient::new(env.server.channel.clone());
    let day = 86_400;
    let base = 1_790_000_000; // 2026-09-21
    for (i, kind) in [
        ActivityKind::Note,
        ActivityKind::Call,
        ActivityKind::Visit,
        ActivityKind::Call,
    ]
    .into_iter()
    .enumerate()
    {
        client
            .create_activity(env.req(CreateActivityRequest {
                parent: env.parent(),
                activity: Some(Activity {
                    customer: customer.name.clone(),
                    kind: kind as i32,
                    subject: format!("#{i}"),
                    occur_time: Some(prost_types::Timestamp {
                        seconds: base + i64::try_from(i).unwrap() * day,
                        nanos: 0,
                    }),
                    related: if i == 1 {
                        ticket.name.clone()
                    } else {
                        String::new()
                    },
                    ..Activity::default()
                }),
                ..Default::default()
            }))
            .await
            .unwrap();
    }
    let list = |filter: String| {
        let mut client = client.clone();
        let req = env.req(ListActivitiesRequest {
            parent: env.parent(),
            filter,
            ..Default::default()
        });
        async move {
            client
                .list_activities(req)
                .await
                .unwrap()
                .into_inner()
                .activities
                .into_iter()
                .map(|a| a.subject)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list(String::new()).await, vec!["#3", "#2", "#1", "#0"]);
    assert_eq!(list("kind = CALL".into()).await, vec!["#3", "#1"]);
    assert_eq!(
        list(format!(
            "customer = \"{}\" AND occur_time >= \"2026-09-22T00:00:00Z\" AND occur_time < \"2026-09-24T00:00:00Z\"",
            customer.name
        ))
        .await,
        vec!["#2", "#1"]
    );
    assert_eq!(
        list(format!("related = \"{}\"", ticket.name)).await,
        vec!["#1"]
    );

    let missing = format!("{}/tickets/{}", env.parent(), Uuid::now_v7());
    let status = client
        .create_activity(env.req(CreateActivityRequest {
            parent: env.parent(),
            activity: Some(Activity {
                customer: customer.name.clone(),
                kind: ActivityKind::Note as i32,
                related: missing,
                ..Activity::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    let status = client
        .create_activity(env.req(CreateActivityRequest {
            parent: env.parent(),
            activity: Some(Activity {
                customer: customer.name.clone(),
                kind: 0,
                related: "invoices/1".into(),
                ..Activity::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    for (field, reason) in [
        ("activity.kind", "INVALID_KIND"),
        ("activity.related", "INVALID_RELATED"),
    ] {
        assert_invalid_field(&status, field, reason);
    }
}

#[tokio::test]
async fn a_page_token_of_stock_adjustments_is_refused_by_stock_levels_of_the_same_item() {
    let env = Env::new().await;
    let item = new_item(&env, "TOKEN-1").await;
    for location in ["truck-1", "truck-2", "yard"] {
        adjust(&env, adjustment(&item, location, 3)).await.unwrap();
    }
    let mut client = inventory(&env);
    let adjustments = client
        .list_stock_adjustments(env.req(ListStockAdjustmentsRequest {
            parent: item.name.clone(),
            page_size: 1,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(!adjustments.next_page_token.is_empty());
    let refused = client
        .list_stock_levels(env.req(ListStockLevelsRequest {
            parent: item.name.clone(),
            page_size: 1,
            page_token: adjustments.next_page_token.clone(),
        }))
        .await
        .unwrap_err();
    assert_invalid_field(&refused, "page_token", "PAGE_TOKEN_MISMATCH");
    let levels = client
        .list_stock_levels(env.req(ListStockLevelsRequest {
            parent: item.name.clone(),
            page_size: 1,
            page_token: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    let refused = client
        .list_stock_adjustments(env.req(ListStockAdjustmentsRequest {
            parent: item.name.clone(),
            page_size: 1,
            page_token: levels.next_page_token,
        }))
        .await
        .unwrap_err();
    assert_invalid_field(&refused, "page_token", "PAGE_TOKEN_MISMATCH");
}
