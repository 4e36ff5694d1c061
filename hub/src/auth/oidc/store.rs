//! Tables of the OIDC login: `oidc_logins` (pending logins by state hash, single use, 10 minutes)
//! and `oidc_tokens` (the provider's tokens per browser session, encrypted).

use sqlx::{AnyConnection, Row};

/// A pending login.
#[derive(Debug, Clone)]
pub(crate) struct PendingLogin {
    /// The nonce sent in the authorization request.
    pub nonce: String,
    /// The PKCE verifier.
    pub pkce_verifier: String,
    /// Where to go after the login.
    pub next_url: String,
}

/// Remember a login request.
pub(crate) async fn insert_login(
    conn: &mut AnyConnection,
    state_hash: &str,
    login: &PendingLogin,
    now: i64,
    expires_at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM oidc_logins WHERE expires_at <= $1")
        .bind(now)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO oidc_logins (state_hash, nonce, pkce_verifier, next_url, created, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(state_hash)
    .bind(&login.nonce)
    .bind(&login.pkce_verifier)
    .bind(&login.next_url)
    .bind(now)
    .bind(expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Take (delete and return) a live login request: each state is usable once.
pub(crate) async fn take_login(
    conn: &mut AnyConnection,
    state_hash: &str,
    now: i64,
) -> Result<Option<PendingLogin>, sqlx::Error> {
    let row = sqlx::query(
        "DELETE FROM oidc_logins WHERE state_hash = $1 \
         RETURNING nonce, pkce_verifier, next_url, expires_at",
    )
    .bind(state_hash)
    .fetch_optional(conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let expires_at: i64 = row.try_get("expires_at")?;
    if expires_at <= now {
        return Ok(None);
    }
    Ok(Some(PendingLogin {
        nonce: row.try_get("nonce")?,
        pkce_verifier: row.try_get("pkce_verifier")?,
        next_url: row.try_get("next_url")?,
    }))
}

/// The provider's tokens for one browser session (values encrypted).
#[derive(Debug, Clone)]
pub(crate) struct TokenRow {
    /// Database id.
    pub id: i64,
    /// Encrypted access token.
    pub access_token: String,
    /// Encrypted refresh token.
    pub refresh_token: Option<String>,
    /// Encrypted id_token.
    pub id_token: Option<String>,
    /// Access token expiry (µs).
    pub expires_at: Option<i64>,
}

/// New tokens for a session.
#[derive(Debug, Clone)]
pub(crate) struct NewTokens<'a> {
    /// Owner.
    pub user_id: i64,
    /// Browser session id.
    pub session_id: &'a str,
    /// Encrypted access token.
    pub access_token: &'a str,
    /// Encrypted refresh token.
    pub refresh_token: Option<&'a str>,
    /// Encrypted id_token.
    pub id_token: Option<&'a str>,
    /// Access token expiry (µs).
    pub expires_at: Option<i64>,
}

/// Store a session's tokens.
pub(crate) async fn insert_tokens(
    conn: &mut AnyConnection,
    t: &NewTokens<'_>,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO oidc_tokens (user_id, session_id, access_token, refresh_token, id_token, \
         expires_at, created, updated) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
    )
    .bind(t.user_id)
    .bind(t.session_id)
    .bind(t.access_token)
    .bind(t.refresh_token)
    .bind(t.id_token)
    .bind(t.expires_at)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

const COLUMNS: &str = "id, access_token, refresh_token, id_token, expires_at";

fn from_row(r: &sqlx::any::AnyRow) -> Result<TokenRow, sqlx::Error> {
    Ok(TokenRow {
        id: r.try_get("id")?,
        access_token: r.try_get("access_token")?,
        refresh_token: r.try_get("refresh_token")?,
        id_token: r.try_get("id_token")?,
        expires_at: r.try_get("expires_at")?,
    })
}

/// The newest tokens of a user (the session they logged in with last).
pub(crate) async fn latest_for_user(
    conn: &mut AnyConnection,
    user_id: i64,
) -> Result<Option<TokenRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM oidc_tokens WHERE user_id = $1 ORDER BY created DESC, id DESC LIMIT 1"
    );
    let row = sqlx::query(&sql).bind(user_id).fetch_optional(conn).await?;
    row.as_ref().map(from_row).transpose()
}

/// Tokens of one browser session.
pub(crate) async fn for_session(
    conn: &mut AnyConnection,
    user_id: i64,
    session_id: &str,
) -> Result<Vec<TokenRow>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM oidc_tokens WHERE user_id = $1 AND session_id = $2");
    let rows = sqlx::query(&sql)
        .bind(user_id)
        .bind(session_id)
        .fetch_all(conn)
        .await?;
    rows.iter().map(from_row).collect()
}

/// Replace tokens after a refresh.
pub(crate) async fn update_tokens(
    conn: &mut AnyConnection,
    id: i64,
    access_token: &str,
    refresh_token: Option<&str>,
    expires_at: Option<i64>,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE oidc_tokens SET access_token = $1, refresh_token = COALESCE($2, refresh_token), \
         expires_at = $3, updated = $4 WHERE id = $5",
    )
    .bind(access_token)
    .bind(refresh_token)
    .bind(expires_at)
    .bind(now)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Forget tokens.
pub(crate) async fn delete_tokens(conn: &mut AnyConnection, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM oidc_tokens WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}
