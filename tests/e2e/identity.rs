//! Identity: login, lockout, refresh rotation, logout, and revocation reaching core.

use std::time::{Duration, Instant};

use crm_proto::core_v1::ListCustomersRequest;
use crm_proto::identity_v1::auth_service_client::AuthServiceClient;
use crm_proto::identity_v1::key_service_client::KeyServiceClient;
use crm_proto::identity_v1::{
    GetJwksRequest, LoginRequest, LogoutRequest, RefreshTokenRequest, TokenResponse,
};
use crm_testkit::TestServer;
use tonic::{Code, Status};
use uuid::Uuid;

use crate::support::Suite;
use crate::support::{Env, reason};

/// How long a revoked token may still be accepted in these tests (see `refused_within`).
pub const REVOCATION_BOUND: Duration = Duration::from_secs(10);

pub(crate) const PASSWORD: &str = "correct horse battery staple";

pub(crate) struct Member {
    pub(crate) env: Env,
    pub(crate) email: String,
}

pub(crate) async fn member(roles: &[&str]) -> Member {
    let env = Env::new().await;
    let email = format!("{}@example.com", Uuid::now_v7().simple());
    crm_identity::bootstrap::ensure_member(
        &env.server.identity().pool,
        &env.server.identity().hasher,
        &crm_identity::bootstrap::Member {
            org: env.org,
            org_display_name: "Acme Septic",
            email: &email,
            password: PASSWORD,
            roles,
            reset_password: false,
        },
    )
    .await
    .unwrap();
    Member { env, email }
}

impl Member {
    /// Makes the member (same person, same password) a member of a new organization too.
    pub(crate) async fn join_another_organization(&self, roles: &[&str]) -> Uuid {
        let org = Uuid::now_v7();
        crm_identity::bootstrap::ensure_member(
            &self.env.server.identity().pool,
            &self.env.server.identity().hasher,
            &crm_identity::bootstrap::Member {
                org,
                org_display_name: "Second Org",
                email: &self.email,
                password: PASSWORD,
                roles,
                reset_password: false,
            },
        )
        .await
        .unwrap();
        org
    }

    pub(crate) fn auth(&self) -> AuthServiceClient<tonic::transport::Channel> {
        AuthServiceClient::new(self.env.server.channel.clone())
    }

    pub(crate) async fn login_as(
        &self,
        email: &str,
        password: &str,
    ) -> Result<TokenResponse, Status> {
        self.auth()
            .login(LoginRequest {
                email: email.to_owned(),
                password: password.to_owned(),
                organization: self.env.parent(),
                ..Default::default()
            })
            .await
            .map(tonic::Response::into_inner)
    }

    pub(crate) async fn login(&self) -> TokenResponse {
        self.login_as(&self.email, PASSWORD).await.unwrap()
    }

    pub(crate) async fn refresh(&self, token: &str) -> Result<TokenResponse, Status> {
        self.auth()
            .refresh_token(RefreshTokenRequest {
                refresh_token: token.to_owned(),
                ..Default::default()
            })
            .await
            .map(tonic::Response::into_inner)
    }

    pub(crate) async fn list_customers(&self, access_token: &str) -> Result<(), Status> {
        self.env
            .customers()
            .list_customers(TestServer::request(
                access_token,
                ListCustomersRequest {
                    parent: self.env.parent(),
                    ..Default::default()
                },
            ))
            .await
            .map(|_| ())
    }

    /// Waits until core refuses `access_token`; returns how long it took. The bound is far
    /// below the token's 5-minute life (so the refusal comes from the pushed revocation, not from
    /// expiry) and loose because test machines are shared; deploy/bench measures the latency.
    pub(crate) async fn refused_within(&self, access_token: &str) -> Duration {
        let started = Instant::now();
        loop {
            match self.list_customers(access_token).await {
                Err(s) if s.code() == Code::Unauthenticated => {
                    assert_eq!(reason(&s), "TOKEN_REVOKED");
                    return started.elapsed();
                }
                Ok(()) if started.elapsed() < REVOCATION_BOUND => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => panic!("the revoked token was not refused in time: {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn login_gives_tokens_that_core_accepts_and_keys_are_published() {
    let m = member(&["crm.sales"]).await;
    let tokens = m.login().await;
    assert_eq!(tokens.token_type, "Bearer");
    assert_eq!(tokens.expires_in, 300);
    assert!(tokens.refresh_token.starts_with("rt1."));
    assert!(
        tokens
            .session
            .starts_with(&format!("{}/sessions/", m.env.parent()))
    );
    m.list_customers(&tokens.access_token).await.unwrap();

    let jwks = KeyServiceClient::new(m.env.server.channel.clone())
        .get_jwks(GetJwksRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!jwks.keys.is_empty());
    assert!(
        jwks.keys
            .iter()
            .all(|k| k.kty == "OKP" && k.crv == "Ed25519" && k.alg == "EdDSA")
    );

    // Only hashes of refresh tokens and sealed private keys are stored.
    let stored = crate::support::count(
        &m.env.db,
        &format!("SELECT count(*) AS n FROM identity.refresh_tokens WHERE position(convert_to('{}', 'UTF8') in digest) > 0", &tokens.refresh_token[45..]),
    )
    .await;
    assert_eq!(stored, 0);
}

#[tokio::test]
async fn unknown_user_wrong_password_and_foreign_org_look_the_same() {
    let m = member(&["crm.sales"]).await;
    let wrong = m.login_as(&m.email, "not the password").await.unwrap_err();
    let unknown = m
        .login_as("nobody@example.com", PASSWORD)
        .await
        .unwrap_err();
    let foreign = m
        .auth()
        .login(LoginRequest {
            email: m.email.clone(),
            password: PASSWORD.into(),
            organization: format!("organizations/{}", Uuid::now_v7()),
            client_id: String::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    for s in [&wrong, &unknown, &foreign] {
        assert_eq!(s.code(), Code::Unauthenticated);
        assert_eq!(s.message(), wrong.message());
        assert_eq!(reason(s), "INVALID_CREDENTIALS");
    }
    // Email is matched case-insensitively.
    m.login_as(&m.email.to_uppercase(), PASSWORD).await.unwrap();

    let bad = m.login_as("", "").await.unwrap_err();
    crate::support::assert_invalid_field(&bad, "email", "REQUIRED");
    crate::support::assert_invalid_field(&bad, "password", "REQUIRED");
}

#[tokio::test]
async fn lockout_after_five_failures_unlocks_by_itself_and_success_resets() {
    let m = member(&["crm.sales"]).await;
    for _ in 0..5 {
        let s = m.login_as(&m.email, "wrong").await.unwrap_err();
        assert_eq!(s.code(), Code::Unauthenticated);
    }
    // The sixth attempt is refused even with the right password.
    let locked = m.login_as(&m.email, PASSWORD).await.unwrap_err();
    assert_eq!(locked.code(), Code::ResourceExhausted);
    assert_eq!(reason(&locked), "ACCOUNT_LOCKED");
    assert!(
        tonic_types::StatusExt::get_error_details(&locked)
            .retry_info()
            .is_some()
    );
    // Unknown emails lock the same way: lockout reveals nothing about who exists.
    for _ in 0..5 {
        let _ = m.login_as("ghost@example.com", "x").await;
    }
    assert_eq!(
        m.login_as("ghost@example.com", "x")
            .await
            .unwrap_err()
            .code(),
        Code::ResourceExhausted
    );

    // The test server's first lockout lasts 1 s.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    m.login().await;
    // A success reset the count: four more failures do not lock.
    for _ in 0..4 {
        assert_eq!(
            m.login_as(&m.email, "wrong").await.unwrap_err().code(),
            Code::Unauthenticated
        );
    }
    m.login().await;
}

#[tokio::test]
async fn refresh_rotates_tolerates_races_and_revokes_the_family_on_reuse() {
    let m = member(&["crm.sales"]).await;
    let first = m.login().await;

    // Parallel refreshes of one token: one successor, returned to both.
    let (a, b) = tokio::join!(
        m.refresh(&first.refresh_token),
        m.refresh(&first.refresh_token)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.refresh_token, b.refresh_token);
    assert_ne!(a.refresh_token, first.refresh_token);
    assert_eq!(a.session, first.session);
    m.list_customers(&a.access_token).await.unwrap();

    // The successor rotates normally.
    let second = m.refresh(&a.refresh_token).await.unwrap();
    assert_ne!(second.refresh_token, a.refresh_token);

    // A replay of the first token after the grace window revokes everything of the session.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let replay = m.refresh(&first.refresh_token).await.unwrap_err();
    assert_eq!(replay.code(), Code::Unauthenticated);
    assert_eq!(reason(&replay), "REFRESH_TOKEN_REUSED");
    assert_eq!(
        reason(&m.refresh(&second.refresh_token).await.unwrap_err()),
        "INVALID_GRANT"
    );
    let took = m.refused_within(&second.access_token).await;
    assert!(took < REVOCATION_BOUND);
    let events = crate::support::count(
        &m.env.db,
        &format!("SELECT count(*) AS n FROM identity.audit_events WHERE organization_id = '{}' AND kind = 'refresh.reuse_detected'", m.env.org),
    )
    .await;
    assert_eq!(events, 1, "the reuse is audited");

    assert_eq!(
        reason(&m.refresh("rt1.garbage").await.unwrap_err()),
        "INVALID_GRANT"
    );
}

#[tokio::test]
async fn logout_is_refused_by_core_within_about_a_second() {
    let m = member(&["crm.sales"]).await;
    let tokens = m.login().await;
    let other_session = m.login().await;
    m.list_customers(&tokens.access_token).await.unwrap();
    let out = m
        .auth()
        .logout(TestServer::request(&tokens.access_token, LogoutRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(out.session, tokens.session);
    let took = m.refused_within(&tokens.access_token).await;
    assert!(took < REVOCATION_BOUND, "took {took:?}");
    assert_eq!(
        reason(&m.refresh(&tokens.refresh_token).await.unwrap_err()),
        "INVALID_GRANT"
    );
    // Other sessions of the same user are untouched.
    m.list_customers(&other_session.access_token).await.unwrap();
    let anonymous = m.auth().logout(LogoutRequest {}).await.unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
}

fn kid_of(token: &str) -> String {
    use base64::Engine;
    let header = token.split('.').next().unwrap();
    let json: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap(),
    )
    .unwrap();
    json["kid"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn keys_rotate_while_calls_flow_and_no_call_fails() {
    let options = crate::support::SuiteOptions {
        identity: crm_identity::IdentitySettings {
            rotation: crm_identity::keys::RotationPolicy {
                active_for: Duration::from_millis(600),
                publish_lead: Duration::from_millis(300),
                retain_for: Duration::from_secs(600),
            },
            ..crate::support::SuiteOptions::default().identity
        },
        ..crate::support::SuiteOptions::default()
    };
    let db = crate::support::test_db().await;
    let server = crate::support::start(&db, options).await;
    let org = Uuid::now_v7();
    let email = format!("{}@example.com", Uuid::now_v7().simple());
    crm_identity::bootstrap::ensure_member(
        &server.identity().pool,
        &server.identity().hasher,
        &crm_identity::bootstrap::Member {
            org,
            org_display_name: "Rotating",
            email: &email,
            password: PASSWORD,
            roles: &["crm.sales"],
            reset_password: false,
        },
    )
    .await
    .unwrap();
    let login = || {
        let mut auth = AuthServiceClient::new(server.channel.clone());
        let email = email.clone();
        async move {
            auth.login(LoginRequest {
                email,
                password: PASSWORD.into(),
                organization: format!("organizations/{org}"),
                client_id: String::new(),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().access_token)
        }
    };
    let first = login().await.unwrap();
    // The rotation clock is injected: each step is 250 ms later, so keys are published,
    // activated and retired on schedule however slowly the machine runs the steps.
    let start = chrono::Utc::now();
    let mut kids = std::collections::HashSet::new();
    let mut calls = 0;
    let mut customers = crm_proto::core_v1::customer_service_client::CustomerServiceClient::new(
        server.channel.clone(),
    );
    for step in 1..=16 {
        let at = start + chrono::Duration::milliseconds(250 * step);
        server
            .identity()
            .keys
            .rotate_and_reload_at(at)
            .await
            .unwrap();
        let token = login().await.expect("login during rotation");
        kids.insert(kid_of(&token));
        // A token of every key seen so far, and the very first, keep working.
        for t in [&token, &first] {
            customers
                .list_customers(TestServer::request(
                    t,
                    ListCustomersRequest {
                        parent: format!("organizations/{org}"),
                        ..Default::default()
                    },
                ))
                .await
                .expect("a call failed during key rotation");
            calls += 1;
        }
    }
    assert_eq!(calls, 32);
    assert!(
        kids.len() >= 4,
        "a 600 ms key life over 4 s of rotation clock gives several keys, saw {kids:?}"
    );
    // Every rotation step is in the platform's audit chain, which verifies.
    let key_events = crate::support::count(
        &db,
        "SELECT count(*) AS n FROM identity.audit_events \
         WHERE organization_id = '00000000-0000-0000-0000-000000000000' AND kind LIKE 'signing_key.%'",
    )
    .await;
    assert!(key_events >= 4, "{key_events} key events");
    let verdict = crm_identity::audit::verify_chain(
        &server.identity().pool,
        crm_identity::keys::PLATFORM_CHAIN,
    )
    .await
    .unwrap();
    assert!(verdict.broken.is_none(), "{verdict:?}");
    // The first token's key is retired but still published, so it still verifies.
    let jwks = KeyServiceClient::new(server.channel.clone())
        .get_jwks(GetJwksRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(jwks.keys.iter().any(|k| k.kid == kid_of(&first)));
}

#[tokio::test]
async fn audit_chain_records_auth_events_and_detects_tampering() {
    use crm_proto::identity_v1::audit_service_client::AuditServiceClient;
    use crm_proto::identity_v1::{ListAuditEventsRequest, VerifyAuditChainRequest};
    use diesel_async::{RunQueryDsl, SimpleAsyncConnection};

    let m = member(&["org.admin"]).await;
    let _ = m.login_as(&m.email, "wrong").await.unwrap_err();
    let tokens = m.login().await;
    m.auth()
        .logout(TestServer::request(&tokens.access_token, LogoutRequest {}))
        .await
        .unwrap();
    let admin = m.login().await.access_token;

    let mut audit = AuditServiceClient::new(m.env.server.channel.clone());
    let list = |page_token: String| {
        TestServer::request(
            &admin,
            ListAuditEventsRequest {
                parent: m.env.parent(),
                page_size: 2,
                page_token,
                kind: String::new(),
            },
        )
    };
    let mut kinds = Vec::new();
    let mut token = String::new();
    loop {
        let page = audit
            .list_audit_events(list(token))
            .await
            .unwrap()
            .into_inner();
        kinds.extend(page.audit_events.iter().map(|e| e.kind.clone()));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(
        kinds,
        [
            "login.failed",
            "login.succeeded",
            "session.revoked",
            "login.succeeded"
        ]
    );
    let verify = |audit: &mut AuditServiceClient<tonic::transport::Channel>| {
        let req = TestServer::request(
            &admin,
            VerifyAuditChainRequest {
                parent: m.env.parent(),
            },
        );
        let mut audit = audit.clone();
        async move { audit.verify_audit_chain(req).await.unwrap().into_inner() }
    };
    let ok = verify(&mut audit).await;
    assert!(ok.intact, "{ok:?}");
    assert_eq!(ok.checked, 4);

    // The service's own role cannot rewrite history.
    let mut app = m.env.db.app("identity").await.unwrap();
    let denied = app
        .batch_execute("UPDATE audit_events SET detail = 'x'")
        .await
        .unwrap_err();
    assert!(denied.to_string().contains("permission denied"), "{denied}");

    // Whoever can (a superuser) is caught at the first changed event.
    let mut admin_db = m.env.db.admin().await.unwrap();
    let org = m.env.org;
    admin_db
        .batch_execute(&format!("UPDATE identity.audit_events SET detail = 'nothing to see' WHERE organization_id = '{org}' AND seq = 2"))
        .await
        .unwrap();
    let changed = verify(&mut audit).await;
    assert!(!changed.intact);
    assert_eq!(changed.first_broken_seq, 2, "{changed:?}");

    // A deleted event breaks the link of the one after it.
    admin_db
        .batch_execute(&format!("UPDATE identity.audit_events SET detail = 'client crm-first-party' WHERE organization_id = '{org}' AND seq = 2"))
        .await
        .unwrap();
    assert!(
        verify(&mut audit).await.intact,
        "restoring the detail restores the chain"
    );
    admin_db
        .batch_execute(&format!(
            "DELETE FROM identity.audit_events WHERE organization_id = '{org}' AND seq = 3"
        ))
        .await
        .unwrap();
    let gap = verify(&mut audit).await;
    assert_eq!(gap.first_broken_seq, 3, "{gap:?}");

    // Removing the newest event is caught by the head.
    let n: i64 = {
        #[derive(diesel::QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        diesel::sql_query(format!(
            "SELECT max(seq) AS n FROM identity.audit_events WHERE organization_id = '{org}'"
        ))
        .get_result::<N>(&mut admin_db)
        .await
        .unwrap()
        .n
    };
    admin_db
        .batch_execute(&format!(
            "DELETE FROM identity.audit_events WHERE organization_id = '{org}' AND seq >= 3"
        ))
        .await
        .unwrap();
    let truncated = verify(&mut audit).await;
    assert!(!truncated.intact, "{truncated:?}");
    assert_eq!(
        truncated.first_broken_seq, 3,
        "{truncated:?} (had {n} events)"
    );

    // Another organization's administrator sees nothing; a non-admin role is refused.
    let other = m.env.server.token(Uuid::now_v7(), &["org.admin"]);
    let foreign = audit
        .list_audit_events(TestServer::request(
            &other,
            ListAuditEventsRequest {
                parent: m.env.parent(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), Code::PermissionDenied);
    let sales = m.env.server.token(m.env.org, &["crm.sales"]);
    let refused = audit
        .verify_audit_chain(TestServer::request(
            &sales,
            VerifyAuditChainRequest {
                parent: m.env.parent(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn totp_is_required_once_enrolled_codes_are_single_use_and_recovery_codes_work_once() {
    use crm_identity::totp;
    use crm_proto::identity_v1::mfa_service_client::MfaServiceClient;
    use crm_proto::identity_v1::{ConfirmTotpRequest, EnrollTotpRequest};

    let m = member(&["crm.sales"]).await;
    let tokens = m.login().await;
    let mut mfa = MfaServiceClient::new(m.env.server.channel.clone());
    let enrolled = mfa
        .enroll_totp(TestServer::request(
            &tokens.access_token,
            EnrollTotpRequest {
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(enrolled.otpauth_uri.starts_with("otpauth://totp/CRM:"));
    let secret = totp::base32_decode(&enrolled.secret).unwrap();
    assert_eq!(secret.len(), 20);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let step = totp::step_at(i64::try_from(now).unwrap());

    // Not yet confirmed: sign-in is unchanged.
    m.login().await;
    let wrong = mfa
        .confirm_totp(TestServer::request(
            &tokens.access_token,
            ConfirmTotpRequest {
                code: "000000".into(),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    crate::support::assert_invalid_field(&wrong, "code", "WRONG_CODE");
    let confirmed = mfa
        .confirm_totp(TestServer::request(
            &tokens.access_token,
            ConfirmTotpRequest {
                code: totp::code(&secret, step, 6),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(confirmed.recovery_codes.len(), 10);

    let login_with = |totp_code: String, recovery_code: String| {
        let mut auth = m.auth();
        let req = LoginRequest {
            email: m.email.clone(),
            password: PASSWORD.into(),
            organization: m.env.parent(),
            client_id: String::new(),
            totp_code,
            recovery_code,
        };
        async move { auth.login(req).await }
    };
    assert_eq!(
        reason(&login_with(String::new(), String::new()).await.unwrap_err()),
        "MFA_REQUIRED"
    );
    // The code used to confirm is spent; the next step's code (within the ±1 window) works once.
    assert_eq!(
        reason(
            &login_with(totp::code(&secret, step, 6), String::new())
                .await
                .unwrap_err()
        ),
        "MFA_INVALID"
    );
    login_with(totp::code(&secret, step + 1, 6), String::new())
        .await
        .unwrap();
    assert_eq!(
        reason(
            &login_with(totp::code(&secret, step + 1, 6), String::new())
                .await
                .unwrap_err()
        ),
        "MFA_INVALID"
    );

    let recovery = confirmed.recovery_codes[3].clone();
    login_with(String::new(), recovery.to_lowercase())
        .await
        .unwrap();
    assert_eq!(
        reason(&login_with(String::new(), recovery).await.unwrap_err()),
        "MFA_INVALID"
    );

    let again = mfa
        .enroll_totp(TestServer::request(
            &tokens.access_token,
            EnrollTotpRequest {
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_storm_is_refused_fast_while_other_calls_keep_answering() {
    let options = crate::support::SuiteOptions {
        hashing: (1, true),
        ..Default::default()
    };
    let db = crate::support::test_db().await;
    let server = crate::support::start(&db, options).await;
    let org = Uuid::now_v7();
    let email = format!("{}@example.com", Uuid::now_v7().simple());
    crm_identity::bootstrap::ensure_member(
        &server.identity().pool,
        &server.identity().hasher,
        &crm_identity::bootstrap::Member {
            org,
            org_display_name: "Storm",
            email: &email,
            password: PASSWORD,
            roles: &["crm.sales"],
            reset_password: false,
        },
    )
    .await
    .unwrap();
    let reader = server.token(org, &["crm.sales"]);
    let login = || {
        let mut auth = AuthServiceClient::new(server.channel.clone());
        let req = LoginRequest {
            email: email.clone(),
            password: PASSWORD.into(),
            organization: format!("organizations/{org}"),
            ..Default::default()
        };
        async move { auth.login(req).await }
    };
    let login_as = |email: String, password: &'static str| {
        let mut auth = AuthServiceClient::new(server.channel.clone());
        let req = LoginRequest {
            email,
            password: password.into(),
            organization: format!("organizations/{org}"),
            ..Default::default()
        };
        async move { auth.login(req).await }
    };
    // An address locked by failures, for the check below.
    let ghost = format!("ghost-{}@example.com", Uuid::now_v7().simple());
    for _ in 0..5 {
        let _ = login_as(ghost.clone(), "wrong").await;
    }
    let locked = login_as(ghost.clone(), "wrong").await.unwrap_err();
    assert_eq!(reason(&locked), "ACCOUNT_LOCKED");
    // The one hashing slot is taken (as by a login in progress): every login of the storm must
    // be refused at once, not queue for it. Were they to queue, they would wait for the slot
    // that is only freed after they all returned, and the test would time out.
    let slot = server.identity().hasher.occupy().expect("a free slot");
    // The slot is taken before anything is read: even the locked address is refused for
    // capacity, without its lockout being looked up.
    let busy = login_as(ghost.clone(), "wrong").await.unwrap_err();
    assert_eq!(reason(&busy), "LOGIN_CAPACITY");
    let attempts: Vec<_> = (0..12).map(|_| tokio::spawn(login())).collect();
    // Meanwhile, other RPCs answer.
    let mut customers = crm_proto::core_v1::customer_service_client::CustomerServiceClient::new(
        server.channel.clone(),
    );
    for _ in 0..5 {
        customers
            .list_customers(TestServer::request(
                &reader,
                ListCustomersRequest {
                    parent: format!("organizations/{org}"),
                    ..Default::default()
                },
            ))
            .await
            .unwrap();
    }
    for a in attempts {
        let refused = tokio::time::timeout(Duration::from_secs(30), a)
            .await
            .expect("a login queued behind the busy hashing slot")
            .unwrap()
            .unwrap_err();
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
        assert_eq!(reason(&refused), "LOGIN_CAPACITY");
        assert!(
            tonic_types::StatusExt::get_error_details(&refused)
                .retry_info()
                .is_some()
        );
    }
    // A refused login is not a failed one: once the slot is free, signing in works.
    drop(slot);
    login()
        .await
        .expect("signs in once hashing capacity is back");
}

#[tokio::test]
async fn password_reset_goes_through_the_outbox_is_single_use_and_ends_sessions() {
    use crm_proto::identity_v1::{
        PasswordResetRequested, RequestPasswordResetRequest, ResetPasswordRequest,
    };
    use diesel_async::RunQueryDsl;
    use prost::Message;

    #[derive(diesel::QueryableByName)]
    struct Payload {
        #[diesel(sql_type = diesel::sql_types::Bytea)]
        payload: Vec<u8>,
    }

    let m = member(&["crm.sales"]).await;
    let before = m.login().await;
    let mut auth = m.auth();
    for email in [m.email.clone(), "nobody@example.com".to_owned()] {
        auth.request_password_reset(RequestPasswordResetRequest {
            email,
            organization: m.env.parent(),
        })
        .await
        .unwrap();
    }
    // The notification system would read the event; the test reads the outbox.
    let mut admin = m.env.db.admin().await.unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    let event = loop {
        let rows: Vec<Payload> = diesel::sql_query(
            "SELECT payload FROM identity.outbox WHERE event_type = 'crm.identity.v1.PasswordResetRequested'",
        )
        .load(&mut admin)
        .await
        .unwrap();
        if let Some(row) = <[Payload]>::first(&rows) {
            assert_eq!(rows.len(), 1, "only the member's request produces a token");
            break PasswordResetRequested::decode(row.payload.as_slice()).unwrap();
        }
        assert!(Instant::now() < until, "no reset event");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(event.email, m.email);
    #[expect(deprecated, reason = "checks that the plain field stays empty")]
    let plain = event.reset_token.clone();
    assert!(plain.is_empty(), "the event carries no plain token");
    let token =
        crm_identity::password_reset::open_sealed_token(&m.env.server.identity().kek, &event)
            .expect("sealed for the sender");
    assert!(token.starts_with("pr2."));
    let outbox_text = crate::support::count(
        &m.env.db,
        &format!(
            "SELECT count(*) AS n FROM identity.outbox WHERE position(convert_to('{token}', \
             'UTF8') in payload) > 0"
        ),
    )
    .await;
    assert_eq!(outbox_text, 0, "the plain token is nowhere in the outbox");
    assert_eq!(
        crate::support::count(
            &m.env.db,
            "SELECT count(*) AS n FROM pg_class WHERE relname = 'password_reset_tokens' \
             AND relrowsecurity AND relforcerowsecurity"
        )
        .await,
        1,
        "reset tokens are behind row-level security"
    );

    let weak = auth
        .reset_password(ResetPasswordRequest {
            reset_token: token.clone(),
            new_password: "short".into(),
        })
        .await
        .unwrap_err();
    crate::support::assert_invalid_field(&weak, "new_password", "WEAK_PASSWORD");
    let new_password = "a brand new long password";
    auth.reset_password(ResetPasswordRequest {
        reset_token: token.clone(),
        new_password: new_password.into(),
    })
    .await
    .unwrap();
    let reused = auth
        .reset_password(ResetPasswordRequest {
            reset_token: token,
            new_password: new_password.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&reused), "INVALID_RESET_TOKEN");

    m.refused_within(&before.access_token).await;
    assert_eq!(
        reason(&m.refresh(&before.refresh_token).await.unwrap_err()),
        "INVALID_GRANT"
    );
    assert_eq!(
        reason(&m.login_as(&m.email, PASSWORD).await.unwrap_err()),
        "INVALID_CREDENTIALS"
    );
    // Tokens from the second of the reset are refused too (whole-second `iat`): sign in after it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let after = m.login_as(&m.email, new_password).await.unwrap();
    m.list_customers(&after.access_token).await.unwrap();
}

#[tokio::test]
async fn exchange_switches_organization_introspection_reports_and_revocation_revokes() {
    use crm_proto::identity_v1::o_auth_service_client::OAuthServiceClient;
    use crm_proto::identity_v1::{
        ExchangeTokenRequest, IntrospectTokenRequest, RevokeTokenRequest,
    };

    let m = member(&["crm.sales"]).await;
    let org_b = m.join_another_organization(&["crm.viewer"]).await;
    let a = m.login().await;
    let mut oauth = OAuthServiceClient::new(m.env.server.channel.clone());
    let b = oauth
        .exchange_token(TestServer::request(
            &a.access_token,
            ExchangeTokenRequest {
                requested_organization: format!("organizations/{org_b}"),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        b.session
            .starts_with(&format!("organizations/{org_b}/sessions/"))
    );
    let list_in = |org: String, token: String| {
        let mut customers = m.env.customers();
        async move {
            customers
                .list_customers(TestServer::request(
                    &token,
                    ListCustomersRequest {
                        parent: org,
                        ..Default::default()
                    },
                ))
                .await
                .map(|_| ())
        }
    };
    list_in(format!("organizations/{org_b}"), b.access_token.clone())
        .await
        .unwrap();
    assert_eq!(
        list_in(m.env.parent(), b.access_token.clone())
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied,
        "one token, one organization"
    );
    let stranger = oauth
        .exchange_token(TestServer::request(
            &a.access_token,
            ExchangeTokenRequest {
                requested_organization: format!("organizations/{}", Uuid::now_v7()),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(stranger.code(), Code::PermissionDenied);

    let own = oauth
        .introspect_token(TestServer::request(
            &a.access_token,
            IntrospectTokenRequest {
                token: a.access_token.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(own.active);
    assert_eq!(own.organization, m.env.parent());
    assert_eq!(own.roles, ["crm.sales"]);
    let other_org = oauth
        .introspect_token(TestServer::request(
            &a.access_token,
            IntrospectTokenRequest {
                token: b.access_token.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        !other_org.active,
        "another organization's token is not described"
    );
    let garbage = oauth
        .introspect_token(TestServer::request(
            &a.access_token,
            IntrospectTokenRequest {
                token: "x.y.z".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!garbage.active);

    // Revoking an access token (by jti) and a refresh token (its session).
    let second = m.login().await;
    oauth
        .revoke_token(TestServer::request(
            &second.access_token,
            RevokeTokenRequest {
                token: second.access_token.clone(),
            },
        ))
        .await
        .unwrap();
    m.refused_within(&second.access_token).await;
    oauth
        .revoke_token(TestServer::request(
            &a.access_token,
            RevokeTokenRequest {
                token: a.refresh_token.clone(),
            },
        ))
        .await
        .unwrap();
    assert_eq!(
        reason(&m.refresh(&a.refresh_token).await.unwrap_err()),
        "INVALID_GRANT"
    );
    m.refused_within(&a.access_token).await;
    // Unknown tokens are accepted silently (RFC 7009).
    let third = m.login().await;
    oauth
        .revoke_token(TestServer::request(
            &third.access_token,
            RevokeTokenRequest {
                token: "rt1.nothing".into(),
            },
        ))
        .await
        .unwrap();
    m.list_customers(&third.access_token).await.unwrap();
}
