-- Sharing (JupyterHub 5.0+): a share grants a user or a group scopes on one server (always
-- filtered `!server=OWNER/NAME`); a share code (stored as the SHA-256 of the code) can be
-- exchanged for a share until it expires or is revoked. Deleting the owner, the server, the
-- recipient user or group removes them (ON DELETE CASCADE, and explicit deletes in the hub).
-- Keep in step with ../postgres/0005_shares.sql: only the id columns differ.
CREATE TABLE shares (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    server_id BIGINT NOT NULL REFERENCES servers(id) ON DELETE CASCADE,
    user_id BIGINT REFERENCES users(id) ON DELETE CASCADE,
    group_id BIGINT REFERENCES groups(id) ON DELETE CASCADE,
    scopes TEXT NOT NULL DEFAULT '[]',
    created BIGINT NOT NULL,
    CHECK ((user_id IS NULL AND group_id IS NOT NULL) OR (user_id IS NOT NULL AND group_id IS NULL))
);
CREATE UNIQUE INDEX shares_server_user ON shares (server_id, user_id) WHERE user_id IS NOT NULL;
CREATE UNIQUE INDEX shares_server_group ON shares (server_id, group_id) WHERE group_id IS NOT NULL;
CREATE INDEX shares_owner ON shares (owner_id);
CREATE INDEX shares_user ON shares (user_id);
CREATE INDEX shares_group ON shares (group_id);
CREATE TABLE share_codes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    code_hash TEXT NOT NULL UNIQUE,
    owner_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    server_id BIGINT NOT NULL REFERENCES servers(id) ON DELETE CASCADE,
    scopes TEXT NOT NULL DEFAULT '[]',
    created BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    last_exchanged_at BIGINT,
    exchange_count BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX share_codes_owner ON share_codes (owner_id);
CREATE INDEX share_codes_server ON share_codes (server_id);
