//! `GET /hub/api/sites` (any authenticated caller): the sites with their health and reasons.
//! `GET /hub/api/sites/bridges.json` (public): available sites with a Dask Gateway, in the shape
//! the Data Lake's Dask client reads (`{"lumi": {"address": …, "proxy_address": …}, …}`).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use super::config::SiteS3Mode;
use crate::auth::ApiCaller;
use crate::error::ApiError;
use crate::state::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/hub/api/sites", get(list))
        .route("/hub/api/sites/bridges.json", get(bridges))
}

async fn list(State(state): State<AppState>, _caller: ApiCaller) -> Result<Json<Value>, ApiError> {
    let Some(registry) = state.sites() else {
        return Ok(Json(json!([])));
    };
    let mut out = Vec::new();
    for (site, health) in registry.snapshot().await {
        let s3 = site.exchange().and_then(|x| x.space("_").ok());
        let mode = site.s3_mode().map(|m| match m {
            SiteS3Mode::Embedded => "embedded",
            SiteS3Mode::Sts => "sts",
            SiteS3Mode::Static => "static",
        });
        let (available, reasons, checked) = match &health {
            Some(h) => (h.available, h.reasons.clone(), Some(h.checked_at)),
            None => (
                false,
                vec!["its health has not been checked yet".to_owned()],
                None,
            ),
        };
        out.push(json!({
            "id": site.id,
            "name": site.name,
            "gateway_url": site.gateway_url,
            "s3": s3.map(|s| json!({
                "mode": mode,
                "endpoint": s.endpoint,
                "region": s.region,
                "bucket": s.bucket,
            })),
            "available": available,
            "reasons": reasons,
            "checked_at": checked.map(|c| c.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        }));
    }
    Ok(Json(Value::Array(out)))
}

async fn bridges(State(state): State<AppState>) -> Json<Value> {
    let mut out = Map::new();
    if let Some(registry) = state.sites() {
        for (site, health) in registry.snapshot().await {
            let (Some(address), proxy) = site.dask() else {
                continue;
            };
            if !health.is_some_and(|h| h.available) {
                continue;
            }
            out.insert(
                site.id.clone(),
                json!({"name": site.name, "address": address, "proxy_address": proxy}),
            );
        }
    }
    Json(Value::Object(out))
}
