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

diesel::table! {
    work_orders (organization_id, id) {
        organization_id -> Uuid,
        id -> Uuid,
        job_type -> Int2,
        priority -> Int2,
        status -> Int2,
        summary -> Text,
        customer_id -> Uuid,
        property_id -> Uuid,
        equipment_id -> Nullable<Uuid>,
        technician_ids -> Array<Uuid>,
        technician_user_ids -> Array<Uuid>,
        scheduled_start_time -> Nullable<Timestamptz>,
        scheduled_end_time -> Nullable<Timestamptz>,
        estimated_minutes -> Int4,
        line_currency -> Nullable<Text>,
        line_descriptions -> Array<Text>,
        line_quantities -> Array<Int4>,
        line_unit_price_nanos -> Array<Int8>,
        gallons_pumped -> Int4,
        notes -> Text,
        follow_up_of -> Nullable<Uuid>,
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
    work_order_assignments (organization_id, work_order_id, technician_id) {
        organization_id -> Uuid,
        work_order_id -> Uuid,
        technician_id -> Uuid,
        start_time -> Nullable<Timestamptz>,
        end_time -> Nullable<Timestamptz>,
        active -> Bool,
        enroute_time -> Nullable<Timestamptz>,
        arrive_time -> Nullable<Timestamptz>,
        work_start_time -> Nullable<Timestamptz>,
        finish_time -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    work_order_events (organization_id, work_order_id, seq) {
        organization_id -> Uuid,
        work_order_id -> Uuid,
        seq -> Int8,
        from_status -> Int2,
        to_status -> Int2,
        actor -> Text,
        reason -> Text,
        latitude -> Nullable<Float8>,
        longitude -> Nullable<Float8>,
        technician_ids -> Array<Uuid>,
        technician_times -> Array<Timestamptz>,
        follow_up_id -> Nullable<Uuid>,
        create_time -> Timestamptz,
    }
}

diesel::table! {
    waste_manifests (organization_id, id) {
        organization_id -> Uuid,
        id -> Uuid,
        work_order_id -> Uuid,
        generator_customer_id -> Uuid,
        generator_property_id -> Uuid,
        truck_id -> Uuid,
        technician_id -> Uuid,
        license_id -> Nullable<Uuid>,
        disposal_facility_id -> Uuid,
        waste_kind -> Int2,
        gallons -> Int4,
        ticket_number -> Text,
        pickup_time -> Timestamptz,
        pickup_latitude -> Nullable<Float8>,
        pickup_longitude -> Nullable<Float8>,
        disposal_time -> Nullable<Timestamptz>,
        corrects_id -> Nullable<Uuid>,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
        delete_time -> Nullable<Timestamptz>,
        purge_time -> Nullable<Timestamptz>,
        revision -> Int8,
        created_by -> Text,
        updated_by -> Text,
    }
}

diesel::allow_tables_to_appear_in_same_query!(work_orders, work_order_assignments, technicians);

diesel::table! {
    scheduling_settings (organization_id) {
        organization_id -> Uuid,
        emergency_buffer_percent -> Int2,
        slot_step_minutes -> Int2,
        update_time -> Timestamptz,
        revision -> Int8,
        updated_by -> Text,
    }
}

diesel::table! {
    inspections (organization_id, id) {
        organization_id -> Uuid,
        id -> Uuid,
        property_id -> Uuid,
        work_order_id -> Nullable<Uuid>,
        kind -> Int2,
        result -> Int2,
        findings -> Text,
        report_reference -> Text,
        inspector_id -> Uuid,
        inspect_time -> Timestamptz,
        latitude -> Nullable<Float8>,
        longitude -> Nullable<Float8>,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
        delete_time -> Nullable<Timestamptz>,
        purge_time -> Nullable<Timestamptz>,
        revision -> Int8,
        created_by -> Text,
        updated_by -> Text,
    }
}
