-- Leave a tenth of each links page free. Counting an access changes no
-- indexed column, so with room on the page PostgreSQL updates the row in
-- place (a HOT update) instead of writing a new entry into each of the
-- table's seven indexes, the GIN on targets among them. At the default
-- fillfactor of 100 pages are full from the insert on, so a link's first
-- access after its page filled was never HOT. Applies to pages written
-- from now on (VACUUM FULL or pg_repack rewrites old ones).
ALTER TABLE links SET (fillfactor = 90);

-- The same for code challenges: charging an attempt (before the code is
-- compared) changes no indexed column either.
ALTER TABLE otp_challenges SET (fillfactor = 90);

---- create above / drop below ----

ALTER TABLE otp_challenges RESET (fillfactor);
ALTER TABLE links RESET (fillfactor);
