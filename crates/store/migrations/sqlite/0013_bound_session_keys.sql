-- How each session key row is sealed: 1, bound to its key id alone (every row stored before
-- this migration); 2, bound to its key id, list, depositor, roster seq at deposit and expiry,
-- so that a row moved to another list or given another expiry by someone who can write the
-- database no longer opens. The key server's sweep re-seals rows of 1 as 2.
ALTER TABLE session_keys ADD COLUMN sealing BIGINT NOT NULL DEFAULT 1;
