-- A list server's database from now on: marked as such (a key server refuses to open it), and
-- without the key server's tables, which migration 0001 made in every database and a list
-- server never used (the store checked they are empty before this runs).
CREATE TABLE server_role (role TEXT NOT NULL);
INSERT INTO server_role (role) VALUES ('list server');
DROP TABLE IF EXISTS audit;
DROP TABLE IF EXISTS destroyed_keys;
DROP TABLE IF EXISTS session_keys;
DROP TABLE IF EXISTS server_secrets;
DROP TABLE IF EXISTS wrapping_keys;
