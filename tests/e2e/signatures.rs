//! E-signatures: the code travels in a consented message, a wrong or reused code is refused, a
//! signed document is final for the service's role and verifiable, a changed document fails
//! verification; signing a contract activates it with its due-service schedule, whose visits
//! the sweep announces once each ahead of their dates before it renews or expires the term.

use diesel_async::SimpleAsyncConnection as _;
use serde_json::{Value, json};
use tonic::Code;
use uuid::Uuid;

use crate::conformance::rpc;
use crate::support::{Env, count, reason};

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

fn name(v: &Value) -> String {
    v["name"].as_str().unwrap_or_default().to_owned()
}

async fn grant(env: &Env, phone: &str) {
    core(
        env,
        "ConsentService",
        "GrantConsent",
        json!({"parent": env.parent(), "phone": phone, "purpose": "MESSAGE_PURPOSE_TRANSACTIONAL",
               "method": "CONSENT_METHOD_WEB_FORM", "source": "front desk",
               "disclosure_version": "sms-1"}),
    )
    .await
    .unwrap();
}

/// A sent quote of a new customer.
async fn sent_quote(env: &Env) -> String {
    let customer = env.create("Harbor Grill").await.name;
    let quote = core(
        env,
        "QuoteService",
        "CreateQuote",
        json!({"parent": env.parent(), "quote": {"customer": customer, "title": "Grease trap service",
               "valid_until": "2030-01-01T00:00:00Z",
               "options": [{"level": "QUOTE_LEVEL_GOOD", "title": "Pump",
                            "lines": [{"description": "Pump-out", "quantity": 1,
                                       "unit_price": {"currency_code": "USD", "units": 300}}]}]}}),
    )
    .await
    .unwrap();
    core(
        env,
        "QuoteService",
        "TransitionQuote",
        json!({"name": name(&quote), "to_status": "QUOTE_STATUS_SENT"}),
    )
    .await
    .unwrap();
    name(&quote)
}

async fn request(env: &Env, document: &str, signer: (&str, &str)) -> Result<Value, tonic::Status> {
    let (key, value) = signer;
    let mut body = json!({"document": document, "signer_name": "Dana Reyes",
        "consent_text": "I agree to sign electronically and that this signature binds me.",
        "consent_version": "esign-2026-01"});
    body[key] = json!(value);
    core(
        env,
        "SignatureRequestService",
        "CreateSignatureRequest",
        json!({"parent": env.parent(), "signature_request": body, "request_id": Uuid::now_v7().to_string()}),
    )
    .await
}

/// The code, as the signer reads it in the message.
async fn code_of(env: &Env, request: &Value) -> String {
    let message = core(
        env,
        "MessageService",
        "GetMessage",
        json!({"name": request["code_message"]}),
    )
    .await
    .unwrap();
    let body = message["body"].as_str().unwrap();
    let at = body.find("code to sign").unwrap();
    let digits: String = body[at..]
        .split(": ")
        .nth(1)
        .unwrap()
        .chars()
        .take(6)
        .collect();
    assert_eq!(digits.len(), 6, "{body}");
    digits
}

async fn sign(env: &Env, request: &str, code: &str) -> Result<Value, tonic::Status> {
    core(
        env,
        "SignatureRequestService",
        "SignDocument",
        json!({"name": request, "code": code, "request_id": Uuid::now_v7().to_string()}),
    )
    .await
}

async fn verify(env: &Env, request: &str) -> Value {
    core(
        env,
        "SignatureRequestService",
        "VerifySignature",
        json!({"name": request}),
    )
    .await
    .unwrap()
}

fn wrong(code: &str) -> String {
    let first = if code.starts_with('1') { '2' } else { '1' };
    format!("{first}{}", &code[1..])
}

#[tokio::test]
async fn a_quote_is_signed_once_with_its_code_and_the_signature_is_final_and_verifiable() {
    let env = Env::new().await;
    let quote = sent_quote(&env).await;

    // Without consent for the signer's number, no code is sent and nothing is kept.
    let refused = request(&env, &quote, ("signer_phone", "+15125550177"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(reason(&refused), "CONSENT_MISSING");
    assert_eq!(
        count(&env.db, "SELECT count(*) AS n FROM core.signature_requests").await,
        0
    );
    // A draft cannot be sent for signature.
    let customer = env.create("Other Co").await.name;
    let draft = core(&env, "QuoteService", "CreateQuote", json!({"parent": env.parent(), "quote": {
        "customer": customer, "title": "Draft", "valid_until": "2030-01-01T00:00:00Z",
        "options": [{"level": "QUOTE_LEVEL_GOOD", "title": "Pump", "lines": [{"description": "Pump-out",
        "quantity": 1, "unit_price": {"currency_code": "USD", "units": 300}}]}]}}))
        .await
        .unwrap();
    let not_sent = request(&env, &name(&draft), ("signer_email", "dana@example.com"))
        .await
        .unwrap_err();
    assert_eq!(reason(&not_sent), "DOCUMENT_NOT_SIGNABLE");

    grant(&env, "+15125550177").await;
    let a = request(&env, &quote, ("signer_phone", "+15125550177"))
        .await
        .unwrap();
    assert_eq!(a["status"], "SIGNATURE_STATUS_PENDING");
    assert_eq!(a["document_sha256"].as_str().unwrap().len(), 64);
    let code = code_of(&env, &a).await;
    // The code is stored only as a salted hash.
    assert_eq!(
        count(
            &env.db,
            &format!(
                "SELECT count(*) AS n FROM core.signature_requests WHERE code_hash = sha256(code_salt || '{code}'::bytea)"
            )
        )
        .await,
        1
    );
    let b = request(&env, &quote, ("signer_email", "dana@example.com"))
        .await
        .unwrap();

    // A wrong code counts an attempt and signs nothing; so does another request's code.
    let bad = sign(&env, &name(&a), &wrong(&code)).await.unwrap_err();
    assert_eq!(bad.code(), Code::FailedPrecondition);
    assert_eq!(reason(&bad), "WRONG_CODE");
    let others = sign(&env, &name(&b), &code).await;
    if code != code_of(&env, &b).await {
        assert_eq!(reason(&others.unwrap_err()), "WRONG_CODE");
    }
    let after = core(
        &env,
        "SignatureRequestService",
        "GetSignatureRequest",
        json!({"name": name(&a)}),
    )
    .await
    .unwrap();
    assert_eq!(after["failed_attempts"], 1);
    assert_eq!(after["status"], "SIGNATURE_STATUS_PENDING");

    // The right code signs, with the caller's evidence.
    let signed = sign(&env, &name(&a), &code).await.unwrap();
    assert_eq!(signed["status"], "SIGNATURE_STATUS_SIGNED");
    let s = &signed["signature"];
    assert_eq!(s["ip_address"], "127.0.0.1");
    assert!(
        !s["user_agent"].as_str().unwrap_or_default().is_empty(),
        "{s}"
    );
    assert_eq!(s["consent_version"], "esign-2026-01");
    assert_eq!(s["document_sha256"], a["document_sha256"]);
    // Reusing the code is refused.
    let again = sign(&env, &name(&a), &code).await.unwrap_err();
    assert_eq!(reason(&again), "ALREADY_SIGNED");

    let ok = verify(&env, &name(&a)).await;
    assert_eq!(ok["valid"], true, "{ok}");
    assert_eq!(ok["document_unchanged"], true, "{ok}");
    assert_eq!(ok["recorded_sha256"], a["document_sha256"]);

    // Signed is final through the API...
    let later = (chrono::Utc::now() + chrono::Duration::days(5))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let update = core(
        &env,
        "SignatureRequestService",
        "UpdateSignatureRequest",
        json!({
        "signature_request": {"name": name(&a), "expire_time": later},
        "update_mask": "expireTime"}),
    )
    .await
    .unwrap_err();
    assert_eq!(reason(&update), "SIGNATURE_FINAL");
    let delete = core(
        &env,
        "SignatureRequestService",
        "DeleteSignatureRequest",
        json!({"name": name(&a)}),
    )
    .await
    .unwrap_err();
    assert_eq!(reason(&delete), "SIGNATURE_FINAL");
    // ...and for the service's own database role.
    let mut app = env.db.app("core").await.unwrap();
    for sql in [
        "UPDATE signatures SET signer_name = 'someone else'",
        "DELETE FROM signatures",
    ] {
        let denied = app.batch_execute(sql).await.unwrap_err();
        assert!(denied.to_string().contains("permission denied"), "{denied}");
    }
    let org = env.org;
    let trigger = app
        .batch_execute(&format!(
            "SELECT set_config('app.org_id', '{org}', false); \
             UPDATE signature_requests SET signer_ip = '10.0.0.1' WHERE status = 2"
        ))
        .await
        .unwrap_err();
    assert!(trigger.to_string().contains("final"), "{trigger}");

    // Whoever changes the stored document (a superuser) is caught by verification; a document
    // changed since signing is reported too.
    let mut admin = env.db.admin().await.unwrap();
    admin
        .batch_execute(
            "UPDATE core.signatures SET document_bytes = document_bytes || '\\x00'::bytea",
        )
        .await
        .unwrap();
    let tampered = verify(&env, &name(&a)).await;
    assert_ne!(tampered["valid"], true, "{tampered}");
    assert_ne!(tampered["computed_sha256"], tampered["recorded_sha256"]);
    admin
        .batch_execute("UPDATE core.quotes SET title = 'Something else'")
        .await
        .unwrap();
    let changed = verify(&env, &name(&a)).await;
    assert_ne!(changed["document_unchanged"], true, "{changed}");
    // The other request's document changed since it was made: it can no longer be signed.
    let b_code = code_of(&env, &b).await;
    let stale = sign(&env, &name(&b), &b_code).await.unwrap_err();
    assert_eq!(reason(&stale), "DOCUMENT_CHANGED");
}

#[tokio::test]
async fn five_wrong_codes_lock_a_request() {
    let env = Env::new().await;
    let quote = sent_quote(&env).await;
    let r = request(&env, &quote, ("signer_email", "dana@example.com"))
        .await
        .unwrap();
    let code = code_of(&env, &r).await;
    for n in 1..=5 {
        let e = sign(&env, &name(&r), &wrong(&code)).await.unwrap_err();
        let want = if n < 5 {
            "WRONG_CODE"
        } else {
            "SIGNATURE_LOCKED"
        };
        assert_eq!(reason(&e), want, "attempt {n}");
    }
    let locked = sign(&env, &name(&r), &code).await.unwrap_err();
    assert_eq!(reason(&locked), "SIGNATURE_LOCKED");
}

/// A draft contract for a new customer: a grease trap every 90 days for 12 months from
/// `start`, renewing.
async fn draft_contract(env: &Env, start: &str) -> Value {
    let p = env.parent();
    let customer = env.create("Harbor Grill").await.name;
    let property = core(
        env,
        "PropertyService",
        "CreateProperty",
        json!({"parent": p, "property": {
        "customer": customer, "display_name": "Kitchen",
        "address": {"region_code": "US", "address_lines": ["1 Harbor Rd"]}}}),
    )
    .await
    .unwrap();
    let item = core(
        env,
        "CatalogItemService",
        "CreateCatalogItem",
        json!({"parent": p, "catalog_item": {
        "code": "trap", "display_name": "Grease trap pump-out", "job_type": "JOB_TYPE_GREASE_TRAP",
        "base_price": {"currency_code": "USD", "units": 300}, "active": true}}),
    )
    .await
    .unwrap();
    let template = core(
        env,
        "ContractTemplateService",
        "CreateContractTemplate",
        json!({"parent": p,
        "contract_template": {"display_name": "Quarterly grease trap", "catalog_item": name(&item),
        "recurrence": {"interval": 90, "unit": "RECURRENCE_UNIT_DAY"},
        "price": {"currency_code": "USD", "units": 275}, "term_months": 12, "auto_renew": true,
        "terms": "Pump-out every 90 days."}}),
    )
    .await
    .unwrap();
    core(
        env,
        "ContractService",
        "CreateContract",
        json!({"parent": p, "contract": {
        "customer": customer, "property": name(&property), "template": name(&template),
        "start_time": start}}),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn signing_a_contract_activates_it_with_its_due_service_schedule() {
    let env = Env::new().await;
    let contract = draft_contract(&env, "2027-01-04T09:00:00Z").await;
    // The template fills what the contract leaves unset; a draft has no schedule yet.
    assert_eq!(contract["title"], "Quarterly grease trap");
    assert_eq!(contract["price"]["units"], "275");
    assert_eq!(contract["status"], "CONTRACT_STATUS_DRAFT");
    assert!(contract.get("schedule").is_none(), "{contract}");
    assert_eq!(contract["end_time"], "2028-01-04T09:00:00Z");

    let r = request(
        &env,
        &name(&contract),
        ("signer_email", "owner@example.com"),
    )
    .await
    .unwrap();
    let code = code_of(&env, &r).await;
    sign(&env, &name(&r), &code).await.unwrap();
    let active = core(
        &env,
        "ContractService",
        "GetContract",
        json!({"name": name(&contract)}),
    )
    .await
    .unwrap();
    assert_eq!(active["status"], "CONTRACT_STATUS_ACTIVE");
    let due: Vec<&str> = active["schedule"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["due_time"].as_str().unwrap())
        .collect();
    assert_eq!(
        due,
        [
            "2027-01-04T09:00:00Z",
            "2027-04-04T09:00:00Z",
            "2027-07-03T09:00:00Z",
            "2027-10-01T09:00:00Z",
            "2027-12-30T09:00:00Z"
        ]
    );
    // The activation event carries the schedule for fieldops.
    assert_eq!(
        count(
            &env.db,
            "SELECT count(*) AS n FROM core.outbox WHERE event_type = 'crm.core.v1.Contract.activated'"
        )
        .await,
        1
    );
    // A signed contract no longer changes.
    let e = core(
        &env,
        "ContractService",
        "UpdateContract",
        json!({
        "contract": {"name": name(&contract), "auto_renew": false}, "update_mask": "autoRenew"}),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(reason(&e), "CONTRACT_SIGNED");
}

fn at(t: &str) -> chrono::DateTime<chrono::Utc> {
    t.parse().unwrap()
}

#[tokio::test]
async fn the_sweep_announces_each_visit_once_ahead_of_it_and_renews_or_expires_the_term() {
    use crm_core::contracts::sweep;
    let env = Env::new().await;
    let contract = draft_contract(&env, "2031-01-06T09:00:00Z").await;
    let c = name(&contract);
    let r = request(&env, &c, ("signer_email", "owner@example.com"))
        .await
        .unwrap();
    let code = code_of(&env, &r).await;
    sign(&env, &name(&r), &code).await.unwrap();
    // The first visit is announced 14 days ahead of it.
    assert_eq!(
        count(
            &env.db,
            "SELECT count(*) AS n FROM core.contracts \
             WHERE next_check_time = '2030-12-23T09:00:00Z'"
        )
        .await,
        1
    );
    let settings = |_| {
        let mut s = crm_db::pool::PoolSettings::new(env.db.app_url("core"), "core");
        s.acquire_timeout = std::time::Duration::from_secs(3);
        crm_db::pool::build(&s)
    };
    let (a, b) = (settings(0), settings(1));
    let early = sweep::tick(&a, at("2030-12-23T08:00:00Z")).await.unwrap();
    assert_eq!(early, sweep::Tick::default());
    let first = sweep::tick(&a, at("2030-12-24T00:00:00Z")).await.unwrap();
    assert_eq!(first.announced, 1);
    let again = sweep::tick(&b, at("2030-12-24T00:00:00Z")).await.unwrap();
    assert_eq!(again, sweep::Tick::default());

    // Past the term's end, two sweeps at once: the other four visits once, one renewal.
    let end = at("2032-01-07T00:00:00Z");
    let (x, y) = tokio::join!(sweep::tick(&a, end), sweep::tick(&b, end));
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!((x.announced + y.announced, x.renewed + y.renewed), (4, 1));
    let renewed = core(&env, "ContractService", "GetContract", json!({"name": c}))
        .await
        .unwrap();
    assert_eq!(renewed["status"], "CONTRACT_STATUS_ACTIVE");
    assert_eq!(renewed["renewals"], 1);
    assert_eq!(renewed["end_time"], "2033-01-06T09:00:00Z");
    assert_eq!(renewed["schedule"].as_array().unwrap().len(), 9);

    // Without renewal, the second term ends in expiry after its visits are announced.
    let mut admin = env.db.admin().await.unwrap();
    admin
        .batch_execute("UPDATE core.contracts SET auto_renew = false")
        .await
        .unwrap();
    let last = sweep::tick(&a, at("2033-01-07T00:00:00Z")).await.unwrap();
    assert_eq!((last.announced, last.expired), (4, 1));
    let expired = core(&env, "ContractService", "GetContract", json!({"name": c}))
        .await
        .unwrap();
    assert_eq!(expired["status"], "CONTRACT_STATUS_EXPIRED");
    let later = sweep::tick(&a, at("2040-01-01T00:00:00Z")).await.unwrap();
    assert_eq!(later, sweep::Tick::default());

    let events = |t: &str| {
        format!("SELECT count(*) AS n FROM core.outbox WHERE event_type = 'crm.core.v1.{t}'")
    };
    assert_eq!(count(&env.db, &events("ServiceDue.announced")).await, 9);
    assert_eq!(count(&env.db, &events("Contract.renewed")).await, 1);
    assert_eq!(count(&env.db, &events("Contract.expired")).await, 1);
    assert_eq!(
        count(
            &env.db,
            "SELECT count(*) AS n FROM core.audit_entries WHERE action IN ('renewed', 'expired') \
             AND actor = 'services/contract-sweep'"
        )
        .await,
        2
    );
}
