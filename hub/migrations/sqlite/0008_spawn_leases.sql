-- Replicas (hub/src/spawn/lease.rs): each pending spawn or stop is owned by one replica through a
-- lease. A SQLite hub is alone and owns every lease; the tables exist so both databases have the
-- same schema and one code path.
CREATE TABLE spawn_leases (
    server_id BIGINT PRIMARY KEY,
    owner TEXT NOT NULL,
    until BIGINT NOT NULL,
    -- 1 when a stop asked another replica to cancel the spawn it runs.
    cancel BIGINT NOT NULL DEFAULT 0
);

-- The progress events of each server's last spawn.
CREATE TABLE spawn_events (
    server_id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    event TEXT NOT NULL,
    PRIMARY KEY (server_id, seq)
);
