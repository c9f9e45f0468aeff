-- Owners tag links ("legal", "q3-close", a customer id) to find them and
-- to revoke them together. NULL is no tags, so the partial GIN index holds
-- tagged links only and an untagged create writes no index entry for it.
ALTER TABLE links ADD COLUMN tags text[];
CREATE INDEX links_tags ON links USING gin (tags) WHERE tags IS NOT NULL;

---- create above / drop below ----

DROP INDEX links_tags;
ALTER TABLE links DROP COLUMN tags;
