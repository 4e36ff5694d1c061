//! `/api/kernelspecs[/{name}]` and `/kernelspecs/{name}/{file}` (resources, no `/api` prefix).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::auth::Caller;
use crate::error::GatewayError;
use crate::kernelspec::valid_name;
use crate::manager::KernelManager;

pub(super) fn router() -> Router<Arc<KernelManager>> {
    Router::new()
        .route("/api/kernelspecs", get(list))
        .route("/api/kernelspecs/{name}", get(get_one))
        .route("/kernelspecs/{name}/{file}", get(resource))
}

async fn list(State(m): State<Arc<KernelManager>>, caller: Caller) -> Json<serde_json::Value> {
    let c = &m.config;
    let specs: BTreeMap<String, serde_json::Value> = m
        .specs
        .all()
        .into_values()
        .filter(|s| s.allows(&caller.user, &c.unauthorized_users, &c.authorized_users))
        .map(|s| (s.name.clone(), s.model_at("", c.site_name.as_deref())))
        .collect();
    let default = if specs.contains_key(&c.default_kernel_name) {
        c.default_kernel_name.clone()
    } else {
        specs
            .keys()
            .next()
            .cloned()
            .unwrap_or_else(|| c.default_kernel_name.clone())
    };
    Json(serde_json::json!({ "default": default, "kernelspecs": specs }))
}

async fn get_one(
    State(m): State<Arc<KernelManager>>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, GatewayError> {
    let spec = m
        .specs
        .find(&name)
        .ok_or_else(|| GatewayError::KernelSpecNotFound { name: name.clone() })?;
    if !spec.allows(
        &caller.user,
        &m.config.unauthorized_users,
        &m.config.authorized_users,
    ) {
        return Err(GatewayError::NotAuthorized {
            user: caller.user,
            kernel_name: name,
        });
    }
    Ok(Json(spec.model_at("", m.config.site_name.as_deref())))
}

async fn resource(
    State(m): State<Arc<KernelManager>>,
    _caller: Caller,
    Path((name, file)): Path<(String, String)>,
) -> Result<Response, GatewayError> {
    let not_found = || GatewayError::KernelSpecNotFound {
        name: format!("{name}/{file}"),
    };
    // Plain file names only: no separators, no `..`.
    if !valid_name(&file) {
        return Err(not_found());
    }
    let spec = m.specs.find(&name).ok_or_else(not_found)?;
    let bytes = tokio::fs::read(spec.dir.join(&file))
        .await
        .map_err(|_| not_found())?;
    let mime = match file.rsplit_once('.').map(|(_, ext)| ext) {
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        Some("js") => "application/javascript",
        Some("css") => "text/css",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    };
    Ok(([(header::CONTENT_TYPE, mime)], bytes).into_response())
}
