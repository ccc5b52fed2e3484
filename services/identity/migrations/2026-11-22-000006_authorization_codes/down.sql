DROP TABLE authorization_codes;
ALTER TABLE api_clients DROP COLUMN redirect_uris;
