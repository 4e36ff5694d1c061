//! The embedded proxy's [`proxy::KernelChannelAuth`]: a remote-kernels server's kernel
//! WebSocket goes straight to its site's gateway when the client's hub token may access the
//! user's servers (`access:servers` on the owner); the proxy then presents a fresh hub token for
//! that user at the site. Unknown or expired tokens and tokens without access get `None` (403);
//! a database failure is an error (the proxy relays through the single-user server instead).
//! The check is on the very server the route belongs to, so a server's own OAuth token (the
//! one in its cookie, scoped `access:servers!server=NAME/SERVER`) passes for that server only.

use futures_util::future::BoxFuture;
use http::HeaderValue;
use proxy::{KernelAuthError, KernelChannelAuth};

use crate::extract::caller_for_token;
use crate::scopes::Resource;
use crate::state::AppState;

/// Authorises direct kernel channels with the hub's tokens and issues gateway credentials.
#[derive(Debug, Clone)]
pub struct HubKernelAuth {
    state: AppState,
}

impl HubKernelAuth {
    /// Over the hub's state (its database, caches and site registry).
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    async fn decide(
        &self,
        user: &str,
        server: &str,
        site: &str,
        token: &str,
    ) -> Result<Option<HeaderValue>, KernelAuthError> {
        let Some(caller) = caller_for_token(&self.state, token)
            .await
            .map_err(|e| KernelAuthError::new(format!("token lookup failed: {e}")))?
        else {
            return Ok(None);
        };
        let groups =
            match &caller.kind {
                crate::extract::CallerKind::User(u) if u.name == user => u.groups.clone(),
                _ => {
                    let mut conn =
                        self.state.db().pool().acquire().await.map_err(|e| {
                            KernelAuthError::new(format!("database unavailable: {e}"))
                        })?;
                    crate::db::users::get(&mut conn, user)
                        .await
                        .map_err(|e| KernelAuthError::new(format!("user lookup failed: {e}")))?
                        .map(|u| u.groups)
                        .unwrap_or_default()
                }
            };
        let res = Resource::Server {
            user,
            server,
            groups: &groups,
        };
        if !caller.allows("access:servers", res) {
            return Ok(None);
        }
        let registry = self
            .state
            .sites()
            .ok_or_else(|| KernelAuthError::new("no sites are configured"))?;
        let site = registry
            .site(site)
            .ok_or_else(|| KernelAuthError::new(format!("no such site: {site}")))?;
        let auth = site
            .gateway_authorization(user, &[])
            .map_err(|e| KernelAuthError::new(e.reason))?;
        let Some((value, _)) = auth else {
            return Err(KernelAuthError::new(format!(
                "site {} takes no per-user credentials",
                site.id
            )));
        };
        HeaderValue::from_str(&value)
            .map(Some)
            .map_err(|_| KernelAuthError::new("gateway credential is not a header value"))
    }
}

impl KernelChannelAuth for HubKernelAuth {
    fn authorize<'a>(
        &'a self,
        user: &'a str,
        server: &'a str,
        site: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Option<HeaderValue>, KernelAuthError>> {
        Box::pin(self.decide(user, server, site, token))
    }
}
