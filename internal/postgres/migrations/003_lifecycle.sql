-- Lifecycle: time-ordered ids generated in SQL (for events the reaper
-- writes set-wise), the audit trail, and owner webhooks.

-- UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then random bits, with the
-- version and variant set. PostgreSQL 15 has no built-in.
CREATE FUNCTION sharelinks_uuid_v7() RETURNS uuid AS $$
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid
$$ LANGUAGE sql VOLATILE;

CREATE TABLE audit_events (
    id          uuid PRIMARY KEY,          -- the event id: redelivery inserts nothing
    owner_id    uuid NOT NULL,
    link_id     uuid NOT NULL,
    type        text NOT NULL,
    occurred_at timestamptz NOT NULL,
    actor       jsonb NOT NULL,
    data        jsonb NOT NULL
);
CREATE INDEX audit_events_link ON audit_events (link_id, occurred_at DESC, id DESC);
CREATE INDEX audit_events_owner ON audit_events (owner_id, occurred_at DESC, id DESC);

CREATE TABLE webhooks (
    id          uuid PRIMARY KEY,
    owner_id    uuid NOT NULL REFERENCES owners (id),
    url         text NOT NULL,
    events      text[] NOT NULL,
    secret_sealed bytea NOT NULL,          -- AES-GCM: needed to sign, never shown again
    created_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz
);
CREATE INDEX webhooks_owner ON webhooks (owner_id) WHERE deleted_at IS NULL;

CREATE TABLE webhook_deliveries (
    id               uuid PRIMARY KEY,
    webhook_id       uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id         uuid NOT NULL,
    event_type       text NOT NULL,
    payload          bytea NOT NULL,
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    last_status_code integer,
    last_error       text,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_hook ON webhook_deliveries (webhook_id, created_at DESC);

---- create above / drop below ----

DROP TABLE webhook_deliveries;
DROP TABLE webhooks;
DROP TABLE audit_events;
DROP FUNCTION sharelinks_uuid_v7();
