//! `[s3]` and `[[sites]]`: the embedded S3 store and the site registry's configuration.
//!
//! Secrets (gateway tokens, S3 secret keys) are never in the file: a site names the environment
//! variable holding each (`token_env`, `secret_env`).
//!
//! Environment overrides of a configured site `ID` (upper-cased, `-` as `_`):
//! `STACKHUB_SITE_ID_GATEWAY_URL` and `STACKHUB_SITE_ID_GATEWAY_TOKEN_LIFETIME_SECS` (e.g.
//! `STACKHUB_SITE_LUMI_GATEWAY_URL`; `scripts/run` sets the URLs of the local sites it starts).

use serde::Deserialize;

/// The S3 store embedded in the hub (`[s3]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedS3Config {
    /// Run it (default true): sites with `s3.mode = "embedded"` use it.
    pub embedded: bool,
    /// Listen address (loopback by default: kernels at local sites reach it).
    pub ip: std::net::IpAddr,
    /// Listen port; 0 (default) = any free port the first time, the same one on later starts
    /// when it is free (`<data_dir>/s3/port`), announced in the log and `GET /hub/api/sites`.
    pub port: u16,
    /// Region name (lower-case).
    pub region: String,
    /// Bucket holding `users/NAME/`.
    pub bucket: String,
    /// Lifetime of issued credentials, seconds.
    pub credential_lifetime_secs: i64,
    /// Seconds between site health checks.
    pub health_interval_secs: u64,
}

impl Default for EmbeddedS3Config {
    fn default() -> Self {
        Self {
            embedded: true,
            ip: std::net::IpAddr::from([127, 0, 0, 1]),
            port: 0,
            region: "local".to_owned(),
            bucket: "stackhub".to_owned(),
            credential_lifetime_secs: 12 * 3600,
            health_interval_secs: 30,
        }
    }
}

/// How the hub authenticates to a site's gateway.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GatewayAuth {
    /// No credentials (a gateway on a private network).
    #[default]
    None,
    /// `Authorization: token <secret>`, the secret read from `token_env` (the gateway sees one
    /// caller for every user).
    Token,
    /// `Authorization: Bearer <JWT>`: a short-lived token the hub signs for each user at this
    /// site ([`super::jwt`]); the gateway validates it against `/hub/api/sites/jwks.json` and
    /// knows the user.
    HubJwt,
}

/// Where a site's S3 credentials come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SiteS3Mode {
    /// The hub's embedded store (`[s3] embedded = true`).
    Embedded,
    /// STS `AssumeRole` with the hub's key.
    Sts,
    /// Operator-configured credentials handed to every user.
    Static,
}

/// A site's S3 exchange (`[sites.s3]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteS3Config {
    /// Where credentials come from.
    pub mode: SiteS3Mode,
    /// S3 endpoint (not for `embedded`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// STS/IAM endpoint (`sts`; default: `endpoint`).
    #[serde(default)]
    pub sts_endpoint: Option<String>,
    /// Region (not for `embedded`).
    #[serde(default)]
    pub region: Option<String>,
    /// Bucket (not for `embedded`).
    #[serde(default)]
    pub bucket: Option<String>,
    /// The hub's (`sts`) or the users' (`static`) access key id.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// Environment variable holding the matching secret key.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// `sts`: a fixed role to assume (default: one IAM role per user).
    #[serde(default)]
    pub role_arn: Option<String>,
    /// `sts`: name prefix of per-user roles.
    #[serde(default = "default_role_prefix")]
    pub role_prefix: String,
    /// `sts`: the one principal (ARN) per-user roles trust (default: the hub key's identity).
    #[serde(default)]
    pub trusted_principal: Option<String>,
    /// `sts`: lifetime of credentials, seconds.
    #[serde(default = "default_duration")]
    pub duration_secs: i32,
}

fn default_token_roles() -> Vec<String> {
    vec!["stack-jupyter".to_owned()]
}

fn default_role_prefix() -> String {
    "stackhub-user-".to_owned()
}

fn default_duration() -> i32 {
    12 * 3600
}

/// Default lifetime of the hub-issued gateway tokens (`gateway_auth = "hub-jwt"`), seconds.
pub const DEFAULT_GATEWAY_TOKEN_LIFETIME_SECS: i64 = 3600;
/// Longest accepted `gateway_token_lifetime_secs` (a day).
const MAX_GATEWAY_TOKEN_LIFETIME_SECS: i64 = 24 * 3600;

fn default_gateway_token_lifetime() -> i64 {
    DEFAULT_GATEWAY_TOKEN_LIFETIME_SECS
}

/// One site (`[[sites]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// Short id (`lumi`): profile `site = "lumi"` refers to it.
    pub id: String,
    /// Display name (`LUMI Bridge`).
    pub name: String,
    /// The site's kernel gateway (`https://jeg.lumi.example/`).
    pub gateway_url: String,
    /// How the hub authenticates to the gateway.
    #[serde(default)]
    pub gateway_auth: GatewayAuth,
    /// PEM CA certificate(s) an https gateway's certificate chains to, when that is a private
    /// CA (public CAs are trusted anyway). Trusted by the hub's health checks, the proxy's
    /// direct kernel route and the single-user server's `GatewayClient`; read at start-up.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// With `gateway_auth = "token"`: the environment variable holding the token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// With `gateway_auth = "hub-jwt"`: roles every token for this site carries besides the
    /// user's quota role (the gateway's `required_role`; the Data Lake's is `stack-jupyter`).
    #[serde(default = "default_token_roles")]
    pub token_roles: Vec<String>,
    /// With `gateway_auth = "hub-jwt"`: lifetime of the tokens the hub issues, seconds (default
    /// an hour; 1 ..= 86400). Single-user servers renew theirs before it runs out.
    #[serde(default = "default_gateway_token_lifetime")]
    pub gateway_token_lifetime_secs: i64,
    /// The S3 exchange; unset = not configured (the site is offered to nobody).
    #[serde(default)]
    pub s3: Option<SiteS3Config>,
    /// The site's Dask Gateway (`bridges.json` `address`); unset: the gateway's own address
    /// (`stackhub-gateway` serves Dask on its port); `""`: the site has none.
    #[serde(default)]
    pub dask_address: Option<String>,
    /// The site's Dask scheduler proxy (`bridges.json` `proxy_address`); unset:
    /// `gateway://<host>:<port>` of the Dask address.
    #[serde(default)]
    pub dask_proxy_address: Option<String>,
    /// Where browsers open the site's Dask dashboards (the client's `public_address`); unset:
    /// through the hub (the origin of `public_url`; the site's gateway runs with
    /// `[dask] dashboard_prefix = "<base_url>hub/dask/<id>"`), or the Dask address when the hub
    /// has no `public_url`.
    #[serde(default)]
    pub dask_public_address: Option<String>,
}

impl SiteConfig {
    /// The site's Dask settings as configured.
    pub fn dask_settings(&self) -> crate::sites::dask::DaskSettings<'_> {
        crate::sites::dask::DaskSettings {
            address: self.dask_address.as_deref(),
            proxy_address: self.dask_proxy_address.as_deref(),
            public_address: self.dask_public_address.as_deref(),
        }
    }
}

/// The five DestinE Data Lake sites, each a local gateway on its own loopback address
/// (`127.0.0.2` … `127.0.0.6`, port 8888) using the embedded S3 store.
pub fn default_sites() -> Vec<SiteConfig> {
    [
        ("central", "Central Site"),
        ("lumi", "LUMI Bridge"),
        ("leonardo", "LEONARDO Bridge"),
        ("eumetsat", "EUMETSAT Bridge"),
        ("marenostrum", "MareNostrum Bridge"),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (id, name))| SiteConfig {
        id: id.to_owned(),
        name: name.to_owned(),
        gateway_url: format!("http://127.0.0.{}:8888/", i + 2),
        gateway_auth: GatewayAuth::HubJwt,
        ca_file: None,
        token_env: None,
        token_roles: default_token_roles(),
        gateway_token_lifetime_secs: DEFAULT_GATEWAY_TOKEN_LIFETIME_SECS,
        s3: Some(SiteS3Config {
            mode: SiteS3Mode::Embedded,
            endpoint: None,
            sts_endpoint: None,
            region: None,
            bucket: None,
            access_key_id: None,
            secret_env: None,
            role_arn: None,
            role_prefix: default_role_prefix(),
            trusted_principal: None,
            duration_secs: default_duration(),
        }),
        dask_address: None,
        dask_proxy_address: None,
        dask_public_address: None,
    })
    .collect()
}

/// The prefix of site `id`'s environment overrides: `STACKHUB_SITE_LUMI_`.
pub fn site_env_prefix(id: &str) -> String {
    let id: String = id
        .chars()
        .map(|c| match c {
            '-' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect();
    format!("STACKHUB_SITE_{id}_")
}

/// Apply the environment overrides of every configured site: `(variable, reason)` of the first
/// bad value.
pub(crate) fn apply_env(
    sites: &mut [SiteConfig],
    env: &dyn super::Lookup,
) -> Result<(), (String, String)> {
    for site in sites {
        let prefix = site_env_prefix(&site.id);
        if let Some(v) = env.get(&format!("{prefix}GATEWAY_URL")) {
            site.gateway_url = v;
        }
        let var = format!("{prefix}GATEWAY_TOKEN_LIFETIME_SECS");
        if let Some(v) = env.get(&var) {
            site.gateway_token_lifetime_secs = v.trim().parse().map_err(|_| {
                (
                    var.clone(),
                    format!("{v:?} is not a whole number of seconds"),
                )
            })?;
        }
    }
    Ok(())
}

fn http_url(key: &str, v: &str) -> Result<(), (String, String)> {
    match url::Url::parse(v) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(()),
        _ => Err((key.to_owned(), "must be an http(s) URL".to_owned())),
    }
}

/// Check `[s3]` and `[[sites]]`: `(key, reason)` of the first bad value.
pub(crate) fn validate(
    s3: &EmbeddedS3Config,
    sites: &[SiteConfig],
) -> Result<(), (String, String)> {
    let bad = |k: String, r: &str| Err((k, r.to_owned()));
    if s3.embedded {
        if s3.region.is_empty()
            || !s3
                .region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return bad(
                "s3.region".into(),
                "must be lower-case letters, digits and `-`",
            );
        }
        if s3.credential_lifetime_secs < 900 {
            return bad("s3.credential_lifetime_secs".into(), "must be at least 900");
        }
    }
    if s3.health_interval_secs == 0 {
        return bad("s3.health_interval_secs".into(), "must be at least 1");
    }
    let mut seen = std::collections::HashSet::new();
    for (i, site) in sites.iter().enumerate() {
        let key = |f: &str| format!("sites[{i}].{f}");
        if site.id.is_empty()
            || !site
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return bad(key("id"), "must be letters, digits, `-` or `_`");
        }
        if !seen.insert(site.id.as_str()) {
            return bad(key("id"), "is used by another site");
        }
        http_url(&key("gateway_url"), &site.gateway_url)?;
        crate::sites::dask::resolve(&site.gateway_url, site.dask_settings(), None)
            .map_err(|(field, reason)| (key(field), reason))?;
        if site.ca_file.is_some() && !site.gateway_url.starts_with("https:") {
            return bad(key("ca_file"), "needs an https gateway_url");
        }
        let lifetime = site.gateway_token_lifetime_secs;
        if !(1..=MAX_GATEWAY_TOKEN_LIFETIME_SECS).contains(&lifetime) {
            return Err((
                key("gateway_token_lifetime_secs"),
                format!(
                    "must be between 1 and {MAX_GATEWAY_TOKEN_LIFETIME_SECS} seconds, not {lifetime}"
                ),
            ));
        }
        if site.gateway_auth == GatewayAuth::Token && site.token_env.is_none() {
            return bad(
                key("token_env"),
                "is required with gateway_auth = \"token\"",
            );
        }
        let Some(x) = &site.s3 else { continue };
        match x.mode {
            SiteS3Mode::Embedded => {
                if !s3.embedded {
                    return bad(key("s3.mode"), "\"embedded\" needs [s3] embedded = true");
                }
            }
            SiteS3Mode::Sts | SiteS3Mode::Static => {
                for (field, value) in [
                    ("endpoint", &x.endpoint),
                    ("region", &x.region),
                    ("bucket", &x.bucket),
                    ("access_key_id", &x.access_key_id),
                    ("secret_env", &x.secret_env),
                ] {
                    if value.as_deref().is_none_or(str::is_empty) {
                        return bad(key(&format!("s3.{field}")), "is required for this mode");
                    }
                }
                if let Some(e) = &x.endpoint {
                    http_url(&key("s3.endpoint"), e)?;
                }
                if x.mode == SiteS3Mode::Sts && !(900..=43200).contains(&x.duration_secs) {
                    return bad(key("s3.duration_secs"), "must be between 900 and 43200");
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use crate::config::Config;

    fn load(toml: Option<&str>, env: &[(&str, &str)]) -> Result<Config, String> {
        let env: HashMap<&str, &str> = env.iter().copied().collect();
        let file = toml.map(|text| {
            let p = std::env::temp_dir().join(format!(
                "hub-sites-config-{}-{}.toml",
                std::process::id(),
                uuid::Uuid::new_v4()
            ));
            std::fs::write(&p, text).unwrap();
            p
        });
        let r = Config::load(file.as_deref(), &env).map_err(|e| e.to_string());
        if let Some(p) = file {
            let _ = std::fs::remove_file(p);
        }
        r
    }

    #[test]
    fn gateway_token_lifetime_defaults_to_an_hour_and_is_set_per_site() {
        let c = load(None, &[]).unwrap();
        assert!(
            c.sites
                .iter()
                .all(|s| s.gateway_token_lifetime_secs == 3600)
        );
        let toml = "[[sites]]\nid = \"lumi-x\"\nname = \"L\"\ngateway_url = \"http://127.0.0.1:1/\"\n\
                    gateway_token_lifetime_secs = 120\n\n\
                    [[sites]]\nid = \"leo\"\nname = \"E\"\ngateway_url = \"http://127.0.0.1:2/\"\n";
        let c = load(Some(toml), &[]).unwrap();
        assert_eq!(c.sites[0].gateway_token_lifetime_secs, 120);
        assert_eq!(c.sites[1].gateway_token_lifetime_secs, 3600);
        let c = load(
            Some(toml),
            &[
                ("STACKHUB_SITE_LUMI_X_GATEWAY_TOKEN_LIFETIME_SECS", "5"),
                ("STACKHUB_SITE_LEO_GATEWAY_URL", "http://127.0.0.9:8888/"),
            ],
        )
        .unwrap();
        assert_eq!(c.sites[0].gateway_token_lifetime_secs, 5);
        assert_eq!(c.sites[1].gateway_url, "http://127.0.0.9:8888/");
    }

    #[test]
    fn bad_dask_addresses_are_refused_naming_the_key() {
        for (line, key) in [
            ("dask_address = \"dask.lumi\"", "sites[0].dask_address"),
            (
                "dask_proxy_address = \"dask.lumi:80\"",
                "sites[0].dask_proxy_address",
            ),
        ] {
            let toml = format!(
                "[[sites]]\nid = \"lumi\"\nname = \"L\"\ngateway_url = \"http://127.0.0.1:1/\"\n{line}\n"
            );
            let err = load(Some(&toml), &[]).unwrap_err();
            assert!(err.contains(key), "{err}");
        }
        let toml = "[[sites]]\nid = \"lumi\"\nname = \"L\"\ngateway_url = \"http://127.0.0.1:1/\"\n\
                    dask_address = \"\"\n";
        assert!(load(Some(toml), &[]).is_ok());
    }

    #[test]
    fn nonsense_gateway_token_lifetimes_are_refused_naming_key_and_value() {
        for (toml_value, shown) in [("0", "not 0"), ("-30", "not -30"), ("90000", "not 90000")] {
            let toml = format!(
                "[[sites]]\nid = \"lumi\"\nname = \"L\"\ngateway_url = \"http://127.0.0.1:1/\"\n\
                 gateway_token_lifetime_secs = {toml_value}\n"
            );
            let err = load(Some(&toml), &[]).unwrap_err();
            assert!(
                err.contains("sites[0].gateway_token_lifetime_secs") && err.contains(shown),
                "{err}"
            );
        }
        let err = load(
            None,
            &[("STACKHUB_SITE_LUMI_GATEWAY_TOKEN_LIFETIME_SECS", "1h")],
        )
        .unwrap_err();
        assert!(
            err.contains("STACKHUB_SITE_LUMI_GATEWAY_TOKEN_LIFETIME_SECS")
                && err.contains("\"1h\" is not a whole number of seconds"),
            "{err}"
        );
        let err = load(
            None,
            &[("STACKHUB_SITE_MARENOSTRUM_GATEWAY_TOKEN_LIFETIME_SECS", "0")],
        )
        .unwrap_err();
        assert!(
            err.contains("sites[4].gateway_token_lifetime_secs") && err.contains("not 0"),
            "{err}"
        );
        let err = load(None, &[("STACKHUB_SITE_LUMI_GATEWAY_URL", "ftp://x")]).unwrap_err();
        assert!(err.contains("sites[1].gateway_url"), "{err}");
    }
}
