-- Replicas (hub/src/spawn/lease.rs): each pending spawn or stop is owned by one replica through a
-- lease it renews every second; the leader takes over leases that ran out (their owner died).
-- Kept apart from `servers` so that renewing them does not announce a change of servers (which
-- makes every replica re-sync its routes).
CREATE TABLE spawn_leases (
    server_id BIGINT PRIMARY KEY,
    owner TEXT NOT NULL,
    until BIGINT NOT NULL,
    -- 1 when a stop asked another replica to cancel the spawn it runs.
    cancel BIGINT NOT NULL DEFAULT 0
);

-- The progress events of each server's last spawn, so any replica can stream them
-- (GET /hub/api/users/NAME/server/progress) and a replica that takes a spawn over goes on
-- with them.
CREATE TABLE spawn_events (
    server_id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    event TEXT NOT NULL,
    PRIMARY KEY (server_id, seq)
);

CREATE TRIGGER stackhub_change_feed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON spawn_leases FOR EACH STATEMENT EXECUTE FUNCTION stackhub_announce_change();
CREATE TRIGGER stackhub_change_feed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON spawn_events FOR EACH STATEMENT EXECUTE FUNCTION stackhub_announce_change();
