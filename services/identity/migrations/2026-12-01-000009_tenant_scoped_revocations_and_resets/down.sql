DROP POLICY tenant_isolation ON password_reset_tokens;
ALTER TABLE password_reset_tokens NO FORCE ROW LEVEL SECURITY;
ALTER TABLE password_reset_tokens DISABLE ROW LEVEL SECURITY;
ALTER TABLE password_reset_tokens DROP CONSTRAINT password_reset_tokens_pkey;
ALTER TABLE password_reset_tokens ADD PRIMARY KEY (digest);
ALTER TABLE revocations DROP COLUMN organization_id;
