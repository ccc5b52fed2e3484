-- Foundation of the core schema: the tables every service has (idempotency keys, outbox) and
-- customers. Runs as core_owner with search_path = core.

CREATE TABLE idempotency_keys (
    organization_id uuid NOT NULL,
    request_id uuid NOT NULL,
    method text NOT NULL,
    request_hash bytea NOT NULL,
    response bytea,
    create_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, request_id)
);
-- Keys are kept 24 h; the purge scans by age.
CREATE INDEX idempotency_keys_create_time ON idempotency_keys (create_time);

CREATE TABLE outbox (
    organization_id uuid NOT NULL,
    id bigint GENERATED ALWAYS AS IDENTITY,
    event_id uuid NOT NULL,
    -- Transaction that wrote the event: readers only pass txids below their snapshot's xmin,
    -- so an event committed late is delivered late, never skipped.
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

CREATE TABLE customers (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    display_name text NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 200),
    email text,
    phone text,
    kind smallint NOT NULL DEFAULT 0 CHECK (kind BETWEEN 0 AND 3),
    notes text NOT NULL DEFAULT '',
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    delete_time timestamptz,
    purge_time timestamptz,
    revision bigint NOT NULL DEFAULT 1,
    created_by text NOT NULL,
    updated_by text NOT NULL,
    PRIMARY KEY (organization_id, id)
);
-- One index per supported List order, each leading with the tenant and ending with the id
-- tie-breaker of the keyset.
CREATE INDEX customers_org_create_time ON customers (organization_id, create_time, id);
CREATE INDEX customers_org_update_time ON customers (organization_id, update_time, id);
CREATE INDEX customers_org_display_name ON customers (organization_id, display_name, id);

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['idempotency_keys', 'outbox', 'customers'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I '
            'USING (organization_id = NULLIF(current_setting(''app.org_id'', true), '''')::uuid) '
            'WITH CHECK (organization_id = NULLIF(current_setting(''app.org_id'', true), '''')::uuid)',
            t);
    END LOOP;
END $$;
