-- A link may be limited to recipients on some networks (allowed_networks
-- in its spec): NULL is any network. Each access statement checks it
-- with the client's address in the same WHERE that finds the link, so a
-- refused request counts nothing and writes nothing. No index: it is
-- only ever read from a row already found by its token.
ALTER TABLE links ADD COLUMN allowed_networks cidr[];

---- create above / drop below ----

ALTER TABLE links DROP COLUMN allowed_networks;
