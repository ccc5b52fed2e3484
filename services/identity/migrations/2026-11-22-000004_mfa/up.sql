-- Second factors of users (global, like users). The TOTP secret is sealed with the KEK;
-- recovery codes are keyed digests.
CREATE TABLE user_totp (
    user_id uuid PRIMARY KEY REFERENCES users (id),
    sealed_secret bytea NOT NULL,
    confirm_time timestamptz,
    -- The last 30-second step a code was accepted for: a code is never accepted twice.
    last_step bigint NOT NULL DEFAULT 0,
    create_time timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE recovery_codes (
    user_id uuid NOT NULL REFERENCES users (id),
    digest bytea NOT NULL,
    use_time timestamptz,
    create_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, digest)
);
