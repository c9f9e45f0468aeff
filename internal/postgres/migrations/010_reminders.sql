-- Reminders: a recipient who was sent a link and has not opened it gets
-- one more message shortly before it expires (REMIND_BEFORE). The api
-- sets remind_at on the notifications it queues; the reaper takes those
-- that are due (each once: it clears remind_at), and for a link still
-- active and never opened queues a notification of kind 'reminder'. The
-- partial index holds only notifications still waiting to remind, so the
-- sweep never walks links that will not need one. At most one reminder
-- per link and recipient, whichever reaper gets there first.
ALTER TABLE notifications
    ADD COLUMN kind text NOT NULL DEFAULT 'open' CHECK (kind IN ('open', 'reminder')),
    ADD COLUMN remind_at timestamptz;
CREATE INDEX notifications_remind ON notifications (remind_at) WHERE remind_at IS NOT NULL;
CREATE UNIQUE INDEX notifications_one_reminder ON notifications (link_id, recipient) WHERE kind = 'reminder';

---- create above / drop below ----

DROP INDEX notifications_one_reminder;
DROP INDEX notifications_remind;
ALTER TABLE notifications DROP COLUMN remind_at, DROP COLUMN kind;
