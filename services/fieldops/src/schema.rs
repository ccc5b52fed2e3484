// Diesel schema of the `fieldops` schema; tables resolve through the connection's search_path.
// Checked against the migrated database by the schema drift test. The engine's change log
// (`audit_entries`, `audit_heads`) is declared in crm-resource, the outbox and idempotency keys
// in crm-db.

diesel::table! {
    technicians (organization_id, id) {
        organization_id -> Uuid,
        id -> Uuid,
        user_id -> Uuid,
        display_name -> Text,
        skills -> Array<Int2>,
        home_zone -> Text,
        status -> Int2,
        hourly_cost_currency -> Nullable<Text>,
        hourly_cost_nanos -> Nullable<Int8>,
        phone -> Nullable<Text>,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
        delete_time -> Nullable<Timestamptz>,
        purge_time -> Nullable<Timestamptz>,
        revision -> Int8,
        created_by -> Text,
        updated_by -> Text,
    }
}

diesel::table! {
    trucks (organization_id, id) {
        organization_id -> Uuid,
        id -> Uuid,
        display_name -> Text,
        plate -> Text,
        tank_capacity_gallons -> Int4,
        technician_id -> Nullable<Uuid>,
        active -> Bool,
        notes -> Text,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
        delete_time -> Nullable<Timestamptz>,
        purge_time -> Nullable<Timestamptz>,
        revision -> Int8,
        created_by -> Text,
        updated_by -> Text,
    }
}

diesel::table! {
    disposal_facilities (organization_id, id) {
        organization_id -> Uuid,
        id -> Uuid,
        display_name -> Text,
        region_code -> Text,
        postal_code -> Text,
        administrative_area -> Text,
        locality -> Text,
        address_lines -> Array<Text>,
        recipient -> Text,
        latitude -> Nullable<Float8>,
        longitude -> Nullable<Float8>,
        permit_number -> Text,
        accepted_waste_kinds -> Array<Int2>,
        opening_hours -> Array<Text>,
        tipping_fee_currency -> Nullable<Text>,
        tipping_fee_nanos -> Nullable<Int8>,
        active -> Bool,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
        delete_time -> Nullable<Timestamptz>,
        purge_time -> Nullable<Timestamptz>,
        revision -> Int8,
        created_by -> Text,
        updated_by -> Text,
    }
}

diesel::table! {
    shifts (organization_id, id) {
        organization_id -> Uuid,
        id -> Uuid,
        technician_id -> Uuid,
        start_time -> Timestamptz,
        end_time -> Timestamptz,
        zone -> Text,
        notes -> Text,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
        delete_time -> Nullable<Timestamptz>,
        purge_time -> Nullable<Timestamptz>,
        revision -> Int8,
        created_by -> Text,
        updated_by -> Text,
    }
}

diesel::table! {
    time_off_periods (organization_id, id) {
        organization_id -> Uuid,
        id -> Uuid,
        technician_id -> Uuid,
        start_time -> Timestamptz,
        end_time -> Timestamptz,
        reason -> Text,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
        delete_time -> Nullable<Timestamptz>,
        purge_time -> Nullable<Timestamptz>,
        revision -> Int8,
        created_by -> Text,
        updated_by -> Text,
    }
}

diesel::table! {
    certifications (organization_id, id) {
        organization_id -> Uuid,
        id -> Uuid,
        technician_id -> Uuid,
        kind -> Int2,
        number -> Text,
        issuer -> Text,
        expire_time -> Timestamptz,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
        delete_time -> Nullable<Timestamptz>,
        purge_time -> Nullable<Timestamptz>,
        revision -> Int8,
        created_by -> Text,
        updated_by -> Text,
    }
}

diesel::table! {
    licenses (organization_id, id) {
        organization_id -> Uuid,
        id -> Uuid,
        truck_id -> Nullable<Uuid>,
        technician_id -> Nullable<Uuid>,
        authority -> Text,
        number -> Text,
        expire_time -> Timestamptz,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
        delete_time -> Nullable<Timestamptz>,
        purge_time -> Nullable<Timestamptz>,
        revision -> Int8,
        created_by -> Text,
        updated_by -> Text,
    }
}
