//! What the hub adds to every spawn besides JupyterHub's environment: the user's quota (as
//! `SpawnRequest::quota` and `CPU_LIMIT` / `MEM_LIMIT` / `STACKHUB_QUOTA*`, with `max_servers`
//! enforced) and, for OpenID Connect users, a freshly refreshed access token
//! (`STACKHUB_ACCESS_TOKEN`, `STACKHUB_ACCESS_TOKEN_EXPIRES_AT`) the server can hand to remote
//! kernel gateways, with `STACKHUB_ACCESS_TOKEN_URL` (`GET …/users/{name}/oidc-token`, with the
//! server's own API token) to fetch a fresh one later.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use sqlx::Row;

use super::ServerRef;
use crate::auth::OidcAuth;
use crate::db::{self, Db};
use crate::error::ApiError;

/// Extra environment and limits for one spawn.
#[derive(Default)]
pub struct Prepared {
    /// Added to the server's environment (may hold tokens: never log values).
    pub env: BTreeMap<String, String>,
    /// Limits for the spawner.
    pub quota: spawner::Quota,
}

impl Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("quota", &self.quota)
            .finish()
    }
}

/// Called by the spawn pipeline before each start.
#[async_trait::async_trait]
pub trait PrepareSpawn: Send + Sync + Debug + 'static {
    /// The extra environment and the quota of `server`'s owner.
    ///
    /// # Errors
    /// An [`ApiError`] refusing the start (e.g. the quota's `max_servers` reached).
    async fn prepare(&self, server: &ServerRef) -> Result<Prepared, ApiError>;
}

/// The hub's [`PrepareSpawn`]: stored quota, and the identity provider's token when configured.
#[derive(Debug, Clone)]
pub struct HubPrepare {
    db: Db,
    oidc: Option<Arc<OidcAuth>>,
    hub_api_url: String,
}

impl HubPrepare {
    /// Over the hub's database, with the OIDC login if configured; `hub_api_url` is the API as
    /// servers reach it (`http://127.0.0.1:8081/hub/api`).
    pub fn new(db: Db, oidc: Option<Arc<OidcAuth>>, hub_api_url: String) -> Self {
        Self {
            db,
            oidc,
            hub_api_url,
        }
    }
}

#[async_trait::async_trait]
impl PrepareSpawn for HubPrepare {
    async fn prepare(&self, server: &ServerRef) -> Result<Prepared, ApiError> {
        let mut out = Prepared::default();
        let mut conn = self.db.pool().acquire().await?;
        if let Some(q) = crate::quota::of_user(&mut conn, server.user_id).await? {
            if let Some(max) = q.max_servers {
                let running: i64 = sqlx::query(
                    "SELECT COUNT(*) AS n FROM servers WHERE user_id = $1 AND name <> $2 \
                     AND (pending IS NOT NULL OR url IS NOT NULL)",
                )
                .bind(server.user_id)
                .bind(&server.server)
                .fetch_one(&mut *conn)
                .await?
                .try_get("n")?;
                if running >= i64::from(max) {
                    return Err(ApiError::BadRequest(format!(
                        "User {} already runs {running} servers, the most quota role {} allows",
                        server.user, q.role
                    )));
                }
            }
            out.env.extend(q.env());
            out.quota = q.spawner_quota();
        }
        drop(conn);
        if let Some(oidc) = &self.oidc
            && let Some(tokens) = oidc.fresh_tokens(&self.db, server.user_id).await?
        {
            out.env
                .insert("STACKHUB_ACCESS_TOKEN".to_owned(), tokens.access.clone());
            if let Some(t) = tokens.expires_at {
                out.env
                    .insert("STACKHUB_ACCESS_TOKEN_EXPIRES_AT".to_owned(), db::iso(t));
            }
            out.env.insert(
                "STACKHUB_ACCESS_TOKEN_URL".to_owned(),
                format!(
                    "{}/users/{}/oidc-token",
                    self.hub_api_url.trim_end_matches('/'),
                    crate::api::models::seg(&server.user)
                ),
            );
        }
        Ok(out)
    }
}
