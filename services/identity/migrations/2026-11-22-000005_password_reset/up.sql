-- Password resets: single-use tokens stored as keyed digests, and the time a user's
-- credentials last changed (refresh tokens from sessions before it stop working everywhere).
ALTER TABLE users ADD COLUMN credentials_change_time timestamptz;

CREATE TABLE password_reset_tokens (
    digest bytea PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users (id),
    organization_id uuid NOT NULL REFERENCES organizations (id),
    create_time timestamptz NOT NULL DEFAULT now(),
    expire_time timestamptz NOT NULL,
    use_time timestamptz
);
CREATE INDEX password_reset_tokens_user ON password_reset_tokens (user_id);
