//! Checking a loaded config: every key that can be wrong is named in the error.

use super::{Config, ConfigError, SpawnerKind, invalid};

impl Config {
    /// Check values that parse but make no sense.
    ///
    /// # Errors
    /// The first bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.base_url.starts_with('/') || !self.base_url.ends_with('/') {
            return Err(invalid("base_url", "must start and end with `/`"));
        }
        if let Some(url) = &self.public_url {
            let parsed = url::Url::parse(url).map_err(|_| invalid("public_url", "not a URL"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(invalid("public_url", "must be http or https"));
            }
            if let Some(sub) = &self.subdomain_host
                && !parsed
                    .host_str()
                    .is_some_and(|h| h.eq_ignore_ascii_case(sub.domain()))
            {
                return Err(invalid(
                    "public_url",
                    format!("must be on the subdomain_host's host `{}`", sub.domain()),
                ));
            }
        }
        if let Some(url) = &self.proxy.api_url {
            let parsed = url::Url::parse(url).map_err(|_| invalid("proxy.api_url", "not a URL"))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
                return Err(invalid("proxy.api_url", "must be http(s)://host[:port]"));
            }
            if !parsed.username().is_empty() || parsed.password().is_some() {
                return Err(invalid(
                    "proxy.api_url",
                    "must not hold credentials (the token comes from CONFIGPROXY_AUTH_TOKEN)",
                ));
            }
        }
        for scope in &self.spawner.oauth_client_allowed_scopes {
            // `!user` and `!server` stand for the server's owner and the server.
            let filled = crate::scopes::fill_server_placeholders(scope, "owner", "server");
            let (name, _) = filled.split_once('!').unwrap_or((&filled, ""));
            if crate::scopes::validate_scope(&filled).is_err()
                || (crate::scopes::is_custom(name) && !self.custom_scopes.contains_key(name))
                || matches!(name, "inherit" | "all" | "admin" | "self")
            {
                return Err(invalid(
                    "spawner.oauth_client_allowed_scopes",
                    format!("`{scope}` is not a scope a server's token may carry"),
                ));
            }
        }
        if let Some(db) = &self.db_url {
            let db = db.expose();
            if !(db.starts_with("sqlite:")
                || db.starts_with("postgres://")
                || db.starts_with("postgresql://"))
            {
                return Err(invalid(
                    "db_url",
                    "must start with sqlite:, postgres:// or postgresql://",
                ));
            }
        }
        if let Some(secret) = &self.cookie_secret {
            match hex::decode(secret.expose()) {
                Ok(bytes) if bytes.len() >= 32 => {}
                _ => return Err(invalid("cookie_secret", "must be at least 32 bytes of hex")),
            }
        }
        if let Some(token) = &self.admin_token
            && token.expose().len() < 16
        {
            return Err(invalid("admin_token", "must be at least 16 characters"));
        }
        if self.spawner.start_timeout == 0 {
            return Err(invalid(
                "spawner.start_timeout",
                "must be at least 1 second",
            ));
        }
        if let Some(url) = &self.hub_connect_url {
            let parsed =
                url::Url::parse(url).map_err(|_| invalid("hub_connect_url", "not a URL"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(invalid("hub_connect_url", "must be http or https"));
            }
        }
        if self.max_body_bytes < 1024 {
            return Err(invalid("max_body_bytes", "must be at least 1024"));
        }
        if self.cookie_max_age_days == 0 {
            return Err(invalid("cookie_max_age_days", "must be at least 1"));
        }
        if let Some(oidc) = &self.auth.oidc {
            oidc.validate().map_err(|(k, r)| invalid(&k, r))?;
        }
        stackhub_common::quota::validate(&self.quotas)
            .map_err(|e| invalid(&format!("quotas[{}].{}", e.index, e.field()), e.to_string()))?;
        super::sites::validate(&self.s3, &self.sites).map_err(|(k, r)| invalid(&k, r))?;
        spawner::profile::validate(&self.profile_list).map_err(|(k, r)| invalid(&k, r))?;
        super::services::validate(self).map_err(|(k, r)| invalid(&k, r))?;
        Ok(())
    }

    /// With `spawner.kind = "kubernetes"`: read `spawner.kubernetes_config` into
    /// `spawner.kubernetes`.
    pub(super) fn load_spawner_settings(&mut self) -> Result<(), ConfigError> {
        if self.spawner.kind != SpawnerKind::Kubernetes {
            return Ok(());
        }
        let Some(path) = self.spawner.kubernetes_config.clone() else {
            return Err(invalid(
                "spawner.kubernetes_config",
                "must name the Kubernetes spawner's JSON settings file when spawner.kind = \"kubernetes\"",
            ));
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let k8s: spawner::k8s::KubeSpawnerConfig =
            serde_json::from_str(&text).map_err(|e| ConfigError::Parse {
                path: path.clone(),
                message: e.to_string(),
            })?;
        if k8s.image.is_empty() {
            return Err(invalid(
                "spawner.kubernetes_config: image",
                "must not be empty",
            ));
        }
        if k8s.uid == 0 {
            return Err(invalid(
                "spawner.kubernetes_config: uid",
                "must not be 0 (servers never run as root)",
            ));
        }
        if k8s.start_timeout_secs == 0 {
            return Err(invalid(
                "spawner.kubernetes_config: start_timeout_secs",
                "must be at least 1 second",
            ));
        }
        self.spawner.kubernetes = Some(k8s);
        Ok(())
    }
}
