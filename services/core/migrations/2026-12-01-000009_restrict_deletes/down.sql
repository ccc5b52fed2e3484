DROP INDEX messages_org_customer;
ALTER TABLE messages DROP CONSTRAINT messages_customer_fkey;
DO $$
DECLARE c record;
BEGIN
    FOR c IN
        SELECT con.conname, rel.relname, pg_get_constraintdef(con.oid) AS def
          FROM pg_constraint con
          JOIN pg_class rel ON rel.oid = con.conrelid
         WHERE con.contype = 'f' AND con.confdeltype = 'r'
           AND con.connamespace = 'core'::regnamespace
    LOOP
        EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', c.relname, c.conname);
        EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I %s', c.relname, c.conname,
                       replace(c.def, 'ON DELETE RESTRICT', 'ON DELETE CASCADE'));
    END LOOP;
END $$;
