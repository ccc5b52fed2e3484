-- Marketing: templates, campaigns, workflows, and the enrollments the scheduler advances
-- (due ones are claimed FOR UPDATE SKIP LOCKED, one transaction per step). The scheduler
-- finds the organizations with work through a read-only policy (`app.scheduler`), then works
-- inside each organization's own tenant transaction.
CREATE TABLE message_templates (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    display_name text NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 200),
    channel smallint NOT NULL CHECK (channel BETWEEN 1 AND 2),
    subject text NOT NULL DEFAULT '' CHECK (char_length(subject) <= 200),
    body text NOT NULL CHECK (char_length(body) BETWEEN 1 AND 10000),
    variables text[] NOT NULL DEFAULT '{}',
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    delete_time timestamptz,
    purge_time timestamptz,
    revision bigint NOT NULL DEFAULT 1,
    created_by text NOT NULL,
    updated_by text NOT NULL,
    PRIMARY KEY (organization_id, id)
);
CREATE INDEX message_templates_org_create_time ON message_templates (organization_id, create_time, id);
CREATE INDEX message_templates_org_update_time ON message_templates (organization_id, update_time, id);
CREATE INDEX message_templates_org_display_name ON message_templates (organization_id, display_name, id);

CREATE TABLE campaigns (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    display_name text NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 200),
    template_id uuid NOT NULL,
    audience_filter text NOT NULL DEFAULT '' CHECK (char_length(audience_filter) <= 2000),
    send_time timestamptz,
    status smallint NOT NULL CHECK (status BETWEEN 1 AND 2),
    launch_time timestamptz,
    enrolled_count integer NOT NULL DEFAULT 0,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    delete_time timestamptz,
    purge_time timestamptz,
    revision bigint NOT NULL DEFAULT 1,
    created_by text NOT NULL,
    updated_by text NOT NULL,
    PRIMARY KEY (organization_id, id),
    FOREIGN KEY (organization_id, template_id) REFERENCES message_templates (organization_id, id)
        ON DELETE RESTRICT,
    CHECK ((status = 2) = (launch_time IS NOT NULL))
);
CREATE INDEX campaigns_org_create_time ON campaigns (organization_id, create_time, id);
CREATE INDEX campaigns_org_update_time ON campaigns (organization_id, update_time, id);
CREATE INDEX campaigns_org_display_name ON campaigns (organization_id, display_name, id);
CREATE INDEX campaigns_org_template ON campaigns (organization_id, template_id);

CREATE TABLE workflows (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    display_name text NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 200),
    trigger_event_type text NOT NULL CHECK (char_length(trigger_event_type) BETWEEN 1 AND 200),
    -- The steps, encoded as a Workflow holding only them.
    steps bytea NOT NULL,
    active boolean NOT NULL DEFAULT false,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    delete_time timestamptz,
    purge_time timestamptz,
    revision bigint NOT NULL DEFAULT 1,
    created_by text NOT NULL,
    updated_by text NOT NULL,
    PRIMARY KEY (organization_id, id)
);
CREATE INDEX workflows_org_create_time ON workflows (organization_id, create_time, id);
CREATE INDEX workflows_org_update_time ON workflows (organization_id, update_time, id);
CREATE INDEX workflows_org_display_name ON workflows (organization_id, display_name, id);
CREATE INDEX workflows_active ON workflows (organization_id) WHERE active AND delete_time IS NULL;

CREATE TABLE enrollments (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    workflow_id uuid,
    campaign_id uuid,
    customer_id uuid NOT NULL,
    position integer NOT NULL DEFAULT 0 CHECK (position >= 0),
    status smallint NOT NULL CHECK (status BETWEEN 1 AND 3),
    next_run_time timestamptz NOT NULL,
    -- The steps run so far, encoded as an Enrollment holding only its history.
    history bytea NOT NULL DEFAULT '',
    trigger_event text NOT NULL DEFAULT '',
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, id),
    FOREIGN KEY (organization_id, workflow_id) REFERENCES workflows (organization_id, id)
        ON DELETE RESTRICT,
    FOREIGN KEY (organization_id, campaign_id) REFERENCES campaigns (organization_id, id)
        ON DELETE RESTRICT,
    FOREIGN KEY (organization_id, customer_id) REFERENCES customers (organization_id, id)
        ON DELETE RESTRICT,
    CHECK ((workflow_id IS NULL) <> (campaign_id IS NULL))
);
-- A customer is in a workflow once at a time, and in a campaign once.
CREATE UNIQUE INDEX enrollments_one_active_per_workflow ON enrollments (organization_id, workflow_id, customer_id)
    WHERE status = 1 AND workflow_id IS NOT NULL;
CREATE UNIQUE INDEX enrollments_once_per_campaign ON enrollments (organization_id, campaign_id, customer_id)
    WHERE campaign_id IS NOT NULL;
CREATE INDEX enrollments_org_workflow ON enrollments (organization_id, workflow_id, create_time, id);
CREATE INDEX enrollments_org_campaign ON enrollments (organization_id, campaign_id, create_time, id);
CREATE INDEX enrollments_org_customer ON enrollments (organization_id, customer_id);
CREATE INDEX enrollments_due ON enrollments (organization_id, next_run_time) WHERE status = 1;

-- How far each organization's workflow triggers have read its outbox.
CREATE TABLE workflow_cursors (
    organization_id uuid PRIMARY KEY,
    cursor text NOT NULL DEFAULT ''
);

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['message_templates', 'campaigns', 'workflows', 'enrollments',
                             'workflow_cursors'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I '
            'USING (organization_id = NULLIF(current_setting(''app.org_id'', true), '''')::uuid) '
            'WITH CHECK (organization_id = NULLIF(current_setting(''app.org_id'', true), '''')::uuid)',
            t);
    END LOOP;
    FOREACH t IN ARRAY ARRAY['message_templates', 'campaigns', 'workflows'] LOOP
        EXECUTE format('CREATE POLICY purge ON %I FOR SELECT '
            'USING (current_setting(''app.purge'', true) = ''on'' AND purge_time < now())', t);
        EXECUTE format('CREATE POLICY purge_delete ON %I FOR DELETE '
            'USING (current_setting(''app.purge'', true) = ''on'' AND purge_time < now())', t);
    END LOOP;
END $$;
-- The scheduler's discovery: which organizations have active workflows or due enrollments.
CREATE POLICY scheduler ON workflows FOR SELECT
    USING (current_setting('app.scheduler', true) = 'on' AND active AND delete_time IS NULL);
CREATE POLICY scheduler ON enrollments FOR SELECT
    USING (current_setting('app.scheduler', true) = 'on' AND status = 1);
-- Enrollments go only with their workflow or campaign, by the purge job.
CREATE POLICY purge ON enrollments FOR SELECT
    USING (current_setting('app.purge', true) = 'on');
CREATE POLICY purge_delete ON enrollments FOR DELETE
    USING (current_setting('app.purge', true) = 'on');
REVOKE TRUNCATE ON enrollments FROM core_app;
