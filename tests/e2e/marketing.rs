//! Marketing: templates refuse unknown variables; a workflow step with a delay runs exactly
//! once after the delay however many schedulers tick; a send without marketing consent is
//! refused and recorded; a campaign enrolls its audience once.

use std::time::Duration;

use crm_core::marketing::scheduler;
use serde_json::{Value, json};

use crate::conformance::rpc;
use crate::support::{Env, assert_invalid_field, count};

async fn core(env: &Env, service: &str, method: &str, body: Value) -> Result<Value, tonic::Status> {
    rpc(
        env,
        &env.token,
        &format!("crm.core.v1.{service}"),
        method,
        body,
    )
    .await
}

/// Ticks `pool` until `sql` counts `want` (the server's own scheduler may hold a claim for a
/// moment: what it claimed is skipped here until it commits), then ticks once more and checks
/// that nothing was done twice.
async fn settle(env: &Env, pool: &crm_db::DbPool, sql: &str, want: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while count(&env.db, sql).await != want && tokio::time::Instant::now() < deadline {
        scheduler::tick(pool, 100).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    scheduler::tick(pool, 100).await.unwrap();
    assert_eq!(count(&env.db, sql).await, want, "{sql}");
}

fn app_pool(env: &Env) -> crm_db::DbPool {
    let mut settings = crm_db::pool::PoolSettings::new(env.db.app_url("core"), "core");
    settings.acquire_timeout = Duration::from_secs(3);
    crm_db::pool::build(&settings)
}

async fn customer(env: &Env, name: &str, phone: &str) -> String {
    core(
        env,
        "CustomerService",
        "CreateCustomer",
        json!({"parent": env.parent(), "customer": {
        "display_name": name, "phone": phone, "kind": "CUSTOMER_KIND_COMMERCIAL",
        "time_zone": daytime_zone()}}),
    )
    .await
    .unwrap()["name"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A time zone where it is day now (marketing waits out 21:00 to 08:00 local time).
fn daytime_zone() -> String {
    use chrono::Timelike as _;
    (-12i32..=12)
        .map(|n| {
            if n < 0 {
                format!("Etc/GMT+{}", -n)
            } else {
                format!("Etc/GMT-{n}")
            }
        })
        .find(|z| {
            let tz: chrono_tz::Tz = z.parse().unwrap();
            (10..=18).contains(&chrono::Utc::now().with_timezone(&tz).hour())
        })
        .unwrap()
}

async fn grant_marketing(env: &Env, phone: &str) {
    core(
        env,
        "ConsentService",
        "GrantConsent",
        json!({"parent": env.parent(), "phone": phone,
        "purpose": "MESSAGE_PURPOSE_MARKETING", "method": "CONSENT_METHOD_WEB_FORM",
        "source": "signup form", "disclosure_version": "mkt-1"}),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_delayed_workflow_step_sends_once_across_two_schedulers_and_refuses_without_consent() {
    let env = Env::new().await;
    let p = env.parent();
    let unknown = core(
        &env,
        "MessageTemplateService",
        "CreateMessageTemplate",
        json!({"parent": p,
        "message_template": {"display_name": "Bad", "channel": "CHANNEL_SMS",
        "body": "Hi {{customer.nickname}}"}}),
    )
    .await
    .unwrap_err();
    assert_invalid_field(&unknown, "message_template.body", "UNKNOWN_VARIABLE");
    let template = core(
        &env,
        "MessageTemplateService",
        "CreateMessageTemplate",
        json!({"parent": p,
        "message_template": {"display_name": "Welcome", "channel": "CHANNEL_SMS",
        "body": "Welcome {{customer.first_name}}! Reply STOP to opt out."}}),
    )
    .await
    .unwrap();
    assert_eq!(template["variables"], json!(["customer.first_name"]));
    let workflow = core(
        &env,
        "WorkflowService",
        "CreateWorkflow",
        json!({"parent": p, "workflow": {
        "display_name": "Welcome series", "trigger_event_type": "crm.core.v1.Customer.created",
        "active": true,
        "steps": [{"delay": "4s", "send_template": template["name"]}, {"add_tag": "welcomed"}]}}),
    )
    .await
    .unwrap();
    let wname = workflow["name"].as_str().unwrap().to_owned();

    let consented = "+15125550181";
    grant_marketing(&env, consented).await;
    let created = std::time::Instant::now();
    customer(&env, "Dana Reyes", consented).await;
    customer(&env, "Sam Ortiz", "+15125550182").await;

    let (a, b) = (app_pool(&env), app_pool(&env));
    // The events enroll both customers, once (the server's own scheduler ticks too); nothing
    // is due before the delay.
    scheduler::tick(&a, 100).await.unwrap();
    scheduler::tick(&b, 100).await.unwrap();
    let enrolled = "SELECT count(*) AS n FROM core.enrollments";
    settle(&env, &a, enrolled, 2).await;
    // (Checked only while the delay surely has not passed: a loaded machine may be slower.)
    if created.elapsed() < Duration::from_millis(3_500) {
        assert_eq!(
            count(&env.db, "SELECT count(*) AS n FROM core.messages").await,
            0
        );
    }
    tokio::time::sleep(Duration::from_millis(4_200).saturating_sub(created.elapsed())).await;
    // Two replicas tick at once, repeatedly: each step runs once.
    for _ in 0..3 {
        let (x, y) = tokio::join!(scheduler::tick(&a, 100), scheduler::tick(&b, 100));
        x.unwrap();
        y.unwrap();
    }
    let dana = "SELECT count(*) AS n FROM core.messages WHERE body LIKE 'Welcome Dana!%'";
    settle(&env, &a, dana, 1).await;
    let tagged = "SELECT count(*) AS n FROM core.enrollments WHERE status = 2";
    settle(&env, &a, tagged, 2).await;
    let refused = count(&env.db, "SELECT count(*) AS n FROM core.messages WHERE body LIKE 'Welcome Sam!%' AND status_reason = 'CONSENT_MISSING'").await;
    assert_eq!(refused, 1);
    assert_eq!(count(&env.db, "SELECT count(*) AS n FROM core.consent_events WHERE kind = 'refused' AND phone = '+15125550182'").await, 1);
    let list = core(
        &env,
        "WorkflowService",
        "ListEnrollments",
        json!({"parent": wname}),
    )
    .await
    .unwrap();
    let enrollments = list["enrollments"].as_array().unwrap();
    assert_eq!(enrollments.len(), 2);
    for e in enrollments {
        assert_eq!(e["status"], "ENROLLMENT_STATUS_COMPLETED", "{e}");
        let outcomes: Vec<&str> = e["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["outcome"].as_str().unwrap())
            .collect();
        assert_eq!(outcomes.len(), 2, "{e}");
        assert!(outcomes[0] == "sent" || outcomes[0] == "refused", "{e}");
        assert_eq!(outcomes[1], "tagged");
    }
    // The tag the scheduler added does not enroll anyone again.
    scheduler::tick(&a, 100).await.unwrap();
    assert_eq!(count(&env.db, enrolled).await, 2);

    // A campaign enrolls its audience once and sends through the same consent check.
    let campaign = core(
        &env,
        "CampaignService",
        "CreateCampaign",
        json!({"parent": p, "campaign": {
        "display_name": "Spring", "template": template["name"],
        "audience_filter": "kind = CUSTOMER_KIND_COMMERCIAL"}}),
    )
    .await
    .unwrap();
    let launched = core(
        &env,
        "CampaignService",
        "LaunchCampaign",
        json!({"name": campaign["name"]}),
    )
    .await
    .unwrap();
    assert_eq!(launched["enrolled_count"], 2);
    let relaunch = core(
        &env,
        "CampaignService",
        "LaunchCampaign",
        json!({"name": campaign["name"]}),
    )
    .await
    .unwrap_err();
    assert_eq!(crate::support::reason(&relaunch), "CAMPAIGN_LAUNCHED");
    settle(&env, &a, dana, 2).await;
}
