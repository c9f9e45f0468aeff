-- The relay now deletes outbox rows once JetStream acknowledged them (the
-- audit trail and the effect rows keep history), so no published marker or
-- partial index is needed: an UPDATE per published row was a second index
-- write per event and left the partial index full of dead entries.

DROP INDEX outbox_unpublished;
ALTER TABLE outbox DROP COLUMN published_at;

---- create above / drop below ----

ALTER TABLE outbox ADD COLUMN published_at timestamptz;
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
