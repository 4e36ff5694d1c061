//! Groups and their members.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::{json_value, placeholders};

/// A group with its member names and roles.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GroupRow {
    /// Database id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Properties (a JSON object).
    pub properties: serde_json::Value,
    /// Member names, sorted.
    pub users: Vec<String>,
    /// Role names.
    pub roles: Vec<String>,
}

fn from_row(row: &AnyRow) -> Result<GroupRow, sqlx::Error> {
    let props: String = row.try_get("properties")?;
    Ok(GroupRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        properties: json_value(&props, serde_json::json!({})),
        users: Vec::new(),
        roles: Vec::new(),
    })
}

async fn load_details(
    conn: &mut AnyConnection,
    groups: &mut [GroupRow],
) -> Result<(), sqlx::Error> {
    for g in groups.iter_mut() {
        let rows = sqlx::query(
            "SELECT u.name AS name FROM user_groups ug JOIN users u ON u.id = ug.user_id \
             WHERE ug.group_id = $1 ORDER BY u.name",
        )
        .bind(g.id)
        .fetch_all(&mut *conn)
        .await?;
        g.users = rows
            .iter()
            .map(|r| r.try_get("name"))
            .collect::<Result<_, _>>()?;
        let rows = sqlx::query("SELECT role FROM group_roles WHERE group_id = $1 ORDER BY role")
            .bind(g.id)
            .fetch_all(&mut *conn)
            .await?;
        g.roles = rows
            .iter()
            .map(|r| r.try_get("role"))
            .collect::<Result<_, _>>()?;
    }
    Ok(())
}

/// A page of groups (optionally only `only`) and the total.
pub(crate) async fn list(
    conn: &mut AnyConnection,
    offset: i64,
    limit: i64,
    only: Option<&[String]>,
) -> Result<(Vec<GroupRow>, i64), sqlx::Error> {
    let (where_sql, binds): (String, Vec<String>) = match only {
        None => (String::new(), Vec::new()),
        Some([]) => return Ok((Vec::new(), 0)),
        Some(names) => (
            format!("WHERE name IN ({})", placeholders(1, names.len())),
            names.to_vec(),
        ),
    };
    let sql = format!("SELECT COUNT(*) AS n FROM groups {where_sql}");
    let mut q = sqlx::query(&sql);
    for b in &binds {
        q = q.bind(b.clone());
    }
    let total: i64 = q.fetch_one(&mut *conn).await?.try_get("n")?;
    let sql = format!(
        "SELECT id, name, properties FROM groups {where_sql} ORDER BY id LIMIT ${} OFFSET ${}",
        binds.len() + 1,
        binds.len() + 2
    );
    let mut q = sqlx::query(&sql);
    for b in &binds {
        q = q.bind(b.clone());
    }
    let rows = q.bind(limit).bind(offset).fetch_all(&mut *conn).await?;
    let mut groups = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    load_details(conn, &mut groups).await?;
    Ok((groups, total))
}

/// The group called `name`.
pub(crate) async fn get(
    conn: &mut AnyConnection,
    name: &str,
) -> Result<Option<GroupRow>, sqlx::Error> {
    let row = sqlx::query("SELECT id, name, properties FROM groups WHERE name = $1")
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let mut groups = [from_row(&row)?];
    load_details(conn, &mut groups).await?;
    let [g] = groups;
    Ok(Some(g))
}

/// Create a group; `None` if it exists.
pub(crate) async fn create(
    conn: &mut AnyConnection,
    name: &str,
) -> Result<Option<i64>, sqlx::Error> {
    let row = sqlx::query(
        "INSERT INTO groups (name) VALUES ($1) ON CONFLICT (name) DO NOTHING RETURNING id",
    )
    .bind(name)
    .fetch_optional(conn)
    .await?;
    row.map(|r| r.try_get("id")).transpose()
}

/// Create the group if missing; its id.
pub(crate) async fn ensure(conn: &mut AnyConnection, name: &str) -> Result<i64, sqlx::Error> {
    if let Some(id) = create(&mut *conn, name).await? {
        return Ok(id);
    }
    sqlx::query("SELECT id FROM groups WHERE name = $1")
        .bind(name)
        .fetch_one(conn)
        .await?
        .try_get("id")
}

/// Delete a group.
pub(crate) async fn delete(conn: &mut AnyConnection, id: i64) -> Result<(), sqlx::Error> {
    for sql in [
        super::shares::DELETE_FOR_GROUP,
        "DELETE FROM user_groups WHERE group_id = $1",
        "DELETE FROM group_roles WHERE group_id = $1",
        "DELETE FROM groups WHERE id = $1",
    ] {
        sqlx::query(sql).bind(id).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Add a member.
pub(crate) async fn add_member(
    conn: &mut AnyConnection,
    group_id: i64,
    user_id: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO user_groups (user_id, group_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(user_id)
    .bind(group_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Remove a member.
pub(crate) async fn remove_member(
    conn: &mut AnyConnection,
    group_id: i64,
    user_id: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM user_groups WHERE user_id = $1 AND group_id = $2")
        .bind(user_id)
        .bind(group_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Replace the user's memberships with exactly `names` (creating missing groups).
pub(crate) async fn set_user_groups(
    conn: &mut AnyConnection,
    user_id: i64,
    names: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM user_groups WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    for name in names {
        let gid = ensure(&mut *conn, name).await?;
        add_member(&mut *conn, gid, user_id).await?;
    }
    Ok(())
}

/// Replace the properties.
pub(crate) async fn set_properties(
    conn: &mut AnyConnection,
    id: i64,
    props: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE groups SET properties = $1 WHERE id = $2")
        .bind(props.to_string())
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}
