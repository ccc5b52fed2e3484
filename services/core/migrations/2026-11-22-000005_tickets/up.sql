-- Support tickets with status transitions, priority-driven SLA due times and reopen counts.
CREATE TABLE tickets (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    customer_id uuid NOT NULL,
    subject text NOT NULL CHECK (char_length(subject) BETWEEN 1 AND 200),
    description text NOT NULL DEFAULT '',
    status smallint NOT NULL DEFAULT 1 CHECK (status BETWEEN 1 AND 4),
    priority smallint NOT NULL DEFAULT 2 CHECK (priority BETWEEN 1 AND 4),
    assignee text NOT NULL DEFAULT '',
    sla_due_time timestamptz NOT NULL,
    reopen_count integer NOT NULL DEFAULT 0 CHECK (reopen_count >= 0),
    resolve_time timestamptz,
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
CREATE INDEX tickets_org_create_time ON tickets (organization_id, create_time, id);
CREATE INDEX tickets_org_update_time ON tickets (organization_id, update_time, id);
CREATE INDEX tickets_org_subject ON tickets (organization_id, subject, id);
CREATE INDEX tickets_org_customer ON tickets (organization_id, customer_id, id);
-- The support queue: open work by due time.
CREATE INDEX tickets_org_status_due ON tickets (organization_id, status, sla_due_time, id)
    WHERE delete_time IS NULL;
ALTER TABLE tickets ENABLE ROW LEVEL SECURITY;
ALTER TABLE tickets FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tickets
    USING (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
    WITH CHECK (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid);
