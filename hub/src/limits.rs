//! Request body limits: no hub route reads more than `max_body_bytes` of a client's body.
//!
//! Two layers: a body that declares a larger `Content-Length` is refused at once with a JSON
//! 413, before any handler, authentication or database work; a body without a length (chunked)
//! is cut by axum's `DefaultBodyLimit` when a handler reads it, and [`crate::error::ApiJson`]
//! answers that with the same JSON 413.

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::StatusCode;
use axum::http::header::CONTENT_LENGTH;
use axum::middleware::Next;
use axum::response::Response;

use crate::error::json_error;

/// The message of a 413 for a limit of `max` bytes.
pub(crate) fn too_large_message(max: usize) -> String {
    format!("Request body too large: at most {max} bytes are accepted")
}

/// Wrap `router` so every route reads at most `max` bytes of a request body.
pub(crate) fn limit_bodies<S>(router: Router<S>, max: usize) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router
        .layer(DefaultBodyLimit::max(max))
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| declared_length(max, req, next),
        ))
}

async fn declared_length(max: usize, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return json_error(StatusCode::PAYLOAD_TOO_LARGE, &too_large_message(max));
    }
    next.run(req).await
}
