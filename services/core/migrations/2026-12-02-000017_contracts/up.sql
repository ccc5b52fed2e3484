-- Maintenance agreements: templates, and contracts made from them (signed through signature
-- requests; an active contract's schedule follows from its start, term and recurrence).
CREATE TABLE contract_templates (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    display_name text NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 200),
    catalog_item_id uuid NOT NULL,
    recurrence_interval integer NOT NULL CHECK (recurrence_interval BETWEEN 1 AND 1000),
    recurrence_unit smallint NOT NULL CHECK (recurrence_unit BETWEEN 1 AND 4),
    currency text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    price_nanos bigint NOT NULL CHECK (price_nanos >= 0),
    term_months integer NOT NULL CHECK (term_months BETWEEN 1 AND 120),
    auto_renew boolean NOT NULL DEFAULT false,
    terms text NOT NULL DEFAULT '' CHECK (char_length(terms) <= 20000),
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    delete_time timestamptz,
    purge_time timestamptz,
    revision bigint NOT NULL DEFAULT 1,
    created_by text NOT NULL,
    updated_by text NOT NULL,
    PRIMARY KEY (organization_id, id),
    FOREIGN KEY (organization_id, catalog_item_id) REFERENCES catalog_items (organization_id, id)
        ON DELETE RESTRICT
);
CREATE INDEX contract_templates_org_create_time ON contract_templates (organization_id, create_time, id);
CREATE INDEX contract_templates_org_update_time ON contract_templates (organization_id, update_time, id);
CREATE INDEX contract_templates_org_display_name ON contract_templates (organization_id, display_name, id);
CREATE INDEX contract_templates_org_catalog_item ON contract_templates (organization_id, catalog_item_id);

CREATE TABLE contracts (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    customer_id uuid NOT NULL,
    property_id uuid NOT NULL,
    template_id uuid NOT NULL,
    title text NOT NULL CHECK (char_length(title) BETWEEN 1 AND 200),
    catalog_item_id uuid CHECK (catalog_item_id IS NOT NULL),
    recurrence_interval integer NOT NULL CHECK (recurrence_interval BETWEEN 1 AND 1000),
    recurrence_unit smallint NOT NULL CHECK (recurrence_unit BETWEEN 1 AND 4),
    currency text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    price_nanos bigint CHECK (price_nanos IS NOT NULL AND price_nanos >= 0),
    term_months integer NOT NULL CHECK (term_months BETWEEN 1 AND 120),
    auto_renew boolean NOT NULL DEFAULT false,
    terms text NOT NULL DEFAULT '' CHECK (char_length(terms) <= 20000),
    start_time timestamptz NOT NULL,
    status smallint NOT NULL CHECK (status BETWEEN 1 AND 2),
    sign_time timestamptz,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    delete_time timestamptz,
    purge_time timestamptz,
    revision bigint NOT NULL DEFAULT 1,
    created_by text NOT NULL,
    updated_by text NOT NULL,
    PRIMARY KEY (organization_id, id),
    FOREIGN KEY (organization_id, customer_id) REFERENCES customers (organization_id, id)
        ON DELETE RESTRICT,
    FOREIGN KEY (organization_id, property_id) REFERENCES properties (organization_id, id)
        ON DELETE RESTRICT,
    FOREIGN KEY (organization_id, template_id) REFERENCES contract_templates (organization_id, id)
        ON DELETE RESTRICT,
    FOREIGN KEY (organization_id, catalog_item_id) REFERENCES catalog_items (organization_id, id)
        ON DELETE RESTRICT,
    CHECK ((status = 2) = (sign_time IS NOT NULL))
);
CREATE INDEX contracts_org_create_time ON contracts (organization_id, create_time, id);
CREATE INDEX contracts_org_update_time ON contracts (organization_id, update_time, id);
CREATE INDEX contracts_org_title ON contracts (organization_id, title, id);
CREATE INDEX contracts_org_customer ON contracts (organization_id, customer_id);
CREATE INDEX contracts_org_property ON contracts (organization_id, property_id);
CREATE INDEX contracts_org_template ON contracts (organization_id, template_id);
CREATE INDEX contracts_org_catalog_item ON contracts (organization_id, catalog_item_id);

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['contract_templates', 'contracts'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I '
            'USING (organization_id = NULLIF(current_setting(''app.org_id'', true), '''')::uuid) '
            'WITH CHECK (organization_id = NULLIF(current_setting(''app.org_id'', true), '''')::uuid)',
            t);
        EXECUTE format('CREATE POLICY purge ON %I FOR SELECT '
            'USING (current_setting(''app.purge'', true) = ''on'' AND purge_time < now())', t);
        EXECUTE format('CREATE POLICY purge_delete ON %I FOR DELETE '
            'USING (current_setting(''app.purge'', true) = ''on'' AND purge_time < now())', t);
    END LOOP;
END $$;
