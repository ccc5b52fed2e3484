//! Tenant isolation, in the API and in the database.

use crm_db::tenant;
use crm_proto::core_v1::{
    Customer, GetCustomerRequest, ListCustomersRequest, UpdateCustomerRequest,
};
use diesel::sql_types::{BigInt, Text, Uuid as SqlUuid};
use diesel_async::{AsyncConnection, RunQueryDsl, SimpleAsyncConnection};
use tonic::Code;
use uuid::Uuid;

use crate::support::{Env, count};

#[tokio::test]
async fn another_organizations_token_cannot_read_or_change_customers() {
    let env = Env::new().await;
    let a = env.create("Alpha Septic").await;
    let org_b = Uuid::now_v7();
    let token_b = env.server.token(org_b, &["org.admin"]);
    let mut client = env.customers();

    let get = client
        .get_customer(crm_testkit::TestServer::request(
            &token_b,
            GetCustomerRequest {
                name: a.name.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(get.code(), Code::PermissionDenied);

    let list = client
        .list_customers(crm_testkit::TestServer::request(
            &token_b,
            ListCustomersRequest {
                parent: env.parent(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(list.code(), Code::PermissionDenied);

    let update = client
        .update_customer(crm_testkit::TestServer::request(
            &token_b,
            UpdateCustomerRequest {
                customer: Some(Customer {
                    name: a.name.clone(),
                    display_name: "Hijacked".into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["display_name".into()],
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(update.code(), Code::PermissionDenied);

    // B's own listing shows nothing of A.
    let own = client
        .list_customers(crm_testkit::TestServer::request(
            &token_b,
            ListCustomersRequest {
                parent: format!("organizations/{org_b}"),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(own.customers.is_empty());

    let still = client
        .get_customer(env.req(GetCustomerRequest {
            name: a.name.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(still.display_name, "Alpha Septic");
    assert_eq!(still.etag, a.etag);
}

#[derive(diesel::QueryableByName)]
struct N {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[tokio::test]
async fn row_level_security_confines_the_app_role_to_its_tenant() {
    let env = Env::new().await;
    env.create("Alpha One").await;
    env.create("Alpha Two").await;
    assert_eq!(env.customer_rows().await, 2);

    // The app role is neither superuser, nor BYPASSRLS, nor the table owner.
    assert_eq!(
        count(
            &env.db,
            "SELECT count(*) AS n FROM pg_roles WHERE rolname = 'core_app' AND NOT rolsuper AND NOT rolbypassrls"
        )
        .await,
        1
    );
    assert_eq!(
        count(&env.db, "SELECT count(*) AS n FROM pg_tables WHERE tablename = 'customers' AND tableowner = 'core_app'").await,
        0
    );

    let org_a = env.org;
    let org_b = Uuid::now_v7();
    let mut conn = env.db.app("core").await.unwrap();

    // In B's tenant transaction, a query without any organization filter sees none of A's rows.
    let seen = conn
        .transaction::<i64, diesel::result::Error, _>(async |conn| {
            tenant::set_tenant(conn, org_b).await?;
            let row: N = diesel::sql_query("SELECT count(*) AS n FROM customers")
                .get_result(conn)
                .await?;
            Ok(row.n)
        })
        .await
        .unwrap();
    assert_eq!(seen, 0);

    // Outside any tenant transaction the app role sees nothing at all.
    let row: N = diesel::sql_query("SELECT count(*) AS n FROM customers")
        .get_result(&mut conn)
        .await
        .unwrap();
    assert_eq!(row.n, 0);

    // And it cannot write a row for A while acting as B.
    let insert = conn
        .transaction::<(), diesel::result::Error, _>(async |conn| {
            tenant::set_tenant(conn, org_b).await?;
            diesel::sql_query(
                "INSERT INTO customers (organization_id, id, display_name, created_by, updated_by) \
                 VALUES ($1, $2, 'Planted', 'x', 'x')",
            )
            .bind::<SqlUuid, _>(org_a)
            .bind::<SqlUuid, _>(Uuid::now_v7())
            .execute(conn)
            .await?;
            Ok(())
        })
        .await
        .unwrap_err();
    assert_eq!(
        crm_db::error::classify_diesel(&insert),
        crm_db::DbErrorClass::PermissionDenied,
        "{insert}"
    );
    assert_eq!(env.customer_rows().await, 2);

    // The setting is transaction-local: it does not survive on the pooled connection.
    conn.batch_execute("BEGIN").await.unwrap();
    tenant::set_tenant(&conn, org_a).await.unwrap();
    conn.batch_execute("COMMIT").await.unwrap();
    let setting: Vec<S> =
        diesel::sql_query("SELECT coalesce(current_setting('app.org_id', true), '') AS s")
            .load(&mut conn)
            .await
            .unwrap();
    assert_eq!(setting[0].s, "");
}

#[derive(diesel::QueryableByName)]
struct S {
    #[diesel(sql_type = Text)]
    s: String,
}

#[tokio::test]
async fn a_pool_whose_role_stands_outside_row_level_security_is_refused() {
    use crm_db::pool::{self, PoolSettings, UnsafeRole};

    let db = crate::support::test_db().await;
    let check = |url: String, schema: &str| {
        let pool = pool::build(&PoolSettings::new(url, schema));
        async move { pool::check_role(&pool).await }
    };
    assert_eq!(check(db.app_url("core"), "core").await, Ok(Some(())));
    assert!(matches!(
        check(db.admin_url.clone(), "core").await,
        Err(UnsafeRole::Superuser(_))
    ));
    // Role names are cluster-wide: make them unique to this test database.
    let suffix = db.name.replace(|c: char| !c.is_ascii_alphanumeric(), "_");
    let (bypass, owner) = (format!("bypass_{suffix}"), format!("owner_{suffix}"));
    let mut admin = db.admin().await.unwrap();
    admin
        .batch_execute(&format!(
            "CREATE ROLE {bypass} LOGIN BYPASSRLS PASSWORD 'pw'; \
             CREATE ROLE {owner} LOGIN PASSWORD 'pw'; \
             CREATE SCHEMA owned_{suffix} AUTHORIZATION {owner};"
        ))
        .await
        .unwrap();
    let url_as = |role: &str| {
        let mut u = url::Url::parse(&db.admin_url).unwrap();
        u.set_username(role).unwrap();
        u.set_password(Some("pw")).unwrap();
        u.to_string()
    };
    assert!(matches!(
        check(url_as(&bypass), "core").await,
        Err(UnsafeRole::BypassRls(_))
    ));
    assert!(matches!(
        check(url_as(&owner), &format!("owned_{suffix}")).await,
        Err(UnsafeRole::SchemaOwner(..))
    ));
    // Unreachable: not decided here.
    assert_eq!(
        check("postgres://nobody@127.0.0.1:1/none".into(), "core").await,
        Ok(None)
    );
    admin
        .batch_execute(&format!(
            "DROP SCHEMA owned_{suffix}; DROP ROLE {owner}; DROP ROLE {bypass};"
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn no_row_of_core_can_disappear_by_cascade() {
    let env = Env::new().await;
    // Not one foreign key of core cascades deletes, and messages point at their customer.
    let cascading = count(
        &env.db,
        "SELECT count(*) AS n FROM pg_constraint WHERE contype = 'f' AND confdeltype = 'c' \
         AND connamespace = 'core'::regnamespace",
    )
    .await;
    assert_eq!(cascading, 0);
    let message_fk = count(
        &env.db,
        "SELECT count(*) AS n FROM pg_constraint WHERE contype = 'f' \
         AND conrelid = 'core.messages'::regclass AND confrelid = 'core.customers'::regclass",
    )
    .await;
    assert_eq!(message_fk, 1);

    // Even the superuser cannot remove a customer out from under its records.
    let customer = env.create("Parent Co").await;
    let id = customer.name.rsplit('/').next().unwrap().to_owned();
    let mut admin = env.db.admin().await.unwrap();
    admin
        .batch_execute(&format!(
            "INSERT INTO core.contacts (organization_id, id, customer_id, display_name, \
             created_by, updated_by) VALUES ('{}', '{}', '{id}', 'Child', 'test', 'test')",
            env.org,
            Uuid::now_v7()
        ))
        .await
        .unwrap();
    let refused = admin
        .batch_execute(&format!("DELETE FROM core.customers WHERE id = '{id}'"))
        .await;
    assert!(refused.is_err(), "the delete cascaded");
    assert_eq!(
        count(
            &env.db,
            &format!("SELECT count(*) AS n FROM core.contacts WHERE customer_id = '{id}'")
        )
        .await,
        1
    );
}
