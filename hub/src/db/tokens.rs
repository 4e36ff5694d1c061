//! API tokens (stored as SHA-256 hashes, never in clear) and the services owning some of them.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::json_strings;
use super::users::UserRow;

/// Who owns a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenOwner {
    /// A user (database id, name).
    User {
        /// Database id.
        id: i64,
        /// Name.
        name: String,
    },
    /// A service (database id, name, the service's scopes).
    Service {
        /// Database id.
        id: i64,
        /// Name.
        name: String,
        /// The service's own scopes.
        scopes: Vec<String>,
    },
}

/// A stored token (without its secret, which is never stored).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TokenRow {
    /// Database id (API id: `a<id>`).
    pub id: i64,
    /// First characters of the token, for humans.
    pub prefix: String,
    /// Owner.
    pub owner: TokenOwner,
    /// Scopes as stored (may include metascopes).
    pub scopes: Vec<String>,
    /// Note.
    pub note: String,
    /// Created (µs).
    pub created: i64,
    /// Last used (µs).
    pub last_activity: Option<i64>,
    /// Expiry (µs).
    pub expires_at: Option<i64>,
    /// OAuth session id.
    pub session_id: Option<String>,
    /// OAuth client id.
    pub oauth_client: Option<String>,
}

/// A token to store.
#[derive(Debug, Clone)]
pub(crate) struct NewToken<'a> {
    /// SHA-256 of the secret ([`super::hash_secret`]).
    pub hash: &'a str,
    /// First characters of the secret.
    pub prefix: &'a str,
    /// Owning user id.
    pub user_id: Option<i64>,
    /// Owning service id.
    pub service_id: Option<i64>,
    /// Scopes.
    pub scopes: &'a [String],
    /// Note.
    pub note: &'a str,
    /// Created (µs).
    pub created: i64,
    /// Expiry (µs).
    pub expires_at: Option<i64>,
    /// OAuth session id.
    pub session_id: Option<&'a str>,
    /// OAuth client id.
    pub oauth_client: Option<&'a str>,
}

const SELECT_OWNER_COLUMNS: &str = "SELECT t.id AS id, t.prefix AS prefix, \
     t.user_id AS user_id, t.service_id AS service_id, t.scopes AS scopes, t.note AS note, \
     t.created AS created, t.last_activity AS last_activity, t.expires_at AS expires_at, \
     t.session_id AS session_id, t.oauth_client_id AS oauth_client_id, u.name AS user_name, \
     s.name AS service_name, s.scopes AS service_scopes";
const FROM: &str = "FROM api_tokens t LEFT JOIN users u ON u.id = t.user_id \
     LEFT JOIN services s ON s.id = t.service_id";

fn from_row(row: &AnyRow) -> Result<Option<TokenRow>, sqlx::Error> {
    let user_id: Option<i64> = row.try_get("user_id")?;
    let service_id: Option<i64> = row.try_get("service_id")?;
    let owner = match (user_id, service_id) {
        (Some(id), _) => TokenOwner::User {
            id,
            name: row
                .try_get::<Option<String>, _>("user_name")?
                .unwrap_or_default(),
        },
        (None, Some(id)) => TokenOwner::Service {
            id,
            name: row
                .try_get::<Option<String>, _>("service_name")?
                .unwrap_or_default(),
            scopes: json_strings(
                &row.try_get::<Option<String>, _>("service_scopes")?
                    .unwrap_or_default(),
            ),
        },
        (None, None) => return Ok(None),
    };
    let scopes: String = row.try_get("scopes")?;
    Ok(Some(TokenRow {
        id: row.try_get("id")?,
        prefix: row.try_get("prefix")?,
        owner,
        scopes: json_strings(&scopes),
        note: row.try_get("note")?,
        created: row.try_get("created")?,
        last_activity: row.try_get("last_activity")?,
        expires_at: row.try_get("expires_at")?,
        session_id: row.try_get("session_id")?,
        oauth_client: row.try_get("oauth_client_id")?,
    }))
}

/// The unexpired token whose hash is `hash` and, when a user owns it, that user with details
/// loaded: two queries in all, the cost of authenticating one API request.
pub(crate) async fn by_hash_with_user(
    conn: &mut AnyConnection,
    hash: &str,
    now: i64,
) -> Result<Option<(TokenRow, Option<UserRow>)>, sqlx::Error> {
    let sql = format!(
        "{SELECT_OWNER_COLUMNS}, u.admin AS user_admin, u.created AS user_created, \
         u.last_activity AS user_last_activity, u.auth_state AS user_auth_state {FROM} \
         WHERE t.hash = $1 AND (t.expires_at IS NULL OR t.expires_at > $2)"
    );
    let Some(row) = sqlx::query(&sql)
        .bind(hash)
        .bind(now)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let Some(token) = from_row(&row)? else {
        return Ok(None);
    };
    let TokenOwner::User { id, name } = &token.owner else {
        return Ok(Some((token, None)));
    };
    // A user token whose user row is gone (LEFT JOIN gave NULLs) authenticates no one.
    let Some(admin) = row.try_get::<Option<i64>, _>("user_admin")? else {
        return Ok(None);
    };
    let mut users = [UserRow {
        id: *id,
        name: name.clone(),
        admin: admin != 0,
        created: row.try_get::<Option<i64>, _>("user_created")?.unwrap_or(0),
        last_activity: row.try_get("user_last_activity")?,
        auth_state: row.try_get("user_auth_state")?,
        groups: Vec::new(),
        roles: Vec::new(),
        group_roles: Vec::new(),
        shared_scopes: Vec::new(),
    }];
    super::users::load_details(conn, &mut users).await?;
    let [user] = users;
    Ok(Some((token, Some(user))))
}

/// Store a token; its id.
pub(crate) async fn insert(conn: &mut AnyConnection, t: &NewToken<'_>) -> Result<i64, sqlx::Error> {
    let scopes = serde_json::to_string(t.scopes).unwrap_or_else(|_| "[]".to_owned());
    sqlx::query(
        "INSERT INTO api_tokens (hash, prefix, user_id, service_id, scopes, note, created, \
         expires_at, session_id, oauth_client_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
    )
    .bind(t.hash)
    .bind(t.prefix)
    .bind(t.user_id)
    .bind(t.service_id)
    .bind(scopes)
    .bind(t.note)
    .bind(t.created)
    .bind(t.expires_at)
    .bind(t.session_id)
    .bind(t.oauth_client)
    .fetch_one(conn)
    .await?
    .try_get("id")
}

/// The user's unexpired tokens.
pub(crate) async fn for_user(
    conn: &mut AnyConnection,
    user_id: i64,
    now: i64,
) -> Result<Vec<TokenRow>, sqlx::Error> {
    let sql = format!(
        "{SELECT_OWNER_COLUMNS} {FROM} WHERE t.user_id = $1 AND (t.expires_at IS NULL OR t.expires_at > $2) \
         ORDER BY t.id"
    );
    let rows = sqlx::query(&sql)
        .bind(user_id)
        .bind(now)
        .fetch_all(conn)
        .await?;
    Ok(rows
        .iter()
        .map(from_row)
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .collect())
}

/// One token of a user.
pub(crate) async fn get_for_user(
    conn: &mut AnyConnection,
    user_id: i64,
    id: i64,
    now: i64,
) -> Result<Option<TokenRow>, sqlx::Error> {
    let sql = format!(
        "{SELECT_OWNER_COLUMNS} {FROM} WHERE t.user_id = $1 AND t.id = $2 \
         AND (t.expires_at IS NULL OR t.expires_at > $3)"
    );
    let row = sqlx::query(&sql)
        .bind(user_id)
        .bind(id)
        .bind(now)
        .fetch_optional(conn)
        .await?;
    Ok(row.as_ref().map(from_row).transpose()?.flatten())
}

/// Delete one token.
pub(crate) async fn delete(conn: &mut AnyConnection, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM api_tokens WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Delete every token the user holds from an OAuth client.
pub(crate) async fn delete_for_client(
    conn: &mut AnyConnection,
    user_id: i64,
    client_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM api_tokens WHERE user_id = $1 AND oauth_client_id = $2")
        .bind(user_id)
        .bind(client_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Delete every token of the user bound to a login session.
pub(crate) async fn delete_for_session(
    conn: &mut AnyConnection,
    user_id: i64,
    session_id: &str,
) -> Result<u64, sqlx::Error> {
    let r = sqlx::query("DELETE FROM api_tokens WHERE user_id = $1 AND session_id = $2")
        .bind(user_id)
        .bind(session_id)
        .execute(conn)
        .await?;
    Ok(r.rows_affected())
}

/// Record that the token was used at `t`.
pub(crate) async fn touch(conn: &mut AnyConnection, id: i64, t: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE api_tokens SET last_activity = $1 WHERE id = $2")
        .bind(t)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Create or update a service; its id.
pub(crate) async fn ensure_service(
    conn: &mut AnyConnection,
    name: &str,
    admin: bool,
    scopes: &[String],
) -> Result<i64, sqlx::Error> {
    let scopes = serde_json::to_string(scopes).unwrap_or_else(|_| "[]".to_owned());
    sqlx::query(
        "INSERT INTO services (name, admin, scopes) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET admin = $2, scopes = $3 RETURNING id",
    )
    .bind(name)
    .bind(i64::from(admin))
    .bind(scopes)
    .fetch_one(conn)
    .await?
    .try_get("id")
}

/// Every service: id and name.
pub(crate) async fn services(conn: &mut AnyConnection) -> Result<Vec<(i64, String)>, sqlx::Error> {
    let rows = sqlx::query("SELECT id, name FROM services ORDER BY id")
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("id")?, r.try_get("name")?)))
        .collect()
}

/// Delete a service with its tokens.
pub(crate) async fn delete_service(conn: &mut AnyConnection, id: i64) -> Result<(), sqlx::Error> {
    delete_for_service(&mut *conn, id).await?;
    sqlx::query("DELETE FROM services WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Delete every token of a service.
pub(crate) async fn delete_for_service(
    conn: &mut AnyConnection,
    service_id: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM api_tokens WHERE service_id = $1")
        .bind(service_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Delete a user's tokens with exactly this note (a server's own `Server at …` token).
pub(crate) async fn delete_for_note(
    conn: &mut AnyConnection,
    user_id: i64,
    note: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM api_tokens WHERE user_id = $1 AND note = $2")
        .bind(user_id)
        .bind(note)
        .execute(conn)
        .await?;
    Ok(())
}
