-- A code verify updates its challenge (the attempt charged, the status set
-- to verified) in the statement that counts the access. The partial index
-- otp_challenges_open named status in its predicate, and an update that
-- changes an indexed column, predicate included, can never be a HOT
-- update: every attempt wrote a new entry into all three of the table's
-- indexes. Indexed on expires_at alone, the challenge's updates stay on
-- its page (fillfactor 90, migration 005) and touch no index. Without the
-- predicate the index would keep every challenge ever made; the reaper now
-- deletes challenges an hour after they expire (past every throttle's
-- window), so the expiry sweep's scan of it stays bounded.
DROP INDEX otp_challenges_open;
CREATE INDEX otp_challenges_expires ON otp_challenges (expires_at);

---- create above / drop below ----

DROP INDEX otp_challenges_expires;
CREATE INDEX otp_challenges_open ON otp_challenges (expires_at) WHERE status IN ('pending', 'sent');
