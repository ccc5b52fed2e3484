DROP TABLE audit_heads;
DROP TABLE audit_entries;
DROP TABLE equipment_readings;
DROP TABLE equipment;
DROP TABLE properties;
DROP TABLE contacts;
