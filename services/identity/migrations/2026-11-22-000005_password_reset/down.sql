DROP TABLE password_reset_tokens;
ALTER TABLE users DROP COLUMN credentials_change_time;
