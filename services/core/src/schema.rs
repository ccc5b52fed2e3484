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

diesel::table! {
    contacts (organization_id, id) {
        organization_id -> Uuid,
        id -> Uuid,
        customer_id -> Uuid,
        display_name -> Text,
        title -> Text,
        email -> Nullable<Text>,
        phone -> Nullable<Text>,
        is_primary -> Bool,
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
    properties (organization_id, id) {
        organization_id -> Uuid,
        id -> Uuid,
        customer_id -> Uuid,
        display_name -> Text,
        region_code -> Text,
        postal_code -> Text,
        administrative_area -> Text,
        locality -> Text,
        address_lines -> Array<Text>,
        recipient -> Text,
        latitude -> Nullable<Float8>,
        longitude -> Nullable<Float8>,
        zone -> Text,
        access_notes -> Text,
        gate_code -> Text,
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
    equipment (organization_id, id) {
        organization_id -> Uuid,
        id -> Uuid,
        property_id -> Uuid,
        kind -> Int2,
        display_name -> Text,
        capacity_gallons -> Int4,
        compartments -> Int4,
        install_date -> Nullable<Date>,
        last_service_date -> Nullable<Date>,
        notes -> Text,
        latest_solids_depth_inches -> Nullable<Float8>,
        latest_grease_depth_inches -> Nullable<Float8>,
        latest_read_time -> Nullable<Timestamptz>,
        latest_recorder -> Nullable<Text>,
        latest_reading_notes -> Nullable<Text>,
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
    equipment_readings (organization_id, id) {
        organization_id -> Uuid,
        id -> Uuid,
        equipment_id -> Uuid,
        solids_depth_inches -> Float8,
        grease_depth_inches -> Float8,
        read_time -> Timestamptz,
        recorder -> Text,
        notes -> Text,
        create_time -> Timestamptz,
    }
}

diesel::table! {
    conversations (organization_id, id) {
        organization_id -> Uuid,
        id -> Uuid,
        customer_id -> Uuid,
        channel -> Int2,
        participant -> Text,
        subject -> Text,
        last_message_time -> Nullable<Timestamptz>,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
        delete_time -> Nullable<Timestamptz>,
        purge_time -> Nullable<Timestamptz>,
        revision -> Int8,
        created_by -> Text,
        updated_by -> Text,
    }
}

// `search` (tsvector, generated) is queried through SQL with bound parameters only.
diesel::table! {
    messages (organization_id, id) {
        organization_id -> Uuid,
        id -> Uuid,
        conversation_id -> Uuid,
        customer_id -> Uuid,
        channel -> Int2,
        direction -> Int2,
        purpose -> Int2,
        body -> Text,
        attachment_uris -> Array<Text>,
        delivery_status -> Int2,
        status_reason -> Text,
        provider_message_id -> Nullable<Text>,
        sender -> Text,
        create_time -> Timestamptz,
        status_time -> Timestamptz,
    }
}

diesel::table! {
    sms_consents (organization_id, phone, purpose) {
        organization_id -> Uuid,
        phone -> Text,
        purpose -> Int2,
        status -> Int2,
        method -> Int2,
        source -> Text,
        disclosure_version -> Text,
        revoked_by_keyword -> Bool,
        update_time -> Timestamptz,
        updated_by -> Text,
    }
}

diesel::table! {
    consent_events (organization_id, id) {
        organization_id -> Uuid,
        id -> Uuid,
        phone -> Text,
        purpose -> Int2,
        kind -> Text,
        method -> Int2,
        source -> Text,
        disclosure_version -> Text,
        detail -> Text,
        message_id -> Nullable<Uuid>,
        actor -> Text,
        occur_time -> Timestamptz,
    }
}

diesel::allow_tables_to_appear_in_same_query!(customers, contacts);

diesel::table! {
    tickets (organization_id, id) {
        organization_id -> Uuid,
        id -> Uuid,
        customer_id -> Uuid,
        subject -> Text,
        description -> Text,
        status -> Int2,
        priority -> Int2,
        assignee -> Text,
        sla_due_time -> Timestamptz,
        reopen_count -> Int4,
        resolve_time -> Nullable<Timestamptz>,
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
    inventory_items (organization_id, id) {
        organization_id -> Uuid,
        id -> Uuid,
        sku -> Text,
        display_name -> Text,
        unit -> Text,
        reorder_point -> Int8,
        notes -> Text,
        total_on_hand -> Int8,
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
    stock_levels (organization_id, item_id, location) {
        organization_id -> Uuid,
        item_id -> Uuid,
        location -> Text,
        quantity -> Int8,
    }
}

diesel::table! {
    stock_adjustments (organization_id, id) {
        organization_id -> Uuid,
        id -> Uuid,
        item_id -> Uuid,
        location -> Text,
        delta -> Int8,
        quantity_after -> Int8,
        reason -> Text,
        reference -> Text,
        actor -> Text,
        create_time -> Timestamptz,
    }
}

diesel::table! {
    activities (organization_id, id) {
        organization_id -> Uuid,
        id -> Uuid,
        customer_id -> Uuid,
        kind -> Int2,
        subject -> Text,
        body -> Text,
        occur_time -> Timestamptz,
        related -> Text,
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
    call_dispositions (organization_id, id) {
        organization_id -> Uuid,
        id -> Uuid,
        code -> Text,
        display_name -> Text,
        description -> Text,
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
    call_logs (organization_id, id) {
        organization_id -> Uuid,
        id -> Uuid,
        customer_id -> Uuid,
        direction -> Int2,
        phone -> Text,
        agent -> Text,
        start_time -> Timestamptz,
        duration_seconds -> Int4,
        disposition -> Text,
        notes -> Text,
        recording_uri -> Text,
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
    sync_logs (organization_id, id) {
        organization_id -> Uuid,
        id -> Uuid,
        system -> Text,
        direction -> Int2,
        status -> Int2,
        cursor -> Text,
        records_read -> Int8,
        records_written -> Int8,
        records_failed -> Int8,
        errors -> Array<Text>,
        start_time -> Timestamptz,
        finish_time -> Nullable<Timestamptz>,
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
    catalog_items (organization_id, id) {
        organization_id -> Uuid,
        id -> Uuid,
        code -> Text,
        display_name -> Text,
        job_type -> Int2,
        unit -> Text,
        currency -> Text,
        base_price_nanos -> Int8,
        included_gallons -> Int4,
        taxable -> Bool,
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
    pricing_zones (organization_id, id) {
        organization_id -> Uuid,
        id -> Uuid,
        code -> Text,
        display_name -> Text,
        multiplier_e4 -> Int4,
        travel_band -> Int2,
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
    pricing_tiers (organization_id, id) {
        organization_id -> Uuid,
        id -> Uuid,
        code -> Text,
        display_name -> Text,
        discount_e4 -> Int4,
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
    pricing_rules (organization_id, id) {
        organization_id -> Uuid,
        id -> Uuid,
        display_name -> Text,
        kind -> Int2,
        catalog_item_id -> Nullable<Uuid>,
        currency -> Nullable<Text>,
        amount_nanos -> Nullable<Int8>,
        percent_e4 -> Nullable<Int4>,
        rule_order -> Int4,
        valid_from -> Nullable<Timestamptz>,
        valid_until -> Nullable<Timestamptz>,
        business_start_minute -> Nullable<Int2>,
        business_end_minute -> Nullable<Int2>,
        travel_band -> Int2,
        min_gallons -> Int4,
        max_gallons -> Int4,
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
    invoices (organization_id, id) {
        organization_id -> Uuid,
        id -> Uuid,
        customer_id -> Uuid,
        work_order -> Text,
        status -> Int2,
        number -> Text,
        line_descriptions -> Array<Text>,
        line_quantities -> Array<Int4>,
        line_unit_price_nanos -> Array<Int8>,
        line_taxable -> Array<Bool>,
        currency -> Nullable<Text>,
        tax_milli -> Int4,
        terms_days -> Int4,
        notes -> Text,
        subtotal_nanos -> Int8,
        tax_nanos -> Int8,
        total_nanos -> Int8,
        paid_nanos -> Int8,
        issue_time -> Nullable<Timestamptz>,
        due_time -> Nullable<Timestamptz>,
        void_reason -> Text,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
        delete_time -> Nullable<Timestamptz>,
        purge_time -> Nullable<Timestamptz>,
        revision -> Int8,
        created_by -> Text,
        updated_by -> Text,
        quote -> Text,
        credited_nanos -> Int8,
    }
}

diesel::table! {
    credit_note_counters (organization_id) {
        organization_id -> Uuid,
        last -> Int8,
    }
}

diesel::table! {
    credit_notes (organization_id, id) {
        organization_id -> Uuid,
        id -> Uuid,
        invoice_id -> Uuid,
        number -> Text,
        currency -> Text,
        amount_nanos -> Int8,
        reason -> Text,
        created_by -> Text,
        create_time -> Timestamptz,
    }
}

diesel::table! {
    invoice_counters (organization_id) {
        organization_id -> Uuid,
        last -> Int8,
    }
}

diesel::table! {
    payments (organization_id, id) {
        organization_id -> Uuid,
        id -> Uuid,
        invoice_id -> Uuid,
        method -> Int2,
        currency -> Text,
        amount_nanos -> Int8,
        refunded_nanos -> Int8,
        external_reference -> Text,
        receive_time -> Timestamptz,
        created_by -> Text,
    }
}

diesel::table! {
    refunds (organization_id, id) {
        organization_id -> Uuid,
        id -> Uuid,
        payment_id -> Uuid,
        amount_nanos -> Int8,
        reason -> Text,
        created_by -> Text,
        create_time -> Timestamptz,
    }
}

diesel::table! {
    quotes (organization_id, id) {
        organization_id -> Uuid,
        id -> Uuid,
        customer_id -> Uuid,
        property_id -> Nullable<Uuid>,
        title -> Text,
        options -> Bytea,
        tax_milli -> Int4,
        valid_until -> Timestamptz,
        status -> Int2,
        accepted_level -> Int2,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
        delete_time -> Nullable<Timestamptz>,
        purge_time -> Nullable<Timestamptz>,
        revision -> Int8,
        created_by -> Text,
        updated_by -> Text,
        work_order -> Text,
    }
}

diesel::table! {
    signature_requests (organization_id, id) {
        organization_id -> Uuid,
        id -> Uuid,
        document -> Text,
        signer_name -> Text,
        signer_email -> Text,
        signer_phone -> Text,
        consent_text -> Text,
        consent_version -> Text,
        expire_time -> Timestamptz,
        document_sha256 -> Bytea,
        status -> Int2,
        code_salt -> Bytea,
        code_hash -> Bytea,
        failed_attempts -> Int4,
        code_message -> Text,
        sign_time -> Nullable<Timestamptz>,
        signer_ip -> Text,
        user_agent -> Text,
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
    signatures (organization_id, signature_request_id) {
        organization_id -> Uuid,
        signature_request_id -> Uuid,
        document -> Text,
        document_bytes -> Bytea,
        document_sha256 -> Bytea,
        signer_name -> Text,
        signer_email -> Text,
        signer_phone -> Text,
        consent_text -> Text,
        consent_version -> Text,
        ip_address -> Text,
        user_agent -> Text,
        sign_time -> Timestamptz,
    }
}

diesel::table! {
    contract_templates (organization_id, id) {
        organization_id -> Uuid,
        id -> Uuid,
        display_name -> Text,
        catalog_item_id -> Uuid,
        recurrence_interval -> Int4,
        recurrence_unit -> Int2,
        currency -> Text,
        price_nanos -> Int8,
        term_months -> Int4,
        auto_renew -> Bool,
        terms -> Text,
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
    contracts (organization_id, id) {
        organization_id -> Uuid,
        id -> Uuid,
        customer_id -> Uuid,
        property_id -> Uuid,
        template_id -> Uuid,
        title -> Text,
        catalog_item_id -> Nullable<Uuid>,
        recurrence_interval -> Int4,
        recurrence_unit -> Int2,
        currency -> Text,
        price_nanos -> Nullable<Int8>,
        term_months -> Int4,
        auto_renew -> Bool,
        terms -> Text,
        start_time -> Timestamptz,
        status -> Int2,
        sign_time -> Nullable<Timestamptz>,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
        delete_time -> Nullable<Timestamptz>,
        purge_time -> Nullable<Timestamptz>,
        revision -> Int8,
        created_by -> Text,
        updated_by -> Text,
        renewals -> Int4,
        announced -> Int4,
        next_check_time -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    message_templates (organization_id, id) {
        organization_id -> Uuid,
        id -> Uuid,
        display_name -> Text,
        channel -> Int2,
        subject -> Text,
        body -> Text,
        variables -> Array<Text>,
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
    campaigns (organization_id, id) {
        organization_id -> Uuid,
        id -> Uuid,
        display_name -> Text,
        template_id -> Uuid,
        audience_filter -> Text,
        send_time -> Nullable<Timestamptz>,
        status -> Int2,
        launch_time -> Nullable<Timestamptz>,
        enrolled_count -> Int4,
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
    workflows (organization_id, id) {
        organization_id -> Uuid,
        id -> Uuid,
        display_name -> Text,
        trigger_event_type -> Text,
        steps -> Bytea,
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
    enrollments (organization_id, id) {
        organization_id -> Uuid,
        id -> Uuid,
        workflow_id -> Nullable<Uuid>,
        campaign_id -> Nullable<Uuid>,
        customer_id -> Uuid,
        position -> Int4,
        status -> Int2,
        next_run_time -> Timestamptz,
        history -> Bytea,
        trigger_event -> Text,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
    }
}

diesel::table! {
    workflow_cursors (organization_id) {
        organization_id -> Uuid,
        cursor -> Text,
    }
}
