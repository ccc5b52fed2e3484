DROP INDEX customers_tags;
DROP INDEX customers_org_lifecycle;
ALTER TABLE customers
    DROP COLUMN time_zone,
    DROP COLUMN tags,
    DROP COLUMN tier,
    DROP COLUMN source,
    DROP COLUMN lifecycle_stage;
