//! Error types of the proxy library, each naming what failed and on what.

use std::net::SocketAddr;
use std::path::PathBuf;

/// A route could not be added.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The route data has no string `target`.
    #[error("Must specify 'target' as string")]
    MissingTarget,
    /// The target is not a usable upstream URL.
    #[error("invalid target {target:?}: {reason}")]
    BadTarget {
        /// The target as given.
        target: String,
        /// Why it was refused.
        reason: &'static str,
    },
}

/// The proxy could not be configured or started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A TLS certificate or key file could not be read or parsed.
    #[error("TLS file {path}: {reason}")]
    Tls {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// Client certificates on a listener cannot be set up as configured.
    #[error("client certificates: {0}")]
    ClientAuth(String),
    /// The TLS client for https upstreams cannot be set up as configured.
    #[error("upstream TLS: {0}")]
    UpstreamTls(String),
    /// The default or error target is not a usable URL.
    #[error("{option}: {source}")]
    Target {
        /// The option that carried it.
        option: &'static str,
        /// Why it was refused.
        #[source]
        source: RouteError,
    },
    /// A `--custom-header` value is not `Name: value`.
    #[error("--custom-header {0:?}: expected 'Name: value'")]
    CustomHeader(String),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Why a request could not be forwarded; each maps to the status configurable-http-proxy uses.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ForwardError {
    #[error("no route for the request path")]
    NoRoute,
    #[error("malformed request: {0}")]
    BadRequest(&'static str),
    /// `upstream` is the target's `scheme://host:port` (never user info, path or query).
    #[error("upstream {upstream}: {reason}")]
    Upstream { upstream: String, reason: String },
}

impl ForwardError {
    pub(crate) fn status(&self) -> http::StatusCode {
        match self {
            Self::NoRoute => http::StatusCode::NOT_FOUND,
            Self::BadRequest(_) => http::StatusCode::BAD_REQUEST,
            Self::Upstream { .. } => http::StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}
