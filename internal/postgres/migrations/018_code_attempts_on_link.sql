-- A code's attempts are counted on its link, not on its challenge. Only a
-- link's newest challenge can be verified (a new request supersedes the
-- others), so the link holds which challenge that is (code_challenge), the
-- attempts charged against it (code_tries) and whether it was used
-- (code_used). A verify then writes one row, the link, which it writes
-- anyway to count the access: the challenge is only read. Attempts on one
-- link serialise on the link's row lock, and the UPDATE re-checks the
-- limit after the attempt before it commits, so no more than a challenge's
-- max_attempts codes are ever compared. These columns are not indexed, so
-- the update stays HOT.
ALTER TABLE links
    ADD COLUMN code_challenge uuid,
    ADD COLUMN code_tries smallint NOT NULL DEFAULT 0 CHECK (code_tries >= 0),
    ADD COLUMN code_used boolean NOT NULL DEFAULT false;

-- Codes out now keep their attempts and their use. Challenges are deleted
-- an hour after they expire, so this reads a short table.
UPDATE links l SET code_challenge = c.id, code_tries = c.wrong_codes, code_used = c.status = 'verified'
FROM (SELECT DISTINCT ON (link_id) id, link_id, wrong_codes, status
      FROM otp_challenges ORDER BY link_id, created_at DESC) c
WHERE c.link_id = l.id;

-- One count, one place. An api from before this migration still running
-- would count attempts and uses on the challenge, where this one no longer
-- looks: without the column its code verifies fail, rather than let a code
-- be used twice, until it is replaced (README, upgrading).
ALTER TABLE otp_challenges DROP COLUMN wrong_codes;

---- create above / drop below ----

ALTER TABLE otp_challenges ADD COLUMN wrong_codes integer NOT NULL DEFAULT 0;
UPDATE otp_challenges c SET wrong_codes = l.code_tries,
    status = CASE WHEN l.code_used AND c.status IN ('pending', 'sent') THEN 'verified' ELSE c.status END
FROM links l WHERE l.code_challenge = c.id;
ALTER TABLE links DROP COLUMN code_used, DROP COLUMN code_tries, DROP COLUMN code_challenge;
