DROP TABLE customers;
DROP TABLE outbox;
DROP TABLE idempotency_keys;
