DROP INDEX login_throttle_update_time;
DROP INDEX revocations_expire_time;
DROP INDEX outbox_occur_time;
DROP INDEX idempotency_keys_create_time;
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['idempotency_keys', 'outbox', 'password_reset_tokens',
                             'authorization_codes'] LOOP
        EXECUTE format('DROP POLICY purge ON %I', t);
        EXECUTE format('DROP POLICY purge_delete ON %I', t);
    END LOOP;
END $$;
