-- Identity foundation: organizations, users, memberships, sessions, refresh tokens, signing
-- keys, login throttling and the revocation log. Runs as identity_owner, search_path identity.

CREATE TABLE idempotency_keys (
    organization_id uuid NOT NULL,
    request_id uuid NOT NULL,
    method text NOT NULL,
    request_hash bytea NOT NULL,
    response bytea,
    create_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, request_id)
);

CREATE TABLE outbox (
    organization_id uuid NOT NULL,
    id bigint GENERATED ALWAYS AS IDENTITY,
    event_id uuid NOT NULL,
    txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    event_type text NOT NULL,
    resource text NOT NULL,
    actor text NOT NULL,
    request_id text NOT NULL DEFAULT '',
    payload bytea NOT NULL,
    occur_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, id)
);
CREATE INDEX outbox_org_txid_id ON outbox (organization_id, txid, id);

CREATE TABLE organizations (
    id uuid PRIMARY KEY,
    display_name text NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 200),
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    revision bigint NOT NULL DEFAULT 1
);

-- Users are global: one person may belong to several organizations.
CREATE TABLE users (
    id uuid PRIMARY KEY,
    email text NOT NULL,
    display_name text NOT NULL,
    password_hash text,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    revision bigint NOT NULL DEFAULT 1
);
CREATE UNIQUE INDEX users_email_lower ON users (lower(email));

-- Failed logins per email (known or not, so lockout reveals nothing about existence).
CREATE TABLE login_throttle (
    email_key text PRIMARY KEY,
    failures integer NOT NULL DEFAULT 0,
    lockouts integer NOT NULL DEFAULT 0,
    locked_until timestamptz,
    update_time timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE memberships (
    organization_id uuid NOT NULL REFERENCES organizations (id),
    user_id uuid NOT NULL REFERENCES users (id),
    roles text[] NOT NULL DEFAULT '{}',
    -- 1 invited, 2 active, 3 suspended
    status smallint NOT NULL DEFAULT 2 CHECK (status BETWEEN 1 AND 3),
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    revision bigint NOT NULL DEFAULT 1,
    PRIMARY KEY (organization_id, user_id)
);
CREATE INDEX memberships_user ON memberships (user_id);

CREATE TABLE sessions (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    user_id uuid NOT NULL,
    client_id text NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    expire_time timestamptz NOT NULL,
    revoke_time timestamptz,
    PRIMARY KEY (organization_id, id),
    FOREIGN KEY (organization_id, user_id) REFERENCES memberships (organization_id, user_id)
);
CREATE INDEX sessions_org_user ON sessions (organization_id, user_id);

CREATE TABLE refresh_tokens (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    session_id uuid NOT NULL,
    family_id uuid NOT NULL,
    -- HMAC-SHA-256 of the token: the token itself is never stored.
    digest bytea NOT NULL,
    client_id text NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    expire_time timestamptz NOT NULL,
    used_time timestamptz,
    successor_id uuid,
    revoke_time timestamptz,
    PRIMARY KEY (organization_id, id),
    FOREIGN KEY (organization_id, session_id) REFERENCES sessions (organization_id, id)
);
CREATE UNIQUE INDEX refresh_tokens_digest ON refresh_tokens (organization_id, digest);
CREATE INDEX refresh_tokens_family ON refresh_tokens (organization_id, family_id);

-- Signing keys are global; the private half is sealed with the key-encryption key.
CREATE TABLE signing_keys (
    kid text PRIMARY KEY,
    -- 1 next (published, not signing), 2 active (signing), 3 retired (published, not signing)
    state smallint NOT NULL CHECK (state BETWEEN 1 AND 3),
    public_key bytea NOT NULL,
    sealed_private_key bytea NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    activate_time timestamptz,
    retire_time timestamptz
);
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (state) WHERE state = 2;

-- Revocations every service applies; read in commit-safe order like the outbox.
CREATE TABLE revocations (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    kind smallint NOT NULL CHECK (kind BETWEEN 1 AND 4),
    value text NOT NULL,
    issued_before timestamptz,
    create_time timestamptz NOT NULL DEFAULT now(),
    -- After this no token it concerns can still be valid.
    expire_time timestamptz NOT NULL
);
CREATE INDEX revocations_txid_id ON revocations (txid, id);

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['idempotency_keys', 'outbox', 'memberships', 'sessions', 'refresh_tokens'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I '
            'USING (organization_id = NULLIF(current_setting(''app.org_id'', true), '''')::uuid) '
            'WITH CHECK (organization_id = NULLIF(current_setting(''app.org_id'', true), '''')::uuid)',
            t);
    END LOOP;
END $$;
