-- The price book: catalog items, pricing zones and tiers, pricing rules. Amounts are exact:
-- nano units of the organization's one currency (bigint); multipliers, discounts and
-- percentages are fractions in ten-thousandths (1.15 → 11500, 7.5 % → 750).

CREATE TABLE catalog_items (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    code text NOT NULL,
    display_name text NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 200),
    job_type smallint NOT NULL DEFAULT 0,
    unit text NOT NULL DEFAULT '',
    currency text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    base_price_nanos bigint NOT NULL CHECK (base_price_nanos >= 0),
    included_gallons integer NOT NULL DEFAULT 0 CHECK (included_gallons BETWEEN 0 AND 100000),
    taxable boolean NOT NULL DEFAULT false,
    active boolean NOT NULL DEFAULT true,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    delete_time timestamptz,
    purge_time timestamptz,
    revision bigint NOT NULL DEFAULT 1,
    created_by text NOT NULL,
    updated_by text NOT NULL,
    PRIMARY KEY (organization_id, id)
);
CREATE UNIQUE INDEX catalog_items_org_code ON catalog_items (organization_id, code)
    WHERE delete_time IS NULL;

CREATE TABLE pricing_zones (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    code text NOT NULL,
    display_name text NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 200),
    multiplier_e4 integer NOT NULL CHECK (multiplier_e4 BETWEEN 5000 AND 50000),
    travel_band smallint NOT NULL DEFAULT 0 CHECK (travel_band BETWEEN 0 AND 9),
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    delete_time timestamptz,
    purge_time timestamptz,
    revision bigint NOT NULL DEFAULT 1,
    created_by text NOT NULL,
    updated_by text NOT NULL,
    PRIMARY KEY (organization_id, id)
);
CREATE UNIQUE INDEX pricing_zones_org_code ON pricing_zones (organization_id, code)
    WHERE delete_time IS NULL;

CREATE TABLE pricing_tiers (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    code text NOT NULL,
    display_name text NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 200),
    discount_e4 integer NOT NULL CHECK (discount_e4 BETWEEN 0 AND 10000),
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    delete_time timestamptz,
    purge_time timestamptz,
    revision bigint NOT NULL DEFAULT 1,
    created_by text NOT NULL,
    updated_by text NOT NULL,
    PRIMARY KEY (organization_id, id)
);
CREATE UNIQUE INDEX pricing_tiers_org_code ON pricing_tiers (organization_id, code)
    WHERE delete_time IS NULL;

CREATE TABLE pricing_rules (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    display_name text NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 200),
    kind smallint NOT NULL CHECK (kind BETWEEN 1 AND 5),
    catalog_item_id uuid,
    currency text CHECK (currency ~ '^[A-Z]{3}$'),
    amount_nanos bigint,
    percent_e4 integer CHECK (percent_e4 BETWEEN -10000 AND 100000),
    rule_order integer NOT NULL DEFAULT 0 CHECK (rule_order BETWEEN 0 AND 1000),
    valid_from timestamptz,
    valid_until timestamptz,
    business_start_minute smallint,
    business_end_minute smallint,
    travel_band smallint NOT NULL DEFAULT 0,
    min_gallons integer NOT NULL DEFAULT 0,
    max_gallons integer NOT NULL DEFAULT 0,
    active boolean NOT NULL DEFAULT true,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    delete_time timestamptz,
    purge_time timestamptz,
    revision bigint NOT NULL DEFAULT 1,
    created_by text NOT NULL,
    updated_by text NOT NULL,
    PRIMARY KEY (organization_id, id),
    FOREIGN KEY (organization_id, catalog_item_id) REFERENCES catalog_items (organization_id, id)
        ON DELETE RESTRICT,
    -- An amount or a percentage, never both.
    CHECK ((amount_nanos IS NULL) <> (percent_e4 IS NULL)),
    CHECK ((amount_nanos IS NULL) = (currency IS NULL)),
    CHECK (valid_until IS NULL OR valid_from IS NULL OR valid_until > valid_from)
);
CREATE INDEX pricing_rules_org_active ON pricing_rules (organization_id, active, rule_order);
CREATE INDEX pricing_rules_org_item ON pricing_rules (organization_id, catalog_item_id);

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['catalog_items', 'pricing_zones', 'pricing_tiers', 'pricing_rules'] LOOP
        EXECUTE format('CREATE INDEX %I ON %I (organization_id, create_time, id)',
                       t || '_org_create_time', t);
        EXECUTE format('CREATE INDEX %I ON %I (organization_id, update_time, id)',
                       t || '_org_update_time', t);
        EXECUTE format('CREATE INDEX %I ON %I (organization_id, display_name, id)',
                       t || '_org_display_name', t);
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I '
            'USING (organization_id = NULLIF(current_setting(''app.org_id'', true), '''')::uuid) '
            'WITH CHECK (organization_id = NULLIF(current_setting(''app.org_id'', true), '''')::uuid)',
            t);
        EXECUTE format(
            'CREATE POLICY purge ON %I FOR SELECT '
            'USING (current_setting(''app.purge'', true) = ''on'' AND purge_time < now())', t);
        EXECUTE format(
            'CREATE POLICY purge_delete ON %I FOR DELETE '
            'USING (current_setting(''app.purge'', true) = ''on'' AND purge_time < now())', t);
    END LOOP;
END $$;
