-- Work orders, their technicians' bookings (no technician is booked twice at once: an exclusion
-- constraint), their append-only history, and waste manifests (immutable once disposed).

CREATE TABLE work_orders (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    job_type smallint NOT NULL CHECK (job_type BETWEEN 1 AND 8),
    priority smallint NOT NULL CHECK (priority BETWEEN 1 AND 5),
    status smallint NOT NULL CHECK (status BETWEEN 1 AND 10),
    summary text NOT NULL CHECK (char_length(summary) BETWEEN 1 AND 200),
    customer_id uuid NOT NULL,
    property_id uuid NOT NULL,
    equipment_id uuid,
    technician_ids uuid[] NOT NULL DEFAULT '{}',
    -- The assigned technicians' users, for the technician view and its policy.
    technician_user_ids uuid[] NOT NULL DEFAULT '{}',
    scheduled_start_time timestamptz,
    scheduled_end_time timestamptz,
    estimated_minutes integer NOT NULL CHECK (estimated_minutes BETWEEN 1 AND 1440),
    line_currency text,
    line_descriptions text[] NOT NULL DEFAULT '{}',
    line_quantities integer[] NOT NULL DEFAULT '{}',
    line_unit_price_nanos bigint[] NOT NULL DEFAULT '{}',
    gallons_pumped integer NOT NULL DEFAULT 0 CHECK (gallons_pumped BETWEEN 0 AND 100000),
    notes text NOT NULL DEFAULT '',
    follow_up_of uuid,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    delete_time timestamptz,
    purge_time timestamptz,
    revision bigint NOT NULL DEFAULT 1,
    created_by text NOT NULL,
    updated_by text NOT NULL,
    PRIMARY KEY (organization_id, id),
    FOREIGN KEY (organization_id, follow_up_of) REFERENCES work_orders (organization_id, id)
        ON DELETE RESTRICT,
    CHECK ((scheduled_start_time IS NULL) = (scheduled_end_time IS NULL)),
    CHECK (scheduled_end_time > scheduled_start_time
           AND scheduled_end_time <= scheduled_start_time + interval '24 hours'),
    CHECK (cardinality(line_descriptions) = cardinality(line_quantities)
           AND cardinality(line_quantities) = cardinality(line_unit_price_nanos))
);
CREATE INDEX work_orders_org_create_time ON work_orders (organization_id, create_time, id);
CREATE INDEX work_orders_org_update_time ON work_orders (organization_id, update_time, id);
CREATE INDEX work_orders_org_summary ON work_orders (organization_id, summary, id);
CREATE INDEX work_orders_org_customer ON work_orders (organization_id, customer_id);
CREATE INDEX work_orders_org_property ON work_orders (organization_id, property_id);
CREATE INDEX work_orders_org_start ON work_orders (organization_id, scheduled_start_time);
CREATE INDEX work_orders_technicians ON work_orders USING gin (technician_ids);
CREATE INDEX work_orders_technician_users ON work_orders USING gin (technician_user_ids);
CREATE INDEX work_orders_org_follow_up_of ON work_orders (organization_id, follow_up_of);

-- One row per assigned technician: the window they are booked for while the work order is
-- booked (`active`), and their own times on the job.
CREATE TABLE work_order_assignments (
    organization_id uuid NOT NULL,
    work_order_id uuid NOT NULL,
    technician_id uuid NOT NULL,
    start_time timestamptz,
    end_time timestamptz,
    active boolean NOT NULL,
    enroute_time timestamptz,
    arrive_time timestamptz,
    work_start_time timestamptz,
    finish_time timestamptz,
    PRIMARY KEY (organization_id, work_order_id, technician_id),
    -- Written in the work order's transaction, before or after its row.
    FOREIGN KEY (organization_id, work_order_id) REFERENCES work_orders (organization_id, id)
        ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED,
    FOREIGN KEY (organization_id, technician_id) REFERENCES technicians (organization_id, id)
        ON DELETE RESTRICT,
    CHECK (NOT active OR (start_time IS NOT NULL AND end_time > start_time)),
    -- Double booking is impossible, even under concurrent writes.
    CONSTRAINT work_order_assignments_no_overlap EXCLUDE USING gist (
        organization_id WITH =,
        technician_id WITH =,
        tstzrange(start_time, end_time) WITH &&
    ) WHERE (active)
);
CREATE INDEX work_order_assignments_org_technician
    ON work_order_assignments (organization_id, technician_id, start_time);

-- What happened to a work order, step by step.
CREATE TABLE work_order_events (
    organization_id uuid NOT NULL,
    work_order_id uuid NOT NULL,
    seq bigint NOT NULL CHECK (seq > 0),
    from_status smallint NOT NULL,
    to_status smallint NOT NULL,
    actor text NOT NULL,
    reason text NOT NULL DEFAULT '',
    latitude double precision,
    longitude double precision,
    technician_ids uuid[] NOT NULL DEFAULT '{}',
    technician_times timestamptz[] NOT NULL DEFAULT '{}',
    follow_up_id uuid,
    create_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, work_order_id, seq),
    FOREIGN KEY (organization_id, work_order_id) REFERENCES work_orders (organization_id, id)
        ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED
);

CREATE TABLE waste_manifests (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    work_order_id uuid NOT NULL,
    generator_customer_id uuid NOT NULL,
    generator_property_id uuid NOT NULL,
    truck_id uuid NOT NULL,
    technician_id uuid NOT NULL,
    license_id uuid,
    disposal_facility_id uuid NOT NULL,
    waste_kind smallint NOT NULL CHECK (waste_kind BETWEEN 1 AND 5),
    gallons integer NOT NULL CHECK (gallons BETWEEN 1 AND 20000),
    ticket_number text NOT NULL DEFAULT '',
    pickup_time timestamptz NOT NULL,
    pickup_latitude double precision,
    pickup_longitude double precision,
    disposal_time timestamptz,
    corrects_id uuid,
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
    FOREIGN KEY (organization_id, truck_id) REFERENCES trucks (organization_id, id)
        ON DELETE RESTRICT,
    FOREIGN KEY (organization_id, technician_id) REFERENCES technicians (organization_id, id)
        ON DELETE RESTRICT,
    FOREIGN KEY (organization_id, license_id) REFERENCES licenses (organization_id, id)
        ON DELETE RESTRICT,
    FOREIGN KEY (organization_id, disposal_facility_id)
        REFERENCES disposal_facilities (organization_id, id) ON DELETE RESTRICT,
    FOREIGN KEY (organization_id, corrects_id) REFERENCES waste_manifests (organization_id, id)
        ON DELETE RESTRICT,
    CHECK (disposal_time IS NULL OR (disposal_time >= pickup_time AND ticket_number <> ''))
);
CREATE INDEX waste_manifests_org_create_time ON waste_manifests (organization_id, create_time, id);
CREATE INDEX waste_manifests_org_update_time ON waste_manifests (organization_id, update_time, id);
CREATE INDEX waste_manifests_org_ticket_number
    ON waste_manifests (organization_id, ticket_number, id);
CREATE INDEX waste_manifests_org_work_order ON waste_manifests (organization_id, work_order_id);
CREATE INDEX waste_manifests_org_corrects ON waste_manifests (organization_id, corrects_id);

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['work_orders', 'work_order_assignments', 'work_order_events',
                             'waste_manifests'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I '
            'USING (organization_id = NULLIF(current_setting(''app.org_id'', true), '''')::uuid) '
            'WITH CHECK (organization_id = NULLIF(current_setting(''app.org_id'', true), '''')::uuid)',
            t);
    END LOOP;
END $$;

-- The technician view's second wall: a transaction that names its user in `app.user_id` (a
-- principal whose only field role is fieldops.technician) sees and changes only the work
-- orders that user is assigned to, even if a query forgets to say so.
CREATE POLICY technician_view ON work_orders AS RESTRICTIVE
    USING (NULLIF(current_setting('app.user_id', true), '') IS NULL
           OR NULLIF(current_setting('app.user_id', true), '')::uuid = ANY (technician_user_ids))
    WITH CHECK (NULLIF(current_setting('app.user_id', true), '') IS NULL
           OR NULLIF(current_setting('app.user_id', true), '')::uuid = ANY (technician_user_ids));
CREATE POLICY technician_view ON work_order_events AS RESTRICTIVE
    USING (NULLIF(current_setting('app.user_id', true), '') IS NULL
           OR EXISTS (SELECT 1 FROM work_orders w
                       WHERE w.organization_id = work_order_events.organization_id
                         AND w.id = work_order_events.work_order_id));

-- A recorded manifest never changes: no role may update it (a trigger, so the row can still
-- be read and locked), and the app role may delete no manifest at all.
CREATE FUNCTION waste_manifest_is_final() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.disposal_time IS NOT NULL THEN
        RAISE EXCEPTION 'waste manifest % is recorded and final; record a correction', OLD.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'waste_manifests_recorded_is_final';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER recorded_is_final BEFORE UPDATE ON waste_manifests
    FOR EACH ROW EXECUTE FUNCTION waste_manifest_is_final();
REVOKE DELETE, TRUNCATE ON waste_manifests FROM fieldops_app;
-- History is appended, never edited.
REVOKE UPDATE, DELETE, TRUNCATE ON work_order_events FROM fieldops_app;
