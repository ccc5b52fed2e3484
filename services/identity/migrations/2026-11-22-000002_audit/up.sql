-- Append-only, per-organization hash-chained audit of authentication events.
CREATE TABLE audit_events (
    organization_id uuid NOT NULL,
    seq bigint NOT NULL CHECK (seq > 0),
    id uuid NOT NULL,
    kind text NOT NULL,
    actor text NOT NULL,
    subject text NOT NULL,
    detail text NOT NULL DEFAULT '',
    create_time timestamptz NOT NULL,
    prev_hash bytea NOT NULL,
    hash bytea NOT NULL,
    PRIMARY KEY (organization_id, seq)
);
CREATE INDEX audit_events_org_time ON audit_events (organization_id, create_time, seq);
ALTER TABLE audit_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_events
    USING (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
    WITH CHECK (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid);
-- The head of each chain: deleting the newest events is detected too, not only changes.
CREATE TABLE audit_heads (
    organization_id uuid PRIMARY KEY,
    seq bigint NOT NULL,
    hash bytea NOT NULL
);
ALTER TABLE audit_heads ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_heads FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_heads
    USING (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
    WITH CHECK (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid);
-- The service may only append: the chain makes any change by anyone else detectable.
REVOKE UPDATE, DELETE, TRUNCATE ON audit_events FROM identity_app;
REVOKE DELETE, TRUNCATE ON audit_heads FROM identity_app;
