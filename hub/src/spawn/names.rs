//! What a server is called and where it lives: URL prefix, proxy route, origin, OAuth client,
//! token note, and the environment of compat spec section 1 built from them.

use std::collections::BTreeMap;

use serde_json::json;
use spawner::ServerId;

use super::settings::SpawnSettings;
use crate::names::seg;

/// Names derived from a server.
pub(super) struct Names {
    /// The URL path, `<base>user/NAME/[SERVER/]`.
    pub(super) prefix: String,
    /// The proxy route: the prefix, or `/HOST<prefix>` with per-user origins.
    pub(super) route: String,
    /// The server's origin with per-user origins (`https://NAME.hub.example`), else empty.
    pub(super) origin: String,
    /// The server's OAuth client id.
    pub(super) client_id: String,
    /// The note of the server's API token.
    pub(super) note: String,
    /// The server as spawners name it.
    pub(super) id: ServerId,
}

impl Names {
    /// The names of `user`'s server `server` under `settings`.
    pub(super) fn new(settings: &SpawnSettings, user: &str, server: &str) -> Self {
        let base = &settings.base_url;
        let prefix = if server.is_empty() {
            format!("{base}user/{}/", seg(user))
        } else {
            format!("{base}user/{}/{}/", seg(user), seg(server))
        };
        let client_id = super::oauth_client_id(user, server);
        let (route, origin) = match &settings.subdomain_host {
            Some(sub) => (
                format!("/{}{prefix}", sub.user_domain(user)),
                sub.user_origin(user),
            ),
            None => (prefix.clone(), String::new()),
        };
        Self {
            note: format!("Server at {prefix}"),
            route,
            origin,
            prefix,
            client_id,
            id: ServerId {
                user: user.to_owned(),
                name: server.to_owned(),
            },
        }
    }

    /// Where browsers open the server: the prefix, absolute on the user's own host with
    /// per-user origins.
    pub(super) fn url(&self) -> String {
        format!("{}{}", self.origin, self.prefix)
    }

    /// The server's OAuth redirect URI (on its own host with per-user origins, so the server
    /// sets its cookie there).
    pub(super) fn redirect_uri(&self) -> String {
        format!("{}{}oauth_callback", self.origin, self.prefix)
    }

    /// What the server's OAuth client may grant: access to the server, and
    /// `spawner.oauth_client_allowed_scopes` with `!user` as its owner and `!server` as it.
    pub(super) fn client_allowed_scopes(&self, s: &SpawnSettings) -> Vec<String> {
        let (user, server) = (&self.id.user, &self.id.name);
        let mut scopes = vec![format!("access:servers!server={user}/{server}")];
        for scope in &s.oauth_client_allowed_scopes {
            let scope = crate::scopes::fill_server_placeholders(scope, user, server);
            if !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
        scopes
    }

    /// The environment of compat spec section 1 (without `JUPYTERHUB_SERVICE_URL`, which the
    /// spawner adds once it knows its port); `token` is the server's API token.
    pub(super) fn environment(&self, s: &SpawnSettings, token: &str) -> BTreeMap<String, String> {
        let (user, server) = (&self.id.user, &self.id.name);
        let access = json!([
            format!("access:servers!server={user}/{server}"),
            format!("access:servers!user={user}"),
        ])
        .to_string();
        let allowed = json!(self.client_allowed_scopes(s)).to_string();
        let (host, public_url, public_hub) = match s.public_url.as_deref().map(url::Url::parse) {
            Some(Ok(u)) => {
                let origin = u.origin().ascii_serialization();
                let server_origin = if self.origin.is_empty() {
                    &origin
                } else {
                    &self.origin
                };
                (
                    origin.clone(),
                    format!("{server_origin}{}", self.prefix),
                    format!("{origin}{}hub/", s.base_url),
                )
            }
            _ => (String::new(), String::new(), String::new()),
        };
        let api = s.hub_api_url.trim_end_matches('/');
        let mut env = BTreeMap::new();
        for (k, v) in [
            ("JUPYTERHUB_API_TOKEN", token.to_owned()),
            ("JPY_API_TOKEN", token.to_owned()),
            ("JUPYTERHUB_CLIENT_ID", self.client_id.clone()),
            ("JUPYTERHUB_API_URL", api.to_owned()),
            ("JUPYTERHUB_SERVICE_PREFIX", self.prefix.clone()),
            ("JUPYTERHUB_OAUTH_CALLBACK_URL", self.redirect_uri()),
            ("JUPYTERHUB_OAUTH_ACCESS_SCOPES", access.clone()),
            ("JUPYTERHUB_OAUTH_SCOPES", access),
            ("JUPYTERHUB_OAUTH_CLIENT_ALLOWED_SCOPES", allowed),
            ("JUPYTERHUB_USER", user.clone()),
            ("JUPYTERHUB_SERVER_NAME", server.clone()),
            (
                "JUPYTERHUB_ACTIVITY_URL",
                format!("{api}/users/{}/activity", seg(user)),
            ),
            ("JUPYTERHUB_BASE_URL", s.base_url.clone()),
            ("JUPYTERHUB_HOST", host),
            ("JUPYTERHUB_PUBLIC_URL", public_url),
            ("JUPYTERHUB_PUBLIC_HUB_URL", public_hub),
            ("JUPYTERHUB_COOKIE_HOST_PREFIX_ENABLED", "0".to_owned()),
        ] {
            env.insert(k.to_owned(), v);
        }
        env
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_servers_client_may_grant_the_allowed_scopes_for_its_owner_only() {
        let s = SpawnSettings {
            hub_api_url: "http://127.0.0.1:8081/hub/api".to_owned(),
            base_url: "/".to_owned(),
            public_url: None,
            subdomain_host: None,
            start_timeout: Duration::from_secs(5),
            slow_spawn_timeout: Duration::from_secs(1),
            poll_interval: Duration::from_millis(10),
            oauth_client_allowed_scopes: vec![
                "shares!user".to_owned(),
                "read:servers!server".to_owned(),
                "read:users:name".to_owned(),
                "access:servers!server".to_owned(),
            ],
        };
        let n = Names::new(&s, "alice", "lab");
        assert_eq!(
            n.client_allowed_scopes(&s),
            [
                "access:servers!server=alice/lab",
                "shares!user=alice",
                "read:servers!server=alice/lab",
                "read:users:name",
            ]
        );
        let env = n.environment(&s, "t");
        let allowed: Vec<String> =
            serde_json::from_str(&env["JUPYTERHUB_OAUTH_CLIENT_ALLOWED_SCOPES"]).unwrap();
        assert_eq!(allowed, n.client_allowed_scopes(&s));
    }
}
