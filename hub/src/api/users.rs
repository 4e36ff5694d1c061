//! Users: `GET/POST /hub/api/users`, `GET/POST/PATCH/DELETE /hub/api/users/{name}`.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;

use bytes::Bytes;

use axum::extract::{Path, Query, RawQuery, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;

use super::Paging;
use super::models::{UserModelOpts, user_model};
use super::user_delete::{active_servers, delete, describe, servers_and_clients};
use crate::cache::ResponseKey;
use crate::db::{self, UserRow, UserSort, UserState, UsersQuery};
use crate::error::{ApiError, ApiJson};
use crate::extract::{ApiCaller, CallerKind};
use crate::names::UserName;
use crate::scopes::{Filter, Resource};
use crate::state::AppState;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/hub/api/users", get(list).post(create_many))
        .route(
            "/hub/api/users/{name}",
            get(get_one).post(create_one).patch(patch).delete(delete),
        )
}

/// Scopes that let a caller read some of a user model.
pub(crate) const READ_USER: &[&str] = &[
    "read:users",
    "read:users:name",
    "read:users:groups",
    "read:users:activity",
    "read:servers",
    "read:roles:users",
    "admin:auth_state",
];

/// Load `name` for a caller needing any of `scopes`: 403 if it holds none, 404 if the user
/// is missing or filtered away, 400 for an invalid name.
pub(crate) async fn load_user(
    state: &AppState,
    caller: &ApiCaller,
    name: &str,
    scopes: &[&str],
) -> Result<UserRow, ApiError> {
    if !scopes.iter().any(|s| caller.holds(s)) {
        return Err(ApiError::requires_any_of(scopes));
    }
    let name: UserName = name.parse()?;
    let user = match &caller.kind {
        // The caller's own row was loaded with its token a moment ago.
        CallerKind::User(me) if me.name == name.as_str() => me.clone(),
        _ => {
            let mut conn = state.db().pool().acquire().await?;
            db::users::get(&mut conn, name.as_str())
                .await?
                .ok_or_else(ApiError::no_access)?
        }
    };
    caller.require(
        scopes,
        Resource::User {
            name: &user.name,
            groups: &user.groups,
        },
    )?;
    Ok(user)
}

/// The full model of `user` as `caller` sees it.
pub(crate) async fn model_of(
    state: &AppState,
    caller: &ApiCaller,
    user: &UserRow,
    opts: UserModelOpts,
) -> Result<Value, ApiError> {
    let mut conn = state.db().pool().acquire().await?;
    let servers = db::servers::for_users(&mut conn, &[user.id])
        .await?
        .remove(&user.id)
        .unwrap_or_default();
    let roles = crate::auth::user_roles(state.config(), user);
    let mut model =
        user_model(state, caller, user, &roles, &servers, opts).ok_or_else(ApiError::no_access)?;
    crate::quota::attach(&mut conn, &mut [(user.id, &mut model)]).await?;
    Ok(model)
}

fn flag(query: &HashMap<String, String>, key: &str) -> bool {
    query
        .get(key)
        .is_some_and(|v| !matches!(v.as_str(), "0" | "false" | "False"))
}

/// Names a filtered `list:users` limits the listing to (`None` = everyone).
async fn listable_names(
    state: &AppState,
    caller: &ApiCaller,
) -> Result<Option<Vec<String>>, ApiError> {
    let (token, owner) = caller.filters_for("list:users");
    let mut conn = state.db().pool().acquire().await?;
    let mut sides = Vec::new();
    for filters in [token, owner].into_iter().flatten() {
        let mut names = BTreeSet::new();
        for f in filters {
            match f {
                Filter::User(u) | Filter::Server(u, _) => {
                    names.insert(u);
                }
                Filter::Group(g) => {
                    if let Some(group) = db::groups::get(&mut conn, &g).await? {
                        names.extend(group.users);
                    }
                }
                Filter::Service(_) => {}
            }
        }
        sides.push(names);
    }
    Ok(sides
        .into_iter()
        .reduce(|a, b| a.intersection(&b).cloned().collect())
        .map(|s| s.into_iter().collect()))
}

async fn list(
    State(state): State<AppState>,
    caller: ApiCaller,
    headers: HeaderMap,
    RawQuery(raw_query): RawQuery,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    if !caller.holds("list:users") {
        return Err(ApiError::requires_any_of(&["list:users"]));
    }
    let paging = Paging::from_request(&query, &headers)?;
    let key = caller.cache_key().map(|caller| ResponseKey::Users {
        caller,
        query: raw_query.unwrap_or_default(),
        envelope_origin: paging.envelope.then(|| super::origin(&state, &headers)),
    });
    cached(&state, &caller, key, async {
        let page = list_page(&state, &caller, &headers, &query, paging).await?;
        Ok((page, true))
    })
    .await
}

/// Answer with the cached body under `key`, or compute it (the value and whether it may be
/// cached), cache it and answer with it. The body is read at the caller's generation, so a
/// write after the caller was resolved keeps it out of the cache.
pub(crate) async fn cached(
    state: &AppState,
    caller: &ApiCaller,
    key: Option<ResponseKey>,
    compute: impl Future<Output = Result<(Value, bool), ApiError>>,
) -> Result<Response, ApiError> {
    let read_at = caller.generation.min(state.db().generation());
    if let Some(key) = &key
        && let Some(body) = state.caches().response(read_at, key).await
    {
        return Ok(json_body(body));
    }
    let (value, cacheable) = compute.await?;
    let mut body = serde_json::to_vec(&value).map_err(|e| ApiError::Internal(Box::new(e)))?;
    let Some(key) = key.filter(|_| cacheable) else {
        return Ok(json_body(Bytes::from(body)));
    };
    // Grown by doubling: a cached answer would keep up to twice its bytes (a 26 KB page of 100
    // users in a 32 KiB buffer). Shrinking gives the tail back in place.
    body.shrink_to_fit();
    let body = Bytes::from(body);
    state
        .caches()
        .put_response(read_at, state.db().generation(), key, body.clone())
        .await;
    Ok(json_body(body))
}

/// A JSON body, as `axum::Json` answers.
fn json_body(body: Bytes) -> Response {
    (
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        body,
    )
        .into_response()
}

async fn list_page(
    state: &AppState,
    caller: &ApiCaller,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    paging: Paging,
) -> Result<Value, ApiError> {
    let state_filter = match query.get("state").map(String::as_str) {
        None | Some("") => UserState::Any,
        Some("active") => UserState::Active,
        Some("ready") => UserState::Ready,
        Some("inactive") => UserState::Inactive,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "Unrecognized state filter: {other:?}"
            )));
        }
    };
    let sort_key = query.get("sort").map_or("id", String::as_str);
    let (descending, key) = match sort_key.strip_prefix('-') {
        Some(k) => (true, k),
        None => (false, sort_key),
    };
    let sort = match key {
        "id" => UserSort::Id,
        "name" => UserSort::Name,
        "last_activity" => UserSort::LastActivity,
        other => return Err(ApiError::BadRequest(format!("Invalid sort: {other:?}"))),
    };
    let q = UsersQuery {
        state: state_filter,
        name_filter: query.get("name_filter").filter(|f| !f.is_empty()).cloned(),
        sort,
        descending,
        offset: paging.offset,
        limit: paging.limit,
        only: listable_names(state, caller).await?,
    };
    let mut conn = state.db().pool().acquire().await?;
    let (users, total) = db::users::list(&mut conn, &q).await?;
    let ids: Vec<i64> = users.iter().map(|u| u.id).collect();
    let mut servers = db::servers::for_users(&mut conn, &ids).await?;
    let opts = UserModelOpts {
        include_stopped: flag(query, "include_stopped_servers"),
        ..UserModelOpts::default()
    };
    let mut items = Vec::with_capacity(users.len());
    let mut ids = Vec::with_capacity(users.len());
    for user in &users {
        let roles = crate::auth::user_roles(state.config(), user);
        let s = servers.remove(&user.id).unwrap_or_default();
        if let Some(m) = user_model(state, caller, user, &roles, &s, opts) {
            items.push(m);
            ids.push(user.id);
        }
    }
    let mut page: Vec<(i64, &mut Value)> = ids.into_iter().zip(items.iter_mut()).collect();
    crate::quota::attach(&mut conn, &mut page).await?;
    Ok(paging.reply(
        items,
        total,
        state,
        headers,
        &format!("{}hub/api/users", state.config().base_url),
        query,
    ))
}

#[derive(Debug, Deserialize)]
struct CreateUsers {
    usernames: Vec<String>,
    #[serde(default)]
    admin: bool,
}

async fn create_many(
    State(state): State<AppState>,
    caller: ApiCaller,
    ApiJson(body): ApiJson<CreateUsers>,
) -> Result<Response, ApiError> {
    caller.require(&["admin:users"], Resource::Hub)?;
    if body.admin {
        require_admin_flag(&caller)?;
    }
    let mut names = Vec::new();
    for raw in &body.usernames {
        let name = UserName::normalized(raw)?;
        if !names.contains(&name) {
            names.push(name);
        }
    }
    if names.is_empty() {
        return Err(ApiError::BadRequest(
            "Must specify at least one user to create".into(),
        ));
    }
    let now = db::now_micros();
    let mut tx = state.db().begin().await?;
    let mut created = Vec::new();
    for name in &names {
        if let Some(u) = db::users::create(&mut tx, name.as_str(), body.admin, now).await? {
            created.push(u);
        }
    }
    if created.is_empty() {
        return Err(ApiError::Conflict(format!(
            "All {} users already exist",
            names.len()
        )));
    }
    tx.commit().await?;
    tracing::info!(users = ?created.iter().map(|u| &u.name).collect::<Vec<_>>(), "created users");
    let mut out = Vec::new();
    for u in &created {
        out.push(model_of(&state, &caller, u, UserModelOpts::default()).await?);
    }
    Ok((StatusCode::CREATED, Json(Value::Array(out))).into_response())
}

#[derive(Debug, Deserialize, Default)]
struct CreateUser {
    #[serde(default)]
    admin: bool,
}

async fn create_one(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<Option<CreateUser>>,
) -> Result<Response, ApiError> {
    caller.require(&["admin:users"], Resource::Hub)?;
    let name = UserName::normalized(&name)?;
    let body = body.unwrap_or_default();
    if body.admin {
        require_admin_flag(&caller)?;
    }
    let mut tx = state.db().begin().await?;
    let user = db::users::create(&mut tx, name.as_str(), body.admin, db::now_micros())
        .await?
        .ok_or_else(|| ApiError::Conflict(format!("User {name} already exists")))?;
    tx.commit().await?;
    tracing::info!(user = %name, "created user");
    let model = model_of(&state, &caller, &user, UserModelOpts::default()).await?;
    Ok((StatusCode::CREATED, Json(model)).into_response())
}

async fn get_one(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let include_stopped = flag(&query, "include_stopped_servers");
    let key = caller.cache_key().map(|caller| ResponseKey::User {
        caller,
        name: name.clone(),
        include_stopped,
    });
    cached(&state, &caller, key, async {
        let mut user = load_user(&state, &caller, &name, READ_USER).await?;
        let mut cacheable = true;
        if let Some(oidc) = state.oidc()
            && caller.allows(
                "admin:auth_state",
                crate::scopes::Resource::User {
                    name: &user.name,
                    groups: &user.groups,
                },
            )
        {
            // Fresh identity-provider tokens depend on the clock: never cached.
            user.auth_state = oidc.auth_state_with_tokens(state.db(), &user).await?;
            cacheable = false;
        }
        let opts = UserModelOpts {
            include_stopped,
            auth_state: true,
            identity: false,
        };
        Ok((model_of(&state, &caller, &user, opts).await?, cacheable))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchUser {
    name: Option<String>,
    admin: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    auth_state: Option<Value>,
}

/// Distinguish a present `null` (`Some(Null)`) from an absent key (`None`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// Only a holder of unfiltered `admin:users` (JupyterHub: only admins) may grant or revoke the
/// admin flag, or change a user who is an admin: `admin:users!group=X` manages the users of X,
/// it does not make anyone an admin.
fn require_admin_flag(caller: &ApiCaller) -> Result<(), ApiError> {
    if caller.allows("admin:users", Resource::Hub) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "Only admins (unfiltered admin:users) can grant or revoke admin permissions".into(),
        ))
    }
}

async fn patch(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<PatchUser>,
) -> Result<Json<Value>, ApiError> {
    let user = load_user(&state, &caller, &name, &["admin:users"]).await?;
    if user.admin && !caller.allows("admin:users", Resource::Hub) {
        return Err(ApiError::Forbidden(
            "Only admins (unfiltered admin:users) can modify other admins".into(),
        ));
    }
    if body.admin.is_some_and(|a| a || a != user.admin) {
        require_admin_flag(&caller)?;
    }
    let new_name = match &body.name {
        Some(new) => Some(UserName::normalized(new)?).filter(|n| n.as_str() != user.name),
        None => None,
    };
    if new_name.is_some() {
        // Routes, the server token and the OAuth client carry the name: a running server
        // would stay reachable under the old name for its next holder. JupyterHub refuses too.
        let active = active_servers(&state, user.id).await?;
        if !active.is_empty() {
            return Err(ApiError::BadRequest(format!(
                "Cannot rename {}: stop their servers first ({})",
                user.name,
                describe(&active)
            )));
        }
    }
    let mut tx = state.db().begin().await?;
    if let Some(new) = &new_name {
        if !db::users::rename(&mut tx, user.id, new.as_str()).await? {
            return Err(ApiError::BadRequest(format!(
                "User {new} already exists, username must be unique"
            )));
        }
        let (servers, clients) = servers_and_clients(&mut tx, &user).await?;
        if servers.iter().any(db::ServerRow::active) {
            return Err(ApiError::BadRequest(format!(
                "A server of {} was started while renaming them; try again",
                user.name
            )));
        }
        // Clients a failed stop may have left under the old name.
        db::users::delete_clients(&mut tx, &clients).await?;
    }
    if let Some(admin) = body.admin {
        db::users::set_admin(&mut tx, user.id, admin).await?;
    }
    if let Some(auth_state) = &body.auth_state {
        let text = (!auth_state.is_null()).then(|| auth_state.to_string());
        db::users::set_auth_state(&mut tx, user.id, text).await?;
    }
    let updated = db::users::get_by_id(&mut tx, user.id)
        .await?
        .ok_or_else(ApiError::no_access)?;
    tx.commit().await?;
    if let Some(new) = &new_name {
        let routes = state.orchestrator().forget_user(&user.name).await?;
        tracing::info!(user = %user.name, new_name = %new, stale_routes = ?routes, "renamed user");
    }
    tracing::info!(user = %updated.name, "updated user");
    Ok(Json(
        model_of(&state, &caller, &updated, UserModelOpts::default()).await?,
    ))
}
