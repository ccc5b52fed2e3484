//! Call dispositions, call logs and integration sync logs.

use crm_proto::core_v1::call_disposition_service_client::CallDispositionServiceClient;
use crm_proto::core_v1::call_log_service_client::CallLogServiceClient;
use crm_proto::core_v1::sync_log_service_client::SyncLogServiceClient;
use crm_proto::core_v1::{
    CallDisposition, CallLog, CreateCallDispositionRequest, CreateCallLogRequest,
    CreateSyncLogRequest, Direction, ListCallLogsRequest, ListSyncLogsRequest, SyncDirection,
    SyncLog, SyncStatus, UpdateCallDispositionRequest, UpdateSyncLogRequest,
};
use crm_testkit::TestServer;
use prost_types::{FieldMask, Timestamp};
use tonic::Code;

use crate::support::{Env, assert_invalid_field, reason};

fn now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

fn call(customer: &str, minutes_ago: i64, disposition: &str) -> CallLog {
    CallLog {
        customer: customer.into(),
        direction: Direction::Inbound as i32,
        phone: "+15551230010".into(),
        start_time: Some(Timestamp {
            seconds: now() - minutes_ago * 60,
            nanos: 0,
        }),
        duration_seconds: 95,
        disposition: disposition.into(),
        ..CallLog::default()
    }
}

#[tokio::test]
async fn call_logs_use_the_organizations_active_dispositions() {
    let env = Env::new().await;
    let customer = env.create("Bayside Diner").await;
    let mut dispositions = CallDispositionServiceClient::new(env.server.channel.clone());
    let mut calls = CallLogServiceClient::new(env.server.channel.clone());
    let booked = dispositions
        .create_call_disposition(env.req(CreateCallDispositionRequest {
            parent: env.parent(),
            call_disposition: Some(CallDisposition {
                code: "booked".into(),
                display_name: "Booked a visit".into(),
                active: true,
                ..CallDisposition::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let duplicate = dispositions
        .create_call_disposition(env.req(CreateCallDispositionRequest {
            parent: env.parent(),
            call_disposition: Some(CallDisposition {
                code: "booked".into(),
                display_name: "Again".into(),
                ..CallDisposition::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(duplicate.code(), Code::AlreadyExists);
    let sales = env.server.token(env.org, &["crm.sales"]);
    let refused = dispositions
        .create_call_disposition(TestServer::request(
            &sales,
            CreateCallDispositionRequest {
                parent: env.parent(),
                call_disposition: Some(CallDisposition {
                    code: "x".into(),
                    display_name: "x".into(),
                    ..CallDisposition::default()
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Code::PermissionDenied,
        "dispositions are settings"
    );

    for (minutes, disposition) in [(30, "booked"), (10, ""), (20, "booked")] {
        calls
            .create_call_log(env.req(CreateCallLogRequest {
                parent: env.parent(),
                call_log: Some(call(&customer.name, minutes, disposition)),
                ..Default::default()
            }))
            .await
            .unwrap();
    }
    let listed = calls
        .list_call_logs(env.req(ListCallLogsRequest {
            parent: env.parent(),
            filter: "disposition = booked".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .call_logs;
    assert_eq!(listed.len(), 2);
    assert!(
        listed[0].start_time.unwrap().seconds > listed[1].start_time.unwrap().seconds,
        "newest first"
    );

    let unknown = calls
        .create_call_log(env.req(CreateCallLogRequest {
            parent: env.parent(),
            call_log: Some(call(&customer.name, 1, "voicemail")),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(reason(&unknown), "DISPOSITION_NOT_FOUND");
    dispositions
        .update_call_disposition(env.req(UpdateCallDispositionRequest {
            call_disposition: Some(CallDisposition {
                name: booked.name.clone(),
                active: false,
                ..CallDisposition::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["active".into()],
            }),
            request_id: String::new(),
        }))
        .await
        .unwrap();
    let inactive = calls
        .create_call_log(env.req(CreateCallLogRequest {
            parent: env.parent(),
            call_log: Some(call(&customer.name, 1, "booked")),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(reason(&inactive), "DISPOSITION_INACTIVE");
    let immutable = dispositions
        .update_call_disposition(env.req(UpdateCallDispositionRequest {
            call_disposition: Some(CallDisposition {
                name: booked.name.clone(),
                code: "renamed".into(),
                ..CallDisposition::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["code".into()],
            }),
            request_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_invalid_field(&immutable, "update_mask", "UNKNOWN_MASK_PATH");

    let invalid = calls
        .create_call_log(env.req(CreateCallLogRequest {
            parent: env.parent(),
            call_log: Some(CallLog {
                direction: 0,
                phone: "555".into(),
                agent: "bob".into(),
                duration_seconds: -1,
                recording_uri: "ftp://x".into(),
                start_time: Some(Timestamp {
                    seconds: now() + 86_400,
                    nanos: 0,
                }),
                ..call(&customer.name, 0, "")
            }),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    for (field, reason) in [
        ("call_log.direction", "INVALID_DIRECTION"),
        ("call_log.phone", "INVALID_PHONE"),
        ("call_log.agent", "INVALID_AGENT"),
        ("call_log.duration_seconds", "OUT_OF_RANGE"),
        ("call_log.recording_uri", "INVALID_URI"),
        ("call_log.start_time", "TIME_IN_FUTURE"),
    ] {
        assert_invalid_field(&invalid, field, reason);
    }
}

#[tokio::test]
async fn sync_runs_are_logged_by_the_integration_service() {
    let env = Env::new().await;
    let integration = env.server.token(env.org, &["service.integrations"]);
    let mut logs = SyncLogServiceClient::new(env.server.channel.clone());
    let started = logs
        .create_sync_log(TestServer::request(
            &integration,
            CreateSyncLogRequest {
                parent: env.parent(),
                sync_log: Some(SyncLog {
                    system: "quickbooks".into(),
                    direction: SyncDirection::Export as i32,
                    status: SyncStatus::Running as i32,
                    start_time: Some(Timestamp {
                        seconds: now() - 60,
                        nanos: 0,
                    }),
                    ..SyncLog::default()
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let progress = |status: SyncStatus, finish: Option<i64>| UpdateSyncLogRequest {
        sync_log: Some(SyncLog {
            name: started.name.clone(),
            status: status as i32,
            cursor: "invoice:1042".into(),
            records_read: 40,
            records_written: 38,
            records_failed: 2,
            errors: vec!["invoice 1007: customer has no tax id".into()],
            finish_time: finish.map(|seconds| Timestamp { seconds, nanos: 0 }),
            ..SyncLog::default()
        }),
        update_mask: Some(FieldMask {
            paths: vec!["*".into()],
        }),
        request_id: String::new(),
    };
    let missing_finish = logs
        .update_sync_log(TestServer::request(
            &integration,
            progress(SyncStatus::Partial, None),
        ))
        .await
        .unwrap_err();
    assert_invalid_field(&missing_finish, "sync_log.finish_time", "REQUIRED");
    let before_start = logs
        .update_sync_log(TestServer::request(
            &integration,
            progress(SyncStatus::Partial, Some(now() - 3600)),
        ))
        .await
        .unwrap_err();
    assert_invalid_field(&before_start, "sync_log.finish_time", "BEFORE_START");
    let done = logs
        .update_sync_log(TestServer::request(
            &integration,
            progress(SyncStatus::Partial, Some(now())),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.records_failed, 2);
    assert_eq!(done.cursor, "invoice:1042");
    assert_eq!(done.system, "quickbooks", "create-only fields are kept");

    let listed = logs
        .list_sync_logs(env.req(ListSyncLogsRequest {
            parent: env.parent(),
            filter: "system = quickbooks AND status = PARTIAL".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .sync_logs;
    assert_eq!(listed, vec![done]);
    let viewer = env.server.token(env.org, &["crm.viewer"]);
    let status = logs
        .list_sync_logs(TestServer::request(
            &viewer,
            ListSyncLogsRequest {
                parent: env.parent(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
}
