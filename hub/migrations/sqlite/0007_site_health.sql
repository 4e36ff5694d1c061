-- The sites' health as the leading replica last checked it (hub/src/sites/shared_health.rs):
-- the other replicas answer from it instead of checking themselves. A SQLite hub is alone and
-- keeps its results in memory; the table exists so both databases have the same schema.
CREATE TABLE site_health (
    site TEXT PRIMARY KEY,
    available BIGINT NOT NULL,
    reasons TEXT NOT NULL,
    checked_at BIGINT NOT NULL
);
