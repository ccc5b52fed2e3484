-- E-signatures: a request fixes the document's hash and holds the one-time code's salted hash;
-- the signature itself (the document as signed, its hash, the signer's evidence) is written
-- once and the service's role can never change or remove it.
CREATE TABLE signature_requests (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    document text NOT NULL CHECK (char_length(document) BETWEEN 1 AND 200),
    signer_name text NOT NULL CHECK (char_length(signer_name) BETWEEN 1 AND 200),
    signer_email text NOT NULL DEFAULT '',
    signer_phone text NOT NULL DEFAULT '',
    consent_text text NOT NULL CHECK (char_length(consent_text) BETWEEN 1 AND 5000),
    consent_version text NOT NULL CHECK (char_length(consent_version) BETWEEN 1 AND 50),
    expire_time timestamptz NOT NULL,
    document_sha256 bytea NOT NULL CHECK (length(document_sha256) = 32),
    status smallint NOT NULL CHECK (status BETWEEN 1 AND 3),
    code_salt bytea NOT NULL,
    code_hash bytea NOT NULL,
    failed_attempts integer NOT NULL DEFAULT 0 CHECK (failed_attempts BETWEEN 0 AND 5),
    code_message text NOT NULL DEFAULT '',
    sign_time timestamptz,
    signer_ip text NOT NULL DEFAULT '',
    user_agent text NOT NULL DEFAULT '',
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    delete_time timestamptz,
    purge_time timestamptz,
    revision bigint NOT NULL DEFAULT 1,
    created_by text NOT NULL,
    updated_by text NOT NULL,
    PRIMARY KEY (organization_id, id),
    CHECK (signer_email <> '' OR signer_phone <> ''),
    CHECK ((status = 2) = (sign_time IS NOT NULL)),
    CHECK (status <> 2 OR delete_time IS NULL)
);
CREATE INDEX signature_requests_org_create_time ON signature_requests (organization_id, create_time, id);
CREATE INDEX signature_requests_org_update_time ON signature_requests (organization_id, update_time, id);
CREATE INDEX signature_requests_org_signer_name ON signature_requests (organization_id, signer_name, id);
CREATE INDEX signature_requests_org_document ON signature_requests (organization_id, document);

CREATE TABLE signatures (
    organization_id uuid NOT NULL,
    signature_request_id uuid NOT NULL,
    document text NOT NULL,
    -- The document as signed (its canonical encoding) and its SHA-256.
    document_bytes bytea NOT NULL,
    document_sha256 bytea NOT NULL CHECK (length(document_sha256) = 32),
    signer_name text NOT NULL,
    signer_email text NOT NULL,
    signer_phone text NOT NULL,
    consent_text text NOT NULL,
    consent_version text NOT NULL,
    ip_address text NOT NULL,
    user_agent text NOT NULL,
    sign_time timestamptz NOT NULL,
    PRIMARY KEY (organization_id, signature_request_id),
    FOREIGN KEY (organization_id, signature_request_id)
        REFERENCES signature_requests (organization_id, id) ON DELETE RESTRICT
);

-- A signed request is final, whoever asks.
CREATE FUNCTION signed_request_is_final() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'signature request % is signed and final', OLD.id
        USING ERRCODE = 'integrity_constraint_violation';
END $$;
CREATE TRIGGER signed_request_is_final BEFORE UPDATE OR DELETE ON signature_requests
    FOR EACH ROW WHEN (OLD.status = 2) EXECUTE FUNCTION signed_request_is_final();

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['signature_requests', 'signatures'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I '
            'USING (organization_id = NULLIF(current_setting(''app.org_id'', true), '''')::uuid) '
            'WITH CHECK (organization_id = NULLIF(current_setting(''app.org_id'', true), '''')::uuid)',
            t);
    END LOOP;
END $$;
CREATE POLICY purge ON signature_requests FOR SELECT
    USING (current_setting('app.purge', true) = 'on' AND purge_time < now());
CREATE POLICY purge_delete ON signature_requests FOR DELETE
    USING (current_setting('app.purge', true) = 'on' AND purge_time < now());
REVOKE UPDATE, DELETE, TRUNCATE ON signatures FROM core_app;
