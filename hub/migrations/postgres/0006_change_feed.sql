-- The change feed (hub/src/db/feed.rs): every statement that writes a table announces the
-- table's name on channel `stackhub_changes`, delivered to the listening replicas when (and only
-- if) the transaction commits, once per table and transaction. The payload is a table name,
-- nothing secret. A migration that adds a table adds this trigger to it (a test checks).
CREATE FUNCTION stackhub_announce_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('stackhub_changes', TG_TABLE_NAME);
    RETURN NULL;
END
$$;

DO $$
DECLARE
    t text;
BEGIN
    FOR t IN
        SELECT tablename FROM pg_tables
        WHERE schemaname = current_schema() AND tablename NOT LIKE '\_sqlx%'
    LOOP
        EXECUTE format(
            'CREATE TRIGGER stackhub_change_feed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE '
            'ON %I FOR EACH STATEMENT EXECUTE FUNCTION stackhub_announce_change()', t);
    END LOOP;
END
$$;
