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

/// In one transaction: check `max_servers` under the owner's row lock (so two starts cannot
/// both pass), replace the server's `Server at …` token by one for `token`, upsert its OAuth
/// client (secret = the token's hash, redirect URI = `<prefix>oauth_callback`) and save `row`
/// (pending spawn, options, launch).
pub(super) async fn begin_start(
    db: &Db,
    n: &Names,
    row: &ServerRow,
    token: &str,
    allowed_scopes: &[String],
    max_servers: Option<(u32, &str)>,
) -> Result<(), StartTxError> {
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
    tx.commit().await?;
    Ok(())
}

/// Remove a server's token and OAuth client and mark it stopped (or delete it), in one
/// transaction.
pub(super) async fn clear(
    db: &Db,
    n: &Names,
    row: &mut ServerRow,
    remove: bool,
) -> Result<(), sqlx::Error> {
    row.url = None;
    row.pending = None;
    row.state = json!({});
    let mut tx = db.begin().await?;
    db::tokens::delete_for_note(&mut tx, row.user_id, &n.note).await?;
    db::oauth::delete_client(&mut tx, &n.client_id).await?;
    if remove {
        db::servers::delete(&mut tx, row.id).await?;
    } else {
        db::servers::save(&mut tx, row).await?;
    }
    tx.commit().await
}
