//! `/api` and `/api/kernels[...]` (see the table in the parent module).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::auth::Caller;
use crate::error::GatewayError;
use crate::manager::{KernelManager, StartRequest};

/// jupyter_server API version we are compatible with (reported as `version`).
const SERVER_API_VERSION: &str = "2.14.0";

pub(super) fn router() -> Router<Arc<KernelManager>> {
    Router::new()
        .route("/api", get(api_info))
        .route("/api/kernels", get(list).post(start))
        .route("/api/kernels/{id}", get(get_one).delete(delete))
        .route("/api/kernels/{id}/interrupt", post(interrupt))
        .route("/api/kernels/{id}/restart", post(restart))
}

async fn api_info(State(m): State<Arc<KernelManager>>, _caller: Caller) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "version": SERVER_API_VERSION,
        "gateway_version": env!("CARGO_PKG_VERSION"),
        // Modes sharing one Unix account between users (see `launcher::shared_account_warnings`).
        "unsafe_modes": crate::launcher::shared_account_warnings(&m.config),
    }))
}

async fn list(State(m): State<Arc<KernelManager>>, caller: Caller) -> Json<Vec<serde_json::Value>> {
    Json(m.list(&caller.user).await)
}

async fn start(
    State(m): State<Arc<KernelManager>>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, GatewayError> {
    let req: StartRequest = if body.iter().all(u8::is_ascii_whitespace) {
        StartRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| GatewayError::BadRequest(format!("invalid JSON body: {e}")))?
    };
    let model = m.start(&caller, req).await?;
    let location = format!("/api/kernels/{}", model["id"].as_str().unwrap_or_default());
    let mut response = (StatusCode::CREATED, Json(model)).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

async fn get_one(
    State(m): State<Arc<KernelManager>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, GatewayError> {
    Ok(Json(m.get(&caller.user, &id).await?.model()))
}

async fn delete(
    State(m): State<Arc<KernelManager>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, GatewayError> {
    m.shutdown(&caller.user, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn interrupt(
    State(m): State<Arc<KernelManager>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, GatewayError> {
    let kernel = m.get(&caller.user, &id).await?;
    kernel.interrupt().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn restart(
    State(m): State<Arc<KernelManager>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, GatewayError> {
    let kernel = m.get(&caller.user, &id).await?;
    kernel.restart().await?;
    Ok(Json(kernel.model()))
}
