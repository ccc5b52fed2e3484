-- The purge job (crm_db::purge) reads and deletes across organizations, in its own
-- transaction only, after `set_config('app.purge', 'on', true)`: these policies admit it.
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['idempotency_keys', 'outbox', 'password_reset_tokens',
                             'authorization_codes'] LOOP
        EXECUTE format(
            'CREATE POLICY purge ON %I FOR SELECT '
            'USING (current_setting(''app.purge'', true) = ''on'')', t);
        EXECUTE format(
            'CREATE POLICY purge_delete ON %I FOR DELETE '
            'USING (current_setting(''app.purge'', true) = ''on'')', t);
    END LOOP;
END $$;
CREATE INDEX outbox_occur_time ON outbox (occur_time);
CREATE INDEX idempotency_keys_create_time ON idempotency_keys (create_time);
CREATE INDEX revocations_expire_time ON revocations (expire_time);
CREATE INDEX login_throttle_update_time ON login_throttle (update_time);
