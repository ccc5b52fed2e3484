-- Foundation of the fieldops schema: the tables every service on the resource engine has
-- (idempotency keys, outbox, the hash-chained audit log) and the people, trucks, sites and
-- credentials work orders are planned with. Runs as fieldops_owner with search_path = fieldops;
-- btree_gist (for the no-overlap constraints) is created by `crm migrate` as the admin.

CREATE TABLE idempotency_keys (
    organization_id uuid NOT NULL,
    request_id uuid NOT NULL,
    method text NOT NULL,
    request_hash bytea NOT NULL,
    response bytea,
    create_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, request_id)
);
CREATE INDEX idempotency_keys_create_time ON idempotency_keys (create_time);

CREATE TABLE outbox (
    organization_id uuid NOT NULL,
    id bigint GENERATED ALWAYS AS IDENTITY,
    event_id uuid NOT NULL,
    -- Readers only pass txids below their snapshot's xmin (see crm_db::outbox).
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
CREATE INDEX outbox_occur_time ON outbox (occur_time);

CREATE TABLE audit_entries (
    organization_id uuid NOT NULL,
    seq bigint NOT NULL CHECK (seq > 0),
    id uuid NOT NULL,
    actor_kind smallint NOT NULL,
    actor text NOT NULL,
    delegate text NOT NULL DEFAULT '',
    request_id text NOT NULL DEFAULT '',
    method text NOT NULL,
    resource text NOT NULL,
    action text NOT NULL,
    changes text NOT NULL,
    create_time timestamptz NOT NULL,
    prev_hash bytea NOT NULL,
    hash bytea NOT NULL,
    PRIMARY KEY (organization_id, seq)
);
CREATE INDEX audit_entries_org_resource ON audit_entries (organization_id, resource, seq);
CREATE TABLE audit_heads (
    organization_id uuid PRIMARY KEY,
    seq bigint NOT NULL,
    hash bytea NOT NULL
);

CREATE TABLE technicians (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    user_id uuid NOT NULL,
    display_name text NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 200),
    skills smallint[] NOT NULL DEFAULT '{}',
    home_zone text NOT NULL DEFAULT '',
    status smallint NOT NULL CHECK (status BETWEEN 1 AND 3),
    hourly_cost_currency text,
    hourly_cost_nanos bigint CHECK (hourly_cost_nanos >= 0),
    phone text,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    delete_time timestamptz,
    purge_time timestamptz,
    revision bigint NOT NULL DEFAULT 1,
    created_by text NOT NULL,
    updated_by text NOT NULL,
    PRIMARY KEY (organization_id, id),
    CHECK ((hourly_cost_currency IS NULL) = (hourly_cost_nanos IS NULL))
);
-- One live technician per user.
CREATE UNIQUE INDEX technicians_org_user ON technicians (organization_id, user_id)
    WHERE delete_time IS NULL;

CREATE TABLE trucks (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    display_name text NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 200),
    plate text NOT NULL CHECK (char_length(plate) BETWEEN 1 AND 20),
    tank_capacity_gallons integer NOT NULL CHECK (tank_capacity_gallons BETWEEN 1 AND 20000),
    technician_id uuid,
    active boolean NOT NULL DEFAULT true,
    notes text NOT NULL DEFAULT '',
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    delete_time timestamptz,
    purge_time timestamptz,
    revision bigint NOT NULL DEFAULT 1,
    created_by text NOT NULL,
    updated_by text NOT NULL,
    PRIMARY KEY (organization_id, id),
    FOREIGN KEY (organization_id, technician_id) REFERENCES technicians (organization_id, id)
        ON DELETE RESTRICT
);
CREATE UNIQUE INDEX trucks_org_plate ON trucks (organization_id, upper(plate))
    WHERE delete_time IS NULL;
CREATE INDEX trucks_org_technician ON trucks (organization_id, technician_id);

CREATE TABLE disposal_facilities (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    display_name text NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 200),
    region_code text NOT NULL,
    postal_code text NOT NULL,
    administrative_area text NOT NULL,
    locality text NOT NULL,
    address_lines text[] NOT NULL,
    recipient text NOT NULL,
    latitude double precision,
    longitude double precision,
    permit_number text NOT NULL CHECK (char_length(permit_number) BETWEEN 1 AND 100),
    accepted_waste_kinds smallint[] NOT NULL CHECK (cardinality(accepted_waste_kinds) > 0),
    -- Weekly windows as `D HH:MM HH:MM` (ISO day, local opening and closing time).
    opening_hours text[] NOT NULL DEFAULT '{}',
    tipping_fee_currency text,
    tipping_fee_nanos bigint CHECK (tipping_fee_nanos >= 0),
    active boolean NOT NULL DEFAULT true,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    delete_time timestamptz,
    purge_time timestamptz,
    revision bigint NOT NULL DEFAULT 1,
    created_by text NOT NULL,
    updated_by text NOT NULL,
    PRIMARY KEY (organization_id, id),
    CHECK ((tipping_fee_currency IS NULL) = (tipping_fee_nanos IS NULL))
);

CREATE TABLE shifts (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    technician_id uuid NOT NULL,
    start_time timestamptz NOT NULL,
    end_time timestamptz NOT NULL,
    zone text NOT NULL DEFAULT '',
    notes text NOT NULL DEFAULT '',
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    delete_time timestamptz,
    purge_time timestamptz,
    revision bigint NOT NULL DEFAULT 1,
    created_by text NOT NULL,
    updated_by text NOT NULL,
    PRIMARY KEY (organization_id, id),
    FOREIGN KEY (organization_id, technician_id) REFERENCES technicians (organization_id, id)
        ON DELETE RESTRICT,
    CHECK (end_time > start_time AND end_time <= start_time + interval '16 hours'),
    -- A technician works one shift at a time, even under concurrent writes.
    CONSTRAINT shifts_no_overlap EXCLUDE USING gist (
        organization_id WITH =,
        technician_id WITH =,
        tstzrange(start_time, end_time) WITH &&
    ) WHERE (delete_time IS NULL)
);
CREATE INDEX shifts_org_technician_start ON shifts (organization_id, technician_id, start_time);

CREATE TABLE time_off_periods (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    technician_id uuid NOT NULL,
    start_time timestamptz NOT NULL,
    end_time timestamptz NOT NULL,
    reason text NOT NULL CHECK (char_length(reason) BETWEEN 1 AND 200),
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    delete_time timestamptz,
    purge_time timestamptz,
    revision bigint NOT NULL DEFAULT 1,
    created_by text NOT NULL,
    updated_by text NOT NULL,
    PRIMARY KEY (organization_id, id),
    FOREIGN KEY (organization_id, technician_id) REFERENCES technicians (organization_id, id)
        ON DELETE RESTRICT,
    CHECK (end_time > start_time AND end_time <= start_time + interval '366 days')
);
CREATE INDEX time_off_org_technician_start
    ON time_off_periods (organization_id, technician_id, start_time);

CREATE TABLE certifications (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    technician_id uuid NOT NULL,
    kind smallint NOT NULL CHECK (kind BETWEEN 1 AND 5),
    number text NOT NULL CHECK (char_length(number) BETWEEN 1 AND 100),
    issuer text NOT NULL DEFAULT '',
    expire_time timestamptz NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    delete_time timestamptz,
    purge_time timestamptz,
    revision bigint NOT NULL DEFAULT 1,
    created_by text NOT NULL,
    updated_by text NOT NULL,
    PRIMARY KEY (organization_id, id),
    FOREIGN KEY (organization_id, technician_id) REFERENCES technicians (organization_id, id)
        ON DELETE RESTRICT
);
CREATE INDEX certifications_org_technician_kind
    ON certifications (organization_id, technician_id, kind, expire_time);
CREATE INDEX certifications_org_expire ON certifications (organization_id, expire_time);

CREATE TABLE licenses (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    truck_id uuid,
    technician_id uuid,
    authority text NOT NULL CHECK (char_length(authority) BETWEEN 1 AND 200),
    number text NOT NULL CHECK (char_length(number) BETWEEN 1 AND 100),
    expire_time timestamptz NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    delete_time timestamptz,
    purge_time timestamptz,
    revision bigint NOT NULL DEFAULT 1,
    created_by text NOT NULL,
    updated_by text NOT NULL,
    PRIMARY KEY (organization_id, id),
    FOREIGN KEY (organization_id, truck_id) REFERENCES trucks (organization_id, id)
        ON DELETE RESTRICT,
    FOREIGN KEY (organization_id, technician_id) REFERENCES technicians (organization_id, id)
        ON DELETE RESTRICT,
    CHECK (truck_id IS NULL OR technician_id IS NULL)
);
CREATE INDEX licenses_org_truck ON licenses (organization_id, truck_id);
CREATE INDEX licenses_org_technician ON licenses (organization_id, technician_id);
CREATE INDEX licenses_org_expire ON licenses (organization_id, expire_time);

-- One index per supported List order, each leading with the tenant and ending with the id.
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT * FROM (VALUES
        ('technicians', 'display_name'), ('trucks', 'display_name'),
        ('disposal_facilities', 'display_name'), ('shifts', 'zone'),
        ('time_off_periods', 'reason'), ('certifications', 'number'), ('licenses', 'number')
    ) AS t(tbl, text_col) LOOP
        EXECUTE format('CREATE INDEX %I ON %I (organization_id, create_time, id)',
                       r.tbl || '_org_create_time', r.tbl);
        EXECUTE format('CREATE INDEX %I ON %I (organization_id, update_time, id)',
                       r.tbl || '_org_update_time', r.tbl);
        EXECUTE format('CREATE INDEX %I ON %I (organization_id, %I, id)',
                       r.tbl || '_org_' || r.text_col, r.tbl, r.text_col);
    END LOOP;
END $$;

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['idempotency_keys', 'outbox', 'audit_entries', 'audit_heads',
                             'technicians', 'trucks', 'disposal_facilities', 'shifts',
                             'time_off_periods', 'certifications', 'licenses'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I '
            'USING (organization_id = NULLIF(current_setting(''app.org_id'', true), '''')::uuid) '
            'WITH CHECK (organization_id = NULLIF(current_setting(''app.org_id'', true), '''')::uuid)',
            t);
    END LOOP;
    -- The purge job (crm_db::purge) reads and deletes across organizations in its own
    -- transaction after `set_config('app.purge', 'on', true)`.
    FOREACH t IN ARRAY ARRAY['idempotency_keys', 'outbox'] LOOP
        EXECUTE format(
            'CREATE POLICY purge ON %I FOR SELECT '
            'USING (current_setting(''app.purge'', true) = ''on'')', t);
        EXECUTE format(
            'CREATE POLICY purge_delete ON %I FOR DELETE '
            'USING (current_setting(''app.purge'', true) = ''on'')', t);
    END LOOP;
    FOREACH t IN ARRAY ARRAY['technicians', 'trucks', 'disposal_facilities', 'shifts',
                             'time_off_periods', 'certifications', 'licenses'] LOOP
        EXECUTE format(
            'CREATE POLICY purge ON %I FOR SELECT '
            'USING (current_setting(''app.purge'', true) = ''on'' AND purge_time < now())', t);
        EXECUTE format(
            'CREATE POLICY purge_delete ON %I FOR DELETE '
            'USING (current_setting(''app.purge'', true) = ''on'' AND purge_time < now())', t);
    END LOOP;
END $$;

-- The service may only append to the audit chain and move its head forward.
REVOKE UPDATE, DELETE, TRUNCATE ON audit_entries FROM fieldops_app;
REVOKE DELETE, TRUNCATE ON audit_heads FROM fieldops_app;
