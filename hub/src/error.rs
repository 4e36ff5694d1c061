//! [`ApiError`]: every API failure, written as JupyterHub's `{"status","message"}` body.
//!
//! Client errors echo what was wrong with the request; server errors (5xx) get a generic
//! message and the detail is logged once, in the request's span. No secret ever goes into a
//! message.

use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::names::BadName;

/// The message for requests without valid credentials.
pub(crate) const MISSING_CREDENTIALS: &str = "Missing or invalid credentials.";

/// An API request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// 400: the request is malformed or not allowed in the current state.
    #[error("{0}")]
    BadRequest(String),
    /// 403: no or bad credentials, or a missing scope.
    #[error("{0}")]
    Forbidden(String),
    /// 404: the resource does not exist or is filtered away.
    #[error("{0}")]
    NotFound(String),
    /// 409: the resource already exists.
    #[error("{0}")]
    Conflict(String),
    /// 413: the request body is larger than the hub reads.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 501: the operation is not available in this build (spawn orchestration).
    #[error("{0}")]
    NotImplemented(String),
    /// 500: something broke inside the hub; the detail is logged, never sent.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    /// 403 for missing or invalid credentials.
    pub fn no_credentials() -> Self {
        Self::Forbidden(MISSING_CREDENTIALS.to_owned())
    }

    /// 403 naming the scopes that would have allowed the action.
    pub fn requires_any_of(scopes: &[&str]) -> Self {
        let list = scopes
            .iter()
            .map(|s| format!("'{s}'"))
            .collect::<Vec<_>>()
            .join(", ");
        Self::Forbidden(format!(
            "Action is not authorized with current scopes; requires any of [{list}]"
        ))
    }

    /// 404 for a resource filtered away by the caller's scopes (or absent).
    pub fn no_access() -> Self {
        Self::NotFound("No access to resources or resources not found".to_owned())
    }

    /// 500 from any internal error.
    pub fn internal(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal(Box::new(e))
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        Self::internal(e)
    }
}

impl From<BadName> for ApiError {
    fn from(e: BadName) -> Self {
        Self::BadRequest(e.to_string())
    }
}

/// Write `{"status","message"}` with `status`.
pub(crate) fn json_error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "status": status.as_u16(), "message": message });
    (status, axum::Json(body)).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let Self::Internal(e) = &self {
            tracing::error!(error = %e, "internal error");
            return json_error(status, "Internal server error");
        }
        json_error(status, &self.to_string())
    }
}

/// A request body that could not be read: 413 when it is over the hub's body limit.
pub(crate) fn body_error(e: axum::extract::rejection::BytesRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge(
            "Request body too large: it is over the hub's body limit (max_body_bytes)".to_owned(),
        )
    } else {
        ApiError::BadRequest("Cannot read request body".to_owned())
    }
}

/// A JSON request body, parsed whatever its `Content-Type` (JupyterHub clients often send
/// none), with failures as [`ApiError`]s. An empty body is `null`, so `ApiJson<Option<T>>`
/// accepts it.
#[derive(Debug, Clone)]
pub(crate) struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let form_encoded = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("multipart/"));
        if form_encoded {
            return Err(ApiError::BadRequest("Request body must be JSON".to_owned()));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(body_error)?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"null"
        } else {
            &bytes
        };
        serde_json::from_slice(text)
            .map(ApiJson)
            .map_err(|e| ApiError::BadRequest(format!("Invalid JSON in body of request: {e}")))
    }
}
