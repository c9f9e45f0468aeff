-- A link may be made ahead of when it should open (an embargoed report,
-- exam papers, a release): before not_before recipients are told when it
-- opens, and nothing is counted. NULL is open at once.
ALTER TABLE links ADD COLUMN not_before timestamptz;

---- create above / drop below ----

ALTER TABLE links DROP COLUMN not_before;
