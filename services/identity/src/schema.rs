// Diesel schema of the `identity` schema; tables resolve through the connection's search_path.
// Checked against the migrated database by the schema drift test. (xid8 columns are read with
// raw SQL and are not declared here.)

diesel::table! {
    organizations (id) {
        id -> Uuid,
        display_name -> Text,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
        revision -> Int8,
    }
}

diesel::table! {
    users (id) {
        id -> Uuid,
        email -> Text,
        display_name -> Text,
        password_hash -> Nullable<Text>,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
        revision -> Int8,
        credentials_change_time -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    login_throttle (email_key) {
        email_key -> Text,
        failures -> Int4,
        lockouts -> Int4,
        locked_until -> Nullable<Timestamptz>,
        update_time -> Timestamptz,
    }
}

diesel::table! {
    memberships (organization_id, user_id) {
        organization_id -> Uuid,
        user_id -> Uuid,
        roles -> Array<Text>,
        status -> Int2,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
        revision -> Int8,
    }
}

diesel::table! {
    sessions (organization_id, id) {
        organization_id -> Uuid,
        id -> Uuid,
        user_id -> Uuid,
        client_id -> Text,
        create_time -> Timestamptz,
        expire_time -> Timestamptz,
        revoke_time -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    refresh_tokens (organization_id, id) {
        organization_id -> Uuid,
        id -> Uuid,
        session_id -> Uuid,
        family_id -> Uuid,
        digest -> Bytea,
        client_id -> Text,
        create_time -> Timestamptz,
        expire_time -> Timestamptz,
        used_time -> Nullable<Timestamptz>,
        successor_id -> Nullable<Uuid>,
        revoke_time -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    signing_keys (kid) {
        kid -> Text,
        state -> Int2,
        public_key -> Bytea,
        sealed_private_key -> Bytea,
        create_time -> Timestamptz,
        activate_time -> Nullable<Timestamptz>,
        retire_time -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    revocations (id) {
        id -> Int8,
        kind -> Int2,
        value -> Text,
        issued_before -> Nullable<Timestamptz>,
        create_time -> Timestamptz,
        expire_time -> Timestamptz,
        organization_id -> Nullable<Uuid>,
    }
}

diesel::table! {
    audit_events (organization_id, seq) {
        organization_id -> Uuid,
        seq -> Int8,
        id -> Uuid,
        kind -> Text,
        actor -> Text,
        subject -> Text,
        detail -> Text,
        create_time -> Timestamptz,
        prev_hash -> Bytea,
        hash -> Bytea,
    }
}

diesel::table! {
    audit_heads (organization_id) {
        organization_id -> Uuid,
        seq -> Int8,
        hash -> Bytea,
    }
}

diesel::joinable!(memberships -> users (user_id));
diesel::allow_tables_to_appear_in_same_query!(memberships, users);

diesel::table! {
    api_clients (organization_id, id) {
        organization_id -> Uuid,
        id -> Uuid,
        display_name -> Text,
        roles -> Array<Text>,
        create_time -> Timestamptz,
        delete_time -> Nullable<Timestamptz>,
        created_by -> Text,
        redirect_uris -> Array<Text>,
    }
}

diesel::table! {
    api_client_secrets (organization_id, id) {
        organization_id -> Uuid,
        client_id -> Uuid,
        id -> Uuid,
        digest -> Bytea,
        create_time -> Timestamptz,
        revoke_time -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    user_totp (user_id) {
        user_id -> Uuid,
        sealed_secret -> Bytea,
        confirm_time -> Nullable<Timestamptz>,
        last_step -> Int8,
        create_time -> Timestamptz,
    }
}

diesel::table! {
    recovery_codes (user_id, digest) {
        user_id -> Uuid,
        digest -> Bytea,
        use_time -> Nullable<Timestamptz>,
        create_time -> Timestamptz,
    }
}

diesel::table! {
    password_reset_tokens (organization_id, digest) {
        digest -> Bytea,
        user_id -> Uuid,
        organization_id -> Uuid,
        create_time -> Timestamptz,
        expire_time -> Timestamptz,
        use_time -> Nullable<Timestamptz>,
    }
}
diesel::allow_tables_to_appear_in_same_query!(refresh_tokens, sessions);

diesel::table! {
    authorization_codes (organization_id, digest) {
        organization_id -> Uuid,
        digest -> Bytea,
        user_id -> Uuid,
        client_id -> Text,
        redirect_uri -> Text,
        code_challenge -> Text,
        create_time -> Timestamptz,
        expire_time -> Timestamptz,
        use_time -> Nullable<Timestamptz>,
        session_id -> Nullable<Uuid>,
    }
}

diesel::table! {
    integration_credentials (organization_id, id) {
        organization_id -> Uuid,
        id -> Uuid,
        display_name -> Text,
        provider -> Text,
        secret_last4 -> Text,
        sealed_data_key -> Bytea,
        ciphertext -> Bytea,
        create_time -> Timestamptz,
        delete_time -> Nullable<Timestamptz>,
        created_by -> Text,
    }
}

diesel::table! {
    org_roles (organization_id, role_id) {
        organization_id -> Uuid,
        role_id -> Text,
        display_name -> Text,
        catalog_roles -> Array<Text>,
        create_time -> Timestamptz,
        created_by -> Text,
    }
}
