//! Errors of the Dask API in Dask Gateway's form: `{"error": "<message>"}` with the status the
//! stock client maps (404 and 422 → `ValueError`, 409 → `GatewayClusterError`, 500 →
//! `GatewayServerError`). A 401 carries `WWW-Authenticate` so the client's 401-first handshake
//! asks its auth object for credentials.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use thiserror::Error;

use crate::error::GatewayError;

/// Everything a Dask API call can fail with. Messages never carry secrets.
#[derive(Debug, Error)]
pub(crate) enum DaskError {
    /// No such cluster, or not the caller's.
    #[error("Cluster {0} does not exist")]
    NotFound(String),
    /// The request is unusable (bad JSON, unknown or out-of-range option).
    #[error("{0}")]
    Invalid(String),
    /// The cluster is in the wrong state, or a limit is reached.
    #[error("{0}")]
    Conflict(String),
    /// No credentials.
    #[error("authentication required: send Authorization: Bearer <token>")]
    Unauthenticated,
    /// Credentials of the wrong kind for this route.
    #[error("{0}")]
    Forbidden(String),
    /// The credentials were refused (the hub does not accept a jupyterhub token).
    #[error("{0}")]
    Unauthorized(String),
    /// Credentials cannot be checked now (the hub cannot be asked).
    #[error("{0}")]
    Unavailable(String),
    /// The kernel gateway's authentication refused the credentials.
    #[error("{0}")]
    Auth(GatewayError),
    /// Something failed on our side.
    #[error("{0}")]
    Internal(String),
}

impl DaskError {
    /// The HTTP status.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            DaskError::NotFound(_) => StatusCode::NOT_FOUND,
            DaskError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            DaskError::Conflict(_) => StatusCode::CONFLICT,
            DaskError::Unauthenticated => StatusCode::UNAUTHORIZED,
            DaskError::Forbidden(_) => StatusCode::FORBIDDEN,
            DaskError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            DaskError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            DaskError::Auth(e) => e.status(),
            DaskError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for DaskError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "dask request failed");
        } else {
            tracing::debug!(error = %self, status = status.as_u16(), "dask request refused");
        }
        let mut response = (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
