-- Credit notes: an issued invoice is reduced only by a credit note (or voided). Each has its
-- own gapless number (CN-000001, a counter row per organization under lock) and is final.
ALTER TABLE invoices
    ADD COLUMN quote text NOT NULL DEFAULT '',
    ADD COLUMN credited_nanos bigint NOT NULL DEFAULT 0,
    ADD CONSTRAINT invoices_settled_at_most_total
        CHECK (credited_nanos >= 0 AND paid_nanos + credited_nanos <= total_nanos);
-- One live invoice per accepted quote.
CREATE UNIQUE INDEX invoices_org_quote ON invoices (organization_id, quote)
    WHERE quote <> '' AND delete_time IS NULL;

CREATE TABLE credit_note_counters (
    organization_id uuid PRIMARY KEY,
    last bigint NOT NULL CHECK (last > 0)
);

CREATE TABLE credit_notes (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    invoice_id uuid NOT NULL,
    number text NOT NULL,
    currency text NOT NULL,
    amount_nanos bigint NOT NULL CHECK (amount_nanos > 0),
    reason text NOT NULL CHECK (char_length(reason) BETWEEN 1 AND 1000),
    created_by text NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, id),
    FOREIGN KEY (organization_id, invoice_id) REFERENCES invoices (organization_id, id)
        ON DELETE RESTRICT
);
CREATE UNIQUE INDEX credit_notes_org_number ON credit_notes (organization_id, number);
CREATE INDEX credit_notes_org_invoice ON credit_notes (organization_id, invoice_id, create_time, id);

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['credit_notes', 'credit_note_counters'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I '
            'USING (organization_id = NULLIF(current_setting(''app.org_id'', true), '''')::uuid) '
            'WITH CHECK (organization_id = NULLIF(current_setting(''app.org_id'', true), '''')::uuid)',
            t);
    END LOOP;
END $$;
REVOKE UPDATE, DELETE, TRUNCATE ON credit_notes FROM core_app;
REVOKE DELETE, TRUNCATE ON credit_note_counters FROM core_app;

-- Contract terms renew (auto_renew) or expire at their end; each due visit is announced once,
-- ahead of its date, by a `crm.core.v1.ServiceDue.announced` event. `next_check_time` is when the contract next
-- needs the sweep (its next announcement or its term's end).
ALTER TABLE contracts
    DROP CONSTRAINT contracts_status_check,
    ADD CONSTRAINT contracts_status_check CHECK (status BETWEEN 1 AND 3),
    DROP CONSTRAINT contracts_check,
    ADD CONSTRAINT contracts_signed CHECK ((status = 1) = (sign_time IS NULL)),
    ADD COLUMN renewals integer NOT NULL DEFAULT 0 CHECK (renewals BETWEEN 0 AND 1000),
    ADD COLUMN announced integer NOT NULL DEFAULT 0 CHECK (announced >= 0),
    ADD COLUMN next_check_time timestamptz;
CREATE INDEX contracts_next_check ON contracts (next_check_time) WHERE status = 2;
-- The sweep's discovery: which organizations have contracts needing it now.
CREATE POLICY scheduler ON contracts FOR SELECT
    USING (current_setting('app.scheduler', true) = 'on' AND status = 2
           AND delete_time IS NULL);
