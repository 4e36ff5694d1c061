//! What a kernel gets: its [`Space`] at a site and [`S3Credentials`] confined to it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::Secret;

/// Kernel environment: access key id.
pub const ENV_ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
/// Kernel environment: secret access key.
pub const ENV_SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
/// Kernel environment: session token (temporary credentials only).
pub const ENV_SESSION_TOKEN: &str = "AWS_SESSION_TOKEN";
/// Kernel environment: the S3 endpoint (boto3 ≥ 1.28 and the AWS SDKs read it).
pub const ENV_ENDPOINT_URL: &str = "AWS_ENDPOINT_URL";
/// Kernel environment: the region (boto3).
pub const ENV_DEFAULT_REGION: &str = "AWS_DEFAULT_REGION";
/// Kernel environment: the region (AWS SDKs other than boto3).
pub const ENV_REGION: &str = "AWS_REGION";
/// Kernel environment: the bucket holding the user's space.
pub const ENV_BUCKET: &str = "STACKHUB_S3_BUCKET";
/// Kernel environment: the user's prefix in that bucket (`users/NAME/`).
pub const ENV_PREFIX: &str = "STACKHUB_S3_PREFIX";

/// The variables a kernel start must carry at a remote site (the gateway checks the same list).
pub const REQUIRED_KERNEL_ENV: &[&str] = &[
    ENV_ACCESS_KEY_ID,
    ENV_SECRET_ACCESS_KEY,
    ENV_ENDPOINT_URL,
    ENV_DEFAULT_REGION,
    ENV_BUCKET,
    ENV_PREFIX,
];

/// Where a user's data lives at a site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Space {
    /// The S3 endpoint (`https://s3.lumi.data.destination-earth.eu`).
    pub endpoint: String,
    /// The region (`DEDL-LUMI`).
    pub region: String,
    /// The bucket.
    pub bucket: String,
    /// The user's prefix, ending in `/` (`users/alice/`).
    pub prefix: String,
}

impl Space {
    /// Where the space is, as environment: [`ENV_ENDPOINT_URL`], the region (both
    /// [`ENV_DEFAULT_REGION`] and [`ENV_REGION`]), [`ENV_BUCKET`] and [`ENV_PREFIX`]. No
    /// credential.
    pub fn env(&self) -> BTreeMap<String, String> {
        [
            (ENV_ENDPOINT_URL, &self.endpoint),
            (ENV_DEFAULT_REGION, &self.region),
            (ENV_REGION, &self.region),
            (ENV_BUCKET, &self.bucket),
            (ENV_PREFIX, &self.prefix),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.clone()))
        .collect()
    }
}

/// Credentials for a [`Space`]. `Debug` shows the access key id only.
#[derive(Clone)]
pub struct S3Credentials {
    /// Access key id (not secret: it names the key).
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: Secret,
    /// Session token of temporary credentials.
    pub session_token: Option<Secret>,
    /// When temporary credentials expire.
    pub expires_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"***")
            .field("session_token", &self.session_token.as_ref().map(|_| "***"))
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// A user's space at a site and credentials confined to it.
#[derive(Debug, Clone)]
pub struct Grant {
    /// Where.
    pub space: Space,
    /// With what.
    pub credentials: S3Credentials,
}

impl Grant {
    /// The kernel's environment: the standard `AWS_*` variables (so `boto3.client('s3')` with no
    /// arguments works) plus [`ENV_BUCKET`] and [`ENV_PREFIX`].
    pub fn kernel_env(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        let mut put = |k: &str, v: &str| {
            env.insert(k.to_owned(), v.to_owned());
        };
        put(ENV_ACCESS_KEY_ID, &self.credentials.access_key_id);
        put(
            ENV_SECRET_ACCESS_KEY,
            self.credentials.secret_access_key.expose(),
        );
        if let Some(token) = &self.credentials.session_token {
            put(ENV_SESSION_TOKEN, token.expose());
        }
        env.extend(self.space.env());
        env
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_and_env_is_complete() {
        let g = Grant {
            space: Space {
                endpoint: "http://127.0.0.1:9000".into(),
                region: "DEDL-LUMI".into(),
                bucket: "b".into(),
                prefix: "users/alice/".into(),
            },
            credentials: S3Credentials {
                access_key_id: "ASIAEXAMPLE".into(),
                secret_access_key: Secret::new("very-secret-key"),
                session_token: Some(Secret::new("very-secret-token")),
                expires_at: None,
            },
        };
        let dbg = format!("{g:?}");
        assert!(dbg.contains("ASIAEXAMPLE"), "{dbg}");
        assert!(!dbg.contains("very-secret"), "{dbg}");
        let env = g.kernel_env();
        for k in REQUIRED_KERNEL_ENV {
            assert!(env.contains_key(*k), "{k} missing");
        }
        assert_eq!(env[ENV_SESSION_TOKEN], "very-secret-token");
    }
}
