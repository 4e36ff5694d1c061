//! `GET /hub/api/sites` (any authenticated caller): the sites with their health and reasons, and
//! each site's Dask Gateway (`dask`: `address`, `proxy_address`, `public_address` (where browsers
//! open dashboards), `available`, `reason`) or null.
//! `GET /hub/api/sites/bridges.json` (public): available sites whose Dask Gateway answers, in the shape
//! the Data Lake's Dask client reads (`{"lumi": {"address": …, "proxy_address": …}, …}`).
//! `GET /hub/api/sites/jwks.json` (public): the keys gateways validate the hub's tokens with.
//! `POST /hub/api/sites/{id}/token`: a fresh gateway token for the caller's user at site `id`
//! (`{"token", "token_type", "expires_at"}`); needs `users:activity` on the user, which a
//! single-user server's own token holds. 404 for an unknown site, 400 for a site that takes no
//! hub tokens, 403 when the user may use no profile that runs at the site (the profiles'
//! `allowed_roles` / `allowed_groups`, checked at every request, so a user who loses the role
//! gets no fresh token).
//! `POST /hub/api/sites/{id}/s3-credentials`: fresh temporary credentials for the caller's
//! user's S3 space at site `id`, in the JSON an AWS `credential_process` prints (`Version` 1,
//! `AccessKeyId`, `SecretAccessKey`, `SessionToken`, `Expiration`), so botocore, s3fs and the
//! Lab's S3 browser refresh them on their own. Same rules as the token: the caller's own user
//! only (`users:activity` on it, which a server's own token holds), 404 for an unknown site, 400
//! for a site without S3, 403 when the user may use no profile whose S3 space is at the site (a
//! remote-kernels profile there, or a full Lab profile whose S3 site it is, see
//! `crate::sites::s3_site_of`); never cached, never logged.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use crate::config::sites::{GatewayAuth, SiteS3Mode};
use crate::db::UserRow;
use crate::error::ApiError;
use crate::extract::ApiCaller;
use crate::profiles::{Identity, Profile, ProfileKind};
use crate::sites::{Site, SiteRegistry, s3_site_of};
use crate::state::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/hub/api/sites", get(list))
        .route("/hub/api/sites/bridges.json", get(bridges))
        .route("/hub/api/sites/jwks.json", get(jwks))
        .route("/hub/api/sites/{id}/token", post(token))
        .route("/hub/api/sites/{id}/s3-credentials", post(s3_credentials))
}

async fn jwks(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(configured_sites(&state)?.tokens().jwks()))
}

async fn token(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (user, registry) = own_user_and_sites(&state, &caller, "gateway tokens").await?;
    let site = site_of(registry, &id)?;
    if *site.gateway_auth() != GatewayAuth::HubJwt {
        return Err(ApiError::BadRequest(format!(
            "site {id} does not take hub-issued gateway tokens"
        )));
    }
    let identity = state.planner().identity(&user);
    let runs_there =
        |p: &Profile| p.kind == ProfileKind::RemoteKernels && p.site.as_deref() == Some(&id);
    if let Err(needs) = may_use_any(&state.config().profile_list, &identity, runs_there) {
        tracing::warn!(user = %user.name, site = %id, "refused a gateway token: no profile at the site is allowed");
        return Err(ApiError::Forbidden(format!(
            "user {} may use no profile that runs at site {id}{needs}",
            user.name
        )));
    }
    let roles = gateway_token_roles(&state, user.id).await?;
    let issued = site
        .tokens_issue(&user.name, &roles)
        .map_err(|e| ApiError::Internal(Box::new(e)))?;
    tracing::info!(
        user = %user.name,
        site = %id,
        expires_at = issued.expires_at,
        "issued a gateway token"
    );
    Ok(Json(json!({
        "token": issued.token,
        "token_type": "Bearer",
        "expires_at": issued.expires_at,
    })))
}

/// The roles a gateway token for user `user_id` carries: the user's quota role, if any.
pub(crate) async fn gateway_token_roles(
    state: &AppState,
    user_id: i64,
) -> Result<Vec<String>, ApiError> {
    let mut conn = state.db().pool().acquire().await?;
    let quota = crate::quota::of_user(&mut conn, user_id).await?;
    Ok(quota.map(|q| q.role).into_iter().collect())
}

async fn s3_credentials(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let (user, registry) = own_user_and_sites(&state, &caller, "S3 credentials").await?;
    let site = site_of(registry, &id)?;
    if site.exchange().is_none() {
        return Err(ApiError::BadRequest(format!(
            "site {id} has no S3 store configured"
        )));
    }
    let identity = state.planner().identity(&user);
    let space_there = |p: &Profile| s3_at(p, &id, registry);
    if let Err(needs) = may_use_any(&state.config().profile_list, &identity, space_there) {
        tracing::warn!(user = %user.name, site = %id, "refused S3 credentials: no profile with an S3 space at the site is allowed");
        return Err(ApiError::Forbidden(format!(
            "user {} may use no profile with an S3 space at site {id}{needs}",
            user.name
        )));
    }
    let grant = site.provision(&user.name).await.map_err(|e| {
        tracing::warn!(user = %user.name, site = %id, reason = %e.reason, "could not issue S3 credentials");
        ApiError::BadRequest(format!("cannot issue S3 credentials now: {e}"))
    })?;
    let c = &grant.credentials;
    let mut body = json!({
        "Version": 1,
        "AccessKeyId": c.access_key_id,
        "SecretAccessKey": c.secret_access_key.expose(),
    });
    if let Some(t) = &c.session_token {
        body["SessionToken"] = json!(t.expose());
    }
    if let Some(exp) = c.expires_at {
        body["Expiration"] = json!(exp.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    }
    tracing::info!(
        user = %user.name,
        site = %id,
        prefix = %grant.space.prefix,
        expires_at = ?c.expires_at,
        "issued S3 credentials"
    );
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)))
}

/// The hub's sites, or 404 when none are configured.
fn configured_sites(state: &AppState) -> Result<&Arc<SiteRegistry>, ApiError> {
    state
        .sites()
        .ok_or_else(|| ApiError::NotFound("no sites are configured on this hub".to_owned()))
}

/// Site `id`, or 404.
fn site_of<'a>(registry: &'a SiteRegistry, id: &str) -> Result<&'a Site, ApiError> {
    registry
        .site(id)
        .ok_or_else(|| ApiError::NotFound(format!("no such site: {id}")))
}

/// The caller's own user (`what` is issued to users only, with `users:activity` on
/// themselves, which a server's own token holds) and the hub's sites.
async fn own_user_and_sites<'a>(
    state: &'a AppState,
    caller: &ApiCaller,
    what: &str,
) -> Result<(UserRow, &'a Arc<SiteRegistry>), ApiError> {
    let name = caller
        .user_name()
        .ok_or_else(|| ApiError::Forbidden(format!("{what} are issued to users only")))?
        .to_owned();
    let user = crate::api::load_user(state, caller, &name, &["users:activity"]).await?;
    Ok((user, configured_sites(state)?))
}

/// Whether a server of profile `p` has its S3 space at site `id`.
fn s3_at(p: &Profile, id: &str, registry: &SiteRegistry) -> bool {
    s3_site_of(p.kind, p.site.as_deref(), registry) == Some(id)
}

/// Whether `id` may use one of the `profiles` that `applies`: `Err` with what would have
/// allowed it (` (needs one of the roles ...)`, empty when none applies).
fn may_use_any(
    profiles: &[Profile],
    id: &Identity,
    applies: impl Fn(&Profile) -> bool,
) -> Result<(), String> {
    let at_site: Vec<&Profile> = profiles.iter().filter(|p| applies(p)).collect();
    if at_site
        .iter()
        .any(|p| id.allowed(&p.allowed_roles, &p.allowed_groups))
    {
        return Ok(());
    }
    let mut roles: Vec<&str> = Vec::new();
    let mut groups: Vec<&str> = Vec::new();
    for p in &at_site {
        roles.extend(p.allowed_roles.iter().map(String::as_str));
        groups.extend(p.allowed_groups.iter().map(String::as_str));
    }
    roles.sort_unstable();
    roles.dedup();
    groups.sort_unstable();
    groups.dedup();
    let mut parts = Vec::new();
    if !roles.is_empty() {
        parts.push(format!("one of the roles {}", roles.join(", ")));
    }
    if !groups.is_empty() {
        parts.push(format!("one of the groups {}", groups.join(", ")));
    }
    Err(if parts.is_empty() {
        String::new()
    } else {
        format!(" (needs {})", parts.join(" or "))
    })
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
        let (available, reasons, checked, dask_problem) = match &health {
            Some(h) => (
                h.available,
                h.reasons.clone(),
                Some(h.checked_at),
                h.dask_problem.clone(),
            ),
            None => (
                false,
                vec!["its health has not been checked yet".to_owned()],
                None,
                Some("its health has not been checked yet".to_owned()),
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
            "dask": site.dask().map(|d| json!({
                "address": d.address,
                "proxy_address": d.proxy_address,
                "public_address": d.public_address,
                "available": dask_problem.is_none(),
                "reason": dask_problem,
            })),
            "checked_at": checked.map(|c| c.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        }));
    }
    Ok(Json(Value::Array(out)))
}

async fn bridges(State(state): State<AppState>) -> Json<Value> {
    let mut out = Map::new();
    if let Some(registry) = state.sites() {
        for (site, health) in registry.snapshot().await {
            let Some(dask) = site.dask() else {
                continue;
            };
            if !health.is_some_and(|h| h.available && h.dask_problem.is_none()) {
                continue;
            }
            out.insert(
                site.id.clone(),
                json!({"name": site.name, "address": dask.address, "proxy_address": dask.proxy_address}),
            );
        }
    }
    Json(Value::Object(out))
}
