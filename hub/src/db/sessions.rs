//! Login sessions: the `jupyterhub-hub-login` cookie is an opaque random id, stored hashed and
//! mapped here to the user and the browser session id (`jupyterhub-session-id`).

use sqlx::{AnyConnection, Row};

/// A login session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SessionRow {
    /// Database id.
    pub id: i64,
    /// The user.
    pub user_id: i64,
    /// The browser session id.
    pub session_id: String,
}

/// Store a session.
pub(crate) async fn insert(
    conn: &mut AnyConnection,
    cookie_hash: &str,
    user_id: i64,
    session_id: &str,
    now: i64,
    expires_at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO login_sessions (cookie_hash, user_id, session_id, created, expires_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(cookie_hash)
    .bind(user_id)
    .bind(session_id)
    .bind(now)
    .bind(expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// The live session for a cookie hash.
pub(crate) async fn by_cookie(
    conn: &mut AnyConnection,
    cookie_hash: &str,
    now: i64,
) -> Result<Option<SessionRow>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT id, user_id, session_id FROM login_sessions WHERE cookie_hash = $1 \
         AND expires_at > $2",
    )
    .bind(cookie_hash)
    .bind(now)
    .fetch_optional(conn)
    .await?;
    row.map(|r| {
        Ok(SessionRow {
            id: r.try_get("id")?,
            user_id: r.try_get("user_id")?,
            session_id: r.try_get("session_id")?,
        })
    })
    .transpose()
}

/// Delete a session.
pub(crate) async fn delete(conn: &mut AnyConnection, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM login_sessions WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}
