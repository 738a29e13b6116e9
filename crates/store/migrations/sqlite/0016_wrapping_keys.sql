-- Which wrapping key a session key row is sealed under (NULL: sealed directly under the
-- master key, as every row stored before this migration; the key server's sweep moves those
-- under wrapping keys). The wrapping keys themselves live in the keyring, a database file of
-- their own beside this one (attached as `keyring`, its table created when the store opens),
-- so that a backup of this file does not hold them.
ALTER TABLE session_keys ADD COLUMN wrapping_key_id TEXT;
CREATE INDEX session_keys_by_wrapping_key ON session_keys (wrapping_key_id);
