-- Customers gain a lifecycle stage, source, tier, tags and time zone.
ALTER TABLE customers
    ADD COLUMN lifecycle_stage smallint NOT NULL DEFAULT 1 CHECK (lifecycle_stage BETWEEN 1 AND 5),
    ADD COLUMN source text NOT NULL DEFAULT '',
    ADD COLUMN tier text NOT NULL DEFAULT '',
    ADD COLUMN tags text[] NOT NULL DEFAULT '{}',
    ADD COLUMN time_zone text NOT NULL DEFAULT '';
CREATE INDEX customers_org_lifecycle ON customers (organization_id, lifecycle_stage, id);
CREATE INDEX customers_tags ON customers USING gin (tags);
