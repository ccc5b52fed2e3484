-- Machine clients and their secrets (HMAC-SHA-256 digests only).
CREATE TABLE api_clients (
    organization_id uuid NOT NULL REFERENCES organizations (id),
    id uuid NOT NULL,
    display_name text NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 200),
    roles text[] NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    delete_time timestamptz,
    created_by text NOT NULL,
    PRIMARY KEY (organization_id, id)
);

CREATE TABLE api_client_secrets (
    organization_id uuid NOT NULL,
    client_id uuid NOT NULL,
    id uuid NOT NULL,
    digest bytea NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    revoke_time timestamptz,
    PRIMARY KEY (organization_id, id),
    FOREIGN KEY (organization_id, client_id) REFERENCES api_clients (organization_id, id)
);
CREATE INDEX api_client_secrets_client ON api_client_secrets (organization_id, client_id, create_time);

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['api_clients', 'api_client_secrets'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I '
            'USING (organization_id = NULLIF(current_setting(''app.org_id'', true), '''')::uuid) '
            'WITH CHECK (organization_id = NULLIF(current_setting(''app.org_id'', true), '''')::uuid)',
            t);
    END LOOP;
END $$;
