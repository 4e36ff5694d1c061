//! Services (`[[services]]`, JupyterHub's `c.JupyterHub.services`), custom scopes
//! (`[custom_scopes]`) and the idle culler (`[idle_culler]`, which becomes one managed service
//! and one role at load time, so nothing downstream knows it apart from any other service).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Config, Lookup, RoleConfig, Secret};

/// A service the hub knows (JupyterHub's service spec).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// The name: letters, digits, `.`, `_`, `-`; the service is at `/services/NAME/`.
    pub name: String,
    /// The service's API token (`services[i].api_token`, or env
    /// `STACKHUB_SERVICE_<NAME>_API_TOKEN`); unset for a managed service: the hub makes one at
    /// every start and hands it over in `JUPYTERHUB_API_TOKEN`.
    #[serde(skip)]
    pub api_token: Option<Secret>,
    /// A managed service: the command the hub starts (and restarts when it exits).
    #[serde(default)]
    pub command: Vec<String>,
    /// Environment of a managed service (set before the `JUPYTERHUB_*` variables).
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    /// Working directory of a managed service (default: the hub's).
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// A managed service's output goes to this file (appended); default: the hub's own log.
    #[serde(default)]
    pub log_file: Option<PathBuf>,
    /// Where the service listens (`http://127.0.0.1:10101`): the proxy routes
    /// `/services/NAME/` there.
    #[serde(default)]
    pub url: Option<String>,
    /// OAuth client id (must start with `service-`; default `service-NAME`).
    #[serde(default)]
    pub oauth_client_id: Option<String>,
    /// OAuth redirect URI (default, with `url`: `<prefix>oauth_callback`).
    #[serde(default)]
    pub oauth_redirect_uri: Option<String>,
    /// Users logging in to it through OAuth are not asked to confirm.
    #[serde(default)]
    pub oauth_no_confirm: bool,
    /// Scopes users' OAuth tokens for the service may carry besides access to it.
    #[serde(default)]
    pub oauth_client_allowed_scopes: Vec<String>,
    /// Listed in the home page's services menu (when it has a `url`).
    #[serde(default = "yes")]
    pub display: bool,
    /// Free-form information shown in the API's service model.
    #[serde(default)]
    pub info: serde_json::Map<String, serde_json::Value>,
}

fn yes() -> bool {
    true
}

impl ServiceConfig {
    /// A service called `name` with nothing else set.
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            api_token: None,
            command: Vec::new(),
            environment: BTreeMap::new(),
            cwd: None,
            log_file: None,
            url: None,
            oauth_client_id: None,
            oauth_redirect_uri: None,
            oauth_no_confirm: false,
            oauth_client_allowed_scopes: Vec::new(),
            display: true,
            info: serde_json::Map::new(),
        }
    }

    /// The hub starts and supervises it.
    pub fn managed(&self) -> bool {
        !self.command.is_empty()
    }

    /// It logs users in through the hub (JupyterHub: a `url` or any OAuth setting).
    pub fn oauth_available(&self) -> bool {
        self.url.is_some() || self.oauth_client_id.is_some() || self.oauth_redirect_uri.is_some()
    }
}

/// A custom scope (`[custom_scopes."custom:NAME"]`), as JupyterHub's `custom_scopes`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CustomScope {
    /// What it allows (for people).
    pub description: String,
    /// Scopes it implies (each `custom:…` and defined).
    pub subscopes: Vec<String>,
}

/// The idle culler (`[idle_culler]`): `jupyterhub-idle-culler` as a managed service named
/// `idle-culler` with a role of its own holding only the scopes it needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdleCullerConfig {
    /// Run it (env `STACKHUB_IDLE_CULLER`: `true`/`false`). Default: off (`scripts/run` and
    /// the Helm chart turn it on).
    pub enabled: bool,
    /// Seconds a server may be idle before it is stopped (`--timeout`; the Data Lake: 600).
    pub timeout: u64,
    /// Seconds between checks (`--cull-every`).
    pub every: u64,
    /// Concurrent requests to the hub (`--concurrency`).
    pub concurrency: u32,
    /// Seconds after which a server is stopped even if active (`--max-age`; 0 = never).
    pub max_age: u64,
    /// Also delete users idle as long (`--cull-users`; gives the role `admin:users`).
    pub users: bool,
    /// The command; empty = `<spawner.venv>/bin/jupyterhub-idle-culler`.
    pub command: Vec<String>,
    /// Its log file (default: the hub's log).
    pub log_file: Option<PathBuf>,
}

impl Default for IdleCullerConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            timeout: 600,
            every: 60,
            concurrency: 10,
            max_age: 0,
            users: false,
            command: Vec::new(),
            log_file: None,
        }
    }
}

/// The idle culler's service and role name.
pub const IDLE_CULLER: &str = "idle-culler";

/// Environment variable: turn the idle culler on or off.
pub(crate) const ENV_IDLE_CULLER: &str = "STACKHUB_IDLE_CULLER";
/// Environment variable: the idle culler's timeout, seconds.
pub(crate) const ENV_IDLE_CULLER_TIMEOUT: &str = "STACKHUB_IDLE_CULLER_TIMEOUT";

/// The environment variable holding service `name`'s API token.
pub(crate) fn token_env_var(name: &str) -> String {
    let key: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("STACKHUB_SERVICE_{key}_API_TOKEN")
}

/// Take `services[i].api_token` out of the TOML table before it is deserialized (so a type
/// error cannot echo a token), as `(index, token)`.
pub(super) fn take_tokens(table: &mut toml::Table) -> Result<Vec<(usize, String)>, String> {
    let mut out = Vec::new();
    if let Some(toml::Value::Array(services)) = table.get_mut("services") {
        for (i, s) in services.iter_mut().enumerate() {
            if let toml::Value::Table(t) = s
                && let Some(v) = t.remove("api_token")
            {
                match v {
                    toml::Value::String(v) => out.push((i, v)),
                    _ => return Err(format!("`services[{i}].api_token` must be a string")),
                }
            }
        }
    }
    Ok(out)
}

impl Config {
    /// Environment overrides of services and the culler.
    pub(super) fn apply_service_env(&mut self, env: &dyn Lookup) -> Result<(), super::ConfigError> {
        for s in &mut self.services {
            if let Some(v) = env.get(&token_env_var(&s.name)).filter(|v| !v.is_empty()) {
                s.api_token = Some(Secret::new(v));
            }
        }
        if let Some(v) = env.get(ENV_IDLE_CULLER) {
            self.idle_culler.enabled = match v.as_str() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" | "" => false,
                _ => {
                    return Err(super::invalid(
                        ENV_IDLE_CULLER,
                        "must be true or false (or 1/0, yes/no, on/off)",
                    ));
                }
            };
        }
        if let Some(v) = env.get(ENV_IDLE_CULLER_TIMEOUT) {
            self.idle_culler.timeout = v
                .parse()
                .map_err(|_| super::invalid(ENV_IDLE_CULLER_TIMEOUT, "not a number of seconds"))?;
        }
        Ok(())
    }

    /// Turn `[idle_culler]` into a managed service and its role (called once at load).
    pub(super) fn expand_idle_culler(&mut self) -> Result<(), super::ConfigError> {
        let c = &self.idle_culler;
        if !c.enabled {
            return Ok(());
        }
        if c.timeout == 0 || c.every == 0 || c.concurrency == 0 {
            return Err(super::invalid(
                "idle_culler",
                "timeout, every and concurrency must be at least 1",
            ));
        }
        let mut command = if c.command.is_empty() {
            vec![
                self.spawner
                    .venv
                    .join("bin")
                    .join("jupyterhub-idle-culler")
                    .display()
                    .to_string(),
            ]
        } else {
            c.command.clone()
        };
        command.push(format!("--timeout={}", c.timeout));
        command.push(format!("--cull-every={}", c.every));
        command.push(format!("--concurrency={}", c.concurrency));
        if c.max_age > 0 {
            command.push(format!("--max-age={}", c.max_age));
        }
        if c.users {
            command.push("--cull-users".to_owned());
        }
        let mut service = ServiceConfig::named(IDLE_CULLER);
        service.command = command;
        service.log_file.clone_from(&c.log_file);
        service.display = false;
        let mut scopes: Vec<String> = [
            "list:users",
            "read:users:activity",
            "read:servers",
            "delete:servers",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        if c.users {
            scopes.push("admin:users".to_owned());
        }
        self.services.push(service);
        self.roles.push(RoleConfig {
            name: IDLE_CULLER.to_owned(),
            description: "jupyterhub-idle-culler: list users, stop idle servers".to_owned(),
            scopes,
            services: vec![IDLE_CULLER.to_owned()],
            ..RoleConfig::default()
        });
        Ok(())
    }
}

/// Whether `program` can be run: a path to an executable file, or a name found on `PATH`.
pub(super) fn runnable(program: &str, cwd: Option<&Path>) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = Path::new(program);
        return match cwd {
            Some(dir) if p.is_relative() => executable(&dir.join(p)),
            _ => executable(p),
        };
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| executable(&d.join(program))))
}

/// Whether `name` is a usable service name.
pub(super) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !name.starts_with('.')
}

/// Check roles, custom scopes and services together: every scope known (custom ones defined),
/// every role member known, service names unique, commands runnable, URLs usable. Errors name
/// the key (`services[2].command`) and the service or role.
pub(super) fn validate(config: &Config) -> Result<(), (String, String)> {
    let custom = &config.custom_scopes;
    for (name, scope) in custom {
        let key = format!("custom_scopes.\"{name}\"");
        if !crate::scopes::is_custom(name) {
            return Err((
                key,
                "a custom scope is `custom:` then lower-case letters, digits, `_`, `-`, `*`, `:`"
                    .to_owned(),
            ));
        }
        for sub in &scope.subscopes {
            if !custom.contains_key(sub) {
                return Err((
                    format!("{key}.subscopes"),
                    format!("`{sub}` is not a defined custom scope"),
                ));
            }
        }
    }
    let scope_ok = |scope: &str| {
        crate::scopes::validate_scope(scope).is_ok() && {
            let name = scope.split_once('!').map_or(scope, |(n, _)| n);
            !crate::scopes::is_custom(name) || custom.contains_key(name)
        }
    };
    let mut names = std::collections::BTreeSet::new();
    for (i, s) in config.services.iter().enumerate() {
        let key = |field: &str| format!("services[{i}].{field}");
        let what = |reason: String| format!("service `{}`: {reason}", s.name);
        if !valid_name(&s.name) {
            return Err((
                key("name"),
                format!(
                    "`{}` is not a service name (letters, digits, `.`, `_`, `-`)",
                    s.name
                ),
            ));
        }
        if !names.insert(s.name.as_str()) || s.name == config.admin_service_name {
            return Err((key("name"), what("the name is used twice".to_owned())));
        }
        if let Some(program) = s.command.first()
            && !runnable(program, s.cwd.as_deref())
        {
            return Err((
                key("command"),
                what(format!(
                    "`{program}` is not an executable file or a program on PATH"
                )),
            ));
        }
        if !s.managed() && !s.environment.is_empty() {
            return Err((
                key("environment"),
                what("only a managed service (with `command`) has an environment".to_owned()),
            ));
        }
        if let Some(url) = &s.url {
            match url::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                _ => {
                    return Err((key("url"), what(format!("`{url}` is not an http(s) URL"))));
                }
            }
        }
        if let Some(id) = &s.oauth_client_id
            && (!id.starts_with("service-") || id.len() <= "service-".len())
        {
            return Err((
                key("oauth_client_id"),
                what(format!("`{id}` must start with `service-`")),
            ));
        }
        match &s.oauth_redirect_uri {
            Some(uri) => {
                let ok = uri.starts_with('/') && !uri.starts_with("//")
                    || url::Url::parse(uri).is_ok_and(|u| {
                        matches!(u.scheme(), "http" | "https") && u.host().is_some()
                    });
                if !ok {
                    return Err((
                        key("oauth_redirect_uri"),
                        what(format!(
                            "`{uri}` is neither an http(s) URL nor an absolute path"
                        )),
                    ));
                }
            }
            None if s.oauth_available() && s.url.is_none() => {
                return Err((
                    key("oauth_redirect_uri"),
                    what("OAuth without `url` needs an explicit redirect URI".to_owned()),
                ));
            }
            None => {}
        }
        if s.oauth_available() && !s.managed() && s.api_token.is_none() {
            return Err((
                key("api_token"),
                what(format!(
                    "OAuth login needs the service's api_token (or env {}), its client secret",
                    token_env_var(&s.name)
                )),
            ));
        }
        for scope in &s.oauth_client_allowed_scopes {
            if !scope_ok(scope) {
                return Err((
                    key("oauth_client_allowed_scopes"),
                    what(format!("unknown scope `{scope}`")),
                ));
            }
        }
    }
    let mut role_names = std::collections::BTreeSet::new();
    for (i, role) in config.roles.iter().enumerate() {
        let key = |field: &str| format!("roles[{i}].{field}");
        if role.name.is_empty() {
            return Err((key("name"), "must not be empty".to_owned()));
        }
        if role.name == "admin" {
            return Err((
                key("name"),
                "the built-in `admin` role cannot be redefined".to_owned(),
            ));
        }
        if !role_names.insert(role.name.as_str()) {
            return Err((
                key("name"),
                format!("role `{}` is defined twice", role.name),
            ));
        }
        for scope in &role.scopes {
            if !scope_ok(scope) {
                return Err((
                    key("scopes"),
                    format!("role `{}`: unknown scope `{scope}`", role.name),
                ));
            }
        }
        for user in &role.users {
            if crate::names::UserName::normalized(user).is_err() {
                return Err((
                    key("users"),
                    format!("role `{}`: `{user}` is not a user name", role.name),
                ));
            }
        }
        for service in &role.services {
            if !names.contains(service.as_str()) && *service != config.admin_service_name {
                return Err((
                    key("services"),
                    format!("role `{}`: no service named `{service}`", role.name),
                ));
            }
        }
    }
    Ok(())
}
