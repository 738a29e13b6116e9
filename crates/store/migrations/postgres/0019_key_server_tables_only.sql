-- A key server's database from now on: marked as such (the list server refuses to open it), and
-- without the list server's tables, which every database got until this migration and a key server
-- never used (the store checked they are empty before this runs). Only tables of this
-- database's own schema are dropped: an unqualified name would follow the search path into
-- another schema, which may hold the other server's live tables.
CREATE TABLE server_role (role TEXT NOT NULL);
INSERT INTO server_role (role) VALUES ('key server');
DO $$
DECLARE
    name TEXT;
BEGIN
    FOREACH name IN ARRAY ARRAY['refusal_digests', 'refused_posts', 'held_posts', 'join_requests', 'outbox', 'bounce_scores', 'suspensions', 'deliveries', 'posts'] LOOP
        IF to_regclass(format('%I.%I', current_schema(), name)) IS NOT NULL THEN
            EXECUTE format('DROP TABLE %I.%I', current_schema(), name);
        END IF;
    END LOOP;
END $$;
