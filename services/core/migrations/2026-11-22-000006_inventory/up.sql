-- Inventory items, stock per location, and the adjustments that are the only way stock moves.
CREATE TABLE inventory_items (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    sku text NOT NULL CHECK (char_length(sku) BETWEEN 1 AND 64),
    display_name text NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 200),
    unit text NOT NULL,
    reorder_point bigint NOT NULL DEFAULT 0 CHECK (reorder_point >= 0),
    notes text NOT NULL DEFAULT '',
    total_on_hand bigint NOT NULL DEFAULT 0 CHECK (total_on_hand >= 0),
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    delete_time timestamptz,
    purge_time timestamptz,
    revision bigint NOT NULL DEFAULT 1,
    created_by text NOT NULL,
    updated_by text NOT NULL,
    PRIMARY KEY (organization_id, id)
);
-- A SKU names one item in an organization (deleted items keep theirs until purged).
CREATE UNIQUE INDEX inventory_items_sku ON inventory_items (organization_id, sku);
CREATE INDEX inventory_items_org_create_time ON inventory_items (organization_id, create_time, id);
CREATE INDEX inventory_items_org_update_time ON inventory_items (organization_id, update_time, id);
CREATE INDEX inventory_items_org_display_name ON inventory_items (organization_id, display_name, id);

CREATE TABLE stock_levels (
    organization_id uuid NOT NULL,
    item_id uuid NOT NULL,
    location text NOT NULL,
    quantity bigint NOT NULL CHECK (quantity >= 0),
    PRIMARY KEY (organization_id, item_id, location),
    FOREIGN KEY (organization_id, item_id) REFERENCES inventory_items (organization_id, id)
        ON DELETE CASCADE
);

CREATE TABLE stock_adjustments (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    item_id uuid NOT NULL,
    location text NOT NULL,
    delta bigint NOT NULL CHECK (delta <> 0),
    quantity_after bigint NOT NULL CHECK (quantity_after >= 0),
    reason text NOT NULL,
    reference text NOT NULL DEFAULT '',
    actor text NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, id),
    FOREIGN KEY (organization_id, item_id) REFERENCES inventory_items (organization_id, id)
        ON DELETE CASCADE
);
CREATE INDEX stock_adjustments_org_item ON stock_adjustments (organization_id, item_id, id DESC);

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['inventory_items', 'stock_levels', 'stock_adjustments'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I '
            'USING (organization_id = NULLIF(current_setting(''app.org_id'', true), '''')::uuid) '
            'WITH CHECK (organization_id = NULLIF(current_setting(''app.org_id'', true), '''')::uuid)',
            t);
    END LOOP;
END $$;
-- Adjustments are the ledger: recorded, never edited.
REVOKE UPDATE, DELETE, TRUNCATE ON stock_adjustments FROM core_app;
