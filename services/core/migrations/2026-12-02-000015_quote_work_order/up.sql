ALTER TABLE quotes ADD COLUMN work_order text NOT NULL DEFAULT '';
