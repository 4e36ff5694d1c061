//! S3 as the exchange layer of remote kernels.
//!
//! A remote kernel has no home directory at its site: data and results move through the site's
//! object store. For every remote kernel the hub asks an [`Exchange`] to provision the user's
//! space at that site (a `users/NAME/` prefix in a bucket) and to issue temporary credentials
//! confined to it; the [`Grant`] becomes the kernel's `AWS_*` environment
//! ([`Grant::kernel_env`]).
//!
//! # Layout
//! - `grant`: [`Space`], [`S3Credentials`], [`Grant`] and the kernel environment names.
//! - `exchange`: the [`Exchange`] seam and [`ExchangeError`].
//! - `static_creds`: [`StaticExchange`], operator-configured credentials.
//! - `sts`: [`StsExchange`], STS `AssumeRole` against an S3-compatible store (IAM per-user roles
//!   or a fixed role plus a session policy).
//! - `embedded`: [`EmbeddedS3`], an S3 server (`s3s-fs`) with a small STS endpoint issuing
//!   prefix-confined temporary credentials; [`EmbeddedExchange`] issues them in-process.
//!
//! Secrets never appear in `Debug` output, logs or error messages.

mod embedded;
mod exchange;
mod grant;
mod policy;
mod sdk;
mod static_creds;
mod sts;

pub use self::embedded::{EmbeddedConfig, EmbeddedExchange, EmbeddedS3, StartError};
pub use self::exchange::{Exchange, ExchangeError, user_prefix};
pub use self::grant::{
    ENV_ACCESS_KEY_ID, ENV_BUCKET, ENV_DEFAULT_REGION, ENV_ENDPOINT_URL, ENV_PREFIX, ENV_REGION,
    ENV_SECRET_ACCESS_KEY, ENV_SESSION_TOKEN, Grant, REQUIRED_KERNEL_ENV, S3Credentials, Space,
};
pub use self::policy::{PolicyError, confined_policy, trust_policy};
pub use self::static_creds::{StaticConfig, StaticExchange};
pub use self::sts::{StsConfig, StsExchange};
pub use stackhub_common::Secret;
