-- Per-organization scheduling settings (a row only once changed: the defaults apply before).
CREATE TABLE scheduling_settings (
    organization_id uuid PRIMARY KEY,
    emergency_buffer_percent smallint NOT NULL CHECK (emergency_buffer_percent BETWEEN 0 AND 50),
    slot_step_minutes smallint NOT NULL CHECK (slot_step_minutes BETWEEN 15 AND 240),
    update_time timestamptz NOT NULL DEFAULT now(),
    revision bigint NOT NULL DEFAULT 1,
    updated_by text NOT NULL
);
ALTER TABLE scheduling_settings ENABLE ROW LEVEL SECURITY;
ALTER TABLE scheduling_settings FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON scheduling_settings
    USING (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
    WITH CHECK (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid);
-- Settings are changed, never removed.
REVOKE DELETE, TRUNCATE ON scheduling_settings FROM fieldops_app;
