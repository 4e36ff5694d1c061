//! JSON models (compat spec section 3.1), with fields filtered by the caller's scopes.

use serde_json::{Map, Value, json};

use crate::db::{GroupRow, ServerRow, TokenOwner, TokenRow, UserRow, iso, iso_opt};
use crate::extract::ApiCaller;
use crate::scopes::Resource;
use crate::state::AppState;

pub(crate) use crate::names::seg;

/// Where browsers open the server: its path, on the user's own host with per-user origins
/// (`https://NAME.hub.example<path>`, as JupyterHub's `user.url` with `subdomain_host`).
pub(crate) fn server_url(state: &AppState, user: &str, server: &str) -> String {
    let path = server_path(state, user, server);
    match &state.config().subdomain_host {
        Some(sub) => format!("{}{path}", sub.user_origin(user)),
        None => path,
    }
}

/// The server's URL path: `<base>user/<name>/[<server>/]`.
pub(crate) fn server_path(state: &AppState, user: &str, server: &str) -> String {
    let base = &state.config().base_url;
    if server.is_empty() {
        format!("{base}user/{}/", seg(user))
    } else {
        format!("{base}user/{}/{}/", seg(user), seg(server))
    }
}

/// The server's progress URL path.
pub(crate) fn progress_url(state: &AppState, user: &str, server: &str) -> String {
    let base = &state.config().base_url;
    if server.is_empty() {
        format!("{base}hub/api/users/{}/server/progress", seg(user))
    } else {
        format!(
            "{base}hub/api/users/{}/servers/{}/progress",
            seg(user),
            seg(server)
        )
    }
}

/// `path` made absolute on the public URL (`null` without one); absolute URLs stay.
pub(crate) fn absolute(state: &AppState, path: &str) -> Value {
    if path.contains("://") {
        return Value::String(path.to_owned());
    }
    match &state.config().public_url {
        Some(public) => match url::Url::parse(public) {
            Ok(u) => Value::String(format!("{}{path}", u.origin().ascii_serialization())),
            Err(_) => Value::Null,
        },
        None => Value::Null,
    }
}

/// The Server model.
pub(crate) fn server_model(
    state: &AppState,
    caller: &ApiCaller,
    user: &UserRow,
    s: &ServerRow,
) -> Value {
    let url = server_url(state, &user.name, &s.name);
    let progress = progress_url(state, &user.name, &s.name);
    let full_name = format!("{}/{}", user.name, s.name);
    let mut m = json!({
        "name": s.name,
        "display_name": s.display_name.clone().unwrap_or_else(|| s.name.clone()),
        "full_name": full_name,
        "last_activity": iso_opt(s.last_activity),
        "started": iso_opt(s.started),
        "pending": s.pending,
        "ready": s.ready(),
        "stopped": !s.active(),
        "url": url,
        "user_options": s.user_options,
        "progress_url": progress,
        "full_url": absolute(state, &url),
        "full_progress_url": absolute(state, &progress),
    });
    let res = Resource::Server {
        user: &user.name,
        server: &s.name,
        groups: &user.groups,
    };
    if caller.allows("admin:server_state", res) {
        m["state"] = s.state.clone();
    }
    m
}

fn user_info(user: &UserRow) -> Value {
    let initials: String = user
        .name
        .chars()
        .take(1)
        .flat_map(char::to_uppercase)
        .collect();
    json!({"name": user.name, "display_name": user.name, "initials": initials})
}

/// Options for [`user_model`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct UserModelOpts {
    /// Include stopped servers in `servers`.
    pub(crate) include_stopped: bool,
    /// Include `auth_state` (only `GET /users/{name}`, with `admin:auth_state`).
    pub(crate) auth_state: bool,
    /// Fields every token may read about its own owner (`GET /user`).
    pub(crate) identity: bool,
}

/// The User model as `caller` may see it; `None` if it may see nothing.
pub(crate) fn user_model(
    state: &AppState,
    caller: &ApiCaller,
    user: &UserRow,
    roles: &[String],
    servers: &[ServerRow],
    opts: UserModelOpts,
) -> Option<Value> {
    let res = Resource::User {
        name: &user.name,
        groups: &user.groups,
    };
    let can = |s: &str| caller.allows(s, res);
    let mut m = Map::new();
    let name_ok = opts.identity || can("read:users:name") || can("read:users") || can("list:users");
    if name_ok {
        m.insert("kind".into(), "user".into());
        m.insert("name".into(), user.name.clone().into());
        m.insert("admin".into(), user.admin.into());
        m.insert("user_info".into(), user_info(user));
    }
    if opts.identity || can("read:users:groups") {
        m.insert("groups".into(), json!(user.groups));
    }
    if can("read:users:activity") {
        m.insert("last_activity".into(), iso_opt(user.last_activity));
    }
    if can("read:users") {
        let default = servers.iter().find(|s| s.name.is_empty());
        m.insert("created".into(), iso(user.created).into());
        m.insert(
            "server".into(),
            default
                .filter(|s| s.ready())
                .map_or(Value::Null, |_| server_url(state, &user.name, "").into()),
        );
        m.insert(
            "pending".into(),
            default.and_then(|s| s.pending.clone()).into(),
        );
    }
    if can("read:roles:users") {
        m.insert("roles".into(), json!(roles));
        m.insert("admin".into(), user.admin.into());
    }
    let mut visible_servers = Map::new();
    let mut any_servers_scope = false;
    for s in servers {
        let sres = Resource::Server {
            user: &user.name,
            server: &s.name,
            groups: &user.groups,
        };
        if caller.allows("read:servers", sres) {
            any_servers_scope = true;
            if s.active() || opts.include_stopped {
                visible_servers.insert(s.name.clone(), server_model(state, caller, user, s));
            }
        }
    }
    if any_servers_scope || can("read:servers") {
        m.insert("servers".into(), Value::Object(visible_servers));
    }
    if opts.auth_state && can("admin:auth_state") {
        let state = user
            .auth_state
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or(Value::Null);
        m.insert("auth_state".into(), state);
    }
    if m.is_empty() {
        return None;
    }
    m.insert("kind".into(), "user".into());
    m.entry("name").or_insert_with(|| user.name.clone().into());
    Some(Value::Object(m))
}

/// The Token model.
pub(crate) fn token_model(t: &TokenRow) -> Value {
    let mut m = json!({
        "id": format!("a{}", t.id),
        "kind": "api_token",
        "roles": [],
        "scopes": t.scopes,
        "created": iso(t.created),
        "last_activity": iso_opt(t.last_activity),
        "expires_at": iso_opt(t.expires_at),
        "note": t.note,
        "session_id": t.session_id,
        "oauth_client": t.oauth_client,
    });
    match &t.owner {
        TokenOwner::User { name, .. } => m["user"] = name.clone().into(),
        TokenOwner::Service { name, .. } => m["service"] = name.clone().into(),
    }
    m
}

/// The Group model.
pub(crate) fn group_model(caller: &ApiCaller, g: &GroupRow) -> Value {
    let res = Resource::Group { name: &g.name };
    let mut m = json!({"kind": "group", "name": g.name});
    if caller.allows("read:groups", res) {
        m["users"] = json!(g.users);
        m["properties"] = g.properties.clone();
    }
    if caller.allows("read:roles:groups", res) {
        m["roles"] = json!(g.roles);
    }
    m
}
