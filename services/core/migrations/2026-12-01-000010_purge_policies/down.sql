DROP INDEX outbox_occur_time;
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['idempotency_keys', 'outbox', 'equipment_readings', 'customers',
                             'contacts', 'properties', 'equipment', 'conversations', 'tickets',
                             'inventory_items', 'activities', 'call_dispositions', 'call_logs',
                             'sync_logs'] LOOP
        EXECUTE format('DROP POLICY purge ON %I', t);
        EXECUTE format('DROP POLICY purge_delete ON %I', t);
    END LOOP;
END $$;
