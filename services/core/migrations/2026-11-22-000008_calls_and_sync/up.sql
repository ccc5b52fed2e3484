-- Call dispositions (organization-defined outcome codes), call logs, and integration sync logs.
CREATE TABLE call_dispositions (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    code text NOT NULL CHECK (char_length(code) BETWEEN 1 AND 40),
    display_name text NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 200),
    description text NOT NULL DEFAULT '',
    active boolean NOT NULL DEFAULT true,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    delete_time timestamptz,
    purge_time timestamptz,
    revision bigint NOT NULL DEFAULT 1,
    created_by text NOT NULL,
    updated_by text NOT NULL,
    PRIMARY KEY (organization_id, id)
);
CREATE UNIQUE INDEX call_dispositions_code ON call_dispositions (organization_id, code);
CREATE INDEX call_dispositions_org_create_time ON call_dispositions (organization_id, create_time, id);
CREATE INDEX call_dispositions_org_update_time ON call_dispositions (organization_id, update_time, id);
CREATE INDEX call_dispositions_org_display_name ON call_dispositions (organization_id, display_name, id);

CREATE TABLE call_logs (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    customer_id uuid NOT NULL,
    direction smallint NOT NULL CHECK (direction BETWEEN 1 AND 2),
    phone text NOT NULL,
    agent text NOT NULL DEFAULT '',
    start_time timestamptz NOT NULL,
    duration_seconds integer NOT NULL DEFAULT 0 CHECK (duration_seconds BETWEEN 0 AND 86400),
    disposition text NOT NULL DEFAULT '',
    notes text NOT NULL DEFAULT '',
    recording_uri text NOT NULL DEFAULT '',
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    delete_time timestamptz,
    purge_time timestamptz,
    revision bigint NOT NULL DEFAULT 1,
    created_by text NOT NULL,
    updated_by text NOT NULL,
    PRIMARY KEY (organization_id, id),
    FOREIGN KEY (organization_id, customer_id) REFERENCES customers (organization_id, id)
        ON DELETE CASCADE
);
CREATE INDEX call_logs_org_start_time ON call_logs (organization_id, start_time, id);
CREATE INDEX call_logs_org_update_time ON call_logs (organization_id, update_time, id);
CREATE INDEX call_logs_org_phone ON call_logs (organization_id, phone, id);
CREATE INDEX call_logs_org_customer ON call_logs (organization_id, customer_id, start_time DESC, id DESC);

CREATE TABLE sync_logs (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    system text NOT NULL CHECK (char_length(system) BETWEEN 1 AND 40),
    direction smallint NOT NULL CHECK (direction BETWEEN 1 AND 3),
    status smallint NOT NULL CHECK (status BETWEEN 1 AND 4),
    cursor text NOT NULL DEFAULT '',
    records_read bigint NOT NULL DEFAULT 0 CHECK (records_read >= 0),
    records_written bigint NOT NULL DEFAULT 0 CHECK (records_written >= 0),
    records_failed bigint NOT NULL DEFAULT 0 CHECK (records_failed >= 0),
    errors text[] NOT NULL DEFAULT '{}',
    start_time timestamptz NOT NULL,
    finish_time timestamptz CHECK (finish_time >= start_time),
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    delete_time timestamptz,
    purge_time timestamptz,
    revision bigint NOT NULL DEFAULT 1,
    created_by text NOT NULL,
    updated_by text NOT NULL,
    PRIMARY KEY (organization_id, id)
);
CREATE INDEX sync_logs_org_start_time ON sync_logs (organization_id, start_time, id);
CREATE INDEX sync_logs_org_update_time ON sync_logs (organization_id, update_time, id);
CREATE INDEX sync_logs_org_system ON sync_logs (organization_id, system, start_time DESC, id DESC);

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['call_dispositions', 'call_logs', 'sync_logs'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I '
            'USING (organization_id = NULLIF(current_setting(''app.org_id'', true), '''')::uuid) '
            'WITH CHECK (organization_id = NULLIF(current_setting(''app.org_id'', true), '''')::uuid)',
            t);
    END LOOP;
END $$;
