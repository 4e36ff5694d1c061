//! [`StsExchange`]: STS `AssumeRole` against an S3-compatible store.
//!
//! Provisioning a user's space: the bucket exists (created if missing), then either
//! - per-user roles (no `role_arn` configured): an IAM role `ROLE_PREFIX + NAME` whose policy
//!   confines it to `users/NAME/`, created or updated on every provision; or
//! - a fixed role (`role_arn`): the confinement is the session policy alone (stores that honour
//!   session policies: AWS, MinIO, Ceph RGW).
//!
//! The session policy is sent in both modes. Credentials last `duration_secs`.

use async_trait::async_trait;

use crate::exchange::{Exchange, ExchangeError, user_prefix};
use crate::grant::{Grant, S3Credentials, Space};
use crate::policy::confined_policy;
use crate::sdk;
use crate::secret::Secret;

/// A site's STS settings.
#[derive(Debug, Clone)]
pub struct StsConfig {
    /// S3 endpoint handed to kernels.
    pub endpoint: String,
    /// STS and IAM endpoint; default: `endpoint`.
    pub sts_endpoint: Option<String>,
    /// Region.
    pub region: String,
    /// Bucket holding the users' prefixes.
    pub bucket: String,
    /// The hub's own key (may create buckets, roles, and assume them).
    pub access_key_id: String,
    /// Its secret.
    pub secret_access_key: Secret,
    /// A fixed role to assume; `None` = one IAM role per user.
    pub role_arn: Option<String>,
    /// Name prefix of per-user roles.
    pub role_prefix: String,
    /// Lifetime of issued credentials, seconds (900..=43200).
    pub duration_secs: i32,
}

/// Issues temporary credentials through STS `AssumeRole`.
#[derive(Debug, Clone)]
pub struct StsExchange {
    config: StsConfig,
}

const TRUST_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"sts:AssumeRole"}]}"#;

impl StsExchange {
    /// An exchange with these settings.
    ///
    /// # Errors
    /// [`ExchangeError::Config`] for an unusable duration.
    pub fn new(config: StsConfig) -> Result<Self, ExchangeError> {
        if !(900..=43200).contains(&config.duration_secs) {
            return Err(ExchangeError::Config(
                "duration_secs must be between 900 and 43200".to_owned(),
            ));
        }
        Ok(Self { config })
    }

    fn target<'a>(&'a self, endpoint: &'a str) -> sdk::Target<'a> {
        sdk::Target {
            endpoint,
            region: &self.config.region,
            access_key_id: &self.config.access_key_id,
            secret_access_key: &self.config.secret_access_key,
            session_token: None,
        }
    }

    fn sts_endpoint(&self) -> &str {
        self.config
            .sts_endpoint
            .as_deref()
            .unwrap_or(&self.config.endpoint)
    }

    /// IAM role names allow `[\w+=,.@-]{1,64}`: other characters become `-` and a hash of the
    /// real name keeps distinct users apart.
    fn role_name(&self, user: &str) -> String {
        let clean: String = user
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let mut name = format!("{}{clean}", self.config.role_prefix);
        if clean != user || name.len() > 64 {
            use sha2::Digest;
            let h = hex::encode(&sha2::Sha256::digest(user.as_bytes())[..4]);
            name.truncate(64 - 9);
            name = format!("{name}-{h}");
        }
        name
    }

    async fn ensure_role(&self, user: &str, policy: &str) -> Result<String, ExchangeError> {
        let endpoint = self.sts_endpoint();
        let iam = sdk::iam(&self.target(endpoint));
        let name = self.role_name(user);
        let arn = match iam
            .create_role()
            .role_name(&name)
            .assume_role_policy_document(TRUST_POLICY)
            .send()
            .await
        {
            Ok(out) => out.role().map(|r| r.arn().to_owned()),
            Err(e) if matches!(sdk::code(&e), Some("EntityAlreadyExists")) => iam
                .get_role()
                .role_name(&name)
                .send()
                .await
                .map_err(|e| sdk::map_err("GetRole", endpoint, &e))?
                .role()
                .map(|r| r.arn().to_owned()),
            Err(e) => return Err(sdk::map_err("CreateRole", endpoint, &e)),
        };
        let arn = arn.ok_or_else(|| ExchangeError::Store {
            operation: "CreateRole",
            endpoint: endpoint.to_owned(),
            reason: format!("no ARN returned for role {name}"),
        })?;
        iam.put_role_policy()
            .role_name(&name)
            .policy_name("stackhub-space")
            .policy_document(policy)
            .send()
            .await
            .map_err(|e| sdk::map_err("PutRolePolicy", endpoint, &e))?;
        Ok(arn)
    }
}

/// STS session names allow `[\w+=,.@-]{2,64}`.
fn session_name(user: &str) -> String {
    let mut s: String = user
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    while s.len() < 2 {
        s.push('-');
    }
    s
}

#[async_trait]
impl Exchange for StsExchange {
    fn space(&self, user: &str) -> Result<Space, ExchangeError> {
        Ok(Space {
            endpoint: self.config.endpoint.clone(),
            region: self.config.region.clone(),
            bucket: self.config.bucket.clone(),
            prefix: user_prefix(user)?,
        })
    }

    async fn provision(&self, user: &str) -> Result<Grant, ExchangeError> {
        let space = self.space(user)?;
        let s3 = sdk::s3(&self.target(&self.config.endpoint));
        sdk::ensure_bucket(&s3, &self.config.endpoint, &space.bucket).await?;
        let policy = confined_policy(&space.bucket, &space.prefix).to_string();
        let role_arn = match &self.config.role_arn {
            Some(arn) => arn.clone(),
            None => self.ensure_role(user, &policy).await?,
        };
        let endpoint = self.sts_endpoint();
        let out = sdk::sts(&self.target(endpoint))
            .assume_role()
            .role_arn(role_arn)
            .role_session_name(session_name(user))
            .policy(policy)
            .duration_seconds(self.config.duration_secs)
            .send()
            .await
            .map_err(|e| sdk::map_err("AssumeRole", endpoint, &e))?;
        let c = out.credentials().ok_or_else(|| ExchangeError::Store {
            operation: "AssumeRole",
            endpoint: endpoint.to_owned(),
            reason: "no credentials in the answer".to_owned(),
        })?;
        let expires_at = chrono::DateTime::from_timestamp(c.expiration().secs(), 0);
        tracing::debug!(
            user,
            access_key_id = c.access_key_id(),
            "issued S3 credentials"
        );
        Ok(Grant {
            space,
            credentials: S3Credentials {
                access_key_id: c.access_key_id().to_owned(),
                secret_access_key: Secret::new(c.secret_access_key()),
                session_token: Some(Secret::new(c.session_token())),
                expires_at,
            },
        })
    }

    async fn check(&self) -> Result<(), ExchangeError> {
        let s3 = sdk::s3(&self.target(&self.config.endpoint));
        s3.list_buckets()
            .send()
            .await
            .map(|_| ())
            .map_err(|e| sdk::map_err("ListBuckets", &self.config.endpoint, &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_and_session_names_are_valid() {
        let x = StsExchange::new(StsConfig {
            endpoint: "http://x".into(),
            sts_endpoint: None,
            region: "r".into(),
            bucket: "b".into(),
            access_key_id: "k".into(),
            secret_access_key: Secret::new("s"),
            role_arn: None,
            role_prefix: "stackhub-user-".into(),
            duration_secs: 3600,
        })
        .unwrap();
        assert_eq!(x.role_name("alice"), "stackhub-user-alice");
        let odd = x.role_name("jörg smith");
        assert!(odd.starts_with("stackhub-user-j-rg-smith-"), "{odd}");
        assert_ne!(odd, x.role_name("jörg_smith"));
        assert!(x.role_name(&"a".repeat(200)).len() <= 64);
        assert_eq!(session_name("a"), "a-");
    }
}
