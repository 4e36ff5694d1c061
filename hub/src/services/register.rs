//! Start-up: the database and the proxy follow the configured services.

use crate::db::{self, ClientRow, Db, NewToken};
use crate::proxy::{Proxy, ProxyError};

use super::Services;

/// Registering the services failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// The database failed.
    #[error("cannot register the services in the database: {0}")]
    Db(#[from] sqlx::Error),
    /// A proxy route could not be added.
    #[error("cannot route service {service}: {source}")]
    Route {
        /// The service.
        service: String,
        /// Why.
        #[source]
        source: ProxyError,
    },
}

impl Services {
    /// Store every service with its roles' scopes, its token (replacing the previous ones) and
    /// its OAuth client; remove services (and their `service-` OAuth clients) no longer
    /// configured, except `keep` (the bootstrap admin token's service).
    ///
    /// # Errors
    /// [`RegisterError::Db`].
    pub async fn register(&self, db: &Db, keep: &str) -> Result<(), RegisterError> {
        let now = db::now_micros();
        let mut tx = db.begin().await?;
        for (id, name) in db::tokens::services(&mut tx).await? {
            if name != keep && self.get(&name).is_none() {
                tracing::info!(service = %name, "removing a service no longer configured");
                db::tokens::delete_service(&mut tx, id).await?;
            }
        }
        for id in db::oauth::client_ids_with_prefix(&mut tx, "service-").await? {
            if self.by_client(&id).is_none() {
                db::oauth::delete_client(&mut tx, &id).await?;
            }
        }
        for s in self.iter() {
            let id = db::tokens::ensure_service(&mut tx, s.name(), false, &s.scopes).await?;
            db::tokens::delete_for_service(&mut tx, id).await?;
            if let Some(token) = s.token() {
                let secret = token.expose();
                let note = if s.config.api_token.is_some() {
                    "service token (from the config)"
                } else {
                    "service token (made at start-up)"
                };
                db::tokens::insert(
                    &mut tx,
                    &NewToken {
                        hash: &db::hash_secret(secret),
                        prefix: secret.get(..4).unwrap_or_default(),
                        user_id: None,
                        service_id: Some(id),
                        scopes: &["inherit".to_owned()],
                        note,
                        created: now,
                        expires_at: None,
                        session_id: None,
                        oauth_client: None,
                    },
                )
                .await?;
            }
            if let Some(oauth) = &s.oauth {
                let client = ClientRow {
                    id: oauth.client_id.clone(),
                    // The client secret is the service's API token, as JupyterHub's.
                    secret_hash: s.token().map(|t| db::hash_secret(t.expose())),
                    redirect_uri: oauth.redirect_uri.clone(),
                    description: format!("JupyterHub service {}", s.name()),
                    allowed_scopes: oauth.allowed_scopes.clone(),
                };
                db::oauth::upsert_client(&mut tx, &client, now).await?;
            }
            tracing::info!(
                service = %s.name(),
                managed = s.config.managed(),
                url = s.config.url.as_deref().unwrap_or(""),
                roles = ?s.roles,
                "service registered"
            );
        }
        tx.commit().await?;
        Ok(())
    }

    /// Route `/services/NAME/` to each service with a `url`.
    ///
    /// # Errors
    /// [`RegisterError::Route`] naming the service.
    pub async fn add_routes(&self, proxy: &dyn Proxy) -> Result<(), RegisterError> {
        for s in self.iter() {
            let Some(url) = &s.config.url else { continue };
            proxy
                .add_route(&s.prefix, url, s.route_data())
                .await
                .map_err(|source| RegisterError::Route {
                    service: s.name().to_owned(),
                    source,
                })?;
        }
        Ok(())
    }
}
