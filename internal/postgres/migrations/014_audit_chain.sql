-- The tamper-evident trail. The reaper seals recorded audit events into
-- one hash chain per link (internal/evidence), in the order their
-- transactions can no longer change: it takes events whose writing
-- transaction is below every running one (pg_snapshot_xmin), so an event
-- committed late is sealed after, never skipped. Writers pay one append to
-- a btree on (tx, id); the chain itself is written by the sealer alone.
ALTER TABLE audit_events ADD COLUMN tx xid8;
-- Events from before this migration come first, in id order.
UPDATE audit_events SET tx = '0';
ALTER TABLE audit_events ALTER COLUMN tx SET DEFAULT pg_current_xact_id();
ALTER TABLE audit_events ALTER COLUMN tx SET NOT NULL;
CREATE INDEX audit_events_tx ON audit_events (tx, id);

-- One row per sealed event: its place in its link's chain and the chain
-- hash after it. The primary key gives the head of a chain (its last seq)
-- and refuses a second row for a place. No index on event_id: the cursor's
-- lock already makes sealing single-file, and one more random-key index
-- insert per event cost the access paths measurably (BENCHMARKS.md).
CREATE TABLE audit_seals (
    link_id   uuid NOT NULL,
    seq       bigint NOT NULL CHECK (seq > 0),
    event_id  uuid NOT NULL,
    hash      bytea NOT NULL CHECK (length(hash) = 32),
    sealed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (link_id, seq)
);

-- How far sealing has got, in (tx, id) order. Its one row is also the lock
-- that lets any number of reapers run: one seals, the others skip.
CREATE TABLE audit_seal_cursor (
    one      boolean PRIMARY KEY DEFAULT true CHECK (one),
    tx       xid8 NOT NULL DEFAULT '0',
    event_id uuid NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000'
);
INSERT INTO audit_seal_cursor DEFAULT VALUES;

---- create above / drop below ----

DROP TABLE audit_seal_cursor;
DROP TABLE audit_seals;
DROP INDEX audit_events_tx;
ALTER TABLE audit_events DROP COLUMN tx;
