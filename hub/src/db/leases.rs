//! Leases on pending spawns and stops, and the progress events of spawns (see
//! `crate::spawn` `lease`): the rows behind "work that must happen once happens once" across
//! replicas. Times are microseconds since the epoch on the writing replica's clock.

use sqlx::{AnyConnection, Row};

use super::servers::{COLUMNS_S, ServerRow, from_row};

/// Take the lease of server `id` for `owner` until `until`, unconditionally, with no cancel
/// asked (the start or stop that creates the pending work, in its transaction).
pub(crate) async fn hold(
    conn: &mut AnyConnection,
    id: i64,
    owner: &str,
    until: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO spawn_leases (server_id, owner, until) VALUES ($1, $2, $3) \
         ON CONFLICT (server_id) DO UPDATE SET owner = excluded.owner, until = excluded.until, \
         cancel = 0",
    )
    .bind(id)
    .bind(owner)
    .bind(until)
    .execute(conn)
    .await?;
    Ok(())
}

/// Take over the lease of server `id` for `owner` until `until` if it ran out before `now` (or
/// there is none). `true` when `owner` holds it now; of replicas racing, one wins.
pub(crate) async fn take_expired(
    conn: &mut AnyConnection,
    id: i64,
    owner: &str,
    until: i64,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO spawn_leases (server_id, owner, until) VALUES ($1, $2, $3) \
         ON CONFLICT (server_id) DO UPDATE SET owner = excluded.owner, until = excluded.until \
         WHERE spawn_leases.until < $4",
    )
    .bind(id)
    .bind(owner)
    .bind(until)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Renew every lease `owner` holds until `until`; how many it holds.
pub(crate) async fn renew(
    conn: &mut AnyConnection,
    owner: &str,
    until: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("UPDATE spawn_leases SET until = $1 WHERE owner = $2")
        .bind(until)
        .bind(owner)
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}

/// Give up `owner`'s lease on server `id` (the work is done).
pub(crate) async fn release(
    conn: &mut AnyConnection,
    id: i64,
    owner: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM spawn_leases WHERE server_id = $1 AND owner = $2")
        .bind(id)
        .bind(owner)
        .execute(conn)
        .await?;
    Ok(())
}

/// Drop whatever lease server `id` has (the leader cleans up at start-up).
pub(crate) async fn drop_any(conn: &mut AnyConnection, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM spawn_leases WHERE server_id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Whether `owner` may write server `id`'s pending work: it holds the lease, or nobody does.
pub(crate) async fn may_write(
    conn: &mut AnyConnection,
    id: i64,
    owner: &str,
) -> Result<bool, sqlx::Error> {
    let other: Option<String> =
        sqlx::query_scalar("SELECT owner FROM spawn_leases WHERE server_id = $1")
            .bind(id)
            .fetch_optional(conn)
            .await?;
    Ok(other.is_none_or(|o| o == owner))
}

/// Pending servers (with their owner's name) whose lease ran out before `now`, or that have
/// none; and leases left on servers no longer pending are dropped.
pub(crate) async fn expired(
    conn: &mut AnyConnection,
    now: i64,
) -> Result<Vec<(String, ServerRow)>, sqlx::Error> {
    sqlx::query(
        "DELETE FROM spawn_leases WHERE until < $1 AND server_id NOT IN \
         (SELECT id FROM servers WHERE pending IS NOT NULL)",
    )
    .bind(now)
    .execute(&mut *conn)
    .await?;
    let sql = format!(
        "SELECT {COLUMNS_S}, u.name AS owner_name FROM servers s JOIN users u ON u.id = s.user_id \
         LEFT JOIN spawn_leases l ON l.server_id = s.id \
         WHERE s.pending IS NOT NULL AND (l.until IS NULL OR l.until < $1) ORDER BY s.id"
    );
    let rows = sqlx::query(&sql).bind(now).fetch_all(conn).await?;
    rows.iter()
        .map(|r| Ok((r.try_get("owner_name")?, from_row(r)?)))
        .collect()
}

/// Forget server `id`'s progress events (a new spawn begins).
pub(crate) async fn clear_events(conn: &mut AnyConnection, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM spawn_events WHERE server_id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Store progress event number `seq` of server `id`'s spawn.
pub(crate) async fn add_event(
    conn: &mut AnyConnection,
    id: i64,
    seq: i64,
    event: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO spawn_events (server_id, seq, event) VALUES ($1, $2, $3) \
         ON CONFLICT (server_id, seq) DO NOTHING",
    )
    .bind(id)
    .bind(seq)
    .bind(event.to_string())
    .execute(conn)
    .await?;
    Ok(())
}

/// Server `id`'s last progress event, if any.
pub(crate) async fn last_event(
    conn: &mut AnyConnection,
    id: i64,
) -> Result<Option<serde_json::Value>, sqlx::Error> {
    let event: Option<String> = sqlx::query_scalar(
        "SELECT event FROM spawn_events WHERE server_id = $1 ORDER BY seq DESC LIMIT 1",
    )
    .bind(id)
    .fetch_optional(conn)
    .await?;
    Ok(event.and_then(|e| serde_json::from_str(&e).ok()))
}

/// Server `id`'s progress events from number `from` on, in order.
pub(crate) async fn events(
    conn: &mut AnyConnection,
    id: i64,
    from: i64,
) -> Result<Vec<(i64, serde_json::Value)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT seq, event FROM spawn_events WHERE server_id = $1 AND seq >= $2 ORDER BY seq",
    )
    .bind(id)
    .bind(from)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            let event: String = r.try_get("event")?;
            Ok((
                r.try_get("seq")?,
                serde_json::from_str(&event).unwrap_or(serde_json::Value::Null),
            ))
        })
        .collect()
}

/// Ask the owner of server `id`'s pending spawn to cancel it (a stop on another replica);
/// `false` when there is no lease to mark.
pub(crate) async fn request_cancel(conn: &mut AnyConnection, id: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE spawn_leases SET cancel = 1 WHERE server_id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Servers whose spawn `owner` runs and another replica asked to cancel.
pub(crate) async fn cancel_requests(
    conn: &mut AnyConnection,
    owner: &str,
) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT server_id FROM spawn_leases WHERE owner = $1 AND cancel = 1")
        .bind(owner)
        .fetch_all(conn)
        .await
}

/// Whether a cancel was asked for server `id`'s spawn.
pub(crate) async fn cancel_requested(
    conn: &mut AnyConnection,
    id: i64,
) -> Result<bool, sqlx::Error> {
    let c: Option<i64> = sqlx::query_scalar("SELECT cancel FROM spawn_leases WHERE server_id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await?;
    Ok(c == Some(1))
}
