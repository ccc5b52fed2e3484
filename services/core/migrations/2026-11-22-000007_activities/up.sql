-- The customer timeline. Grows with every call, visit and note: see services/core/README.md for
-- the retention and partitioning plan.
CREATE TABLE activities (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    customer_id uuid NOT NULL,
    kind smallint NOT NULL CHECK (kind BETWEEN 1 AND 6),
    subject text NOT NULL DEFAULT '' CHECK (char_length(subject) <= 200),
    body text NOT NULL DEFAULT '' CHECK (char_length(body) <= 10000),
    occur_time timestamptz NOT NULL,
    related text NOT NULL DEFAULT '',
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
-- The timeline query: one customer, newest first, optionally one kind.
CREATE INDEX activities_org_customer_time ON activities (organization_id, customer_id, occur_time DESC, id DESC);
CREATE INDEX activities_org_occur_time ON activities (organization_id, occur_time, id);
CREATE INDEX activities_org_update_time ON activities (organization_id, update_time, id);
CREATE INDEX activities_org_subject ON activities (organization_id, subject, id);
CREATE INDEX activities_org_related ON activities (organization_id, related) WHERE related <> '';
ALTER TABLE activities ENABLE ROW LEVEL SECURITY;
ALTER TABLE activities FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON activities
    USING (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
    WITH CHECK (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid);
