-- An owner may queue so many notifications an hour (NOTIFY_PER_HOUR): the
-- api counts the owner's last hour before it queues more, and this index
-- makes that count a short range scan however many notifications the
-- table holds.
CREATE INDEX notifications_owner_created ON notifications (owner_id, created_at);

---- create above / drop below ----

DROP INDEX notifications_owner_created;
