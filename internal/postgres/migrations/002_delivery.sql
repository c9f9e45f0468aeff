-- Delivery bookkeeping: a claim lease so two workers never send the same
-- notification or code at once, and whether a failed code send has been
-- reported to the recipient.

ALTER TABLE notifications ADD COLUMN claimed_until timestamptz;
ALTER TABLE otp_challenges ADD COLUMN claimed_until timestamptz;
ALTER TABLE otp_challenges ADD COLUMN failure_seen boolean NOT NULL DEFAULT false;

---- create above / drop below ----

ALTER TABLE otp_challenges DROP COLUMN failure_seen;
ALTER TABLE otp_challenges DROP COLUMN claimed_until;
ALTER TABLE notifications DROP COLUMN claimed_until;
