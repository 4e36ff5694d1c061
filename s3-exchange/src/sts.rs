//! [`StsExchange`]: STS `AssumeRole` against an S3-compatible store.
//!
//! Provisioning a user's space: the bucket exists (created if missing), then either
//! - per-user roles (no `role_arn` configured): an IAM role `ROLE_PREFIX + NAME` whose policy
//!   confines it to `users/NAME/`, created or updated on every provision; or
//! - a fixed role (`role_arn`): the confinement is the session policy alone (stores that honour
//!   session policies: AWS, MinIO, Ceph RGW).
//!
//! The session policy is sent in both modes. Credentials last `duration_secs`.
//!
//! A per-user role trusts one principal only: `trusted_principal`, by default the hub's own
//! identity (`GetCallerIdentity` of its key). Roles made by older versions, which trusted `*`,
//! get that trust policy back on their next provision.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use tokio::sync::OnceCell;

use crate::Secret;
use crate::exchange::{Exchange, ExchangeError, user_prefix};
use crate::grant::{Grant, S3Credentials, Space};
use crate::policy::{confined_policy, trust_policy, trusts_any_principal};
use crate::sdk;

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
    /// The one principal (ARN) per-user roles trust; `None` = the identity of
    /// `access_key_id` (STS `GetCallerIdentity`).
    pub trusted_principal: Option<String>,
    /// Lifetime of issued credentials, seconds (900..=43200).
    pub duration_secs: i32,
}

/// Issues temporary credentials through STS `AssumeRole`.
#[derive(Debug, Clone)]
pub struct StsExchange {
    config: StsConfig,
    /// The trust policy of per-user roles, made once.
    trust: Arc<OnceCell<String>>,
    /// The fixed role's trust policy could not be read, and the log said so.
    trust_unchecked_logged: Arc<AtomicBool>,
}

impl StsExchange {
    /// An exchange with these settings.
    ///
    /// # Errors
    /// [`ExchangeError::Config`] for an unusable duration or trusted principal.
    pub fn new(config: StsConfig) -> Result<Self, ExchangeError> {
        if !(900..=43200).contains(&config.duration_secs) {
            return Err(ExchangeError::Config(
                "duration_secs must be between 900 and 43200".to_owned(),
            ));
        }
        if let Some(p) = &config.trusted_principal {
            trust_policy(p).map_err(|e| ExchangeError::Config(e.to_string()))?;
        }
        Ok(Self {
            config,
            trust: Arc::new(OnceCell::new()),
            trust_unchecked_logged: Arc::new(AtomicBool::new(false)),
        })
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

    /// The trust policy naming the configured principal, or the hub's own identity.
    async fn trust_policy(&self) -> Result<&str, ExchangeError> {
        let made = self.trust.get_or_try_init(|| async {
            let principal = match &self.config.trusted_principal {
                Some(p) => p.clone(),
                None => self.caller_arn().await?,
            };
            trust_policy(&principal)
                .map(|p| p.to_string())
                .map_err(|e| ExchangeError::Config(e.to_string()))
        });
        made.await.map(String::as_str)
    }

    /// The ARN of the hub's key (an IAM user or role). A role session's ARN names one session
    /// only, so it cannot be trusted for later ones: the operator names the role instead.
    async fn caller_arn(&self) -> Result<String, ExchangeError> {
        let endpoint = self.sts_endpoint();
        let out = sdk::sts(&self.target(endpoint))
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| sdk::map_err("GetCallerIdentity", endpoint, &e))?;
        let arn = out.arn().unwrap_or_default().to_owned();
        if arn.contains(":assumed-role/") {
            return Err(ExchangeError::Config(format!(
                "the hub's S3 key is a role session ({arn}): set trusted_principal to the ARN of the role per-user roles may trust"
            )));
        }
        if arn.is_empty() {
            return Err(ExchangeError::Store {
                operation: "GetCallerIdentity",
                endpoint: endpoint.to_owned(),
                reason: "no ARN in the answer; set trusted_principal".to_owned(),
            });
        }
        Ok(arn)
    }

    async fn ensure_role(&self, user: &str, policy: &str) -> Result<String, ExchangeError> {
        let trust = self.trust_policy().await?;
        let endpoint = self.sts_endpoint();
        let iam = sdk::iam(&self.target(endpoint));
        let name = self.role_name(user);
        let arn = match iam
            .create_role()
            .role_name(&name)
            .assume_role_policy_document(trust)
            .send()
            .await
        {
            Ok(out) => out.role().map(|r| r.arn().to_owned()),
            Err(e) if matches!(sdk::code(&e), Some("EntityAlreadyExists")) => {
                // A role made before (perhaps trusting `*`) trusts the hub alone from now on.
                iam.update_assume_role_policy()
                    .role_name(&name)
                    .policy_document(trust)
                    .send()
                    .await
                    .map_err(|e| sdk::map_err("UpdateAssumeRolePolicy", endpoint, &e))?;
                iam.get_role()
                    .role_name(&name)
                    .send()
                    .await
                    .map_err(|e| sdk::map_err("GetRole", endpoint, &e))?
                    .role()
                    .map(|r| r.arn().to_owned())
            }
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

impl StsExchange {
    /// A configured fixed role must not trust every principal: whoever assumed it without the
    /// hub's session policy would reach every user's space. Stores that do not let the hub read
    /// the role (`iam:GetRole`) get a warning, not a refusal.
    async fn check_fixed_role_trust(&self) -> Result<(), ExchangeError> {
        let Some(arn) = &self.config.role_arn else {
            return Ok(());
        };
        let name = arn.rsplit('/').next().unwrap_or(arn);
        let endpoint = self.sts_endpoint();
        let got = sdk::iam(&self.target(endpoint))
            .get_role()
            .role_name(name)
            .send()
            .await;
        let doc = match got {
            Ok(out) => out
                .role()
                .and_then(|r| r.assume_role_policy_document())
                .map(str::to_owned),
            Err(e) => {
                if !self.trust_unchecked_logged.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        role = %arn,
                        error = %sdk::map_err("GetRole", endpoint, &e),
                        "cannot read the fixed role's trust policy to check that it names its principals"
                    );
                }
                return Ok(());
            }
        };
        match doc.as_deref().and_then(trusts_any_principal) {
            Some(true) => Err(ExchangeError::Config(format!(
                "role {arn} trusts every principal (Principal \"*\"): its trust policy must name the hub's principal"
            ))),
            Some(false) => Ok(()),
            None => {
                if !self.trust_unchecked_logged.swap(true, Ordering::Relaxed) {
                    tracing::warn!(role = %arn, "the fixed role's trust policy is unreadable");
                }
                Ok(())
            }
        }
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
        let policy = confined_policy(&space.bucket, &space.prefix)?.to_string();
        let s3 = sdk::s3(&self.target(&self.config.endpoint));
        sdk::ensure_bucket(&s3, &self.config.endpoint, &space.bucket).await?;
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
            .map_err(|e| sdk::map_err("ListBuckets", &self.config.endpoint, &e))?;
        self.check_fixed_role_trust().await
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
            trusted_principal: None,
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
