//! The provider's tokens at rest: sealed per browser session, refreshed before they are handed
//! out (spawns, `auth_state`), forgotten when the provider refuses a refresh.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::Mutex;

use super::{OidcAuth, TokenSet, store};
use crate::db;

impl OidcAuth {
    /// The user's auth state for `GET /users/{name}` with `admin:auth_state`: the stored state
    /// plus `access_token` / `access_token_expires_at` from a fresh (refreshed if needed) token.
    /// The refresh token never leaves the hub.
    ///
    /// # Errors
    /// The database error.
    pub(crate) async fn auth_state_with_tokens(
        &self,
        db: &db::Db,
        user: &db::UserRow,
    ) -> Result<Option<String>, sqlx::Error> {
        let Some(tokens) = self.fresh_tokens(db, user.id).await? else {
            return Ok(user.auth_state.clone());
        };
        let mut state = user
            .auth_state
            .as_deref()
            .and_then(|s| serde_json::from_str::<Value>(s).ok())
            .filter(Value::is_object)
            .unwrap_or_else(|| Value::Object(serde_json::Map::new()));
        state["access_token"] = Value::String(tokens.access);
        state["access_token_expires_at"] = db::iso_opt(tokens.expires_at);
        Ok(Some(state.to_string()))
    }

    /// The refresh lock of one user (entries nobody holds are dropped on the way).
    async fn refresh_lock(&self, user_id: i64) -> Arc<Mutex<()>> {
        let mut locks = self.refresh_locks.lock().await;
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        Arc::clone(locks.entry(user_id).or_default())
    }

    /// Seal a token set for storage: (access, refresh, id_token).
    pub(crate) fn seal(&self, set: &TokenSet) -> (String, Option<String>, Option<String>) {
        (
            self.cipher.seal(&set.access),
            set.refresh.as_deref().map(|r| self.cipher.seal(r)),
            set.id_token.as_deref().map(|t| self.cipher.seal(t)),
        )
    }

    /// Open a stored row; `None` if it cannot be decrypted.
    pub(crate) fn open(&self, row: &store::TokenRow) -> Option<TokenSet> {
        Some(TokenSet {
            access: self.cipher.open(&row.access_token).ok()?,
            refresh: match &row.refresh_token {
                Some(r) => Some(self.cipher.open(r).ok()?),
                None => None,
            },
            id_token: row
                .id_token
                .as_deref()
                .and_then(|t| self.cipher.open(t).ok()),
            expires_at: row.expires_at,
        })
    }

    /// A user's current access token from their newest session, refreshed first when it expires
    /// within `refresh_margin_secs`. `None` when there is none (never logged in through OIDC,
    /// logged out, or the refresh was refused: the stale tokens are then forgotten).
    ///
    /// # Errors
    /// The database error.
    pub(crate) async fn fresh_tokens(
        &self,
        db: &db::Db,
        user_id: i64,
    ) -> Result<Option<TokenSet>, sqlx::Error> {
        // One refresh at a time per user: providers rotate refresh tokens, so two concurrent
        // refreshes with the same token would make one of them fail.
        let lock = self.refresh_lock(user_id).await;
        let _guard = lock.lock().await;
        let mut conn = db.pool().acquire().await?;
        let Some(row) = store::latest_for_user(&mut conn, user_id).await? else {
            return Ok(None);
        };
        let Some(set) = self.open(&row) else {
            store::delete_tokens(&mut conn, row.id).await?;
            db.changed();
            return Ok(None);
        };
        let now = db::now_micros();
        let margin = i64::try_from(self.config.refresh_margin_secs).unwrap_or(0) * 1_000_000;
        if set.expires_at.is_none_or(|e| e - margin > now) {
            return Ok(Some(set));
        }
        let Some(refresh) = set.refresh.as_deref() else {
            return Ok((set.expires_at.is_none_or(|e| e > now)).then_some(set));
        };
        match self.refresh(refresh).await {
            Ok(new) => {
                let (access, refresh, _) = self.seal(&new);
                store::update_tokens(
                    &mut conn,
                    row.id,
                    &access,
                    refresh.as_deref(),
                    new.expires_at,
                    now,
                )
                .await?;
                db.changed();
                tracing::info!(user_id, "refreshed the identity provider's access token");
                Ok(Some(TokenSet {
                    refresh: new.refresh.or(set.refresh),
                    id_token: set.id_token,
                    ..new
                }))
            }
            Err(e) => {
                tracing::warn!(user_id, error = %e, "token refresh refused; forgetting the tokens");
                store::delete_tokens(&mut conn, row.id).await?;
                db.changed();
                Ok(None)
            }
        }
    }
}
