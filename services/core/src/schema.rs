// Diesel schema of the `core` schema; tables resolve through the connection's search_path.
// Checked against the migrated database by the schema drift test.

diesel::table! {
    customers (organization_id, id) {
        organization_id -> Uuid,
        id -> Uuid,
        display_name -> Text,
        email -> Nullable<Text>,
        phone -> Nullable<Text>,
        kind -> Int2,
        notes -> Text,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
        delete_time -> Nullable<Timestamptz>,
        purge_time -> Nullable<Timestamptz>,
        revision -> Int8,
        created_by -> Text,
        updated_by -> Text,
        lifecycle_stage -> Int2,
        source -> Text,
        tier -> Text,
        tags -> Array<Text>,
        time_zone -> Text,
    }
}
