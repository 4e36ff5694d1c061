//! Servers: a user's default server (name `""`) and named servers, with what the spawner
//! needs persisted (`url`, `state`, `user_options`, `launch`, `started`, `last_activity`,
//! `pending`).

use std::collections::HashMap;

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::{json_value, placeholders};

/// One server row.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerRow {
    /// Database id.
    pub id: i64,
    /// Owner's database id.
    pub user_id: i64,
    /// Name (`""` = default server).
    pub name: String,
    /// Display name (6.0).
    pub display_name: Option<String>,
    /// Where the running server answers (`None` when stopped).
    pub url: Option<String>,
    /// The spawner's opaque state.
    pub state: serde_json::Value,
    /// The last user options, as the user gave them.
    pub user_options: serde_json::Value,
    /// What the server was last started with: the options resolved against the profiles and
    /// the owner's quota (`None` before its first start).
    pub launch: Option<spawner::LaunchSpec>,
    /// Pending action: `spawn` or `stop`.
    pub pending: Option<String>,
    /// When it was last started (µs).
    pub started: Option<i64>,
    /// Last activity (µs).
    pub last_activity: Option<i64>,
}

impl ServerRow {
    /// Running and not in transition.
    pub fn ready(&self) -> bool {
        self.url.is_some() && self.pending.is_none()
    }

    /// Ready or pending.
    pub fn active(&self) -> bool {
        self.url.is_some() || self.pending.is_some()
    }
}

const COLUMNS: &str = "id, user_id, name, display_name, url, state, user_options, launch, \
                       pending, started, last_activity";
/// [`COLUMNS`] of a table aliased `s`.
pub(super) const COLUMNS_S: &str = "s.id, s.user_id, s.name, s.display_name, s.url, s.state, \
                                    s.user_options, s.launch, s.pending, s.started, \
                                    s.last_activity";

pub(super) fn from_row(row: &AnyRow) -> Result<ServerRow, sqlx::Error> {
    let state: String = row.try_get("state")?;
    let opts: String = row.try_get("user_options")?;
    let launch: Option<String> = row.try_get("launch")?;
    Ok(ServerRow {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        name: row.try_get("name")?,
        display_name: row.try_get("display_name")?,
        url: row.try_get("url")?,
        state: json_value(&state, serde_json::json!({})),
        user_options: json_value(&opts, serde_json::json!({})),
        launch: launch.as_deref().and_then(|l| serde_json::from_str(l).ok()),
        pending: row.try_get("pending")?,
        started: row.try_get("started")?,
        last_activity: row.try_get("last_activity")?,
    })
}

/// Servers of the given users, by user id, sorted by name.
pub(crate) async fn for_users(
    conn: &mut AnyConnection,
    user_ids: &[i64],
) -> Result<HashMap<i64, Vec<ServerRow>>, sqlx::Error> {
    let mut out: HashMap<i64, Vec<ServerRow>> = HashMap::new();
    if user_ids.is_empty() {
        return Ok(out);
    }
    let sql = format!(
        "SELECT {COLUMNS} FROM servers WHERE user_id IN ({}) ORDER BY name",
        placeholders(1, user_ids.len())
    );
    let mut q = sqlx::query(&sql);
    for id in user_ids {
        q = q.bind(*id);
    }
    for row in q.fetch_all(conn).await? {
        let s = from_row(&row)?;
        out.entry(s.user_id).or_default().push(s);
    }
    Ok(out)
}

/// One server of a user.
pub(crate) async fn get(
    conn: &mut AnyConnection,
    user_id: i64,
    name: &str,
) -> Result<Option<ServerRow>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM servers WHERE user_id = $1 AND name = $2");
    let row = sqlx::query(&sql)
        .bind(user_id)
        .bind(name)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// Create a stopped server; `None` if it exists.
pub(crate) async fn create(
    conn: &mut AnyConnection,
    user_id: i64,
    name: &str,
    display_name: Option<&str>,
    user_options: &serde_json::Value,
) -> Result<Option<ServerRow>, sqlx::Error> {
    let sql = format!(
        "INSERT INTO servers (user_id, name, display_name, user_options) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (user_id, name) DO NOTHING RETURNING {COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(user_id)
        .bind(name)
        .bind(display_name)
        .bind(user_options.to_string())
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// Move the server's `last_activity` forward to `t`.
pub(crate) async fn bump_activity(
    conn: &mut AnyConnection,
    id: i64,
    t: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE servers SET last_activity = $1 WHERE id = $2 \
         AND (last_activity IS NULL OR last_activity < $1)",
    )
    .bind(t)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

const SAVE: &str = "UPDATE servers SET display_name = $1, url = $2, state = $3, \
                    user_options = $4, pending = $5, started = $6, last_activity = $7, name = $8, \
                    launch = $9 WHERE id = $10";

fn bind_save<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    s: &ServerRow,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    q.bind(s.display_name.clone())
        .bind(s.url.clone())
        .bind(s.state.to_string())
        .bind(s.user_options.to_string())
        .bind(s.pending.clone())
        .bind(s.started)
        .bind(s.last_activity)
        .bind(s.name.clone())
        .bind(
            s.launch
                .as_ref()
                .and_then(|l| serde_json::to_string(l).ok()),
        )
        .bind(s.id)
}

/// Save what the orchestrator knows about a server (pending, url, state, times, options).
pub(crate) async fn save(conn: &mut AnyConnection, s: &ServerRow) -> Result<(), sqlx::Error> {
    bind_save(sqlx::query(SAVE), s).execute(conn).await?;
    Ok(())
}

/// [`save`] by the replica `owner` running the server's pending spawn or stop: nothing is
/// written (`false`) when another replica holds its lease now (took the work over).
pub(crate) async fn save_leased(
    conn: &mut AnyConnection,
    s: &ServerRow,
    owner: &str,
) -> Result<bool, sqlx::Error> {
    let sql = format!(
        "{SAVE} AND NOT EXISTS (SELECT 1 FROM spawn_leases WHERE server_id = $10 AND owner <> $11)"
    );
    let done = bind_save(sqlx::query(&sql), s)
        .bind(owner)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Delete a server row (with its shares, lease and progress events).
pub(crate) async fn delete(conn: &mut AnyConnection, id: i64) -> Result<(), sqlx::Error> {
    for sql in super::shares::DELETE_FOR_SERVER.iter().chain(&[
        "DELETE FROM spawn_leases WHERE server_id = $1",
        "DELETE FROM spawn_events WHERE server_id = $1",
    ]) {
        sqlx::query(sql).bind(id).execute(&mut *conn).await?;
    }
    sqlx::query("DELETE FROM servers WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Every server that is running or in transition, with its owner's name.
pub(crate) async fn active_all(
    conn: &mut AnyConnection,
) -> Result<Vec<(String, ServerRow)>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM servers WHERE url IS NOT NULL OR pending IS NOT NULL ORDER BY id"
    );
    let rows = sqlx::query(&sql).fetch_all(&mut *conn).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let s = from_row(&row)?;
        let name: Option<String> = sqlx::query_scalar("SELECT name FROM users WHERE id = $1")
            .bind(s.user_id)
            .fetch_optional(&mut *conn)
            .await?;
        if let Some(name) = name {
            out.push((name, s));
        }
    }
    Ok(out)
}

/// Take the owner's row lock for the rest of the transaction (PostgreSQL: a row lock; SQLite:
/// the database's write lock), so per-user limits are checked and acted on atomically.
pub(crate) async fn lock_user(conn: &mut AnyConnection, user_id: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET admin = admin WHERE id = $1")
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Under the owner's lock: how many of the user's servers other than `except` are running or
/// in transition.
pub(crate) async fn lock_and_count_active(
    conn: &mut AnyConnection,
    user_id: i64,
    except: i64,
) -> Result<i64, sqlx::Error> {
    lock_user(&mut *conn, user_id).await?;
    let n: i64 = sqlx::query(
        "SELECT COUNT(*) AS n FROM servers WHERE user_id = $1 AND id <> $2 \
         AND (pending IS NOT NULL OR url IS NOT NULL)",
    )
    .bind(user_id)
    .bind(except)
    .fetch_one(conn)
    .await?
    .try_get("n")?;
    Ok(n)
}

/// Why [`create_limited`] created nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotCreated {
    /// A server of that name exists.
    Exists,
    /// The user has this many named servers, the limit.
    Limit(i64),
}

/// Create a stopped named server unless it exists or the user already has `limit` named
/// servers; the count and the insert run under the owner's lock (in the caller's transaction),
/// so concurrent creations cannot pass the limit together.
pub(crate) async fn create_limited(
    conn: &mut AnyConnection,
    user_id: i64,
    name: &str,
    display_name: Option<&str>,
    user_options: &serde_json::Value,
    limit: Option<u32>,
) -> Result<Result<ServerRow, NotCreated>, sqlx::Error> {
    lock_user(&mut *conn, user_id).await?;
    if get(&mut *conn, user_id, name).await?.is_some() {
        return Ok(Err(NotCreated::Exists));
    }
    if let Some(limit) = limit {
        let n: i64 =
            sqlx::query("SELECT COUNT(*) AS n FROM servers WHERE user_id = $1 AND name <> ''")
                .bind(user_id)
                .fetch_one(&mut *conn)
                .await?
                .try_get("n")?;
        if n >= i64::from(limit) {
            return Ok(Err(NotCreated::Limit(n)));
        }
    }
    Ok(create(conn, user_id, name, display_name, user_options)
        .await?
        .ok_or(NotCreated::Exists))
}
