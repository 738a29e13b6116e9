-- A keyed digest of each session key (HMAC-SHA256 under a secret of the key server's own,
-- so equal keys are not visible to whoever reads the database without it), kept on the
-- key's row and, once it is destroyed, on its tombstone: one session key is stored once,
-- whatever the key id, list or sender, and never again after its revocation or expiry.
-- Rows stored before this migration have none (NULL, which the unique indexes allow).
ALTER TABLE session_keys ADD COLUMN key_digest BYTEA;
CREATE UNIQUE INDEX session_keys_by_digest ON session_keys (key_digest);
ALTER TABLE destroyed_keys ADD COLUMN key_digest BYTEA;
CREATE UNIQUE INDEX destroyed_keys_by_digest ON destroyed_keys (key_digest);
