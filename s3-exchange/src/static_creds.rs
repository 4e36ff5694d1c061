//! [`StaticExchange`]: credentials the operator configured for a site (stores without STS).

use async_trait::async_trait;

use crate::Secret;
use crate::exchange::{Exchange, ExchangeError, user_prefix};
use crate::grant::{Grant, S3Credentials, Space};
use crate::sdk;

/// A site's static S3 settings.
#[derive(Debug, Clone)]
pub struct StaticConfig {
    /// S3 endpoint.
    pub endpoint: String,
    /// Region.
    pub region: String,
    /// Bucket holding the users' prefixes.
    pub bucket: String,
    /// Access key id handed to kernels.
    pub access_key_id: String,
    /// Its secret.
    pub secret_access_key: Secret,
}

/// Hands every user of a site the configured credentials with their `users/NAME/` prefix. The
/// store (not the hub) must confine the key; use this only where STS is unavailable.
#[derive(Debug, Clone)]
pub struct StaticExchange {
    config: StaticConfig,
}

impl StaticExchange {
    /// An exchange with these settings.
    pub fn new(config: StaticConfig) -> Self {
        Self { config }
    }

    fn target(&self) -> sdk::Target<'_> {
        sdk::Target {
            endpoint: &self.config.endpoint,
            region: &self.config.region,
            access_key_id: &self.config.access_key_id,
            secret_access_key: &self.config.secret_access_key,
            session_token: None,
        }
    }
}

#[async_trait]
impl Exchange for StaticExchange {
    fn space(&self, user: &str) -> Result<Space, ExchangeError> {
        Ok(Space {
            endpoint: self.config.endpoint.clone(),
            region: self.config.region.clone(),
            bucket: self.config.bucket.clone(),
            prefix: user_prefix(user)?,
        })
    }

    async fn provision(&self, user: &str) -> Result<Grant, ExchangeError> {
        Ok(Grant {
            space: self.space(user)?,
            credentials: S3Credentials {
                access_key_id: self.config.access_key_id.clone(),
                secret_access_key: self.config.secret_access_key.clone(),
                session_token: None,
                expires_at: None,
            },
        })
    }

    async fn check(&self) -> Result<(), ExchangeError> {
        let s3 = sdk::s3(&self.target());
        sdk::check_reachable(&s3, &self.config.endpoint, &self.config.bucket).await
    }
}
