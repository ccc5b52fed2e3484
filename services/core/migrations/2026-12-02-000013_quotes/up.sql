-- Quotes: the options (good / better / best, their lines and engine prices) are one encoded
-- value, written whole with the quote.
CREATE TABLE quotes (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    customer_id uuid NOT NULL,
    property_id uuid,
    title text NOT NULL CHECK (char_length(title) BETWEEN 1 AND 200),
    options bytea NOT NULL,
    tax_milli integer NOT NULL DEFAULT 0 CHECK (tax_milli BETWEEN 0 AND 30000),
    valid_until timestamptz NOT NULL,
    status smallint NOT NULL CHECK (status BETWEEN 1 AND 6),
    accepted_level smallint NOT NULL DEFAULT 0 CHECK (accepted_level BETWEEN 0 AND 3),
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
    CHECK ((status = 4) = (accepted_level <> 0))
);
CREATE INDEX quotes_org_create_time ON quotes (organization_id, create_time, id);
CREATE INDEX quotes_org_update_time ON quotes (organization_id, update_time, id);
CREATE INDEX quotes_org_title ON quotes (organization_id, title, id);
CREATE INDEX quotes_org_customer ON quotes (organization_id, customer_id);
CREATE INDEX quotes_org_property ON quotes (organization_id, property_id);
ALTER TABLE quotes ENABLE ROW LEVEL SECURITY;
ALTER TABLE quotes FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON quotes
    USING (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
    WITH CHECK (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid);
CREATE POLICY purge ON quotes FOR SELECT
    USING (current_setting('app.purge', true) = 'on' AND purge_time < now());
CREATE POLICY purge_delete ON quotes FOR DELETE
    USING (current_setting('app.purge', true) = 'on' AND purge_time < now());
