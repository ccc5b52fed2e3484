-- Authorization codes (RFC 6749 4.1 with RFC 7636 PKCE S256), stored as keyed digests.
ALTER TABLE api_clients ADD COLUMN redirect_uris text[] NOT NULL DEFAULT '{}';

CREATE TABLE authorization_codes (
    organization_id uuid NOT NULL,
    digest bytea NOT NULL,
    user_id uuid NOT NULL,
    client_id text NOT NULL,
    redirect_uri text NOT NULL,
    code_challenge text NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    expire_time timestamptz NOT NULL,
    use_time timestamptz,
    -- The session the code was exchanged for: ended if the code is replayed.
    session_id uuid,
    PRIMARY KEY (organization_id, digest),
    FOREIGN KEY (organization_id, user_id) REFERENCES memberships (organization_id, user_id)
);
ALTER TABLE authorization_codes ENABLE ROW LEVEL SECURITY;
ALTER TABLE authorization_codes FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON authorization_codes
    USING (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
    WITH CHECK (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid);
