-- OpenID Connect login state, the identity provider's tokens per browser session (encrypted),
-- and each user's resolved quota. Keep in step with the other database's 0002: only the id
-- column differs.
CREATE TABLE oidc_logins (
    state_hash TEXT PRIMARY KEY,
    nonce TEXT NOT NULL,
    pkce_verifier TEXT NOT NULL,
    next_url TEXT NOT NULL,
    created BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE TABLE oidc_tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    session_id TEXT NOT NULL,
    access_token TEXT NOT NULL,
    refresh_token TEXT,
    id_token TEXT,
    expires_at BIGINT,
    created BIGINT NOT NULL,
    updated BIGINT NOT NULL
);
CREATE INDEX oidc_tokens_user ON oidc_tokens (user_id);
CREATE INDEX oidc_tokens_session ON oidc_tokens (session_id);
CREATE TABLE user_quotas (
    user_id BIGINT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    quota TEXT NOT NULL,
    updated BIGINT NOT NULL
);
