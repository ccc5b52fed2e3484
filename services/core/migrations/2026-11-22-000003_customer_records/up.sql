-- Contacts, properties, equipment with readings, and the core audit chain.
-- Children reference their parent within the same organization; a purge (hard delete) of the
-- parent takes its children with it, a soft delete leaves them for undelete.

CREATE TABLE contacts (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    customer_id uuid NOT NULL,
    display_name text NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 200),
    title text NOT NULL DEFAULT '',
    email text,
    phone text,
    is_primary boolean NOT NULL DEFAULT false,
    notes text NOT NULL DEFAULT '',
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    delete_time timestamptz,
    purge_time timestamptz,
    revision bigint NOT NULL DEFAULT 1,
    created_by text NOT NULL,
    updated_by text NOT NULL,
    PRIMARY KEY (organization_id, id),
    FOREIGN KEY (organization_id, customer_id) REFERENCES customers (organization_id, id)
        ON DELETE CASCADE
);
CREATE INDEX contacts_org_create_time ON contacts (organization_id, create_time, id);
CREATE INDEX contacts_org_update_time ON contacts (organization_id, update_time, id);
CREATE INDEX contacts_org_display_name ON contacts (organization_id, display_name, id);
CREATE INDEX contacts_org_customer ON contacts (organization_id, customer_id, create_time, id);
-- One primary among a customer's live contacts.
CREATE UNIQUE INDEX contacts_one_primary ON contacts (organization_id, customer_id)
    WHERE is_primary AND delete_time IS NULL;

CREATE TABLE properties (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    customer_id uuid NOT NULL,
    display_name text NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 200),
    region_code text NOT NULL,
    postal_code text NOT NULL DEFAULT '',
    administrative_area text NOT NULL DEFAULT '',
    locality text NOT NULL DEFAULT '',
    address_lines text[] NOT NULL,
    recipient text NOT NULL DEFAULT '',
    latitude double precision CHECK (latitude BETWEEN -90 AND 90),
    longitude double precision CHECK (longitude BETWEEN -180 AND 180),
    zone text NOT NULL DEFAULT '',
    access_notes text NOT NULL DEFAULT '',
    gate_code text NOT NULL DEFAULT '',
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    delete_time timestamptz,
    purge_time timestamptz,
    revision bigint NOT NULL DEFAULT 1,
    created_by text NOT NULL,
    updated_by text NOT NULL,
    PRIMARY KEY (organization_id, id),
    CHECK ((latitude IS NULL) = (longitude IS NULL)),
    FOREIGN KEY (organization_id, customer_id) REFERENCES customers (organization_id, id)
        ON DELETE CASCADE
);
CREATE INDEX properties_org_create_time ON properties (organization_id, create_time, id);
CREATE INDEX properties_org_update_time ON properties (organization_id, update_time, id);
CREATE INDEX properties_org_display_name ON properties (organization_id, display_name, id);
CREATE INDEX properties_org_customer ON properties (organization_id, customer_id, create_time, id);
CREATE INDEX properties_org_zone ON properties (organization_id, zone, id);

CREATE TABLE equipment (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    property_id uuid NOT NULL,
    kind smallint NOT NULL CHECK (kind BETWEEN 1 AND 5),
    display_name text NOT NULL DEFAULT '' CHECK (char_length(display_name) <= 200),
    capacity_gallons integer NOT NULL DEFAULT 0 CHECK (capacity_gallons BETWEEN 0 AND 1000000),
    compartments integer NOT NULL DEFAULT 0 CHECK (compartments BETWEEN 0 AND 20),
    install_date date,
    last_service_date date,
    notes text NOT NULL DEFAULT '',
    -- The newest reading, copied onto the equipment so reads need no join.
    latest_solids_depth_inches double precision,
    latest_grease_depth_inches double precision,
    latest_read_time timestamptz,
    latest_recorder text,
    latest_reading_notes text,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    delete_time timestamptz,
    purge_time timestamptz,
    revision bigint NOT NULL DEFAULT 1,
    created_by text NOT NULL,
    updated_by text NOT NULL,
    PRIMARY KEY (organization_id, id),
    FOREIGN KEY (organization_id, property_id) REFERENCES properties (organization_id, id)
        ON DELETE CASCADE
);
CREATE INDEX equipment_org_create_time ON equipment (organization_id, create_time, id);
CREATE INDEX equipment_org_update_time ON equipment (organization_id, update_time, id);
CREATE INDEX equipment_org_display_name ON equipment (organization_id, display_name, id);
CREATE INDEX equipment_org_property ON equipment (organization_id, property_id, create_time, id);

CREATE TABLE equipment_readings (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    equipment_id uuid NOT NULL,
    solids_depth_inches double precision NOT NULL CHECK (solids_depth_inches BETWEEN 0 AND 1000),
    grease_depth_inches double precision NOT NULL CHECK (grease_depth_inches BETWEEN 0 AND 1000),
    read_time timestamptz NOT NULL,
    recorder text NOT NULL,
    notes text NOT NULL DEFAULT '',
    create_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, id),
    FOREIGN KEY (organization_id, equipment_id) REFERENCES equipment (organization_id, id)
        ON DELETE CASCADE
);
CREATE INDEX equipment_readings_latest
    ON equipment_readings (organization_id, equipment_id, read_time DESC, id DESC);

-- Every change in core, hash-chained per organization (see audit.rs).
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

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['contacts', 'properties', 'equipment', 'equipment_readings',
                             'audit_entries', 'audit_heads'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I '
            'USING (organization_id = NULLIF(current_setting(''app.org_id'', true), '''')::uuid) '
            'WITH CHECK (organization_id = NULLIF(current_setting(''app.org_id'', true), '''')::uuid)',
            t);
    END LOOP;
END $$;

-- The service may only append to the audit chain and move its head forward.
REVOKE UPDATE, DELETE, TRUNCATE ON audit_entries FROM core_app;
REVOKE DELETE, TRUNCATE ON audit_heads FROM core_app;
-- Readings are measurements: recorded, never edited.
REVOKE UPDATE ON equipment_readings FROM core_app;
