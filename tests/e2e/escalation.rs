//! Credentials never turn into more than they are: exchanged tokens, service roles, revocations
//! across organizations.

use crm_proto::identity_v1::o_auth_service_client::OAuthServiceClient;
use crm_proto::identity_v1::{ExchangeTokenRequest, TokenResponse};
use crm_testkit::TestServer;
use diesel::sql_types::{Text, Timestamptz};
use diesel_async::RunQueryDsl;
use tonic::{Code, Status};
use uuid::Uuid;

use crate::identity::{Member, PASSWORD, member};
use crate::support::Suite;
use crate::support::reason;

async fn switch(m: &Member, token: &str, org: Uuid) -> Result<TokenResponse, Status> {
    OAuthServiceClient::new(m.env.server.channel.clone())
        .exchange_token(TestServer::request(
            token,
            ExchangeTokenRequest {
                requested_organization: format!("organizations/{org}"),
                ..Default::default()
            },
        ))
        .await
        .map(tonic::Response::into_inner)
}

#[derive(diesel::QueryableByName)]
struct SessionEnd {
    #[diesel(sql_type = Timestamptz)]
    expire_time: chrono::DateTime<chrono::Utc>,
}

async fn session_end(m: &Member, session_name: &str) -> chrono::DateTime<chrono::Utc> {
    let id = session_name.rsplit('/').next().unwrap().to_owned();
    let mut admin = m.env.db.admin().await.unwrap();
    diesel::sql_query("SELECT expire_time FROM identity.sessions WHERE id = $1::uuid")
        .bind::<Text, _>(id)
        .get_result::<SessionEnd>(&mut admin)
        .await
        .unwrap()
        .expire_time
}

#[tokio::test]
async fn only_a_live_sessions_own_token_switches_organization_and_never_outlives_it() {
    let m = member(&["crm.sales"]).await;
    let org_b = m.join_another_organization(&["crm.viewer"]).await;
    let a = m.login().await;

    // A session opened from another ends no later than it.
    let b = switch(&m, &a.access_token, org_b).await.unwrap();
    let parent_end = session_end(&m, &a.session).await;
    assert!(session_end(&m, &b.session).await <= parent_end);
    let refresh_end = b.refresh_expire_time.unwrap();
    assert!(refresh_end.seconds <= parent_end.timestamp());

    // The same organization is not a switch.
    let same = switch(&m, &a.access_token, m.env.org).await.unwrap_err();
    crate::support::assert_invalid_field(&same, "requested_organization", "SAME_ORGANIZATION");

    // A token of no recorded session (minted elsewhere, or a forged session id) is refused.
    let sessionless = m.env.server.token(m.env.org, &["crm.sales"]);
    let refused = switch(&m, &sessionless, org_b).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert_eq!(reason(&refused), "SESSION_NOT_LIVE");

    // A delegated token (a service acting for the person) cannot become a session.
    let service = m.env.server.token(m.env.org, &["service.delegate"]);
    let delegated = OAuthServiceClient::new(m.env.server.channel.clone())
        .exchange_token(TestServer::request(
            &service,
            ExchangeTokenRequest {
                subject_token: a.access_token.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let refused = switch(&m, &delegated.access_token, org_b)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert_eq!(reason(&refused), "DELEGATED_TOKEN_REFUSED");

    // A token narrowed to one service cannot either.
    let narrowed = OAuthServiceClient::new(m.env.server.channel.clone())
        .exchange_token(TestServer::request(
            &service,
            ExchangeTokenRequest {
                subject_token: a.access_token.clone(),
                audience: "crm.identity".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let refused = switch(&m, &narrowed.access_token, org_b).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(
        ["DELEGATED_TOKEN_REFUSED", "AUDIENCE_TOO_NARROW"].contains(&reason(&refused).as_str()),
        "{refused:?}"
    );
    assert_eq!(
        crate::support::count(
            &m.env.db,
            &format!(
                "SELECT count(*) AS n FROM identity.sessions WHERE organization_id = '{org_b}'"
            )
        )
        .await,
        1,
        "only the legitimate switch opened a session"
    );
}

#[tokio::test]
async fn an_organization_admin_cannot_grant_service_roles_to_anyone() {
    use crm_proto::identity_v1::api_client_service_client::ApiClientServiceClient;
    use crm_proto::identity_v1::member_service_client::MemberServiceClient;
    use crm_proto::identity_v1::role_service_client::RoleServiceClient;
    use crm_proto::identity_v1::{
        ApiClient, CreateApiClientRequest, CreateMemberRequest, CreateRoleRequest, Member, Role,
    };

    let m = member(&["org.admin"]).await;
    let admin = m.login().await.access_token;
    let channel = m.env.server.channel.clone();
    for role in ["service.integrations", "service.delegate", "service.reader"] {
        let roles = vec![role.to_owned()];
        let member = MemberServiceClient::new(channel.clone())
            .create_member(TestServer::request(
                &admin,
                CreateMemberRequest {
                    parent: m.env.parent(),
                    member: Some(Member {
                        email: format!("{}@example.com", Uuid::now_v7().simple()),
                        roles: roles.clone(),
                        ..Default::default()
                    }),
                    initial_password: "a long enough password".into(),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap_err();
        crate::support::assert_invalid_field(&member, "member.roles", "SERVICE_ROLE_NOT_GRANTABLE");
        let client = ApiClientServiceClient::new(channel.clone())
            .create_api_client(TestServer::request(
                &admin,
                CreateApiClientRequest {
                    parent: m.env.parent(),
                    api_client: Some(ApiClient {
                        display_name: "Sneaky".into(),
                        roles: roles.clone(),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap_err();
        crate::support::assert_invalid_field(
            &client,
            "api_client.roles",
            "SERVICE_ROLE_NOT_GRANTABLE",
        );
        let custom = RoleServiceClient::new(channel.clone())
            .create_role(TestServer::request(
                &admin,
                CreateRoleRequest {
                    parent: m.env.parent(),
                    role: Some(Role {
                        display_name: "Looks harmless".into(),
                        catalog_roles: vec!["crm.viewer".into(), role.to_owned()],
                        ..Default::default()
                    }),
                    role_id: "custom.harmless".into(),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap_err();
        crate::support::assert_invalid_field(
            &custom,
            "role.catalog_roles",
            "SERVICE_ROLE_NOT_GRANTABLE",
        );
    }
    for table in ["api_clients", "org_roles"] {
        assert_eq!(
            crate::support::count(
                &m.env.db,
                &format!("SELECT count(*) AS n FROM identity.{table}")
            )
            .await,
            0,
            "nothing written to {table}"
        );
    }
}

#[tokio::test]
async fn another_organizations_admin_ends_a_persons_tokens_only_in_their_own_organization() {
    use crm_proto::identity_v1::member_service_client::MemberServiceClient;
    use crm_proto::identity_v1::{LoginRequest, Member as MemberProto, UpdateMemberRequest};

    let m = member(&["crm.sales"]).await;
    let org_b = m.join_another_organization(&["crm.sales"]).await;
    // Organization B's administrator: someone else.
    let admin_email = format!("b-admin-{}@example.com", Uuid::now_v7().simple());
    crm_identity::bootstrap::ensure_member(
        &m.env.server.identity().pool,
        &m.env.server.identity().hasher,
        &crm_identity::bootstrap::Member {
            org: org_b,
            org_display_name: "Second Org",
            email: &admin_email,
            password: PASSWORD,
            roles: &["org.admin"],
            reset_password: false,
        },
    )
    .await
    .unwrap();
    let login = |email: String, org: Uuid| {
        let mut auth = crm_proto::identity_v1::auth_service_client::AuthServiceClient::new(
            m.env.server.channel.clone(),
        );
        async move {
            auth.login(LoginRequest {
                email,
                password: PASSWORD.into(),
                organization: format!("organizations/{org}"),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .access_token
        }
    };
    let b_admin = login(admin_email, org_b).await;
    let in_a = m.login().await.access_token;
    let in_b = login(m.email.clone(), org_b).await;
    // Tokens from the second of the change are revoked too (whole-second `iat`).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;

    let mut members = MemberServiceClient::new(m.env.server.channel.clone());
    let name = {
        let listed = members
            .list_members(TestServer::request(
                &b_admin,
                crm_proto::identity_v1::ListMembersRequest {
                    parent: format!("organizations/{org_b}"),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        listed
            .members
            .into_iter()
            .find(|x| x.email == m.email)
            .unwrap()
            .name
    };
    members
        .update_member(TestServer::request(
            &b_admin,
            UpdateMemberRequest {
                member: Some(MemberProto {
                    name,
                    roles: vec!["crm.viewer".into()],
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["roles".into()],
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    // B's token ends (its roles changed); A's keeps working.
    let until = std::time::Instant::now() + crate::identity::REVOCATION_BOUND;
    loop {
        let mut customers = m.env.customers();
        let b = customers
            .list_customers(TestServer::request(
                &in_b,
                crm_proto::core_v1::ListCustomersRequest {
                    parent: format!("organizations/{org_b}"),
                    ..Default::default()
                },
            ))
            .await;
        match b {
            Err(s) if s.code() == Code::Unauthenticated => break,
            Ok(_) if std::time::Instant::now() < until => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            other => panic!("organization B's token still accepted: {other:?}"),
        }
    }
    m.list_customers(&in_a)
        .await
        .expect("the token for organization A is untouched");
    let rows = crate::support::count(
        &m.env.db,
        &format!(
            "SELECT count(*) AS n FROM identity.revocations WHERE kind = 3 \
             AND organization_id = '{org_b}'"
        ),
    )
    .await;
    assert_eq!(rows, 1, "one revocation, scoped to B");
}

#[tokio::test]
async fn only_the_operator_path_registers_service_clients() {
    use crm_proto::identity_v1::auth_service_client::AuthServiceClient;
    use crm_proto::identity_v1::{ClientCredentialsRequest, IntrospectTokenRequest};

    let m = member(&["org.admin"]).await;
    let created = crm_identity::api_clients::register_service_client(
        &m.env.server.identity().pool,
        &m.env.server.identity().secrets,
        m.env.org,
        "QuickBooks sync",
        &["service.integrations".to_owned()],
    )
    .await
    .unwrap();
    let client = created.api_client.unwrap();
    let tokens = AuthServiceClient::new(m.env.server.channel.clone())
        .client_credentials(ClientCredentialsRequest {
            client_id: client.client_id.clone(),
            client_secret: created.client_secret,
        })
        .await
        .unwrap()
        .into_inner();
    let seen = OAuthServiceClient::new(m.env.server.channel.clone())
        .introspect_token(TestServer::request(
            &m.login().await.access_token,
            IntrospectTokenRequest {
                token: tokens.access_token,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(seen.active);
    assert_eq!(seen.roles, ["service.integrations"]);
    let refused = crm_identity::api_clients::register_service_client(
        &m.env.server.identity().pool,
        &m.env.server.identity().secrets,
        m.env.org,
        "Typo",
        &["service.everything".to_owned()],
    )
    .await;
    assert!(refused.is_err(), "only catalog roles");
}
