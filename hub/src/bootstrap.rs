//! Start-up work: register the bootstrap admin token (`STACKHUB_ADMIN_TOKEN`) as a token of a
//! service holding the `admin` role's scopes. Only the token's hash is stored; a restart with
//! another value replaces it.

use crate::db::{self, Db};
use crate::scopes::ADMIN_ROLE_SCOPES;

/// Registering the bootstrap token failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot register the bootstrap admin token: {0}")]
pub struct BootstrapError(#[source] sqlx::Error);

/// Store `token` (if any) as the only token of service `service`, with admin scopes.
///
/// # Errors
/// [`BootstrapError`] if the database fails.
pub async fn bootstrap_admin_token(
    db: &Db,
    service: &str,
    token: Option<&crate::config::Secret>,
) -> Result<(), BootstrapError> {
    let Some(token) = token else { return Ok(()) };
    let scopes: Vec<String> = ADMIN_ROLE_SCOPES.iter().map(|s| (*s).to_owned()).collect();
    let run = async {
        let mut tx = db.begin().await?;
        let id = db::tokens::ensure_service(&mut tx, service, true, &scopes).await?;
        db::tokens::delete_for_service(&mut tx, id).await?;
        let secret = token.expose();
        db::tokens::insert(
            &mut tx,
            &db::NewToken {
                hash: &db::hash_secret(secret),
                prefix: secret.get(..4).unwrap_or_default(),
                user_id: None,
                service_id: Some(id),
                scopes: &["inherit".to_owned()],
                note: "bootstrap admin token (STACKHUB_ADMIN_TOKEN)",
                created: db::now_micros(),
                expires_at: None,
                session_id: None,
                oauth_client: None,
            },
        )
        .await?;
        tx.commit().await
    };
    run.await.map_err(BootstrapError)
}
