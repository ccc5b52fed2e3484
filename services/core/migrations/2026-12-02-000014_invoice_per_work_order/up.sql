-- One live invoice per work order.
CREATE UNIQUE INDEX invoices_org_work_order ON invoices (organization_id, work_order)
    WHERE work_order <> '' AND delete_time IS NULL;
