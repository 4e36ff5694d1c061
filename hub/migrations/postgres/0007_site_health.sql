-- The sites' health as the leading replica last checked it (hub/src/sites/shared_health.rs):
-- the other replicas answer from it instead of checking themselves. The change feed's trigger
-- as on every table (no cache depends on this one: the feed does not make caches stale for it).
CREATE TABLE site_health (
    site TEXT PRIMARY KEY,
    available BIGINT NOT NULL,
    reasons TEXT NOT NULL,
    checked_at BIGINT NOT NULL
);

CREATE TRIGGER stackhub_change_feed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON site_health FOR EACH STATEMENT EXECUTE FUNCTION stackhub_announce_change();
