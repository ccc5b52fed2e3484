//! Tables every service schema has, resolved through the connection's `search_path`.
//!
//! Each service's first migration creates them with exactly these columns.

diesel::table! {
    /// Idempotency keys: the first response to a mutating request, stored in the request's own
    /// transaction.
    idempotency_keys (organization_id, request_id) {
        organization_id -> Uuid,
        request_id -> Uuid,
        method -> Text,
        request_hash -> Bytea,
        response -> Nullable<Bytea>,
        create_time -> Timestamptz,
    }
}

diesel::table! {
    /// Domain events written in the same transaction as the change they describe.
    outbox (organization_id, id) {
        organization_id -> Uuid,
        id -> Int8,
        event_id -> Uuid,
        event_type -> Text,
        resource -> Text,
        actor -> Text,
        request_id -> Text,
        payload -> Bytea,
        occur_time -> Timestamptz,
    }
}
