-- The SHA-256 of each post's bytes, so that a post handed over again under a stored list and
-- key id is told apart from a different post under the same key id (a repeat is acknowledged,
-- a different one refused) without reading the stored post. Posts stored before this
-- migration have none and are compared byte for byte.
ALTER TABLE posts ADD COLUMN digest BLOB;
