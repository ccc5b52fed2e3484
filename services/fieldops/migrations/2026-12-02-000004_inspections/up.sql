-- Inspections of properties' systems, with their results and reports.
CREATE TABLE inspections (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    property_id uuid NOT NULL,
    work_order_id uuid,
    kind smallint NOT NULL CHECK (kind BETWEEN 1 AND 5),
    result smallint NOT NULL CHECK (result BETWEEN 1 AND 3),
    findings text NOT NULL DEFAULT '',
    report_reference text NOT NULL DEFAULT '',
    inspector_id uuid NOT NULL,
    inspect_time timestamptz NOT NULL,
    latitude double precision,
    longitude double precision,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    delete_time timestamptz,
    purge_time timestamptz,
    revision bigint NOT NULL DEFAULT 1,
    created_by text NOT NULL,
    updated_by text NOT NULL,
    PRIMARY KEY (organization_id, id),
    FOREIGN KEY (organization_id, work_order_id) REFERENCES work_orders (organization_id, id)
        ON DELETE RESTRICT,
    FOREIGN KEY (organization_id, inspector_id) REFERENCES technicians (organization_id, id)
        ON DELETE RESTRICT
);
CREATE INDEX inspections_org_create_time ON inspections (organization_id, create_time, id);
CREATE INDEX inspections_org_update_time ON inspections (organization_id, update_time, id);
CREATE INDEX inspections_org_report_reference
    ON inspections (organization_id, report_reference, id);
CREATE INDEX inspections_org_property ON inspections (organization_id, property_id, inspect_time);
CREATE INDEX inspections_org_inspector ON inspections (organization_id, inspector_id);
ALTER TABLE inspections ENABLE ROW LEVEL SECURITY;
ALTER TABLE inspections FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON inspections
    USING (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
    WITH CHECK (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid);
CREATE POLICY purge ON inspections FOR SELECT
    USING (current_setting('app.purge', true) = 'on' AND purge_time < now());
CREATE POLICY purge_delete ON inspections FOR DELETE
    USING (current_setting('app.purge', true) = 'on' AND purge_time < now());
