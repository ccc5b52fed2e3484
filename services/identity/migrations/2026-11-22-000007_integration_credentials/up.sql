-- Integration credentials: each secret is encrypted with its own data key (AES-256-GCM), and
-- the data key is sealed with the key-encryption key: an envelope.
CREATE TABLE integration_credentials (
    organization_id uuid NOT NULL REFERENCES organizations (id),
    id uuid NOT NULL,
    display_name text NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 200),
    provider text NOT NULL CHECK (provider ~ '^[a-z0-9-]{1,40}$'),
    secret_last4 text NOT NULL,
    sealed_data_key bytea NOT NULL,
    ciphertext bytea NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    delete_time timestamptz,
    created_by text NOT NULL,
    PRIMARY KEY (organization_id, id)
);
ALTER TABLE integration_credentials ENABLE ROW LEVEL SECURITY;
ALTER TABLE integration_credentials FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON integration_credentials
    USING (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
    WITH CHECK (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid);
