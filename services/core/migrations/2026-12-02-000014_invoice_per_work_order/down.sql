DROP INDEX invoices_org_work_order;
