//! Shares (a user's or a group's scopes on one server) and share codes (exchangeable for a
//! share, stored as the SHA-256 of the code). Scopes are a JSON list of strings, each filtered
//! `!server=OWNER/NAME` before it is stored.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::json_strings;

/// Who a share is granted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recipient {
    /// A user, by id.
    User(i64),
    /// A group (and so its members), by id.
    Group(i64),
}

/// The server a share or code is for, as the share models show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SharedServer {
    /// Owner's name.
    pub owner: String,
    /// Server name (`""` = default).
    pub name: String,
    /// Running and not in transition.
    pub ready: bool,
}

/// One share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShareRow {
    /// Database id.
    pub id: i64,
    /// The shared server.
    pub server: SharedServer,
    /// The recipient user's name, for a user share.
    pub user: Option<String>,
    /// The recipient group's name, for a group share.
    pub group: Option<String>,
    /// Granted scopes (sorted, all `!server=` filtered).
    pub scopes: Vec<String>,
    /// When first granted (µs).
    pub created: i64,
}

/// One share code (never the code itself: only its hash is stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CodeRow {
    /// Database id (the API shows `sc_<id>`).
    pub id: i64,
    /// The server the code grants access to.
    pub server_id: i64,
    /// The shared server.
    pub server: SharedServer,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Issued (µs).
    pub created: i64,
    /// Expires (µs).
    pub expires_at: i64,
    /// Last exchanged (µs).
    pub last_exchanged_at: Option<i64>,
    /// How often it was exchanged.
    pub exchange_count: i64,
}

/// Which shares or codes a list asks for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Scope {
    /// All of an owner's servers.
    Owner(i64),
    /// One server.
    Server(i64),
    /// Shares granted to a user, directly or through their groups (shares only).
    SharedWithUser(i64),
    /// Shares granted to a group (shares only).
    SharedWithGroup(i64),
}

impl Scope {
    fn clause(self, table: &str) -> String {
        match self {
            Self::Owner(_) => format!("{table}.owner_id = $1"),
            Self::Server(_) => format!("{table}.server_id = $1"),
            Self::SharedWithUser(_) => format!(
                "({table}.user_id = $1 OR {table}.group_id IN \
                 (SELECT group_id FROM user_groups WHERE user_id = $1))"
            ),
            Self::SharedWithGroup(_) => format!("{table}.group_id = $1"),
        }
    }

    fn id(self) -> i64 {
        match self {
            Self::Owner(i)
            | Self::Server(i)
            | Self::SharedWithUser(i)
            | Self::SharedWithGroup(i) => i,
        }
    }
}

const SHARE_SELECT: &str = "SELECT sh.id AS id, sh.scopes AS scopes, sh.created AS created, \
     o.name AS owner_name, s.name AS server_name, s.url AS server_url, \
     s.pending AS server_pending, u.name AS user_name, g.name AS group_name \
     FROM shares sh JOIN users o ON o.id = sh.owner_id JOIN servers s ON s.id = sh.server_id \
     LEFT JOIN users u ON u.id = sh.user_id LEFT JOIN groups g ON g.id = sh.group_id";

fn server_from(row: &AnyRow) -> Result<SharedServer, sqlx::Error> {
    let url: Option<String> = row.try_get("server_url")?;
    let pending: Option<String> = row.try_get("server_pending")?;
    Ok(SharedServer {
        owner: row.try_get("owner_name")?,
        name: row.try_get("server_name")?,
        ready: url.is_some() && pending.is_none(),
    })
}

fn share_from(row: &AnyRow) -> Result<ShareRow, sqlx::Error> {
    let scopes: String = row.try_get("scopes")?;
    Ok(ShareRow {
        id: row.try_get("id")?,
        server: server_from(row)?,
        user: row.try_get("user_name")?,
        group: row.try_get("group_name")?,
        scopes: json_strings(&scopes),
        created: row.try_get("created")?,
    })
}

/// One page of shares (oldest first) and how many there are.
pub(crate) async fn list(
    conn: &mut AnyConnection,
    scope: Scope,
    offset: i64,
    limit: i64,
) -> Result<(Vec<ShareRow>, i64), sqlx::Error> {
    let clause = scope.clause("sh");
    let (total,): (i64,) =
        sqlx::query_as(&format!("SELECT COUNT(*) FROM shares sh WHERE {clause}"))
            .bind(scope.id())
            .fetch_one(&mut *conn)
            .await?;
    let rows = sqlx::query(&format!(
        "{SHARE_SELECT} WHERE {clause} ORDER BY sh.id LIMIT $2 OFFSET $3"
    ))
    .bind(scope.id())
    .bind(limit)
    .bind(offset)
    .fetch_all(&mut *conn)
    .await?;
    let items = rows.iter().map(share_from).collect::<Result<_, _>>()?;
    Ok((items, total))
}

fn recipient_clause(to: Recipient) -> (&'static str, i64) {
    match to {
        Recipient::User(id) => ("sh.user_id = $2", id),
        Recipient::Group(id) => ("sh.group_id = $2", id),
    }
}

/// The share of `server_id` granted to `to`, if any.
pub(crate) async fn find(
    conn: &mut AnyConnection,
    server_id: i64,
    to: Recipient,
) -> Result<Option<ShareRow>, sqlx::Error> {
    let (clause, id) = recipient_clause(to);
    let row = sqlx::query(&format!(
        "{SHARE_SELECT} WHERE sh.server_id = $1 AND {clause}"
    ))
    .bind(server_id)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(share_from).transpose()
}

/// Grant `scopes` on the server to `to`: a new share, or the existing one extended. The share
/// as it is now.
pub(crate) async fn grant(
    conn: &mut AnyConnection,
    owner_id: i64,
    server_id: i64,
    to: Recipient,
    scopes: &[String],
    now: i64,
) -> Result<ShareRow, sqlx::Error> {
    if let Some(existing) = find(conn, server_id, to).await? {
        let mut all = existing.scopes.clone();
        all.extend(scopes.iter().cloned());
        all.sort();
        all.dedup();
        if all != existing.scopes {
            set_scopes(conn, existing.id, &all).await?;
        }
    } else {
        let (user_id, group_id) = match to {
            Recipient::User(id) => (Some(id), None),
            Recipient::Group(id) => (None, Some(id)),
        };
        let mut sorted = scopes.to_vec();
        sorted.sort();
        sorted.dedup();
        sqlx::query(
            "INSERT INTO shares (owner_id, server_id, user_id, group_id, scopes, created) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(owner_id)
        .bind(server_id)
        .bind(user_id)
        .bind(group_id)
        .bind(scopes_json(&sorted))
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    find(conn, server_id, to)
        .await?
        .ok_or(sqlx::Error::RowNotFound)
}

/// Revoke `scopes` (all when `None`) of `to`'s share; the share if any scopes remain.
pub(crate) async fn revoke(
    conn: &mut AnyConnection,
    server_id: i64,
    to: Recipient,
    scopes: Option<&[String]>,
) -> Result<Option<ShareRow>, sqlx::Error> {
    let Some(share) = find(conn, server_id, to).await? else {
        return Ok(None);
    };
    let remaining: Vec<String> = match scopes {
        None => Vec::new(),
        Some(drop) => share
            .scopes
            .iter()
            .filter(|s| !drop.contains(s))
            .cloned()
            .collect(),
    };
    if remaining.is_empty() {
        delete(conn, share.id).await?;
        return Ok(None);
    }
    if remaining != share.scopes {
        set_scopes(conn, share.id, &remaining).await?;
    }
    find(conn, server_id, to).await
}

async fn set_scopes(
    conn: &mut AnyConnection,
    id: i64,
    scopes: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE shares SET scopes = $1 WHERE id = $2")
        .bind(scopes_json(scopes))
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Delete one share.
pub(crate) async fn delete(conn: &mut AnyConnection, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM shares WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Delete every share of a server; how many.
pub(crate) async fn delete_for_server(
    conn: &mut AnyConnection,
    server_id: i64,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM shares WHERE server_id = $1")
        .bind(server_id)
        .execute(conn)
        .await?
        .rows_affected())
}

/// Shares and codes that go with a deleted user (as owner or recipient).
pub(crate) const DELETE_FOR_USER: [&str; 2] = [
    "DELETE FROM shares WHERE owner_id = $1 OR user_id = $1",
    "DELETE FROM share_codes WHERE owner_id = $1",
];

/// Shares that go with a deleted group.
pub(crate) const DELETE_FOR_GROUP: &str = "DELETE FROM shares WHERE group_id = $1";

/// Shares and codes that go with a deleted server.
pub(crate) const DELETE_FOR_SERVER: [&str; 2] = [
    "DELETE FROM shares WHERE server_id = $1",
    "DELETE FROM share_codes WHERE server_id = $1",
];

fn scopes_json(scopes: &[String]) -> String {
    serde_json::to_string(scopes).unwrap_or_else(|_| "[]".to_owned())
}

const CODE_SELECT: &str = "SELECT c.id AS id, c.server_id AS server_id, c.scopes AS scopes, \
     c.created AS created, c.expires_at AS expires_at, \
     c.last_exchanged_at AS last_exchanged_at, c.exchange_count AS exchange_count, \
     o.name AS owner_name, s.name AS server_name, s.url AS server_url, \
     s.pending AS server_pending \
     FROM share_codes c JOIN users o ON o.id = c.owner_id JOIN servers s ON s.id = c.server_id";

fn code_from(row: &AnyRow) -> Result<CodeRow, sqlx::Error> {
    let scopes: String = row.try_get("scopes")?;
    Ok(CodeRow {
        id: row.try_get("id")?,
        server_id: row.try_get("server_id")?,
        server: server_from(row)?,
        scopes: json_strings(&scopes),
        created: row.try_get("created")?,
        expires_at: row.try_get("expires_at")?,
        last_exchanged_at: row.try_get("last_exchanged_at")?,
        exchange_count: row.try_get("exchange_count")?,
    })
}

/// What a new share code holds.
#[derive(Debug, Clone)]
pub(crate) struct NewCode<'a> {
    /// SHA-256 of the code.
    pub code_hash: &'a str,
    /// Owner id.
    pub owner_id: i64,
    /// Server id.
    pub server_id: i64,
    /// Scopes (filtered).
    pub scopes: &'a [String],
    /// Issued (µs).
    pub created: i64,
    /// Expires (µs).
    pub expires_at: i64,
}

/// Store a new code; its row.
pub(crate) async fn insert_code(
    conn: &mut AnyConnection,
    new: &NewCode<'_>,
) -> Result<CodeRow, sqlx::Error> {
    let mut scopes = new.scopes.to_vec();
    scopes.sort();
    scopes.dedup();
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO share_codes (code_hash, owner_id, server_id, scopes, created, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(new.code_hash)
    .bind(new.owner_id)
    .bind(new.server_id)
    .bind(scopes_json(&scopes))
    .bind(new.created)
    .bind(new.expires_at)
    .fetch_one(&mut *conn)
    .await?;
    code_by_id(conn, id).await?.ok_or(sqlx::Error::RowNotFound)
}

async fn code_by_id(conn: &mut AnyConnection, id: i64) -> Result<Option<CodeRow>, sqlx::Error> {
    let row = sqlx::query(&format!("{CODE_SELECT} WHERE c.id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(code_from).transpose()
}

/// One page of unexpired codes (oldest first) and how many there are.
pub(crate) async fn list_codes(
    conn: &mut AnyConnection,
    scope: Scope,
    now: i64,
    offset: i64,
    limit: i64,
) -> Result<(Vec<CodeRow>, i64), sqlx::Error> {
    let clause = scope.clause("c");
    let (total,): (i64,) = sqlx::query_as(&format!(
        "SELECT COUNT(*) FROM share_codes c WHERE {clause} AND c.expires_at > $2"
    ))
    .bind(scope.id())
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    let rows = sqlx::query(&format!(
        "{CODE_SELECT} WHERE {clause} AND c.expires_at > $2 ORDER BY c.id LIMIT $3 OFFSET $4"
    ))
    .bind(scope.id())
    .bind(now)
    .bind(limit)
    .bind(offset)
    .fetch_all(&mut *conn)
    .await?;
    let items = rows.iter().map(code_from).collect::<Result<_, _>>()?;
    Ok((items, total))
}

/// The code whose hash is `hash` (expired ones included: the caller tells them apart).
pub(crate) async fn code_by_hash(
    conn: &mut AnyConnection,
    hash: &str,
) -> Result<Option<CodeRow>, sqlx::Error> {
    let row = sqlx::query(&format!("{CODE_SELECT} WHERE c.code_hash = $1"))
        .bind(hash)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(code_from).transpose()
}

/// Delete one code of `server_id` by id; whether it existed.
pub(crate) async fn delete_code(
    conn: &mut AnyConnection,
    server_id: i64,
    id: i64,
) -> Result<bool, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM share_codes WHERE id = $1 AND server_id = $2")
            .bind(id)
            .bind(server_id)
            .execute(conn)
            .await?
            .rows_affected()
            > 0,
    )
}

/// Delete every code of a server; how many.
pub(crate) async fn delete_codes_for_server(
    conn: &mut AnyConnection,
    server_id: i64,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM share_codes WHERE server_id = $1")
        .bind(server_id)
        .execute(conn)
        .await?
        .rows_affected())
}

/// Count one exchange of a code; `false` if it is gone or expired by `now`.
pub(crate) async fn record_exchange(
    conn: &mut AnyConnection,
    id: i64,
    now: i64,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE share_codes SET exchange_count = exchange_count + 1, last_exchanged_at = $1 \
         WHERE id = $2 AND expires_at > $1",
    )
    .bind(now)
    .bind(id)
    .execute(conn)
    .await?
    .rows_affected()
        > 0)
}
