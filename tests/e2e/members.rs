//! Identity administration: members, roles, suspension, sessions, cross-tenant refusals.

use std::time::{Duration, Instant};

use crm_proto::core_v1::{CreateCustomerRequest, Customer, ListCustomersRequest};
use crm_proto::identity_v1::auth_service_client::AuthServiceClient;
use crm_proto::identity_v1::member_service_client::MemberServiceClient;
use crm_proto::identity_v1::session_service_client::SessionServiceClient;
use crm_proto::identity_v1::{
    CreateMemberRequest, ListMembersRequest, ListSessionsRequest, LoginRequest, Member,
    MemberStatus, RevokeSessionRequest, UpdateMemberRequest,
};
use crm_testkit::TestServer;
use tonic::transport::Channel;
use tonic::{Code, Status};
use uuid::Uuid;

use crate::support::Suite;
use crate::support::{Env, assert_invalid_field, reason};

const ADMIN_PASSWORD: &str = "administrator password";
const PASSWORD: &str = "a long enough password";

struct Org {
    env: Env,
    admin: String,
}

async fn org() -> Org {
    let env = Env::new().await;
    let email = format!("admin-{}@example.com", Uuid::now_v7().simple());
    crm_identity::bootstrap::ensure_member(
        &env.server.identity().pool,
        &env.server.identity().hasher,
        &crm_identity::bootstrap::Member {
            org: env.org,
            org_display_name: "Members Inc",
            email: &email,
            password: ADMIN_PASSWORD,
            roles: &["org.admin"],
            reset_password: false,
        },
    )
    .await
    .unwrap();
    let admin = login(&env, &email, ADMIN_PASSWORD).await.unwrap();
    Org { env, admin }
}

async fn login(env: &Env, email: &str, password: &str) -> Result<String, Status> {
    AuthServiceClient::new(env.server.channel.clone())
        .login(LoginRequest {
            email: email.into(),
            password: password.into(),
            organization: env.parent(),
            client_id: String::new(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().access_token)
}

impl Org {
    fn members(&self) -> MemberServiceClient<Channel> {
        MemberServiceClient::new(self.env.server.channel.clone())
    }

    fn sessions(&self) -> SessionServiceClient<Channel> {
        SessionServiceClient::new(self.env.server.channel.clone())
    }

    fn create(&self, email: &str, roles: &[&str], password: &str) -> CreateMemberRequest {
        CreateMemberRequest {
            parent: self.env.parent(),
            member: Some(Member {
                email: email.into(),
                roles: roles.iter().map(|r| (*r).to_owned()).collect(),
                ..Default::default()
            }),
            initial_password: password.into(),
            request_id: String::new(),
        }
    }

    /// Invites a new person, who then accepts by signing in; returns the active member.
    async fn add(&self, roles: &[&str]) -> (Member, String) {
        let (member, email, _) = self.add_signed_in(roles).await;
        (member, email)
    }

    /// [`Org::add`], also returning the access token of the accepting sign-in.
    async fn add_signed_in(&self, roles: &[&str]) -> (Member, String, String) {
        let email = format!("{}@example.com", Uuid::now_v7().simple());
        let invited = self
            .members()
            .create_member(TestServer::request(
                &self.admin,
                self.create(&email, roles, PASSWORD),
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(invited.status, MemberStatus::Invited as i32);
        let token = login(&self.env, &email, PASSWORD).await.unwrap();
        let member = self.member(&invited.name).await;
        assert_eq!(member.status, MemberStatus::Active as i32);
        (member, email, token)
    }

    async fn member(&self, name: &str) -> Member {
        self.members()
            .list_members(TestServer::request(
                &self.admin,
                ListMembersRequest {
                    parent: self.env.parent(),
                    page_size: 1000,
                    page_token: String::new(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .members
            .into_iter()
            .find(|m| m.name == name)
            .unwrap()
    }

    async fn can_list_customers(&self, token: &str) -> Result<(), Status> {
        self.env
            .customers()
            .list_customers(TestServer::request(
                token,
                ListCustomersRequest {
                    parent: self.env.parent(),
                    ..Default::default()
                },
            ))
            .await
            .map(|_| ())
    }

    async fn wait_refused(&self, token: &str) {
        let until = Instant::now() + crate::identity::REVOCATION_BOUND;
        loop {
            match self.can_list_customers(token).await {
                Err(s) if s.code() == Code::Unauthenticated => return,
                Ok(()) if Instant::now() < until => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => panic!("token still accepted: {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn admins_add_members_who_can_sign_in_and_bad_input_is_named() {
    let o = org().await;
    let email = format!("{}@Example.com", Uuid::now_v7().simple());
    let request_id = Uuid::new_v4().to_string();
    let mut req = o.create(&email, &["crm.sales"], PASSWORD);
    req.request_id = request_id.clone();
    let created = o
        .members()
        .create_member(TestServer::request(&o.admin, req.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.email, email.to_lowercase());
    assert_eq!(
        created.status,
        MemberStatus::Invited as i32,
        "an invitation"
    );
    let again = o
        .members()
        .create_member(TestServer::request(&o.admin, req))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, created, "same request_id, same answer");
    let dup = o
        .members()
        .create_member(TestServer::request(
            &o.admin,
            o.create(&email, &["crm.sales"], PASSWORD),
        ))
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Code::AlreadyExists);

    // Signing in to the organization is how the person accepts.
    let token = login(&o.env, &email, PASSWORD).await.unwrap();
    o.can_list_customers(&token).await.unwrap();
    assert_eq!(
        o.member(&created.name).await.status,
        MemberStatus::Active as i32
    );

    let listed = o
        .members()
        .list_members(TestServer::request(
            &o.admin,
            ListMembersRequest {
                parent: o.env.parent(),
                page_size: 1,
                page_token: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.members.len(), 1);
    let rest = o
        .members()
        .list_members(TestServer::request(
            &o.admin,
            ListMembersRequest {
                parent: o.env.parent(),
                page_size: 10,
                page_token: listed.next_page_token,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.members.len(), 1);
    assert!(rest.next_page_token.is_empty());

    for (req, field, reason) in [
        (
            o.create("not-an-email", &["crm.sales"], PASSWORD),
            "member.email",
            "INVALID_EMAIL",
        ),
        (
            o.create("x@example.com", &["emperor"], PASSWORD),
            "member.roles",
            "UNKNOWN_ROLE",
        ),
        (
            o.create("x@example.com", &[], PASSWORD),
            "member.roles",
            "REQUIRED",
        ),
        (
            o.create("x@example.com", &["crm.sales"], "short"),
            "initial_password",
            "WEAK_PASSWORD",
        ),
    ] {
        let s = o
            .members()
            .create_member(TestServer::request(&o.admin, req))
            .await
            .unwrap_err();
        assert_invalid_field(&s, field, reason);
    }
    // Members without the permission may not add anyone.
    let s = o
        .members()
        .create_member(TestServer::request(
            &token,
            o.create("y@example.com", &["crm.sales"], PASSWORD),
        ))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn role_changes_and_suspension_take_effect_at_once() {
    let o = org().await;
    let (member, email) = o.add(&["crm.sales"]).await;
    let token = login(&o.env, &email, PASSWORD).await.unwrap();
    o.can_list_customers(&token).await.unwrap();

    let mut client = o.members();
    let update =
        |m: &Member, roles: &[&str], status: MemberStatus, paths: &[&str]| UpdateMemberRequest {
            member: Some(Member {
                name: m.name.clone(),
                roles: roles.iter().map(|r| (*r).to_owned()).collect(),
                status: status as i32,
                etag: m.etag.clone(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: paths.iter().map(|p| (*p).to_owned()).collect(),
            }),
            request_id: String::new(),
        };
    let viewer = client
        .update_member(TestServer::request(
            &o.admin,
            update(
                &member,
                &["crm.viewer"],
                MemberStatus::Unspecified,
                &["roles"],
            ),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(viewer.roles, ["crm.viewer"]);
    let stale = client
        .update_member(TestServer::request(
            &o.admin,
            update(
                &member,
                &["org.admin"],
                MemberStatus::Unspecified,
                &["roles"],
            ),
        ))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);

    // The sales token issued before the change stops working everywhere.
    o.wait_refused(&token).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let as_viewer = login(&o.env, &email, PASSWORD).await.unwrap();
    o.can_list_customers(&as_viewer).await.unwrap();
    let denied = o
        .env
        .customers()
        .create_customer(TestServer::request(
            &as_viewer,
            CreateCustomerRequest {
                parent: o.env.parent(),
                customer: Some(Customer {
                    display_name: "No".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    client
        .update_member(TestServer::request(
            &o.admin,
            update(&viewer, &[], MemberStatus::Suspended, &["status"]),
        ))
        .await
        .unwrap();
    o.wait_refused(&as_viewer).await;
    let refused = login(&o.env, &email, PASSWORD).await.unwrap_err();
    assert_eq!(reason(&refused), "INVALID_CREDENTIALS");
}

#[tokio::test]
async fn sessions_are_ones_own_unless_managing_and_revocation_reaches_core() {
    let o = org().await;
    let (_, _, token) = o.add_signed_in(&["crm.sales"]).await;
    let list = |t: &str| {
        TestServer::request(
            t,
            ListSessionsRequest {
                parent: o.env.parent(),
                ..Default::default()
            },
        )
    };
    let own = o
        .sessions()
        .list_sessions(list(&token))
        .await
        .unwrap()
        .into_inner()
        .sessions;
    assert_eq!(own.len(), 1, "a member sees only their own sessions");
    let all = o
        .sessions()
        .list_sessions(list(&o.admin))
        .await
        .unwrap()
        .into_inner()
        .sessions;
    assert_eq!(all.len(), 2, "an administrator sees everyone's");
    let admin_session = all
        .iter()
        .find(|s| s.name != own[0].name)
        .unwrap()
        .name
        .clone();

    let foreign = o
        .sessions()
        .revoke_session(TestServer::request(
            &token,
            RevokeSessionRequest {
                name: admin_session,
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        foreign.code(),
        Code::NotFound,
        "someone else's session is invisible"
    );

    let revoked = o
        .sessions()
        .revoke_session(TestServer::request(
            &o.admin,
            RevokeSessionRequest {
                name: own[0].name.clone(),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(revoked.revoke_time.is_some());
    o.wait_refused(&token).await;
}

#[tokio::test]
async fn another_organizations_admin_sees_nothing_of_this_one() {
    let o = org().await;
    o.add(&["crm.sales"]).await;
    let other = o.env.server.token(Uuid::now_v7(), &["org.admin"]);
    let members = o
        .members()
        .list_members(TestServer::request(
            &other,
            ListMembersRequest {
                parent: o.env.parent(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(members.code(), Code::PermissionDenied);
    let sessions = o
        .sessions()
        .list_sessions(TestServer::request(
            &other,
            ListSessionsRequest {
                parent: o.env.parent(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(sessions.code(), Code::PermissionDenied);
    let audit = crm_proto::identity_v1::audit_service_client::AuditServiceClient::new(
        o.env.server.channel.clone(),
    )
    .list_audit_events(TestServer::request(
        &other,
        crm_proto::identity_v1::ListAuditEventsRequest {
            parent: o.env.parent(),
            ..Default::default()
        },
    ))
    .await
    .unwrap_err();
    assert_eq!(audit.code(), Code::PermissionDenied);
    let add = o
        .members()
        .create_member(TestServer::request(
            &other,
            o.create("intruder@example.com", &["org.admin"], PASSWORD),
        ))
        .await
        .unwrap_err();
    assert_eq!(add.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn api_clients_get_tokens_with_secrets_shown_once_rotated_and_revoked() {
    use crm_proto::identity_v1::api_client_service_client::ApiClientServiceClient;
    use crm_proto::identity_v1::{
        ApiClient, ClientCredentialsRequest, CreateApiClientRequest, DeleteApiClientRequest,
        ListApiClientsRequest, RotateApiClientSecretRequest,
    };

    let o = org().await;
    let mut clients = ApiClientServiceClient::new(o.env.server.channel.clone());
    let request_id = Uuid::new_v4().to_string();
    let create = CreateApiClientRequest {
        parent: o.env.parent(),
        api_client: Some(ApiClient {
            display_name: "Accounting sync".into(),
            roles: vec!["crm.viewer".into()],
            ..Default::default()
        }),
        request_id: request_id.clone(),
    };
    let created = clients
        .create_api_client(TestServer::request(&o.admin, create.clone()))
        .await
        .unwrap()
        .into_inner();
    let client = created.api_client.unwrap();
    let first_secret = created.client_secret;
    assert!(first_secret.starts_with("cs1_"));
    let retry = clients
        .create_api_client(TestServer::request(&o.admin, create))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retry.api_client.unwrap().name, client.name);
    assert!(
        retry.client_secret.is_empty(),
        "a secret is shown once, not on a retry"
    );

    let token_with = |secret: String| {
        let mut auth = AuthServiceClient::new(o.env.server.channel.clone());
        let client_id = client.client_id.clone();
        async move {
            auth.client_credentials(ClientCredentialsRequest {
                client_id,
                client_secret: secret,
            })
            .await
            .map(tonic::Response::into_inner)
        }
    };
    let tokens = token_with(first_secret.clone()).await.unwrap();
    assert_eq!(tokens.expires_in, 600);
    assert!(tokens.refresh_token.is_empty());
    o.can_list_customers(&tokens.access_token).await.unwrap();
    let write = o
        .env
        .customers()
        .create_customer(TestServer::request(
            &tokens.access_token,
            CreateCustomerRequest {
                parent: o.env.parent(),
                customer: Some(Customer {
                    display_name: "No".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        write.code(),
        Code::PermissionDenied,
        "the client's roles apply"
    );
    assert_eq!(
        reason(&token_with("cs1_wrong".into()).await.unwrap_err()),
        "INVALID_CLIENT"
    );

    // Secrets are stored as keyed digests only.
    let plain = crate::support::count(
        &o.env.db,
        &format!("SELECT count(*) AS n FROM identity.api_client_secrets WHERE position(convert_to('{}', 'UTF8') in digest) > 0", &first_secret[4..20]),
    )
    .await;
    assert_eq!(plain, 0);

    // Two secrets are valid during a rotation; the next rotation retires the oldest.
    let rotate = || RotateApiClientSecretRequest {
        name: client.name.clone(),
        request_id: String::new(),
    };
    let second = clients
        .rotate_api_client_secret(TestServer::request(&o.admin, rotate()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.api_client.as_ref().unwrap().active_secrets, 2);
    token_with(first_secret.clone()).await.unwrap();
    token_with(second.client_secret.clone()).await.unwrap();
    let third = clients
        .rotate_api_client_secret(TestServer::request(&o.admin, rotate()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        reason(&token_with(first_secret).await.unwrap_err()),
        "INVALID_CLIENT"
    );
    token_with(second.client_secret.clone()).await.unwrap();
    let live = token_with(third.client_secret.clone()).await.unwrap();

    let listed = clients
        .list_api_clients(TestServer::request(
            &o.admin,
            ListApiClientsRequest {
                parent: o.env.parent(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.api_clients.len(), 1);
    assert_eq!(listed.api_clients[0].active_secrets, 2);

    // Deleting the client ends its secrets and its tokens everywhere.
    clients
        .delete_api_client(TestServer::request(
            &o.admin,
            DeleteApiClientRequest {
                name: client.name.clone(),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();
    o.wait_refused(&live.access_token).await;
    assert_eq!(
        reason(&token_with(third.client_secret).await.unwrap_err()),
        "INVALID_CLIENT"
    );

    let other = o.env.server.token(Uuid::now_v7(), &["org.admin"]);
    let foreign = clients
        .list_api_clients(TestServer::request(
            &other,
            ListApiClientsRequest {
                parent: o.env.parent(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn authorization_code_with_pkce_issues_tokens_once_and_a_replay_ends_the_session() {
    use crm_identity::pkce::challenge_s256;
    use crm_proto::identity_v1::api_client_service_client::ApiClientServiceClient;
    use crm_proto::identity_v1::o_auth_service_client::OAuthServiceClient;
    use crm_proto::identity_v1::{
        ApiClient, CreateApiClientRequest, CreateAuthorizationCodeRequest,
        ExchangeAuthorizationCodeRequest,
    };

    let o = org().await;
    let redirect = "https://app.example/callback";
    let app = ApiClientServiceClient::new(o.env.server.channel.clone())
        .create_api_client(TestServer::request(
            &o.admin,
            CreateApiClientRequest {
                parent: o.env.parent(),
                api_client: Some(ApiClient {
                    display_name: "Route planner".into(),
                    roles: vec!["crm.viewer".into()],
                    redirect_uris: vec![redirect.into()],
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .api_client
        .unwrap();
    let bad_uri = ApiClientServiceClient::new(o.env.server.channel.clone())
        .create_api_client(TestServer::request(
            &o.admin,
            CreateApiClientRequest {
                parent: o.env.parent(),
                api_client: Some(ApiClient {
                    display_name: "x".into(),
                    roles: vec!["crm.viewer".into()],
                    redirect_uris: vec!["http://evil.example/cb".into()],
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_invalid_field(&bad_uri, "api_client.redirect_uris", "INVALID_REDIRECT_URI");

    let (_, email) = o.add(&["crm.sales"]).await;
    let user = login(&o.env, &email, PASSWORD).await.unwrap();
    let verifier = format!(
        "{}-verifier-{}",
        Uuid::now_v7().simple(),
        Uuid::now_v7().simple()
    );
    let mut oauth = OAuthServiceClient::new(o.env.server.channel.clone());
    let authorize = |method: &str, uri: &str| CreateAuthorizationCodeRequest {
        client_id: app.client_id.clone(),
        redirect_uri: uri.into(),
        code_challenge: challenge_s256(&verifier),
        code_challenge_method: method.into(),
    };
    let plain = oauth
        .create_authorization_code(TestServer::request(&user, authorize("plain", redirect)))
        .await
        .unwrap_err();
    assert_invalid_field(&plain, "code_challenge_method", "PKCE_S256_REQUIRED");
    let elsewhere = oauth
        .create_authorization_code(TestServer::request(
            &user,
            authorize("S256", "https://app.example/other"),
        ))
        .await
        .unwrap_err();
    assert_invalid_field(&elsewhere, "redirect_uri", "UNREGISTERED_REDIRECT_URI");
    let code = oauth
        .create_authorization_code(TestServer::request(&user, authorize("S256", redirect)))
        .await
        .unwrap()
        .into_inner()
        .code;

    let exchange = |verifier: String| ExchangeAuthorizationCodeRequest {
        code: code.clone(),
        client_id: app.client_id.clone(),
        redirect_uri: redirect.into(),
        code_verifier: verifier,
    };
    let wrong = oauth
        .exchange_authorization_code(exchange("w".repeat(50)))
        .await
        .unwrap_err();
    assert_eq!(reason(&wrong), "INVALID_GRANT");
    let tokens = oauth
        .exchange_authorization_code(exchange(verifier.clone()))
        .await
        .unwrap()
        .into_inner();
    o.can_list_customers(&tokens.access_token).await.unwrap();

    let replay = oauth
        .exchange_authorization_code(exchange(verifier))
        .await
        .unwrap_err();
    assert_eq!(reason(&replay), "CODE_REUSED");
    o.wait_refused(&tokens.access_token).await;
}

#[tokio::test]
async fn integration_credentials_are_sealed_shown_as_last_four_and_decrypted_only_for_services() {
    use crm_proto::identity_v1::integration_credential_service_client::IntegrationCredentialServiceClient;
    use crm_proto::identity_v1::{
        AccessIntegrationCredentialRequest, CreateIntegrationCredentialRequest,
        DeleteIntegrationCredentialRequest, IntegrationCredential,
        ListIntegrationCredentialsRequest,
    };

    let o = org().await;
    let mut creds = IntegrationCredentialServiceClient::new(o.env.server.channel.clone());
    let secret = format!("sk_live_{}wxyz", Uuid::now_v7().simple());
    let create = |provider: &str, secret: &str| CreateIntegrationCredentialRequest {
        parent: o.env.parent(),
        integration_credential: Some(IntegrationCredential {
            display_name: "Payments".into(),
            provider: provider.into(),
            secret: secret.into(),
            ..Default::default()
        }),
        request_id: String::new(),
    };
    let stored = creds
        .create_integration_credential(TestServer::request(&o.admin, create("stripe", &secret)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.secret_last4, "wxyz");
    assert!(stored.secret.is_empty());
    let bad = creds
        .create_integration_credential(TestServer::request(
            &o.admin,
            create("Stripe Inc!", "short"),
        ))
        .await
        .unwrap_err();
    assert_invalid_field(&bad, "integration_credential.provider", "INVALID_PROVIDER");
    assert_invalid_field(&bad, "integration_credential.secret", "INVALID_SECRET");

    let listed = creds
        .list_integration_credentials(TestServer::request(
            &o.admin,
            ListIntegrationCredentialsRequest {
                parent: o.env.parent(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.integration_credentials.len(), 1);
    assert!(listed.integration_credentials[0].secret.is_empty());
    let in_clear = crate::support::count(
        &o.env.db,
        &format!("SELECT count(*) AS n FROM identity.integration_credentials WHERE position(convert_to('{}', 'UTF8') in ciphertext) > 0", &secret[8..24]),
    )
    .await;
    assert_eq!(in_clear, 0, "the secret is not stored in clear");

    let access = || AccessIntegrationCredentialRequest {
        name: stored.name.clone(),
    };
    let admin_read = creds
        .access_integration_credential(TestServer::request(&o.admin, access()))
        .await
        .unwrap_err();
    assert_eq!(
        admin_read.code(),
        Code::PermissionDenied,
        "people manage credentials but cannot read them"
    );
    let service = o.env.server.token(o.env.org, &["service.integrations"]);
    let plain = creds
        .access_integration_credential(TestServer::request(&service, access()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(plain.secret, secret);
    let other_org_service = o
        .env
        .server
        .token(Uuid::now_v7(), &["service.integrations"]);
    let foreign = creds
        .access_integration_credential(TestServer::request(&other_org_service, access()))
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), Code::PermissionDenied);
    let audited = crate::support::count(
        &o.env.db,
        &format!("SELECT count(*) AS n FROM identity.audit_events WHERE organization_id = '{}' AND kind = 'integration_credential.accessed'", o.env.org),
    )
    .await;
    assert_eq!(audited, 1);

    creds
        .delete_integration_credential(TestServer::request(
            &o.admin,
            DeleteIntegrationCredentialRequest {
                name: stored.name.clone(),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();
    let gone = creds
        .access_integration_credential(TestServer::request(&service, access()))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
}

#[tokio::test]
async fn credential_endpoints_are_rate_limited_per_account_address_and_client() {
    use crm_identity::rate_limit::RateLimits;
    use crm_proto::identity_v1::api_client_service_client::ApiClientServiceClient;
    use crm_proto::identity_v1::{ApiClient, ClientCredentialsRequest, CreateApiClientRequest};

    let options = crate::support::SuiteOptions {
        identity: crm_identity::IdentitySettings {
            rate_limits: RateLimits {
                login_per_account: 3,
                per_address: 5,
                per_api_client: 2,
                trust_forwarded_for: true,
            },
            ..crate::support::SuiteOptions::default().identity
        },
        ..Default::default()
    };
    let db = crate::support::test_db().await;
    let server = crate::support::start(&db, options).await;
    let org = Uuid::now_v7();
    let mut auth = AuthServiceClient::new(server.channel.clone());
    // Header values only: documentation addresses (RFC 5737), nothing is sent to them.
    let attempt = |email: &str, from: &str| {
        let mut req = tonic::Request::new(LoginRequest {
            email: email.into(),
            password: "whatever it is".into(),
            organization: format!("organizations/{org}"),
            ..Default::default()
        });
        req.metadata_mut()
            .insert("x-forwarded-for", from.parse().unwrap());
        req
    };
    for _ in 0..3 {
        let s = auth
            .login(attempt("target@example.com", "192.0.2.1"))
            .await
            .unwrap_err();
        assert_eq!(reason(&s), "INVALID_CREDENTIALS");
    }
    let limited = auth
        .login(attempt("target@example.com", "192.0.2.2"))
        .await
        .unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted);
    assert_eq!(
        reason(&limited),
        "RATE_LIMITED",
        "per account, whatever the address"
    );
    assert!(
        tonic_types::StatusExt::get_error_details(&limited)
            .retry_info()
            .is_some()
    );

    for i in 0..5 {
        let s = auth
            .login(attempt(&format!("spray{i}@example.com"), "192.0.2.3"))
            .await
            .unwrap_err();
        assert_eq!(reason(&s), "INVALID_CREDENTIALS");
    }
    assert_eq!(
        reason(
            &auth
                .login(attempt("spray9@example.com", "192.0.2.3"))
                .await
                .unwrap_err()
        ),
        "RATE_LIMITED",
        "per address"
    );
    assert_eq!(
        reason(
            &auth
                .login(attempt("spray9@example.com", "192.0.2.4"))
                .await
                .unwrap_err()
        ),
        "INVALID_CREDENTIALS"
    );

    let admin = server.token(org, &["org.admin"]);
    crm_identity::bootstrap::ensure_member(
        &server.identity().pool,
        &server.identity().hasher,
        &crm_identity::bootstrap::Member {
            org,
            org_display_name: "Limits",
            email: "owner@example.com",
            password: PASSWORD,
            roles: &["org.admin"],
            reset_password: false,
        },
    )
    .await
    .unwrap();
    let created = ApiClientServiceClient::new(server.channel.clone())
        .create_api_client(TestServer::request(
            &admin,
            CreateApiClientRequest {
                parent: format!("organizations/{org}"),
                api_client: Some(ApiClient {
                    display_name: "Busy".into(),
                    roles: vec!["crm.viewer".into()],
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let grant = || {
        let mut req = tonic::Request::new(ClientCredentialsRequest {
            client_id: created.api_client.as_ref().unwrap().client_id.clone(),
            client_secret: created.client_secret.clone(),
        });
        req.metadata_mut()
            .insert("x-forwarded-for", "192.0.2.9".parse().unwrap());
        req
    };
    auth.client_credentials(grant()).await.unwrap();
    auth.client_credentials(grant()).await.unwrap();
    assert_eq!(
        reason(&auth.client_credentials(grant()).await.unwrap_err()),
        "RATE_LIMITED",
        "per API client"
    );
}

#[tokio::test]
async fn organization_defined_roles_expand_to_catalog_roles_in_tokens() {
    use crm_proto::identity_v1::o_auth_service_client::OAuthServiceClient;
    use crm_proto::identity_v1::role_service_client::RoleServiceClient;
    use crm_proto::identity_v1::{
        CreateRoleRequest, IntrospectTokenRequest, ListRolesRequest, Role,
    };

    let o = org().await;
    let mut roles = RoleServiceClient::new(o.env.server.channel.clone());
    let define = |id: &str, catalog: &[&str]| CreateRoleRequest {
        parent: o.env.parent(),
        role: Some(Role {
            display_name: "Dispatch lead".into(),
            catalog_roles: catalog.iter().map(|r| (*r).to_owned()).collect(),
            ..Default::default()
        }),
        role_id: id.into(),
        request_id: String::new(),
    };
    let created = roles
        .create_role(TestServer::request(
            &o.admin,
            define("custom.dispatch-lead", &["crm.sales", "analytics.viewer"]),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        created.name,
        format!("{}/roles/custom.dispatch-lead", o.env.parent())
    );
    let dup = roles
        .create_role(TestServer::request(
            &o.admin,
            define("custom.dispatch-lead", &["crm.viewer"]),
        ))
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Code::AlreadyExists);
    assert_invalid_field(
        &roles
            .create_role(TestServer::request(
                &o.admin,
                define("Dispatch Lead", &["crm.viewer"]),
            ))
            .await
            .unwrap_err(),
        "role_id",
        "INVALID_ROLE_ID",
    );
    assert_invalid_field(
        &roles
            .create_role(TestServer::request(
                &o.admin,
                define("custom.nested", &["custom.dispatch-lead"]),
            ))
            .await
            .unwrap_err(),
        "role.catalog_roles",
        "NESTED_ROLE",
    );
    let listed = roles
        .list_roles(TestServer::request(
            &o.admin,
            ListRolesRequest {
                parent: o.env.parent(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.roles.len(), 1);

    let undefined = o
        .members()
        .create_member(TestServer::request(
            &o.admin,
            o.create("nobody@example.com", &["custom.ghost"], PASSWORD),
        ))
        .await
        .unwrap_err();
    assert_invalid_field(&undefined, "member.roles", "UNKNOWN_ROLE");

    let email = format!("{}@example.com", Uuid::now_v7().simple());
    o.members()
        .create_member(TestServer::request(
            &o.admin,
            o.create(&email, &["custom.dispatch-lead"], PASSWORD),
        ))
        .await
        .unwrap();
    let token = login(&o.env, &email, PASSWORD).await.unwrap();
    let seen = OAuthServiceClient::new(o.env.server.channel.clone())
        .introspect_token(TestServer::request(
            &token,
            IntrospectTokenRequest {
                token: token.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        seen.roles,
        ["analytics.viewer", "crm.sales"],
        "tokens carry the catalog roles"
    );
    o.env
        .customers()
        .create_customer(TestServer::request(
            &token,
            CreateCustomerRequest {
                parent: o.env.parent(),
                customer: Some(Customer {
                    display_name: "Via custom role".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn services_act_for_people_with_delegated_tokens_that_die_with_the_session() {
    use crm_proto::identity_v1::o_auth_service_client::OAuthServiceClient;
    use crm_proto::identity_v1::{ExchangeTokenRequest, IntrospectTokenRequest, LogoutRequest};

    let o = org().await;
    let (_, email) = o.add(&["crm.sales"]).await;
    let person = login(&o.env, &email, PASSWORD).await.unwrap();
    let service = o.env.server.token(o.env.org, &["service.delegate"]);
    let mut oauth = OAuthServiceClient::new(o.env.server.channel.clone());
    let delegate = |caller: &str, subject: &str, scope: &str| {
        TestServer::request(
            caller,
            ExchangeTokenRequest {
                subject_token: subject.into(),
                scope: scope.into(),
                ..Default::default()
            },
        )
    };
    let delegated = oauth
        .exchange_token(delegate(&service, &person, "crm unknown"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(delegated.scope, "crm", "scopes only narrow");
    let seen = oauth
        .introspect_token(TestServer::request(
            &person,
            IntrospectTokenRequest {
                token: delegated.access_token.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(seen.active);
    assert!(
        seen.sub.starts_with("users/"),
        "the person stays the subject"
    );
    assert!(
        seen.actor.starts_with("users/"),
        "act names the service's subject: {seen:?}"
    );
    o.can_list_customers(&delegated.access_token).await.unwrap();

    // People (even administrators) cannot delegate; a delegated token cannot be delegated again.
    assert_eq!(
        oauth
            .exchange_token(delegate(&o.admin, &person, ""))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    assert_invalid_field(
        &oauth
            .exchange_token(delegate(&service, &delegated.access_token, ""))
            .await
            .unwrap_err(),
        "subject_token",
        "ALREADY_DELEGATED",
    );
    assert_invalid_field(
        &oauth
            .exchange_token(delegate(&service, "not.a.token", ""))
            .await
            .unwrap_err(),
        "subject_token",
        "INVALID_SUBJECT_TOKEN",
    );

    // Narrowed to identity's audience: identity accepts it, core does not.
    let mut narrow = delegate(&service, &person, "");
    narrow.get_mut().audience = "crm.identity".into();
    let narrowed = oauth.exchange_token(narrow).await.unwrap().into_inner();
    oauth
        .introspect_token(TestServer::request(
            &narrowed.access_token,
            IntrospectTokenRequest {
                token: person.clone(),
            },
        ))
        .await
        .unwrap();
    let refused = o
        .can_list_customers(&narrowed.access_token)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert_eq!(reason(&refused), "TOKEN_AUDIENCE_INVALID");
    let mut wide = delegate(&service, &person, "");
    wide.get_mut().audience = "elsewhere".into();
    assert_invalid_field(
        &oauth.exchange_token(wide).await.unwrap_err(),
        "audience",
        "INVALID_AUDIENCE",
    );

    // The person signs out: the delegated token, of the same session, dies with it.
    AuthServiceClient::new(o.env.server.channel.clone())
        .logout(TestServer::request(&person, LogoutRequest {}))
        .await
        .unwrap();
    o.wait_refused(&delegated.access_token).await;
}

#[tokio::test]
async fn people_create_organizations_they_administer_and_only_members_see_them() {
    use crm_proto::identity_v1::o_auth_service_client::OAuthServiceClient;
    use crm_proto::identity_v1::organization_service_client::OrganizationServiceClient;
    use crm_proto::identity_v1::{
        CreateOrganizationRequest, ExchangeTokenRequest, GetOrganizationRequest, Organization,
        UpdateOrganizationRequest,
    };

    let o = org().await;
    let mut orgs = OrganizationServiceClient::new(o.env.server.channel.clone());
    let request_id = Uuid::new_v4().to_string();
    let create = CreateOrganizationRequest {
        organization: Some(Organization {
            display_name: "Second Route Co".into(),
            ..Default::default()
        }),
        request_id: request_id.clone(),
    };
    let created = orgs
        .create_organization(TestServer::request(&o.admin, create.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        orgs.create_organization(TestServer::request(&o.admin, create))
            .await
            .unwrap()
            .into_inner(),
        created,
        "same request_id, same organization"
    );
    let empty = orgs
        .create_organization(TestServer::request(
            &o.admin,
            CreateOrganizationRequest {
                organization: Some(Organization::default()),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_invalid_field(&empty, "organization.display_name", "REQUIRED");

    // The creator administers it: switch into it and rename it.
    let inside = OAuthServiceClient::new(o.env.server.channel.clone())
        .exchange_token(TestServer::request(
            &o.admin,
            ExchangeTokenRequest {
                requested_organization: created.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .access_token;
    let got = orgs
        .get_organization(TestServer::request(
            &inside,
            GetOrganizationRequest {
                name: created.name.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.display_name, "Second Route Co");
    let rename = |etag: &str| UpdateOrganizationRequest {
        organization: Some(Organization {
            name: created.name.clone(),
            display_name: "Second Route Company".into(),
            etag: etag.into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["display_name".into()],
        }),
        request_id: String::new(),
    };
    let renamed = orgs
        .update_organization(TestServer::request(&inside, rename(&got.etag)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(renamed.display_name, "Second Route Company");
    assert_eq!(
        orgs.update_organization(TestServer::request(&inside, rename(&got.etag)))
            .await
            .unwrap_err()
            .code(),
        Code::Aborted
    );

    // The old organization's token sees nothing of the new one.
    let foreign = orgs
        .get_organization(TestServer::request(
            &o.admin,
            GetOrganizationRequest {
                name: created.name.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn an_invitation_answers_the_same_for_known_and_unknown_emails_and_needs_the_persons_consent()
{
    let o = org().await;
    // Someone with an account elsewhere (another organization), and an address nobody has.
    let known = format!("known-{}@example.com", Uuid::now_v7().simple());
    crm_identity::bootstrap::ensure_member(
        &o.env.server.identity().pool,
        &o.env.server.identity().hasher,
        &crm_identity::bootstrap::Member {
            org: Uuid::now_v7(),
            org_display_name: "Elsewhere",
            email: &known,
            password: "their own password",
            roles: &["crm.viewer"],
            reset_password: false,
        },
    )
    .await
    .unwrap();
    let unknown = format!("unknown-{}@example.com", Uuid::now_v7().simple());
    let invite = |email: &str, password: &str| {
        let mut members = o.members();
        let req = TestServer::request(&o.admin, {
            let mut r = o.create(email, &["crm.sales"], password);
            r.member.as_mut().unwrap().display_name = "Given Name".into();
            r
        });
        async move {
            members
                .create_member(req)
                .await
                .map(tonic::Response::into_inner)
        }
    };
    let a = invite(&known, PASSWORD).await.unwrap();
    let b = invite(&unknown, "").await.unwrap();
    let shape = |m: &Member, email: &str| {
        assert_eq!(m.status, MemberStatus::Invited as i32);
        assert_eq!(m.email, email);
        assert_eq!(m.display_name, email, "only the invited address is shown");
        assert_eq!(m.roles, ["crm.sales"]);
    };
    shape(&a, &known);
    shape(&b, &unknown);
    // The inviter's password did not replace the person's own.
    assert_eq!(
        reason(&login(&o.env, &known, PASSWORD).await.unwrap_err()),
        "INVALID_CREDENTIALS"
    );
    // The administrator cannot accept for them.
    let forced = o
        .members()
        .update_member(TestServer::request(
            &o.admin,
            UpdateMemberRequest {
                member: Some(Member {
                    name: a.name.clone(),
                    status: MemberStatus::Active as i32,
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["status".into()],
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(forced.code(), Code::FailedPrecondition);
    assert_eq!(reason(&forced), "INVITATION_NOT_ACCEPTED");
    // Nor invite someone as already active.
    let mut active = o.create("z@example.com", &["crm.sales"], PASSWORD);
    active.member.as_mut().unwrap().status = MemberStatus::Active as i32;
    let refused = o
        .members()
        .create_member(TestServer::request(&o.admin, active))
        .await
        .unwrap_err();
    crate::support::assert_invalid_field(&refused, "member.status", "INVITATION_REQUIRED");
    // The person accepts by signing in with their own password.
    let token = login(&o.env, &known, "their own password").await.unwrap();
    o.can_list_customers(&token).await.unwrap();
    let accepted = o.member(&a.name).await;
    assert_eq!(accepted.status, MemberStatus::Active as i32);
}
