-- Subject revocations name the organization whose tokens they end (NULL: every organization,
-- for a person's own credential change), so one organization's administrator cannot end a
-- person's tokens in another.
ALTER TABLE revocations ADD COLUMN organization_id uuid;

-- Reset tokens are tenant rows like the others: keyed by (organization, digest), behind RLS.
-- Outstanding tokens (30 minutes at most) are invalidated: their text does not name the
-- organization the new lookup needs.
DELETE FROM password_reset_tokens;
ALTER TABLE password_reset_tokens DROP CONSTRAINT password_reset_tokens_pkey;
ALTER TABLE password_reset_tokens ADD PRIMARY KEY (organization_id, digest);
ALTER TABLE password_reset_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE password_reset_tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON password_reset_tokens
    USING (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
    WITH CHECK (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid);

-- The owner is subject to FORCE ROW LEVEL SECURITY like everyone: lift it for the clean-up
-- below, in this migration's transaction only.
ALTER TABLE outbox NO FORCE ROW LEVEL SECURITY;
ALTER TABLE memberships NO FORCE ROW LEVEL SECURITY;
ALTER TABLE org_roles NO FORCE ROW LEVEL SECURITY;
ALTER TABLE api_clients NO FORCE ROW LEVEL SECURITY;

-- Earlier reset events carried the token in plain text: remove them.
DELETE FROM outbox WHERE event_type = 'crm.identity.v1.PasswordResetRequested';

-- Service roles are not grantable through the API any more; take back any granted before
-- (an operator registers service clients again with `crm service-client`).
UPDATE memberships SET roles = ARRAY(SELECT r FROM unnest(roles) r WHERE r NOT LIKE 'service.%')
 WHERE EXISTS (SELECT 1 FROM unnest(roles) r WHERE r LIKE 'service.%');
UPDATE org_roles
   SET catalog_roles = ARRAY(SELECT r FROM unnest(catalog_roles) r WHERE r NOT LIKE 'service.%')
 WHERE EXISTS (SELECT 1 FROM unnest(catalog_roles) r WHERE r LIKE 'service.%');
UPDATE api_clients SET roles = ARRAY(SELECT r FROM unnest(roles) r WHERE r NOT LIKE 'service.%')
 WHERE EXISTS (SELECT 1 FROM unnest(roles) r WHERE r LIKE 'service.%');

ALTER TABLE outbox FORCE ROW LEVEL SECURITY;
ALTER TABLE memberships FORCE ROW LEVEL SECURITY;
ALTER TABLE org_roles FORCE ROW LEVEL SECURITY;
ALTER TABLE api_clients FORCE ROW LEVEL SECURITY;
