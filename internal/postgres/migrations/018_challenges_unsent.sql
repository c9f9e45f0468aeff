-- The reaper re-emits otp.requested for codes never sent (ReemitStuckChallenges).
-- A pending challenge has no sent_at until the dispatcher sends it, and only
-- that one update sets it, so this index holds the few unsent challenges and
-- the sweep no longer scans every challenge not yet expired, once a round.
-- The send's own update now writes index entries (sent_at is in the
-- predicate), once per code; a verify's updates of a challenge (attempts,
-- status) change neither column and stay HOT (migration 007).
CREATE INDEX otp_challenges_unsent ON otp_challenges (expires_at) WHERE sent_at IS NULL;

---- create above / drop below ----

DROP INDEX otp_challenges_unsent;
