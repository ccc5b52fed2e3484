-- Conversations and messages with full-text search, customer search, SMS consent and its
-- immutable history.
--
-- Growth: messages are the fastest-growing table (with activities). They are append-mostly
-- and read by conversation and by recency, so every index leads with (organization_id, ...)
-- and ends with the id; see services/core/README.md for the retention and partitioning plan.

CREATE TABLE conversations (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    customer_id uuid NOT NULL,
    channel smallint NOT NULL CHECK (channel BETWEEN 1 AND 3),
    participant text NOT NULL CHECK (char_length(participant) BETWEEN 1 AND 320),
    subject text NOT NULL DEFAULT '' CHECK (char_length(subject) <= 200),
    last_message_time timestamptz,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    delete_time timestamptz,
    purge_time timestamptz,
    revision bigint NOT NULL DEFAULT 1,
    created_by text NOT NULL,
    updated_by text NOT NULL,
    PRIMARY KEY (organization_id, id),
    FOREIGN KEY (organization_id, customer_id) REFERENCES customers (organization_id, id)
        ON DELETE CASCADE
);
CREATE INDEX conversations_org_create_time ON conversations (organization_id, create_time, id);
CREATE INDEX conversations_org_update_time ON conversations (organization_id, update_time, id);
CREATE INDEX conversations_org_subject ON conversations (organization_id, subject, id);
CREATE INDEX conversations_org_customer ON conversations (organization_id, customer_id, id);
-- Inbound messages find their conversation by channel and address.
CREATE UNIQUE INDEX conversations_participant ON conversations (organization_id, channel, participant)
    WHERE delete_time IS NULL;

CREATE TABLE messages (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    conversation_id uuid NOT NULL,
    customer_id uuid NOT NULL,
    channel smallint NOT NULL CHECK (channel BETWEEN 1 AND 3),
    direction smallint NOT NULL CHECK (direction BETWEEN 1 AND 2),
    purpose smallint NOT NULL DEFAULT 0 CHECK (purpose BETWEEN 0 AND 2),
    body text NOT NULL CHECK (char_length(body) <= 10000),
    attachment_uris text[] NOT NULL DEFAULT '{}',
    delivery_status smallint NOT NULL CHECK (delivery_status BETWEEN 1 AND 6),
    status_reason text NOT NULL DEFAULT '',
    provider_message_id text,
    sender text NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    status_time timestamptz NOT NULL DEFAULT now(),
    search tsvector GENERATED ALWAYS AS (to_tsvector('english', body)) STORED,
    PRIMARY KEY (organization_id, id),
    FOREIGN KEY (organization_id, conversation_id) REFERENCES conversations (organization_id, id)
        ON DELETE CASCADE
);
CREATE INDEX messages_org_conversation ON messages (organization_id, conversation_id, create_time, id);
CREATE UNIQUE INDEX messages_provider_id ON messages (organization_id, provider_message_id)
    WHERE provider_message_id IS NOT NULL;
-- GIN cannot lead with the tenant without btree_gin; the tenant predicate is applied to the
-- (few) matching rows, and RLS applies it again.
CREATE INDEX messages_search ON messages USING gin (search);

ALTER TABLE customers ADD COLUMN search tsvector GENERATED ALWAYS AS (
    setweight(to_tsvector('simple', display_name), 'A')
    || setweight(to_tsvector('simple', coalesce(email, '')), 'B')
    || setweight(to_tsvector('english', notes), 'C')
) STORED;
CREATE INDEX customers_search ON customers USING gin (search);

CREATE TABLE sms_consents (
    organization_id uuid NOT NULL,
    phone text NOT NULL,
    purpose smallint NOT NULL CHECK (purpose BETWEEN 1 AND 2),
    status smallint NOT NULL CHECK (status BETWEEN 1 AND 2),
    method smallint NOT NULL CHECK (method BETWEEN 1 AND 5),
    source text NOT NULL,
    disclosure_version text NOT NULL DEFAULT '',
    -- Set when STOP revoked a grant: START restores exactly these.
    revoked_by_keyword boolean NOT NULL DEFAULT false,
    update_time timestamptz NOT NULL DEFAULT now(),
    updated_by text NOT NULL,
    PRIMARY KEY (organization_id, phone, purpose)
);

CREATE TABLE consent_events (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    phone text NOT NULL,
    purpose smallint NOT NULL CHECK (purpose BETWEEN 0 AND 2),
    kind text NOT NULL,
    method smallint NOT NULL DEFAULT 0,
    source text NOT NULL DEFAULT '',
    disclosure_version text NOT NULL DEFAULT '',
    detail text NOT NULL DEFAULT '',
    message_id uuid,
    actor text NOT NULL,
    occur_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, id)
);
CREATE INDEX consent_events_org_time ON consent_events (organization_id, occur_time DESC, id DESC);
CREATE INDEX consent_events_org_phone ON consent_events (organization_id, phone, occur_time DESC, id DESC);
-- Customers and contacts are found by phone for inbound messages and quiet hours.
CREATE INDEX customers_org_phone ON customers (organization_id, phone) WHERE phone IS NOT NULL;
CREATE INDEX contacts_org_phone ON contacts (organization_id, phone) WHERE phone IS NOT NULL;

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['conversations', 'messages', 'sms_consents', 'consent_events'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I '
            'USING (organization_id = NULLIF(current_setting(''app.org_id'', true), '''')::uuid) '
            'WITH CHECK (organization_id = NULLIF(current_setting(''app.org_id'', true), '''')::uuid)',
            t);
    END LOOP;
END $$;

-- The consent history is evidence: append only. Messages are records: never deleted by the app.
REVOKE UPDATE, DELETE, TRUNCATE ON consent_events FROM core_app;
REVOKE DELETE, TRUNCATE ON messages FROM core_app;
