//! Users, their roles and their group memberships.

use std::collections::HashMap;

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::placeholders;

/// A user, with their groups and directly assigned roles loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct UserRow {
    /// Database id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Admin flag.
    pub admin: bool,
    /// Creation time (µs).
    pub created: i64,
    /// Last activity (µs).
    pub last_activity: Option<i64>,
    /// Authentication state (JSON text).
    pub auth_state: Option<String>,
    /// Group names.
    pub groups: Vec<String>,
    /// Roles assigned to the user (not counting `user`/`admin`, which follow the admin flag).
    pub roles: Vec<String>,
    /// Roles held through the user's groups.
    pub group_roles: Vec<String>,
    /// Scopes granted to the user by shares, directly or through their groups (each limited
    /// to one server, `!server=OWNER/NAME`).
    pub shared_scopes: Vec<String>,
}

const COLUMNS: &str = "id, name, admin, created, last_activity, auth_state";

fn from_row(row: &AnyRow) -> Result<UserRow, sqlx::Error> {
    Ok(UserRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        admin: row.try_get::<i64, _>("admin")? != 0,
        created: row.try_get("created")?,
        last_activity: row.try_get("last_activity")?,
        auth_state: row.try_get("auth_state")?,
        groups: Vec::new(),
        roles: Vec::new(),
        group_roles: Vec::new(),
        shared_scopes: Vec::new(),
    })
}

/// Which users `GET /users` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum UserState {
    /// Everyone.
    #[default]
    Any,
    /// Users with a ready or pending server.
    Active,
    /// Users with a ready server.
    Ready,
    /// Users without an active server.
    Inactive,
}

/// Sort key of `GET /users`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum UserSort {
    /// Internal id.
    #[default]
    Id,
    /// Name.
    Name,
    /// Last activity (never active sorts as oldest).
    LastActivity,
}

/// A page of users.
#[derive(Debug, Clone, Default)]
pub(crate) struct UsersQuery {
    /// State filter.
    pub state: UserState,
    /// Case-insensitive substring of the name.
    pub name_filter: Option<String>,
    /// Sort key.
    pub sort: UserSort,
    /// Descending.
    pub descending: bool,
    /// Offset.
    pub offset: i64,
    /// Limit.
    pub limit: i64,
    /// Only these names (the caller's scopes allow no others); `None` = no restriction.
    pub only: Option<Vec<String>>,
}

const ACTIVE: &str = "EXISTS (SELECT 1 FROM servers s WHERE s.user_id = users.id \
                      AND (s.pending IS NOT NULL OR s.url IS NOT NULL))";
const READY: &str = "EXISTS (SELECT 1 FROM servers s WHERE s.user_id = users.id \
                     AND s.pending IS NULL AND s.url IS NOT NULL)";

/// One page of users and the total matching the filters.
pub(crate) async fn list(
    conn: &mut AnyConnection,
    q: &UsersQuery,
) -> Result<(Vec<UserRow>, i64), sqlx::Error> {
    let mut wheres: Vec<String> = Vec::new();
    match q.state {
        UserState::Any => {}
        UserState::Active => wheres.push(ACTIVE.to_owned()),
        UserState::Ready => wheres.push(READY.to_owned()),
        UserState::Inactive => wheres.push(format!("NOT {ACTIVE}")),
    }
    let mut binds: Vec<String> = Vec::new();
    if let Some(f) = &q.name_filter {
        binds.push(format!("%{}%", f.to_lowercase()));
        wheres.push(format!("LOWER(name) LIKE ${}", binds.len()));
    }
    if let Some(only) = &q.only {
        if only.is_empty() {
            return Ok((Vec::new(), 0));
        }
        let start = binds.len() + 1;
        binds.extend(only.iter().cloned());
        wheres.push(format!("name IN ({})", placeholders(start, only.len())));
    }
    let where_sql = if wheres.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", wheres.join(" AND "))
    };
    let order = match q.sort {
        UserSort::Id => "id",
        UserSort::Name => "name",
        UserSort::LastActivity => "COALESCE(last_activity, 0)",
    };
    let dir = if q.descending { "DESC" } else { "ASC" };
    let count_sql = format!("SELECT COUNT(*) AS n FROM users {where_sql}");
    let mut count = sqlx::query(&count_sql);
    for b in &binds {
        count = count.bind(b.clone());
    }
    let total: i64 = count.fetch_one(&mut *conn).await?.try_get("n")?;
    let sql = format!(
        "SELECT {COLUMNS} FROM users {where_sql} ORDER BY {order} {dir}, id {dir} \
         LIMIT ${} OFFSET ${}",
        binds.len() + 1,
        binds.len() + 2
    );
    let mut query = sqlx::query(&sql);
    for b in &binds {
        query = query.bind(b.clone());
    }
    let rows = query
        .bind(q.limit)
        .bind(q.offset)
        .fetch_all(&mut *conn)
        .await?;
    let mut users = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    load_details(conn, &mut users).await?;
    Ok((users, total))
}

/// Fill in the groups, roles and group roles of `users`, in one query for all of them.
pub(crate) async fn load_details(
    conn: &mut AnyConnection,
    users: &mut [UserRow],
) -> Result<(), sqlx::Error> {
    if users.is_empty() {
        return Ok(());
    }
    let ids = placeholders(1, users.len());
    let sql = format!(
        "SELECT ug.user_id AS user_id, 'g' AS kind, g.name AS value FROM user_groups ug \
         JOIN groups g ON g.id = ug.group_id WHERE ug.user_id IN ({ids}) \
         UNION ALL SELECT user_id, 'r', role FROM user_roles WHERE user_id IN ({ids}) \
         UNION ALL SELECT ug.user_id, 'x', gr.role FROM user_groups ug \
         JOIN group_roles gr ON gr.group_id = ug.group_id WHERE ug.user_id IN ({ids}) \
         UNION ALL SELECT user_id, 's', scopes FROM shares WHERE user_id IN ({ids}) \
         UNION ALL SELECT ug.user_id, 's', sh.scopes FROM user_groups ug \
         JOIN shares sh ON sh.group_id = ug.group_id WHERE ug.user_id IN ({ids}) \
         ORDER BY 3"
    );
    let mut q = sqlx::query(&sql);
    for u in users.iter() {
        q = q.bind(u.id);
    }
    let index: HashMap<i64, usize> = users.iter().enumerate().map(|(i, u)| (u.id, i)).collect();
    for row in q.fetch_all(&mut *conn).await? {
        let Some(&i) = index.get(&row.try_get::<i64, _>("user_id")?) else {
            continue;
        };
        let kind: String = row.try_get("kind")?;
        let value: String = row.try_get("value")?;
        let user = &mut users[i];
        if kind == "s" {
            user.shared_scopes.extend(super::json_strings(&value));
            continue;
        }
        let list = match kind.as_str() {
            "g" => &mut user.groups,
            "r" => &mut user.roles,
            _ => &mut user.group_roles,
        };
        if list.last() != Some(&value) {
            list.push(value);
        }
    }
    for user in users.iter_mut() {
        user.shared_scopes.sort();
        user.shared_scopes.dedup();
    }
    Ok(())
}

/// The user called `name`, with details.
pub(crate) async fn get(
    conn: &mut AnyConnection,
    name: &str,
) -> Result<Option<UserRow>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM users WHERE name = $1");
    let Some(row) = sqlx::query(&sql)
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let mut users = [from_row(&row)?];
    load_details(conn, &mut users).await?;
    let [user] = users;
    Ok(Some(user))
}

/// The user with database id `id`, with details.
pub(crate) async fn get_by_id(
    conn: &mut AnyConnection,
    id: i64,
) -> Result<Option<UserRow>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM users WHERE id = $1");
    let Some(row) = sqlx::query(&sql)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let mut users = [from_row(&row)?];
    load_details(conn, &mut users).await?;
    let [user] = users;
    Ok(Some(user))
}

/// Create a user; `None` if the name is taken.
pub(crate) async fn create(
    conn: &mut AnyConnection,
    name: &str,
    admin: bool,
    now: i64,
) -> Result<Option<UserRow>, sqlx::Error> {
    let sql = format!(
        "INSERT INTO users (name, admin, created) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO NOTHING RETURNING {COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(name)
        .bind(i64::from(admin))
        .bind(now)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// Set the admin flag.
pub(crate) async fn set_admin(
    conn: &mut AnyConnection,
    id: i64,
    admin: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET admin = $1 WHERE id = $2")
        .bind(i64::from(admin))
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Rename; `false` if the new name is taken.
pub(crate) async fn rename(
    conn: &mut AnyConnection,
    id: i64,
    name: &str,
) -> Result<bool, sqlx::Error> {
    let taken = sqlx::query("SELECT 1 AS one FROM users WHERE name = $1 AND id <> $2")
        .bind(name)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .is_some();
    if taken {
        return Ok(false);
    }
    sqlx::query("UPDATE users SET name = $1 WHERE id = $2")
        .bind(name)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(true)
}

/// Replace the auth state (JSON text or `None`).
pub(crate) async fn set_auth_state(
    conn: &mut AnyConnection,
    id: i64,
    state: Option<String>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET auth_state = $1 WHERE id = $2")
        .bind(state)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// What deleting a user removed from the database.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Removed {
    /// Server rows (all stopped by then).
    pub servers: u64,
    /// OAuth clients of the user's servers (`jupyterhub-user-NAME[-SERVER]`).
    pub oauth_clients: u64,
    /// API tokens: the user's own and those issued through their servers' OAuth clients.
    pub tokens: u64,
    /// Browser login sessions.
    pub sessions: u64,
    /// The identity provider's tokens kept for the user.
    pub idp_tokens: u64,
}

/// Delete the OAuth clients `ids` with the tokens and codes issued through them; returns how
/// many clients and tokens went.
pub(crate) async fn delete_clients(
    conn: &mut AnyConnection,
    ids: &[String],
) -> Result<(u64, u64), sqlx::Error> {
    let (mut clients, mut tokens) = (0, 0);
    for id in ids {
        tokens += sqlx::query("DELETE FROM api_tokens WHERE oauth_client_id = $1")
            .bind(id)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM oauth_codes WHERE client_id = $1")
            .bind(id)
            .execute(&mut *conn)
            .await?;
        clients += sqlx::query("DELETE FROM oauth_clients WHERE id = $1")
            .bind(id)
            .execute(&mut *conn)
            .await?
            .rows_affected();
    }
    Ok((clients, tokens))
}

/// Delete a user with everything stored under them or their name: servers, tokens, login
/// sessions, OAuth codes, memberships, the identity provider's tokens, the quota, and the OAuth
/// clients `client_ids` of their servers (whose ids carry the user's name, so a later user of
/// that name would otherwise inherit them), with the tokens and codes issued through them.
pub(crate) async fn delete(
    conn: &mut AnyConnection,
    id: i64,
    client_ids: &[String],
) -> Result<Removed, sqlx::Error> {
    let (clients, tokens) = delete_clients(conn, client_ids).await?;
    let mut removed = Removed {
        oauth_clients: clients,
        tokens,
        ..Removed::default()
    };
    // Explicit deletes as well as ON DELETE CASCADE, so a database without foreign-key
    // enforcement ends up in the same state; each counted where the answer reports it.
    type Count = Option<fn(&mut Removed) -> &mut u64>;
    let steps: [(&str, Count); 13] = [
        (super::shares::DELETE_FOR_USER[0], None),
        (super::shares::DELETE_FOR_USER[1], None),
        (
            "DELETE FROM api_tokens WHERE user_id = $1",
            Some(|r| &mut r.tokens),
        ),
        ("DELETE FROM oauth_codes WHERE user_id = $1", None),
        (
            "DELETE FROM login_sessions WHERE user_id = $1",
            Some(|r| &mut r.sessions),
        ),
        (
            "DELETE FROM spawn_leases WHERE server_id IN \
             (SELECT id FROM servers WHERE user_id = $1)",
            None,
        ),
        (
            "DELETE FROM spawn_events WHERE server_id IN \
             (SELECT id FROM servers WHERE user_id = $1)",
            None,
        ),
        (
            "DELETE FROM servers WHERE user_id = $1",
            Some(|r| &mut r.servers),
        ),
        ("DELETE FROM user_groups WHERE user_id = $1", None),
        ("DELETE FROM user_roles WHERE user_id = $1", None),
        (
            "DELETE FROM oidc_tokens WHERE user_id = $1",
            Some(|r| &mut r.idp_tokens),
        ),
        ("DELETE FROM user_quotas WHERE user_id = $1", None),
        ("DELETE FROM users WHERE id = $1", None),
    ];
    for (sql, count) in steps {
        let n = sqlx::query(sql)
            .bind(id)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        if let Some(field) = count {
            *field(&mut removed) += n;
        }
    }
    Ok(removed)
}

/// The identity-provider account (issuer, subject) a user is bound to.
pub(crate) async fn idp_account(
    conn: &mut AnyConnection,
    id: i64,
) -> Result<Option<(String, String)>, sqlx::Error> {
    let row = sqlx::query("SELECT idp_issuer, idp_subject FROM users WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let issuer: Option<String> = row.try_get("idp_issuer")?;
    let subject: Option<String> = row.try_get("idp_subject")?;
    Ok(issuer.zip(subject))
}

/// The name of the user bound to the identity-provider account (`issuer`, `subject`).
pub(crate) async fn bound_to(
    conn: &mut AnyConnection,
    issuer: &str,
    subject: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query("SELECT name FROM users WHERE idp_issuer = $1 AND idp_subject = $2")
        .bind(issuer)
        .bind(subject)
        .fetch_optional(&mut *conn)
        .await?
        .map(|row| row.try_get("name"))
        .transpose()
}

/// Bind user `id` to the identity-provider account (`issuer`, `subject`).
pub(crate) async fn bind_idp_account(
    conn: &mut AnyConnection,
    id: i64,
    issuer: &str,
    subject: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET idp_issuer = $1, idp_subject = $2 WHERE id = $3")
        .bind(issuer)
        .bind(subject)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Move `last_activity` forward to `t` (never backwards).
pub(crate) async fn bump_activity(
    conn: &mut AnyConnection,
    id: i64,
    t: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE users SET last_activity = $1 WHERE id = $2 \
         AND (last_activity IS NULL OR last_activity < $1)",
    )
    .bind(t)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Replace the user's directly assigned roles.
pub(crate) async fn set_roles(
    conn: &mut AnyConnection,
    id: i64,
    roles: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM user_roles WHERE user_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    for role in roles {
        sqlx::query(
            "INSERT INTO user_roles (user_id, role) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(role)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use crate::db::{Db, groups};

    #[tokio::test]
    async fn details_of_a_page_come_in_one_query() {
        let db = Db::connect(&Secret::new("sqlite::memory:".to_owned()))
            .await
            .unwrap();
        let mut conn = db.pool().acquire().await.unwrap();
        let ann = create(&mut conn, "ann", false, 1).await.unwrap().unwrap();
        let bob = create(&mut conn, "bob", false, 1).await.unwrap().unwrap();
        let eve = create(&mut conn, "eve", false, 1).await.unwrap().unwrap();
        let g1 = groups::ensure(&mut conn, "/services/dask").await.unwrap();
        let g2 = groups::ensure(&mut conn, "lab").await.unwrap();
        for (g, u) in [(g1, ann.id), (g2, ann.id), (g2, bob.id)] {
            groups::add_member(&mut conn, g, u).await.unwrap();
        }
        // The same role through two groups is listed once.
        for (g, role) in [(g1, "dask"), (g1, "shared"), (g2, "shared")] {
            sqlx::query("INSERT INTO group_roles (group_id, role) VALUES ($1, $2)")
                .bind(g)
                .bind(role)
                .execute(&mut *conn)
                .await
                .unwrap();
        }
        set_roles(
            &mut conn,
            bob.id,
            &["b-role".to_owned(), "a-role".to_owned()],
        )
        .await
        .unwrap();

        let mut page = [ann, bob, eve];
        load_details(&mut conn, &mut page).await.unwrap();
        let [ann, bob, eve] = page;
        assert_eq!(ann.groups, ["/services/dask", "lab"]);
        assert!(ann.roles.is_empty());
        assert_eq!(ann.group_roles, ["dask", "shared"]);
        assert_eq!(bob.groups, ["lab"]);
        assert_eq!(bob.roles, ["a-role", "b-role"]);
        assert_eq!(bob.group_roles, ["shared"]);
        assert!(eve.groups.is_empty() && eve.roles.is_empty() && eve.group_roles.is_empty());
        assert_eq!(
            get(&mut conn, "ann").await.unwrap().unwrap().groups,
            ann.groups
        );
    }
}
