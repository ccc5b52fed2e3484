//! The tables of the engine in every service schema that keeps a change log, resolved through
//! the connection's `search_path` (each such service's migrations create them with exactly
//! these columns).

diesel::table! {
    /// The change log (`<schema>.audit_entries`), see [`crate::audit`].
    audit_entries (organization_id, seq) {
        organization_id -> Uuid,
        seq -> Int8,
        id -> Uuid,
        actor_kind -> Int2,
        actor -> Text,
        delegate -> Text,
        request_id -> Text,
        method -> Text,
        resource -> Text,
        action -> Text,
        changes -> Text,
        create_time -> Timestamptz,
        prev_hash -> Bytea,
        hash -> Bytea,
    }
}

diesel::table! {
    /// The head of the change log's chain (`<schema>.audit_heads`), see [`crm_db::chain`].
    audit_heads (organization_id) {
        organization_id -> Uuid,
        seq -> Int8,
        hash -> Bytea,
    }
}
