-- Organization-defined roles: bundles of catalog roles.
CREATE TABLE org_roles (
    organization_id uuid NOT NULL REFERENCES organizations (id),
    role_id text NOT NULL CHECK (role_id ~ '^custom\.[a-z0-9-]{1,40}$'),
    display_name text NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 200),
    catalog_roles text[] NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    created_by text NOT NULL,
    PRIMARY KEY (organization_id, role_id)
);
ALTER TABLE org_roles ENABLE ROW LEVEL SECURITY;
ALTER TABLE org_roles FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON org_roles
    USING (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
    WITH CHECK (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid);
