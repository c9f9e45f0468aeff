-- A recipient session no longer has a foreign key to its link. Every
-- verify inserts a session, and the key's check ran a second query per
-- insert (SELECT ... FOR KEY SHARE on the link row the same statement had
-- just updated, which also writes a row-lock record to the WAL): 12-14 %
-- of the verify statement's throughput in a pgbench A/B (BENCHMARKS.md,
-- session 6). The key guarded nothing the statements do not: a session is
-- only ever inserted from the link row its own statement updated (the
-- link exists), every use of a session joins the link and checks its
-- status, and the one statement that deletes links (PurgeEnded) now
-- deletes their sessions too, as the key's ON DELETE CASCADE did.
ALTER TABLE access_sessions DROP CONSTRAINT access_sessions_link_id_fkey;

---- create above / drop below ----

DELETE FROM access_sessions s WHERE NOT EXISTS (SELECT 1 FROM links l WHERE l.id = s.link_id);
ALTER TABLE access_sessions ADD CONSTRAINT access_sessions_link_id_fkey
    FOREIGN KEY (link_id) REFERENCES links (id) ON DELETE CASCADE;
