//! OAuth clients (secrets stored hashed) and authorization codes (hashed, 300 s, single use).

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::json_strings;

/// An OAuth client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRow {
    /// Client id (e.g. `jupyterhub-user-alice`).
    pub id: String,
    /// SHA-256 of the secret; `None` = the client cannot get tokens.
    pub secret_hash: Option<String>,
    /// The registered redirect URI (may be relative).
    pub redirect_uri: String,
    /// Description shown on the consent page.
    pub description: String,
    /// Scopes the client may request.
    pub allowed_scopes: Vec<String>,
}

/// An authorization code as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CodeRow {
    /// Client id.
    pub client_id: String,
    /// The user it was issued to.
    pub user_id: i64,
    /// Redirect URI given at authorization.
    pub redirect_uri: String,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Browser session it is bound to.
    pub session_id: Option<String>,
    /// PKCE challenge.
    pub code_challenge: Option<String>,
    /// PKCE method (`S256` or `plain`).
    pub code_challenge_method: Option<String>,
    /// Expiry (µs).
    pub expires_at: i64,
}

/// A code to store.
#[derive(Debug, Clone)]
pub(crate) struct NewCode<'a> {
    /// SHA-256 of the code.
    pub code_hash: &'a str,
    /// The code as stored.
    pub code: CodeRow,
    /// Issued (µs).
    pub created: i64,
}

fn client_from_row(row: &AnyRow) -> Result<ClientRow, sqlx::Error> {
    let scopes: String = row.try_get("allowed_scopes")?;
    Ok(ClientRow {
        id: row.try_get("id")?,
        secret_hash: row.try_get("secret_hash")?,
        redirect_uri: row.try_get("redirect_uri")?,
        description: row.try_get("description")?,
        allowed_scopes: json_strings(&scopes),
    })
}

/// The client called `id`.
pub(crate) async fn client(
    conn: &mut AnyConnection,
    id: &str,
) -> Result<Option<ClientRow>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT id, secret_hash, redirect_uri, description, allowed_scopes FROM oauth_clients \
         WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(client_from_row).transpose()
}

/// Create or replace a client (used when a server is spawned).
pub(crate) async fn upsert_client(
    conn: &mut AnyConnection,
    c: &ClientRow,
    now: i64,
) -> Result<(), sqlx::Error> {
    let scopes = serde_json::to_string(&c.allowed_scopes).unwrap_or_else(|_| "[]".to_owned());
    sqlx::query(
        "INSERT INTO oauth_clients (id, secret_hash, redirect_uri, description, allowed_scopes, \
         created) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO UPDATE SET \
         secret_hash = $2, redirect_uri = $3, description = $4, allowed_scopes = $5",
    )
    .bind(c.id.clone())
    .bind(c.secret_hash.clone())
    .bind(c.redirect_uri.clone())
    .bind(c.description.clone())
    .bind(scopes)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// The ids of clients whose id starts with `prefix`.
pub(crate) async fn client_ids_with_prefix(
    conn: &mut AnyConnection,
    prefix: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query("SELECT id FROM oauth_clients ORDER BY id")
        .fetch_all(conn)
        .await?;
    let mut ids = Vec::new();
    for r in &rows {
        let id: String = r.try_get("id")?;
        if id.starts_with(prefix) {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// Delete a client with its codes and tokens.
pub(crate) async fn delete_client(conn: &mut AnyConnection, id: &str) -> Result<(), sqlx::Error> {
    for sql in [
        "DELETE FROM api_tokens WHERE oauth_client_id = $1",
        "DELETE FROM oauth_codes WHERE client_id = $1",
        "DELETE FROM oauth_clients WHERE id = $1",
    ] {
        sqlx::query(sql).bind(id).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Store a code.
pub(crate) async fn insert_code(
    conn: &mut AnyConnection,
    c: &NewCode<'_>,
) -> Result<(), sqlx::Error> {
    let scopes = serde_json::to_string(&c.code.scopes).unwrap_or_else(|_| "[]".to_owned());
    sqlx::query(
        "INSERT INTO oauth_codes (code_hash, client_id, user_id, redirect_uri, scopes, \
         session_id, code_challenge, code_challenge_method, created, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(c.code_hash)
    .bind(c.code.client_id.clone())
    .bind(c.code.user_id)
    .bind(c.code.redirect_uri.clone())
    .bind(scopes)
    .bind(c.code.session_id.clone())
    .bind(c.code.code_challenge.clone())
    .bind(c.code.code_challenge_method.clone())
    .bind(c.created)
    .bind(c.code.expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Take a code: delete it and return it, so it can be used once only (expired or not; the
/// caller checks expiry).
pub(crate) async fn take_code(
    conn: &mut AnyConnection,
    code_hash: &str,
    client_id: &str,
) -> Result<Option<CodeRow>, sqlx::Error> {
    let row = sqlx::query(
        "DELETE FROM oauth_codes WHERE code_hash = $1 AND client_id = $2 RETURNING client_id, \
         user_id, redirect_uri, scopes, session_id, code_challenge, code_challenge_method, \
         expires_at",
    )
    .bind(code_hash)
    .bind(client_id)
    .fetch_optional(conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let scopes: String = row.try_get("scopes")?;
    Ok(Some(CodeRow {
        client_id: row.try_get("client_id")?,
        user_id: row.try_get("user_id")?,
        redirect_uri: row.try_get("redirect_uri")?,
        scopes: json_strings(&scopes),
        session_id: row.try_get("session_id")?,
        code_challenge: row.try_get("code_challenge")?,
        code_challenge_method: row.try_get("code_challenge_method")?,
        expires_at: row.try_get("expires_at")?,
    }))
}

/// Drop expired codes.
pub(crate) async fn purge_codes(conn: &mut AnyConnection, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM oauth_codes WHERE expires_at <= $1")
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

/// Delete the unused codes issued to one browser session (logout).
pub(crate) async fn delete_codes_for_session(
    conn: &mut AnyConnection,
    user_id: i64,
    session_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM oauth_codes WHERE user_id = $1 AND session_id = $2")
        .bind(user_id)
        .bind(session_id)
        .execute(conn)
        .await?;
    Ok(())
}
