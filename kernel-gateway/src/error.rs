//! Errors of the gateway and their HTTP form: `{"reason": ..., "message": ...}` (EG/KG
//! `JSONErrorsMixin`), `Content-Type: application/json`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use thiserror::Error;

use crate::launcher::LaunchError;

/// Everything an API call can fail with. Messages name their subject and never carry secrets.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// No kernel with this id (or not the caller's).
    #[error("Kernel does not exist: {kernel_id}")]
    KernelNotFound {
        /// The id asked for.
        kernel_id: String,
    },
    /// No kernelspec with this name.
    #[error("No such kernel named {name}")]
    KernelSpecNotFound {
        /// The name asked for.
        name: String,
    },
    /// The user may not use this kernelspec.
    #[error("User '{user}' is not authorized to start kernel '{kernel_name}'")]
    NotAuthorized {
        /// The caller.
        user: String,
        /// The kernelspec.
        kernel_name: String,
    },
    /// The user already runs (or is starting) the maximum number of kernels.
    #[error("User '{user}' has reached the limit of {max} kernels")]
    UserLimit {
        /// The caller.
        user: String,
        /// The limit.
        max: i64,
    },
    /// The request body is unusable.
    #[error("{0}")]
    BadRequest(String),
    /// Missing or wrong credentials.
    #[error("missing or invalid token")]
    Unauthenticated,
    /// A JWT bearer was refused (expired, bad signature, wrong audience, ...).
    #[error("invalid bearer token: {0}")]
    InvalidToken(#[source] crate::jwt::JwtError),
    /// The caller is authenticated but lacks the role this gateway requires.
    #[error("User '{user}' does not hold the required role '{role}'")]
    MissingRole {
        /// The caller.
        user: String,
        /// The role required.
        role: String,
    },
    /// The identity provider's keys cannot be fetched, so no bearer can be checked.
    #[error("cannot verify bearer tokens now: the identity provider's keys are unavailable")]
    IdentityProviderUnavailable,
    /// A browser request from an origin `allow_origin` does not allow.
    #[error("Origin {origin} is not allowed")]
    OriginNotAllowed {
        /// The `Origin` header.
        origin: String,
    },
    /// The launcher could not start the kernel process.
    #[error("kernel {kernel_id} ({kernel_name}) failed to launch: {source}")]
    Launch {
        /// The kernel.
        kernel_id: String,
        /// Its kernelspec.
        kernel_name: String,
        /// Why.
        #[source]
        source: LaunchError,
    },
    /// The kernel process exited before answering `kernel_info`.
    #[error("kernel {kernel_id} ({kernel_name}) died during start: {detail}")]
    DiedDuringStart {
        /// The kernel.
        kernel_id: String,
        /// Its kernelspec.
        kernel_name: String,
        /// Exit status and last stderr line.
        detail: String,
    },
    /// The kernel did not answer `kernel_info` in time.
    #[error(
        "kernel {kernel_id} ({kernel_name}) did not answer kernel_info within {secs}s; \
         to fix: raise KERNEL_LAUNCH_TIMEOUT or kernel_launch_timeout"
    )]
    LaunchTimeout {
        /// The kernel.
        kernel_id: String,
        /// Its kernelspec.
        kernel_name: String,
        /// The timeout.
        secs: u64,
    },
    /// A kernel operation (interrupt, restart) failed at run time.
    #[error("kernel {kernel_id}: {what} failed: {detail}")]
    Operation {
        /// The kernel.
        kernel_id: String,
        /// Which operation.
        what: &'static str,
        /// Why.
        detail: String,
    },
}

impl GatewayError {
    /// HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::KernelNotFound { .. } | GatewayError::KernelSpecNotFound { .. } => {
                StatusCode::NOT_FOUND
            }
            GatewayError::NotAuthorized { .. }
            | GatewayError::UserLimit { .. }
            | GatewayError::MissingRole { .. }
            | GatewayError::OriginNotAllowed { .. } => StatusCode::FORBIDDEN,
            GatewayError::BadRequest(_) => StatusCode::BAD_REQUEST,
            GatewayError::Unauthenticated | GatewayError::InvalidToken(_) => {
                StatusCode::UNAUTHORIZED
            }
            GatewayError::IdentityProviderUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::Launch { .. }
            | GatewayError::DiedDuringStart { .. }
            | GatewayError::LaunchTimeout { .. }
            | GatewayError::Operation { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Short label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            GatewayError::KernelNotFound { .. } => "kernel_not_found",
            GatewayError::KernelSpecNotFound { .. } => "kernelspec_not_found",
            GatewayError::NotAuthorized { .. } => "not_authorized",
            GatewayError::UserLimit { .. } => "user_limit",
            GatewayError::BadRequest(_) => "bad_request",
            GatewayError::Unauthenticated => "unauthenticated",
            GatewayError::InvalidToken(_) => "invalid_token",
            GatewayError::MissingRole { .. } => "missing_role",
            GatewayError::IdentityProviderUnavailable => "identity_provider_unavailable",
            GatewayError::OriginNotAllowed { .. } => "origin_not_allowed",
            GatewayError::Launch { .. } => "launch_failed",
            GatewayError::DiedDuringStart { .. } => "died_during_start",
            GatewayError::LaunchTimeout { .. } => "launch_timeout",
            GatewayError::Operation { .. } => "operation_failed",
        }
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, label = self.metric_label(), "request failed");
        } else {
            tracing::debug!(error = %self, label = self.metric_label(), "request refused");
        }
        let reason = status.canonical_reason().unwrap_or("Error");
        let mut response = (
            status,
            Json(serde_json::json!({ "reason": reason, "message": self.to_string() })),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
