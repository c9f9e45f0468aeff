-- What the operator sets for one owner (a tenant): limits that narrow the
-- service's for its links, and defaults for them (link.OwnerPolicy, as
-- JSON). NULL: the service's settings alone.
ALTER TABLE owners ADD COLUMN policy jsonb;

---- create above / drop below ----

ALTER TABLE owners DROP COLUMN policy;
