-- Which wrapping key a session key row is sealed under (NULL: sealed directly under the
-- master key, as every row stored before this migration; the key server's sweep moves those
-- under wrapping keys).
ALTER TABLE session_keys ADD COLUMN wrapping_key_id TEXT;
CREATE INDEX session_keys_by_wrapping_key ON session_keys (wrapping_key_id);

-- Short-lived wrapping keys, one per list and day (and whether its keys expire that day or
-- were deposited that day without expiry), each random and sealed under the master key.
-- Deleting one makes every row sealed under it unreadable, in any copy of session_keys.
-- Operators keep this table out of long-retention dumps; the key server vacuums it after
-- each destruction, since it is tiny.
CREATE TABLE wrapping_keys (
    id            TEXT   PRIMARY KEY,
    list          TEXT   NOT NULL,
    day           BIGINT NOT NULL,
    expiring      BIGINT NOT NULL,
    retired       BIGINT NOT NULL DEFAULT 0,
    created_at    BIGINT NOT NULL,
    master_key_id TEXT   NOT NULL,
    nonce         BYTEA  NOT NULL,
    sealed        BYTEA  NOT NULL
);
CREATE INDEX wrapping_keys_by_bucket ON wrapping_keys (list, day, expiring);
