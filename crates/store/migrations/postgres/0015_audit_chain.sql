-- Each key id's audit records form a hash chain (hushlist_core::audit): seq numbers a key id's
-- records from 1 and hash is the chain's SHA-256 up to and including the record, so that a
-- rewritten or deleted record breaks every later link. Records stored before this migration
-- are chained when the store opens (SQL here cannot compute the hash). One record per place
-- in a chain: an instance that loses a race for a seq tries again from the new head.
ALTER TABLE audit ADD COLUMN seq BIGINT;
ALTER TABLE audit ADD COLUMN hash BYTEA;
DROP INDEX audit_by_key;
CREATE UNIQUE INDEX audit_chain ON audit (key_id, seq);
-- What the store looks for at every start; empty once the old rows are chained.
CREATE INDEX audit_unchained ON audit (key_id) WHERE seq IS NULL;
