-- A post is identified by its list and key id: the same ciphertext handed over again (a
-- client retrying after a lost 250, or a replay) is the post already stored, not a new one.
CREATE UNIQUE INDEX posts_by_key ON posts (list, key_id);
