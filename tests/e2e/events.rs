//! The event stream: nothing lost or duplicated under concurrent writers; reconnecting with a
//! cursor continues exactly where the consumer stopped.

use std::collections::HashSet;
use std::time::Duration;

use crm_proto::common_v1::Event;
use crm_proto::common_v1::ResourceChanged;
use crm_proto::core_v1::event_service_client::EventServiceClient;
use crm_proto::core_v1::{Customer, StreamEventsRequest};
use prost::Message;
use tokio_stream::StreamExt;
use tonic::Code;

use crate::support::{Env, assert_invalid_field};

async fn collect(env: &Env, cursor: &str, want: usize) -> Vec<Event> {
    let mut client = EventServiceClient::new(env.server.channel.clone());
    let mut stream = client
        .stream_events(env.req(StreamEventsRequest {
            parent: env.parent(),
            cursor: cursor.to_owned(),
            batch_size: 7,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    while events.len() < want {
        let batch = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("events arrive")
            .expect("stream open")
            .expect("batch");
        events.extend(batch.events);
    }
    events
}

#[tokio::test]
async fn concurrent_writers_lose_nothing_and_a_cursor_resumes_exactly() {
    let env = Env::new().await;
    const WRITERS: usize = 8;
    const EACH: usize = 15;
    let total = WRITERS * EACH;

    // A consumer that starts before the writes and reads while they commit.
    let live = collect(&env, "", total);
    let writes = async {
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let env = &env;
            tasks.push(async move {
                for i in 0..EACH {
                    env.create(&format!("Writer {w} #{i}")).await;
                }
            });
        }
        futures_util::future::join_all(tasks).await;
    };
    let (events, ()) = tokio::join!(live, writes);
    assert_eq!(events.len(), total);
    let ids: HashSet<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids.len(), total, "an event was delivered twice");
    let mut names = HashSet::new();
    for e in &events {
        assert_eq!(e.r#type, "crm.core.v1.Customer.created");
        let payload =
            ResourceChanged::decode(e.payload.as_ref().unwrap().value.as_slice()).unwrap();
        let customer: Customer = payload.resource.unwrap().to_msg().unwrap();
        names.insert(customer.display_name);
    }
    assert_eq!(names.len(), total, "every created customer has its event");

    // Stop after 50, reconnect with that cursor: the rest follows exactly, nothing repeated.
    let resumed = collect(&env, &events[49].cursor, total - 50).await;
    let rest: Vec<&str> = events[50..].iter().map(|e| e.event_id.as_str()).collect();
    let again: Vec<&str> = resumed.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(again, rest);
}

#[tokio::test]
async fn bad_cursor_and_missing_permission_are_refused() {
    let env = Env::new().await;
    let mut client = EventServiceClient::new(env.server.channel.clone());
    let status = client
        .stream_events(env.req(StreamEventsRequest {
            parent: env.parent(),
            cursor: "garbage!".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_invalid_field(&status, "cursor", "INVALID_CURSOR");
    let sales = env.server.token(env.org, &["crm.sales"]);
    let status = client
        .stream_events(crm_testkit::TestServer::request(
            &sales,
            StreamEventsRequest {
                parent: env.parent(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn a_resource_change_carries_a_payload_whose_type_url_names_its_message() {
    use crm_proto::core_v1::contact_service_client::ContactServiceClient;
    use crm_proto::core_v1::{Contact, CreateContactRequest};

    let env = Env::new().await;
    let customer = env.create("Payload Co").await;
    ContactServiceClient::new(env.server.channel.clone())
        .create_contact(env.req(CreateContactRequest {
            parent: env.parent(),
            contact: Some(Contact {
                customer: customer.name.clone(),
                display_name: "Pat".into(),
                ..Contact::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap();
    let mut stream = EventServiceClient::new(env.server.channel.clone())
        .stream_events(env.req(StreamEventsRequest {
            parent: env.parent(),
            types: vec!["crm.core.v1.Contact.created".into()],
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let batch = tokio::time::timeout(std::time::Duration::from_secs(30), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let event = &batch.events[0];
    assert_eq!(event.r#type, "crm.core.v1.Contact.created");
    let payload = event.payload.as_ref().unwrap();
    assert_eq!(
        payload.type_url, "type.googleapis.com/crm.common.v1.ResourceChanged",
        "an Any names a message type"
    );
    let changed = ResourceChanged::decode(payload.value.as_slice()).unwrap();
    assert_eq!(changed.change, "created");
    let contact: Contact = changed.resource.unwrap().to_msg().unwrap();
    assert_eq!(contact.display_name, "Pat");
}
