-- Invoices with gapless numbers (a counter row per organization, incremented under its row lock
-- in the issuing transaction), payments and refunds. The paid amount never exceeds the total.

CREATE TABLE invoices (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    customer_id uuid NOT NULL,
    work_order text NOT NULL DEFAULT '',
    status smallint NOT NULL CHECK (status BETWEEN 1 AND 5),
    number text NOT NULL DEFAULT '',
    line_descriptions text[] NOT NULL DEFAULT '{}',
    line_quantities integer[] NOT NULL DEFAULT '{}',
    line_unit_price_nanos bigint[] NOT NULL DEFAULT '{}',
    line_taxable boolean[] NOT NULL DEFAULT '{}',
    currency text,
    -- Percent in thousandths (8.25 % = 8250).
    tax_milli integer NOT NULL DEFAULT 0 CHECK (tax_milli BETWEEN 0 AND 30000),
    terms_days integer NOT NULL DEFAULT 0 CHECK (terms_days BETWEEN 0 AND 365),
    notes text NOT NULL DEFAULT '',
    subtotal_nanos bigint NOT NULL DEFAULT 0,
    tax_nanos bigint NOT NULL DEFAULT 0,
    total_nanos bigint NOT NULL DEFAULT 0,
    paid_nanos bigint NOT NULL DEFAULT 0,
    issue_time timestamptz,
    due_time timestamptz,
    void_reason text NOT NULL DEFAULT '',
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    delete_time timestamptz,
    purge_time timestamptz,
    revision bigint NOT NULL DEFAULT 1,
    created_by text NOT NULL,
    updated_by text NOT NULL,
    PRIMARY KEY (organization_id, id),
    FOREIGN KEY (organization_id, customer_id) REFERENCES customers (organization_id, id)
        ON DELETE RESTRICT,
    -- The balance never goes negative, whatever the service does.
    CHECK (paid_nanos >= 0 AND paid_nanos <= total_nanos),
    CHECK ((number = '') = (status = 1)),
    CHECK (cardinality(line_descriptions) = cardinality(line_quantities)
           AND cardinality(line_quantities) = cardinality(line_unit_price_nanos)
           AND cardinality(line_unit_price_nanos) = cardinality(line_taxable))
);
CREATE UNIQUE INDEX invoices_org_number ON invoices (organization_id, number) WHERE number <> '';
CREATE INDEX invoices_org_create_time ON invoices (organization_id, create_time, id);
CREATE INDEX invoices_org_update_time ON invoices (organization_id, update_time, id);
CREATE INDEX invoices_org_number_order ON invoices (organization_id, number, id);
CREATE INDEX invoices_org_customer ON invoices (organization_id, customer_id);

CREATE TABLE invoice_counters (
    organization_id uuid PRIMARY KEY,
    last bigint NOT NULL CHECK (last > 0)
);

CREATE TABLE payments (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    invoice_id uuid NOT NULL,
    method smallint NOT NULL CHECK (method BETWEEN 1 AND 4),
    currency text NOT NULL,
    amount_nanos bigint NOT NULL CHECK (amount_nanos > 0),
    refunded_nanos bigint NOT NULL DEFAULT 0,
    external_reference text NOT NULL CHECK (char_length(external_reference) BETWEEN 1 AND 200),
    receive_time timestamptz NOT NULL DEFAULT now(),
    created_by text NOT NULL,
    PRIMARY KEY (organization_id, id),
    FOREIGN KEY (organization_id, invoice_id) REFERENCES invoices (organization_id, id)
        ON DELETE RESTRICT,
    CHECK (refunded_nanos >= 0 AND refunded_nanos <= amount_nanos)
);
-- The provider's idempotency: one payment per external reference.
CREATE UNIQUE INDEX payments_org_external_reference ON payments (organization_id, external_reference);
CREATE INDEX payments_org_invoice ON payments (organization_id, invoice_id, receive_time, id);

CREATE TABLE refunds (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    payment_id uuid NOT NULL,
    amount_nanos bigint NOT NULL CHECK (amount_nanos > 0),
    reason text NOT NULL,
    created_by text NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, id),
    FOREIGN KEY (organization_id, payment_id) REFERENCES payments (organization_id, id)
        ON DELETE RESTRICT
);
CREATE INDEX refunds_org_payment ON refunds (organization_id, payment_id);

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['invoices', 'invoice_counters', 'payments', 'refunds'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I '
            'USING (organization_id = NULLIF(current_setting(''app.org_id'', true), '''')::uuid) '
            'WITH CHECK (organization_id = NULLIF(current_setting(''app.org_id'', true), '''')::uuid)',
            t);
    END LOOP;
END $$;
CREATE POLICY purge ON invoices FOR SELECT
    USING (current_setting('app.purge', true) = 'on' AND purge_time < now());
CREATE POLICY purge_delete ON invoices FOR DELETE
    USING (current_setting('app.purge', true) = 'on' AND purge_time < now());
-- Money records are appended; counters and payments only move forward.
REVOKE DELETE, TRUNCATE ON payments, invoice_counters FROM core_app;
REVOKE UPDATE, DELETE, TRUNCATE ON refunds FROM core_app;
