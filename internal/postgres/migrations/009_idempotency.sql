-- Idempotency-Key on POST /v1/links and POST /v1/links/send. A row is
-- written in the same transaction as the links or notifications it names,
-- so it exists exactly when they do: there is no "in progress" state to
-- get stuck, and a retry after any failure either finds the row (and is
-- answered with what was made) or finds nothing (and makes it). A second
-- request with the same key while the first is uncommitted waits on the
-- primary key and then sees the row. The fingerprint is an HMAC of the
-- request under a key derived from SHARELINKS_SECRET: the request can
-- hold a password, which a plain hash would let a dump guess at.
CREATE TABLE idempotency_keys (
    owner_id    uuid NOT NULL REFERENCES owners (id),
    key         text NOT NULL,
    operation   text NOT NULL,
    fingerprint bytea NOT NULL,
    result_ids  uuid[] NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner_id, key)
);

-- The reaper deletes keys past their lifetime, oldest first.
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

---- create above / drop below ----

DROP TABLE idempotency_keys;
