//! AWS SDK clients on rustls + ring (one crypto provider in the binary), and SDK error mapping.

use std::time::Duration;

use aws_sdk_s3::config::{Credentials, Region, SharedHttpClient};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_http_client::tls;

use crate::Secret;
use crate::exchange::ExchangeError;

/// The endpoint, region and credentials a client talks with.
#[derive(Debug, Clone)]
pub(crate) struct Target<'a> {
    pub(crate) endpoint: &'a str,
    pub(crate) region: &'a str,
    pub(crate) access_key_id: &'a str,
    pub(crate) secret_access_key: &'a Secret,
    pub(crate) session_token: Option<&'a Secret>,
}

fn http_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

fn credentials(t: &Target<'_>) -> Credentials {
    Credentials::new(
        t.access_key_id,
        t.secret_access_key.expose(),
        t.session_token.map(|s| s.expose().to_owned()),
        None,
        "stackhub",
    )
}

fn timeouts() -> aws_sdk_s3::config::timeout::TimeoutConfig {
    aws_sdk_s3::config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .operation_timeout(Duration::from_secs(30))
        .build()
}

fn retries() -> aws_sdk_s3::config::retry::RetryConfig {
    aws_sdk_s3::config::retry::RetryConfig::standard().with_max_attempts(2)
}

/// An S3 client (path-style addressing: S3-compatible stores rarely have wildcard DNS).
pub(crate) fn s3(t: &Target<'_>) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(Region::new(t.region.to_owned()))
        .endpoint_url(t.endpoint)
        .credentials_provider(credentials(t))
        .force_path_style(true)
        .http_client(http_client())
        .timeout_config(timeouts())
        .retry_config(retries())
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// An STS client.
pub(crate) fn sts(t: &Target<'_>) -> aws_sdk_sts::Client {
    let config = aws_sdk_sts::Config::builder()
        .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
        .region(aws_sdk_sts::config::Region::new(t.region.to_owned()))
        .endpoint_url(t.endpoint)
        .credentials_provider(credentials(t))
        .http_client(http_client())
        .timeout_config(timeouts())
        .retry_config(retries())
        .build();
    aws_sdk_sts::Client::from_conf(config)
}

/// An IAM client.
pub(crate) fn iam(t: &Target<'_>) -> aws_sdk_iam::Client {
    let config = aws_sdk_iam::Config::builder()
        .behavior_version(aws_sdk_iam::config::BehaviorVersion::latest())
        .region(aws_sdk_iam::config::Region::new(t.region.to_owned()))
        .endpoint_url(t.endpoint)
        .credentials_provider(credentials(t))
        .http_client(http_client())
        .timeout_config(timeouts())
        .retry_config(retries())
        .build();
    aws_sdk_iam::Client::from_conf(config)
}

/// The store's error code, when it answered with one.
pub(crate) fn code<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> Option<&str> {
    match err {
        SdkError::ServiceError(e) => e.err().code(),
        _ => None,
    }
}

/// An SDK error as an [`ExchangeError`]: no answer = unreachable, otherwise code and message.
pub(crate) fn map_err<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    operation: &'static str,
    endpoint: &str,
    err: &SdkError<E, R>,
) -> ExchangeError {
    match err {
        SdkError::ServiceError(e) => {
            let e = e.err();
            ExchangeError::Store {
                operation,
                endpoint: endpoint.to_owned(),
                reason: format!(
                    "{}: {}",
                    e.code().unwrap_or("error"),
                    e.message().unwrap_or("no message")
                ),
            }
        }
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => ExchangeError::Unreachable {
            endpoint: endpoint.to_owned(),
            reason: match err {
                SdkError::TimeoutError(_) => "timed out".to_owned(),
                _ => std::error::Error::source(err)
                    .map_or_else(|| "connection failed".to_owned(), source_chain),
            },
        },
        other => ExchangeError::Store {
            operation,
            endpoint: endpoint.to_owned(),
            reason: source_chain(other),
        },
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

/// Make sure `bucket` exists (create it if missing).
pub(crate) async fn ensure_bucket(
    s3: &aws_sdk_s3::Client,
    endpoint: &str,
    bucket: &str,
) -> Result<(), ExchangeError> {
    match s3.head_bucket().bucket(bucket).send().await {
        Ok(_) => return Ok(()),
        Err(SdkError::ServiceError(e)) if e.raw().status().as_u16() == 404 => {}
        Err(e) => return Err(map_err("HeadBucket", endpoint, &e)),
    }
    match s3.create_bucket().bucket(bucket).send().await {
        Ok(_) => Ok(()),
        Err(e) if matches!(code(&e), Some("BucketAlreadyOwnedByYou")) => Ok(()),
        Err(e) => Err(map_err("CreateBucket", endpoint, &e)),
    }
}

/// Reachability: any answer from the store counts, unless it rejects our credentials.
pub(crate) async fn check_reachable(
    s3: &aws_sdk_s3::Client,
    endpoint: &str,
    bucket: &str,
) -> Result<(), ExchangeError> {
    match s3.head_bucket().bucket(bucket).send().await {
        Ok(_) => Ok(()),
        Err(SdkError::ServiceError(e)) => {
            let status = e.raw().status().as_u16();
            if status == 404 {
                Err(ExchangeError::Store {
                    operation: "HeadBucket",
                    endpoint: endpoint.to_owned(),
                    reason: format!("bucket {bucket} does not exist"),
                })
            } else if status >= 500 {
                Err(ExchangeError::Store {
                    operation: "HeadBucket",
                    endpoint: endpoint.to_owned(),
                    reason: format!("the store answered HTTP {status}"),
                })
            } else {
                // 403 from a confined key still proves the store is up and knows the bucket.
                Ok(())
            }
        }
        Err(e) => Err(map_err("HeadBucket", endpoint, &e)),
    }
}
