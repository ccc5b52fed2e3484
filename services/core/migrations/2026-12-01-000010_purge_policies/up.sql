-- The purge job (crm_db::purge) reads and deletes across organizations, in its own
-- transaction only, after `set_config('app.purge', 'on', true)`: these policies admit it.
-- Soft-deletable tables admit only rows whose purge time has passed.
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['idempotency_keys', 'outbox', 'equipment_readings'] LOOP
        EXECUTE format(
            'CREATE POLICY purge ON %I FOR SELECT '
            'USING (current_setting(''app.purge'', true) = ''on'')', t);
        EXECUTE format(
            'CREATE POLICY purge_delete ON %I FOR DELETE '
            'USING (current_setting(''app.purge'', true) = ''on'')', t);
    END LOOP;
    FOREACH t IN ARRAY ARRAY['customers', 'contacts', 'properties', 'equipment', 'conversations',
                             'tickets', 'inventory_items', 'activities', 'call_dispositions',
                             'call_logs', 'sync_logs'] LOOP
        EXECUTE format(
            'CREATE POLICY purge ON %I FOR SELECT '
            'USING (current_setting(''app.purge'', true) = ''on'' AND purge_time < now())', t);
        EXECUTE format(
            'CREATE POLICY purge_delete ON %I FOR DELETE '
            'USING (current_setting(''app.purge'', true) = ''on'' AND purge_time < now())', t);
    END LOOP;
END $$;
CREATE INDEX outbox_occur_time ON outbox (occur_time);
