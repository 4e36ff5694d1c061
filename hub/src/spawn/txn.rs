//! The start and stop transactions: one database transaction per state change of a server.

use serde_json::json;

use super::names::Names;
use crate::db::{self, ClientRow, Db, NewToken, ServerRow};

/// Why the start transaction did not commit.
#[derive(Debug, thiserror::Error)]
pub(super) enum StartTxError {
    /// The owner already runs as many servers as the quota role allows.
    #[error("User {user} already runs {running} servers, the most quota role {role} allows")]
    MaxServers {
        /// The owner.
        user: String,
        /// Servers running now.
        running: i64,
        /// The quota role.
        role: String,
    },
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// What a start's transaction needs besides the server.
pub(super) struct Start<'a> {
    /// The server's new API token.
    pub token: &'a str,
    /// The scopes its OAuth client may grant.
    pub allowed_scopes: &'a [String],
    /// The owner's quota role's `max_servers`, with the role's name.
    pub max_servers: Option<(u32, &'a str)>,
    /// The replica that runs the spawn (takes its lease).
    pub owner: &'a str,
    /// A new spawn: the progress events of the last one are removed.
    pub fresh: bool,
}

/// In one transaction: check `max_servers` under the owner's row lock (so two starts cannot
/// both pass), replace the server's `Server at …` token by one for `token`, upsert its OAuth
/// client (secret = the token's hash, redirect URI = `<prefix>oauth_callback`), save `row`
/// (pending spawn, options, launch) and take the spawn's lease.
pub(super) async fn begin_start(
    db: &Db,
    n: &Names,
    row: &ServerRow,
    start: &Start<'_>,
) -> Result<(), StartTxError> {
    let Start {
        token,
        allowed_scopes,
        max_servers,
        owner,
        fresh,
    } = *start;
    let (user, server) = (&n.id.user, &n.id.name);
    let now = db::now_micros();
    let scopes = vec![
        format!("users:activity!user={user}"),
        format!("access:servers!server={user}/{server}"),
    ];
    let client = ClientRow {
        id: n.client_id.clone(),
        secret_hash: Some(db::hash_secret(token)),
        redirect_uri: n.redirect_uri(),
        description: n.note.clone(),
        allowed_scopes: allowed_scopes.to_vec(),
    };
    let hash = db::hash_secret(token);
    let mut tx = db.begin().await?;
    if let Some((max, role)) = max_servers {
        let running = db::servers::lock_and_count_active(&mut tx, row.user_id, row.id).await?;
        if running >= i64::from(max) {
            return Err(StartTxError::MaxServers {
                user: user.clone(),
                running,
                role: role.to_owned(),
            });
        }
    }
    db::tokens::delete_for_note(&mut tx, row.user_id, &n.note).await?;
    db::tokens::insert(
        &mut tx,
        &NewToken {
            hash: &hash,
            prefix: &token[..4],
            user_id: Some(row.user_id),
            service_id: None,
            scopes: &scopes,
            note: &n.note,
            created: now,
            expires_at: None,
            session_id: None,
            oauth_client: None,
        },
    )
    .await?;
    db::oauth::upsert_client(&mut tx, &client, now).await?;
    db::servers::save(&mut tx, row).await?;
    db::leases::hold(&mut tx, row.id, owner, super::lease::until()).await?;
    if fresh {
        db::leases::clear_events(&mut tx, row.id).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Remove a server's token and OAuth client and mark it stopped (or delete it), in one
/// transaction. `lease`: the replica doing it as the owner of the server's pending work, whose
/// lease is released; nothing is done (`false`) when another replica holds it now. `None`: a
/// clean-up on the leader's authority (start-up reconciliation), which drops any lease.
pub(super) async fn clear(
    db: &Db,
    n: &Names,
    row: &mut ServerRow,
    remove: bool,
    lease: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let mut tx = db.begin().await?;
    if let Some(owner) = lease {
        if !db::leases::may_write(&mut tx, row.id, owner).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        db::leases::release(&mut tx, row.id, owner).await?;
    } else {
        db::leases::drop_any(&mut tx, row.id).await?;
    }
    row.url = None;
    row.pending = None;
    row.state = json!({});
    db::tokens::delete_for_note(&mut tx, row.user_id, &n.note).await?;
    db::oauth::delete_client(&mut tx, &n.client_id).await?;
    if remove {
        db::servers::delete(&mut tx, row.id).await?;
    } else {
        db::servers::save(&mut tx, row).await?;
    }
    tx.commit().await?;
    Ok(true)
}
