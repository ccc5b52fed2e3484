//! Migrations: up → down → up leaves the same schema, and the diesel schemas match the database.

use std::collections::BTreeSet;

use crm_db::migrate::{self, Direction};
use crm_testkit::TestDb;
use crm_testkit::postgres::APP_PASSWORD;
use diesel::sql_types::Text;
use diesel_async::RunQueryDsl;

#[derive(diesel::QueryableByName)]
struct Line {
    #[diesel(sql_type = Text)]
    line: String,
}

/// Everything that defines the schema, one line per object, sorted.
async fn dump(db: &TestDb, schema: &str) -> Vec<String> {
    let mut conn = db.admin().await.unwrap();
    let sql = "
        SELECT 'column ' || table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable
               || ' ' || coalesce(column_default, '') || ' ' || is_identity AS line
          FROM information_schema.columns WHERE table_schema = $1
        UNION ALL
        SELECT 'constraint ' || conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid)
          FROM pg_constraint WHERE connamespace = $1::regnamespace
        UNION ALL
        SELECT 'index ' || indexdef FROM pg_indexes WHERE schemaname = $1
        UNION ALL
        SELECT 'policy ' || tablename || ' ' || policyname || ' ' || coalesce(qual, '') || ' ' || coalesce(with_check, '')
          FROM pg_policies WHERE schemaname = $1
        UNION ALL
        SELECT 'rls ' || relname || ' ' || relrowsecurity || ' ' || relforcerowsecurity
          FROM pg_class WHERE relnamespace = $1::regnamespace AND relkind = 'r'
        UNION ALL
        SELECT 'grant ' || table_name || ' ' || grantee || ' ' || privilege_type
          FROM information_schema.role_table_grants WHERE table_schema = $1
        ORDER BY 1";
    let lines: Vec<Line> = diesel::sql_query(sql)
        .bind::<Text, _>(schema)
        .load(&mut conn)
        .await
        .unwrap();
    lines.into_iter().map(|l| l.line).collect()
}

#[tokio::test]
async fn up_down_up_leaves_the_same_schema() {
    let db = crate::support::test_db().await;
    for schema in crate::support::schemas() {
        let before = dump(&db, schema.name).await;
        assert!(
            before.iter().any(|l| l.starts_with("column ")),
            "{before:?}"
        );
        let reverted = migrate::run(
            &db.admin_url,
            schema,
            Direction::DownAll,
            Some(APP_PASSWORD.into()),
        )
        .await
        .unwrap();
        assert!(!reverted.is_empty());
        let empty = dump(&db, schema.name).await;
        assert!(
            empty
                .iter()
                .all(|l| l.contains("__diesel_schema_migrations")),
            "down left objects behind: {empty:?}"
        );
        migrate::run(
            &db.admin_url,
            schema,
            Direction::Up,
            Some(APP_PASSWORD.into()),
        )
        .await
        .unwrap();
        assert_eq!(dump(&db, schema.name).await, before);
    }
}

#[derive(diesel::QueryableByName)]
struct Col {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    column_name: String,
    #[diesel(sql_type = Text)]
    udt_name: String,
    #[diesel(sql_type = Text)]
    is_nullable: String,
}

fn diesel_type(udt: &str) -> Option<&'static str> {
    Some(match udt {
        "uuid" => "Uuid",
        "text" => "Text",
        "int2" => "Int2",
        "int4" => "Int4",
        "float8" => "Float8",
        "date" => "Date",
        "int8" => "Int8",
        "bool" => "Bool",
        "bytea" => "Bytea",
        "timestamptz" => "Timestamptz",
        "jsonb" => "Jsonb",
        "_text" => "Array<Text>",
        "_bool" => "Array<Bool>",
        "_int2" => "Array<Int2>",
        "_int4" => "Array<Int4>",
        "_int8" => "Array<Int8>",
        "_uuid" => "Array<Uuid>",
        "_timestamptz" => "Array<Timestamptz>",
        // Not representable in diesel (xid8): read with raw SQL in crm-db's outbox reader.
        _ => return None,
    })
}

/// `(table, column, type)` triples declared in a diesel `table!` file.
fn declared(source: &str) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    let mut table = None;
    for line in source.lines().map(str::trim) {
        if let Some(head) = line.strip_suffix('{').map(str::trim) {
            if let Some((name, _)) = head.split_once(" (") {
                table = Some(name.trim().to_owned());
            }
            continue;
        }
        if line == "}" {
            table = None;
            continue;
        }
        if let (Some(t), Some((col, ty))) = (&table, line.split_once("->")) {
            out.insert((
                t.clone(),
                col.trim().to_owned(),
                ty.trim().trim_end_matches(',').to_owned(),
            ));
        }
    }
    out
}

#[tokio::test]
async fn diesel_schemas_match_the_migrated_database() {
    let db = crate::support::test_db().await;
    let mut conn = db.admin().await.unwrap();
    let shared = declared(include_str!("../../shared/db/src/schema.rs"));
    // Services on the resource engine keep its change log too.
    let engine = include_str!("../../shared/resource/src/schema.rs");
    for (schema, source, extra) in [
        (
            "core",
            include_str!("../../services/core/src/schema.rs"),
            engine,
        ),
        (
            "identity",
            include_str!("../../services/identity/src/schema.rs"),
            "",
        ),
        (
            "fieldops",
            include_str!("../../services/fieldops/src/schema.rs"),
            engine,
        ),
    ] {
        let cols: Vec<Col> = diesel::sql_query(
            "SELECT table_name::text, column_name::text, udt_name::text, is_nullable::text \
               FROM information_schema.columns WHERE table_schema = $1",
        )
        .bind::<Text, _>(schema)
        .load(&mut conn)
        .await
        .unwrap();
        let mut actual = BTreeSet::new();
        for c in cols {
            if c.table_name.starts_with("__diesel") {
                continue;
            }
            let Some(ty) = diesel_type(&c.udt_name) else {
                continue;
            };
            let ty = if c.is_nullable == "YES" {
                format!("Nullable<{ty}>")
            } else {
                ty.to_owned()
            };
            actual.insert((c.table_name, c.column_name, ty));
        }
        let mut expected = declared(source);
        expected.extend(shared.iter().cloned());
        expected.extend(declared(extra));
        assert_eq!(
            expected, actual,
            "{schema}: schema.rs and the migrations disagree"
        );
    }
}
