ALTER TABLE quotes DROP COLUMN work_order;
