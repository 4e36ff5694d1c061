//! Groups: `GET/POST /hub/api/groups`, `GET/POST/DELETE /hub/api/groups/{name}`,
//! `POST/DELETE /hub/api/groups/{name}/users`, `PUT /hub/api/groups/{name}/properties`.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;

use super::Paging;
use super::models::group_model;
use crate::db::{self, GroupRow, Tx};
use crate::error::{ApiError, ApiJson};
use crate::extract::ApiCaller;
use crate::names::{GroupName, UserName};
use crate::scopes::{Filter, Resource};
use crate::state::AppState;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/hub/api/groups", get(list).post(create_many))
        .route(
            "/hub/api/groups/{name}",
            get(get_one).post(create_one).delete(delete),
        )
        .route(
            "/hub/api/groups/{name}/users",
            post(add_users).delete(remove_users),
        )
        .route("/hub/api/groups/{name}/properties", put(set_properties))
}

/// The group `name` after checking `scopes` on it (403 not held, 404 filtered away or missing).
pub(crate) async fn load_group(
    state: &AppState,
    caller: &ApiCaller,
    name: &str,
    scopes: &[&str],
) -> Result<GroupRow, ApiError> {
    if !scopes.iter().any(|s| caller.holds(s)) {
        return Err(ApiError::requires_any_of(scopes));
    }
    let name: GroupName = name.parse()?;
    caller.require(
        scopes,
        Resource::Group {
            name: name.as_str(),
        },
    )?;
    let mut conn = state.db().pool().acquire().await?;
    db::groups::get(&mut conn, name.as_str())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("No such group: {name}")))
}

async fn list(
    State(state): State<AppState>,
    caller: ApiCaller,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    if !caller.holds("list:groups") {
        return Err(ApiError::requires_any_of(&["list:groups"]));
    }
    let paging = Paging::from_request(&query, &headers)?;
    let (token, owner) = caller.filters_for("list:groups");
    let only: Option<Vec<String>> = match (token, owner) {
        (None, None) => None,
        (t, o) => Some(
            t.into_iter()
                .chain(o)
                .flatten()
                .filter_map(|f| match f {
                    Filter::Group(g) => Some(g),
                    _ => None,
                })
                .filter(|g| caller.allows("list:groups", Resource::Group { name: g }))
                .collect(),
        ),
    };
    let mut conn = state.db().pool().acquire().await?;
    let (groups, total) =
        db::groups::list(&mut conn, paging.offset, paging.limit, only.as_deref()).await?;
    let items = groups.iter().map(|g| group_model(&caller, g)).collect();
    Ok(Json(paging.reply(
        items,
        total,
        &state,
        &headers,
        &format!("{}hub/api/groups", state.config().base_url),
        &query,
    )))
}

async fn user_ids(tx: &mut Tx, names: &[String]) -> Result<Vec<i64>, ApiError> {
    let mut ids = Vec::new();
    for raw in names {
        let name: UserName = raw.parse()?;
        let user = db::users::get(tx, name.as_str())
            .await?
            .ok_or_else(|| ApiError::BadRequest(format!("No such user: {name}")))?;
        ids.push(user.id);
    }
    Ok(ids)
}

#[derive(Debug, Deserialize)]
struct CreateGroups {
    groups: Vec<String>,
    #[serde(default)]
    users: Vec<String>,
}

async fn create_many(
    State(state): State<AppState>,
    caller: ApiCaller,
    ApiJson(body): ApiJson<CreateGroups>,
) -> Result<Response, ApiError> {
    caller.require(&["admin:groups"], Resource::Hub)?;
    if body.groups.is_empty() {
        return Err(ApiError::BadRequest(
            "Must specify at least one group to create".into(),
        ));
    }
    let mut tx = state.db().begin().await?;
    let members = user_ids(&mut tx, &body.users).await?;
    let mut created = Vec::new();
    for raw in &body.groups {
        let name: GroupName = raw.parse()?;
        let id = db::groups::create(&mut tx, name.as_str())
            .await?
            .ok_or_else(|| ApiError::Conflict(format!("Group {name} already exists")))?;
        for uid in &members {
            db::groups::add_member(&mut tx, id, *uid).await?;
        }
        created.push(name);
    }
    let mut out = Vec::new();
    for name in &created {
        if let Some(g) = db::groups::get(&mut tx, name.as_str()).await? {
            out.push(group_model(&caller, &g));
        }
    }
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(Value::Array(out))).into_response())
}

#[derive(Debug, Deserialize, Default)]
struct Users {
    #[serde(default)]
    users: Vec<String>,
}

async fn create_one(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<Option<Users>>,
) -> Result<Response, ApiError> {
    caller.require(&["admin:groups"], Resource::Hub)?;
    let name: GroupName = name.parse()?;
    let body = body.unwrap_or_default();
    let mut tx = state.db().begin().await?;
    let members = user_ids(&mut tx, &body.users).await?;
    let id = db::groups::create(&mut tx, name.as_str())
        .await?
        .ok_or_else(|| ApiError::Conflict(format!("Group {name} already exists")))?;
    for uid in &members {
        db::groups::add_member(&mut tx, id, *uid).await?;
    }
    let g = db::groups::get(&mut tx, name.as_str())
        .await?
        .ok_or_else(ApiError::no_access)?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(group_model(&caller, &g))).into_response())
}

async fn get_one(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let g = load_group(&state, &caller, &name, &["read:groups", "read:groups:name"]).await?;
    Ok(Json(group_model(&caller, &g)))
}

async fn delete(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let g = load_group(&state, &caller, &name, &["delete:groups"]).await?;
    let mut tx = state.db().begin().await?;
    db::groups::delete(&mut tx, g.id).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn change_members(
    state: &AppState,
    caller: &ApiCaller,
    name: &str,
    users: &[String],
    add: bool,
) -> Result<Json<Value>, ApiError> {
    let g = load_group(state, caller, name, &["groups"]).await?;
    let mut tx = state.db().begin().await?;
    for uid in user_ids(&mut tx, users).await? {
        if add {
            db::groups::add_member(&mut tx, g.id, uid).await?;
        } else {
            db::groups::remove_member(&mut tx, g.id, uid).await?;
        }
    }
    let g = db::groups::get(&mut tx, &g.name)
        .await?
        .ok_or_else(ApiError::no_access)?;
    tx.commit().await?;
    Ok(Json(group_model(caller, &g)))
}

async fn add_users(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<Users>,
) -> Result<Json<Value>, ApiError> {
    change_members(&state, &caller, &name, &body.users, true).await
}

async fn remove_users(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<Users>,
) -> Result<Json<Value>, ApiError> {
    change_members(&state, &caller, &name, &body.users, false).await
}

async fn set_properties(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(name): Path<String>,
    ApiJson(props): ApiJson<Value>,
) -> Result<Json<Value>, ApiError> {
    if !props.is_object() {
        return Err(ApiError::BadRequest(
            "Group properties must be a JSON object".into(),
        ));
    }
    let g = load_group(&state, &caller, &name, &["groups"]).await?;
    let mut tx = state.db().begin().await?;
    db::groups::set_properties(&mut tx, g.id, &props).await?;
    let g = db::groups::get(&mut tx, &g.name)
        .await?
        .ok_or_else(ApiError::no_access)?;
    tx.commit().await?;
    Ok(Json(group_model(&caller, &g)))
}
