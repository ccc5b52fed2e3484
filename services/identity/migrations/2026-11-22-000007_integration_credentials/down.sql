DROP TABLE integration_credentials;
