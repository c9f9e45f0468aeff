-- Owners set how a link's one-time codes work (code length, lifetime,
-- attempts, resend wait): otp_policy holds only what the owner chose, so
-- links that chose nothing follow the operator's defaults as they change.
-- A challenge keeps the length and the attempts it was sent with: a policy
-- changed while a code is out does not change what that code takes (and
-- a change ends the codes out, see UpdateLink). Existing challenges were
-- all sent under the old fixed terms, 6 digits and 5 attempts.
ALTER TABLE links ADD COLUMN otp_policy jsonb;
ALTER TABLE otp_challenges
    ADD COLUMN code_length smallint NOT NULL DEFAULT 6 CHECK (code_length BETWEEN 6 AND 10),
    ADD COLUMN max_attempts smallint NOT NULL DEFAULT 5 CHECK (max_attempts BETWEEN 1 AND 10);

---- create above / drop below ----

ALTER TABLE otp_challenges DROP COLUMN max_attempts, DROP COLUMN code_length;
ALTER TABLE links DROP COLUMN otp_policy;
