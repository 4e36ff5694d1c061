-- The change feed is PostgreSQL's (triggers calling pg_notify, see migrations/postgres): SQLite
-- serves a single hub, whose writes are all local. Nothing to change; kept so both databases
-- have the same migration versions.
SELECT 1;
