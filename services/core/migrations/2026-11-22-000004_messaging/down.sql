DROP INDEX contacts_org_phone;
DROP INDEX customers_org_phone;
DROP TABLE consent_events;
DROP TABLE sms_consents;
DROP INDEX customers_search;
ALTER TABLE customers DROP COLUMN search;
DROP TABLE messages;
DROP TABLE conversations;
