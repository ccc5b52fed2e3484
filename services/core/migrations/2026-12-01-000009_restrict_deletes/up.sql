-- No row disappears by cascade: ON DELETE CASCADE runs with the owner's rights, so it would
-- delete append-only rows (messages, stock adjustments, equipment readings, consent history)
-- that core_app itself may not DELETE. Every such foreign key becomes RESTRICT: a parent goes
-- only after its children were dealt with explicitly (the purge job keeps parents that still
-- have append-only children).
DO $$
DECLARE c record;
BEGIN
    FOR c IN
        SELECT con.conname, rel.relname, pg_get_constraintdef(con.oid) AS def
          FROM pg_constraint con
          JOIN pg_class rel ON rel.oid = con.conrelid
         WHERE con.contype = 'f' AND con.confdeltype = 'c'
           AND con.connamespace = 'core'::regnamespace
    LOOP
        EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', c.relname, c.conname);
        EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I %s', c.relname, c.conname,
                       replace(c.def, 'ON DELETE CASCADE', 'ON DELETE RESTRICT'));
    END LOOP;
END $$;

-- A message names its customer: within the same organization, like every reference.
ALTER TABLE messages ADD CONSTRAINT messages_customer_fkey
    FOREIGN KEY (organization_id, customer_id) REFERENCES customers (organization_id, id)
    ON DELETE RESTRICT;
CREATE INDEX messages_org_customer ON messages (organization_id, customer_id);
