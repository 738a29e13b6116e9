-- A key server's database from now on: marked as such (a list server refuses to open it), and
-- without the list server's tables, which every database got until this migration and a key
-- server never used (the store checked they are empty before this runs).
CREATE TABLE server_role (role TEXT NOT NULL);
INSERT INTO server_role (role) VALUES ('key server');
DROP TABLE IF EXISTS refusal_digests;
DROP TABLE IF EXISTS refused_posts;
DROP TABLE IF EXISTS held_posts;
DROP TABLE IF EXISTS join_requests;
DROP TABLE IF EXISTS outbox;
DROP TABLE IF EXISTS bounce_scores;
DROP TABLE IF EXISTS suspensions;
DROP TABLE IF EXISTS deliveries;
DROP TABLE IF EXISTS posts;
