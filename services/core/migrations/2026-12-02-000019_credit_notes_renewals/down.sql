DROP POLICY scheduler ON contracts;
DROP INDEX contracts_next_check;
ALTER TABLE contracts
    DROP COLUMN next_check_time,
    DROP COLUMN announced,
    DROP COLUMN renewals,
    DROP CONSTRAINT contracts_signed,
    ADD CONSTRAINT contracts_check CHECK ((status = 2) = (sign_time IS NOT NULL)),
    DROP CONSTRAINT contracts_status_check,
    ADD CONSTRAINT contracts_status_check CHECK (status BETWEEN 1 AND 2);
DROP TABLE credit_notes;
DROP TABLE credit_note_counters;
DROP INDEX invoices_org_quote;
ALTER TABLE invoices
    DROP CONSTRAINT invoices_settled_at_most_total,
    DROP COLUMN credited_nanos,
    DROP COLUMN quote;
