-- When a queued notification is next due: the end of the delay a notifier
-- scheduled its retry for, or (set by the reaper's repair) the moment its
-- event was written again. A notification still queued some time past
-- that lost its event (a stream that dropped acknowledged messages, a
-- notifier gone with it in hand), and the reaper writes it again then,
-- instead of only once it has sat untouched for longer than any retry
-- delay (REAP stale threshold, 75 minutes by default).
ALTER TABLE notifications ADD COLUMN retry_at timestamptz;

---- create above / drop below ----

ALTER TABLE notifications DROP COLUMN retry_at;
