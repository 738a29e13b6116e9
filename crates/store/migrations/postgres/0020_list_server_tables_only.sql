-- A list server's database from now on: marked as such (the key server refuses to open it), and
-- without the key server's tables, which every database got until this migration and a list server
-- never used (the store checked they are empty before this runs). Only tables of this
-- database's own schema are dropped: an unqualified name would follow the search path into
-- another schema, which may hold the other server's live tables.
CREATE TABLE server_role (role TEXT NOT NULL);
INSERT INTO server_role (role) VALUES ('list server');
DO $$
DECLARE
    name TEXT;
BEGIN
    FOREACH name IN ARRAY ARRAY['audit', 'destroyed_keys', 'session_keys', 'server_secrets', 'wrapping_keys'] LOOP
        IF to_regclass(format('%I.%I', current_schema(), name)) IS NOT NULL THEN
            EXECUTE format('DROP TABLE %I.%I', current_schema(), name);
        END IF;
    END LOOP;
END $$;
