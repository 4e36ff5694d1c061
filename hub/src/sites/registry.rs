//! [`SiteRegistry`]: the configured sites, their S3 exchanges, and their health.
//!
//! A site is available when its gateway answers `GET {gateway_url}api` with 200 to the hub's
//! credentials AND its S3 exchange is configured and reachable. Checks run at start and every
//! `[s3] health_interval_secs` on the leading replica (see `shared_health`);
//! [`SiteRegistry::site_available`] reads the last result.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use s3_exchange::{
    EmbeddedConfig, EmbeddedS3, Exchange, Grant, StaticConfig, StaticExchange, StsConfig,
    StsExchange,
};
use serde::Serialize;
use tokio::sync::{Mutex, RwLock};

use super::config::{GatewayAuth, SiteConfig, SiteS3Mode};
use super::dask::SiteDask;
use super::jwt::GatewayTokens;

/// The user the hub's health checks present to gateways.
const HEALTH_CHECK_USER: &str = "stackhub-health-check";
use crate::config::{Config, Lookup, Secret};

/// A site the hub can start remote kernels at.
#[derive(Debug, Clone)]
pub struct Site {
    /// Short id (`lumi`).
    pub id: String,
    /// Display name (`LUMI Bridge`).
    pub name: String,
    /// The kernel gateway, ending in `/`.
    pub gateway_url: String,
    /// The private CA the gateway's certificate chains to, if any.
    pub ca_file: Option<std::path::PathBuf>,
    gateway_token: Option<Secret>,
    gateway_auth: GatewayAuth,
    token_roles: Vec<String>,
    token_lifetime_secs: i64,
    tokens: Arc<GatewayTokens>,
    /// Why the hub cannot authenticate to the gateway (token variable not set).
    gateway_problem: Option<String>,
    exchange: Option<Arc<dyn Exchange>>,
    /// Why the exchange is missing (not configured, secret not set, bad settings).
    s3_problem: Option<String>,
    s3_mode: Option<SiteS3Mode>,
    dask: Option<SiteDask>,
}

impl Site {
    /// The `Authorization` header value the hub presents to the gateway for `user` holding
    /// `roles`, if any, with its expiry (seconds since the epoch) for a hub-issued token. Never
    /// log it.
    ///
    /// # Errors
    /// Signing a hub token failed.
    pub fn gateway_authorization(
        &self,
        user: &str,
        roles: &[String],
    ) -> Result<Option<(String, Option<i64>)>, SiteUnavailable> {
        match self.gateway_auth {
            GatewayAuth::None => Ok(None),
            GatewayAuth::Token => Ok(self
                .gateway_token
                .as_ref()
                .map(|t| (format!("token {}", t.expose()), None))),
            GatewayAuth::HubJwt => {
                let t = self
                    .tokens_issue(user, roles)
                    .map_err(|e| SiteUnavailable {
                        site: self.id.clone(),
                        reason: format!("cannot sign a gateway token: {e}"),
                    })?;
                Ok(Some((format!("Bearer {}", t.token), Some(t.expires_at))))
            }
        }
    }

    /// A hub token for `user` holding `roles` at this site, valid for the site's
    /// `gateway_token_lifetime_secs`.
    ///
    /// # Errors
    /// Signing failed.
    pub fn tokens_issue(
        &self,
        user: &str,
        roles: &[String],
    ) -> Result<super::jwt::IssuedToken, jsonwebtoken::errors::Error> {
        let mut all = self.token_roles.clone();
        all.extend(
            roles
                .iter()
                .filter(|r| !self.token_roles.contains(r))
                .cloned(),
        );
        self.tokens
            .issue(user, &self.id, &all, self.token_lifetime_secs)
    }

    /// How the hub authenticates to this site's gateway.
    pub fn gateway_auth(&self) -> &GatewayAuth {
        &self.gateway_auth
    }

    /// The site's S3 exchange.
    pub fn exchange(&self) -> Option<&Arc<dyn Exchange>> {
        self.exchange.as_ref()
    }

    /// Provision `user`'s space at this site and credentials confined to it.
    ///
    /// # Errors
    /// [`SiteUnavailable`] saying what failed (never a credential).
    pub async fn provision(&self, user: &str) -> Result<Grant, SiteUnavailable> {
        let x = self.exchange.as_ref().ok_or_else(|| SiteUnavailable {
            site: self.id.clone(),
            reason: self
                .s3_problem
                .clone()
                .unwrap_or_else(|| "S3 is not configured".to_owned()),
        })?;
        x.provision(user).await.map_err(|e| SiteUnavailable {
            site: self.id.clone(),
            reason: e.to_string(),
        })
    }
}

/// A site cannot be used now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("site {site} is unavailable: {reason}")]
pub struct SiteUnavailable {
    /// The site id.
    pub site: String,
    /// Why (gateway down, S3 not configured or unreachable, ...).
    pub reason: String,
}

/// The last health check of a site.
#[derive(Debug, Clone, Serialize)]
pub struct SiteHealth {
    /// Gateway and S3 both fine.
    pub available: bool,
    /// What is wrong (empty when available).
    pub reasons: Vec<String>,
    /// When the check finished.
    pub checked_at: DateTime<Utc>,
    /// Why the site's Dask Gateway is not usable, if it has one and it is not (kernels are
    /// unaffected: this does not make the site unavailable).
    pub dask_problem: Option<String>,
}

/// The TLS reason of a failed request (an untrusted or mismatched certificate), if that was it.
fn tls_failure(err: &reqwest::Error) -> Option<String> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        // An io::Error's `source` skips the error it wraps: step into that instead.
        next = match e.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

/// The registry could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartSitesError {
    /// The embedded S3 store did not start.
    #[error(transparent)]
    Embedded(#[from] s3_exchange::StartError),
    /// The HTTP client for health checks.
    #[error("cannot build the health-check HTTP client: {0}")]
    Http(String),
    /// A site's `ca_file` cannot be read or holds no certificate.
    #[error("sites.{site}.ca_file {path}: {reason}")]
    CaFile {
        /// The site id.
        site: String,
        /// The file.
        path: std::path::PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// The key gateway tokens are signed with.
    #[error(transparent)]
    Key(#[from] super::jwt::JwtKeyError),
}

/// The sites, their health, and the embedded S3 store when it runs.
#[derive(Debug)]
pub struct SiteRegistry {
    pub(super) sites: Vec<Site>,
    pub(super) health: RwLock<HashMap<String, SiteHealth>>,
    http: reqwest::Client,
    dashboards_http: reqwest::Client,
    pub(super) interval: Duration,
    embedded: Mutex<Option<EmbeddedS3>>,
    embedded_endpoint: Option<String>,
    tokens: Arc<GatewayTokens>,
}

fn build_site(
    c: &SiteConfig,
    embedded: Option<&EmbeddedS3>,
    lifetime: i64,
    env: &dyn Lookup,
    tokens: &Arc<GatewayTokens>,
    hub_origin: Option<&str>,
) -> Site {
    let gateway_url = if c.gateway_url.ends_with('/') {
        c.gateway_url.clone()
    } else {
        format!("{}/", c.gateway_url)
    };
    let mut gateway_problem = None;
    let gateway_token = match (&c.gateway_auth, &c.token_env) {
        (GatewayAuth::Token, Some(var)) => match env.get(var) {
            Some(v) if !v.is_empty() => Some(Secret::new(v)),
            _ => {
                gateway_problem = Some(format!(
                    "the gateway token variable {var} is not set in the hub's environment"
                ));
                None
            }
        },
        _ => None,
    };
    let exchange: Result<Arc<dyn Exchange>, String> = match &c.s3 {
        None => Err("S3 is not configured for this site".to_owned()),
        Some(x) => match x.mode {
            SiteS3Mode::Embedded => embedded
                .map(|e| Arc::new(e.exchange(lifetime)) as Arc<dyn Exchange>)
                .ok_or_else(|| "the embedded S3 store is not running".to_owned()),
            SiteS3Mode::Sts | SiteS3Mode::Static => {
                let var = x.secret_env.clone().unwrap_or_default();
                match env.get(&var).filter(|v| !v.is_empty()) {
                    None => Err(format!(
                        "the S3 secret variable {var} is not set in the hub's environment"
                    )),
                    Some(secret) => {
                        let secret = s3_exchange::Secret::new(secret);
                        let endpoint = x.endpoint.clone().unwrap_or_default();
                        let region = x.region.clone().unwrap_or_default();
                        let bucket = x.bucket.clone().unwrap_or_default();
                        let access_key_id = x.access_key_id.clone().unwrap_or_default();
                        if x.mode == SiteS3Mode::Static {
                            Ok(Arc::new(StaticExchange::new(StaticConfig {
                                endpoint,
                                region,
                                bucket,
                                access_key_id,
                                secret_access_key: secret,
                            })) as Arc<dyn Exchange>)
                        } else {
                            StsExchange::new(StsConfig {
                                endpoint,
                                sts_endpoint: x.sts_endpoint.clone(),
                                region,
                                bucket,
                                access_key_id,
                                secret_access_key: secret,
                                role_arn: x.role_arn.clone(),
                                role_prefix: x.role_prefix.clone(),
                                trusted_principal: x.trusted_principal.clone(),
                                duration_secs: x.duration_secs,
                            })
                            .map(|s| Arc::new(s) as Arc<dyn Exchange>)
                            .map_err(|e| e.to_string())
                        }
                    }
                }
            }
        },
    };
    let (exchange, problem) = match exchange {
        Ok(x) => (Some(x), None),
        Err(p) => (None, Some(p)),
    };
    Site {
        id: c.id.clone(),
        name: c.name.clone(),
        gateway_url,
        ca_file: c.ca_file.clone(),
        gateway_token,
        gateway_auth: c.gateway_auth.clone(),
        token_roles: c.token_roles.clone(),
        token_lifetime_secs: c.gateway_token_lifetime_secs,
        tokens: Arc::clone(tokens),
        gateway_problem,
        exchange,
        s3_problem: problem,
        s3_mode: c.s3.as_ref().map(|x| x.mode),
        // Checked by the config's validation: a bad address cannot get here.
        dask: super::dask::resolve(&c.gateway_url, c.dask_settings(), hub_origin)
            .ok()
            .flatten(),
    }
}

/// `builder` trusting, beside the system roots, every site's `ca_file`.
fn with_site_roots(
    mut http: reqwest::ClientBuilder,
    sites: &[SiteConfig],
) -> Result<reqwest::ClientBuilder, StartSitesError> {
    for site in sites {
        let Some(path) = &site.ca_file else { continue };
        let bad = |reason: String| StartSitesError::CaFile {
            site: site.id.clone(),
            path: path.clone(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| bad(format!("not a PEM certificate file: {e}")))?;
        if certs.is_empty() {
            return Err(bad("no certificate found".to_owned()));
        }
        for cert in certs {
            http = http.add_root_certificate(cert);
        }
    }
    Ok(http)
}

impl SiteRegistry {
    /// Start the embedded S3 store (when `[s3] embedded`) and build the sites; secrets named by
    /// `token_env` / `secret_env` are read through `env`. Does not check health yet.
    ///
    /// # Errors
    /// The embedded store cannot start (port taken, data directory not writable).
    pub async fn start(config: &Config, env: &dyn Lookup) -> Result<Arc<Self>, StartSitesError> {
        let embedded = if config.s3.embedded {
            Some(
                EmbeddedS3::start(EmbeddedConfig {
                    data_dir: config.data_dir.join("s3"),
                    listen: std::net::SocketAddr::new(config.s3.ip, config.s3.port),
                    region: config.s3.region.clone(),
                    bucket: config.s3.bucket.clone(),
                    max_lifetime_secs: config.s3.credential_lifetime_secs,
                })
                .await?,
            )
        } else {
            None
        };
        let secret = config
            .cookie_secret
            .as_ref()
            .and_then(|s| hex::decode(s.expose()).ok());
        let issuer = super::jwt::issuer_of(
            config.gateway_token_issuer.as_deref(),
            config.public_url.as_deref(),
        );
        let tokens =
            Arc::new(GatewayTokens::load(secret.as_deref(), &config.data_dir)?.with_issuer(issuer));
        let hub_origin = super::dask::hub_origin(config.public_url.as_deref());
        let sites = config
            .sites
            .iter()
            .map(|c| {
                build_site(
                    c,
                    embedded.as_ref(),
                    config.s3.credential_lifetime_secs,
                    env,
                    &tokens,
                    hub_origin.as_deref(),
                )
            })
            .collect();
        let health = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(5));
        let http = with_site_roots(health, &config.sites)?
            .build()
            .map_err(|e| StartSitesError::Http(e.to_string()))?;
        // Dashboards stream and stay open (bokeh WebSockets): no overall timeout, and a
        // gateway's redirect is the browser's to follow.
        let dashboards = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .redirect(reqwest::redirect::Policy::none());
        let dashboards_http = with_site_roots(dashboards, &config.sites)?
            .build()
            .map_err(|e| StartSitesError::Http(e.to_string()))?;
        Ok(Arc::new(Self {
            sites,
            health: RwLock::new(HashMap::new()),
            http,
            dashboards_http,
            interval: Duration::from_secs(config.s3.health_interval_secs),
            embedded_endpoint: embedded.as_ref().map(|e| e.endpoint().to_owned()),
            embedded: Mutex::new(embedded),
            tokens,
        }))
    }

    /// The HTTP client that forwards browsers' dashboard requests to the sites' gateways
    /// (the sites' CA files trusted, no overall timeout, redirects not followed).
    pub fn dashboards_http(&self) -> &reqwest::Client {
        &self.dashboards_http
    }

    /// The issuer of the hub's gateway tokens (its JWKS is public).
    pub fn tokens(&self) -> &GatewayTokens {
        &self.tokens
    }

    /// The site `id`, whatever its health.
    pub fn site(&self, id: &str) -> Option<&Site> {
        self.sites.iter().find(|s| s.id == id)
    }

    /// The sites, in configuration order.
    pub fn sites(&self) -> &[Site] {
        &self.sites
    }

    /// The embedded store's endpoint, when it runs.
    pub fn embedded_endpoint(&self) -> Option<&str> {
        self.embedded_endpoint.as_deref()
    }

    /// The last health of `id`.
    pub async fn health(&self, id: &str) -> Option<SiteHealth> {
        self.health.read().await.get(id).cloned()
    }

    /// The site `id` if its last health check passed; otherwise why not. The profile picker
    /// disables a site's profiles with the reason.
    ///
    /// # Errors
    /// [`SiteUnavailable`]: unknown site, not checked yet, gateway down, S3 not configured or
    /// unreachable.
    pub async fn site_available(&self, id: &str) -> Result<Site, SiteUnavailable> {
        let unavailable = |reason: String| SiteUnavailable {
            site: id.to_owned(),
            reason,
        };
        let site = self
            .site(id)
            .ok_or_else(|| unavailable("no such site is configured".to_owned()))?;
        match self.health.read().await.get(id) {
            None => Err(unavailable(
                "its health has not been checked yet".to_owned(),
            )),
            Some(h) if !h.available => Err(unavailable(h.reasons.join("; "))),
            Some(_) => Ok(site.clone()),
        }
    }

    async fn check_gateway(&self, site: &Site) -> Result<(), String> {
        if let Some(p) = &site.gateway_problem {
            return Err(p.clone());
        }
        let url = format!("{}api", site.gateway_url);
        let mut req = self.http.get(&url);
        if let Some((auth, _)) = site
            .gateway_authorization(HEALTH_CHECK_USER, &[])
            .map_err(|e| e.reason)?
        {
            req = req.header(reqwest::header::AUTHORIZATION, auth);
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) if matches!(r.status().as_u16(), 401 | 403) => Err(format!(
                "the gateway at {} refused the hub's credentials (HTTP {})",
                site.gateway_url,
                r.status().as_u16()
            )),
            Ok(r) => Err(format!(
                "the gateway at {} answered HTTP {}",
                site.gateway_url,
                r.status().as_u16()
            )),
            Err(e) => Err(format!(
                "the gateway at {} is not reachable: {}",
                site.gateway_url,
                if e.is_timeout() {
                    "timed out".to_owned()
                } else if let Some(tls) = tls_failure(&e) {
                    format!("TLS: {tls}")
                } else if e.is_connect() {
                    "connection refused or no route".to_owned()
                } else {
                    e.without_url().to_string()
                }
            )),
        }
    }

    async fn check_site(&self, site: &Site) -> SiteHealth {
        let s3 = async {
            match &site.exchange {
                None => Err(site
                    .s3_problem
                    .clone()
                    .unwrap_or_else(|| "S3 is not configured for this site".to_owned())),
                Some(x) => x.check().await.map_err(|e| e.to_string()),
            }
        };
        let dask = async {
            match &site.dask {
                None => Ok(()),
                Some(d) => super::dask::check(&self.http, d).await,
            }
        };
        let (gateway, s3, dask) = tokio::join!(self.check_gateway(site), s3, dask);
        let reasons: Vec<String> = [gateway.err(), s3.err()].into_iter().flatten().collect();
        SiteHealth {
            available: reasons.is_empty(),
            reasons,
            checked_at: Utc::now(),
            dask_problem: dask.err(),
        }
    }

    /// Mark the remote-kernels profiles of a [`crate::profiles::view`] whose site is unavailable:
    /// `"unavailable": REASON` (the picker disables them and shows why).
    pub async fn annotate(&self, view: &mut serde_json::Value) {
        let Some(profiles) = view["profiles"].as_array_mut() else {
            return;
        };
        for p in profiles {
            if p["kind"] != "remote-kernels" {
                continue;
            }
            let site = p["site"].as_str().unwrap_or_default().to_owned();
            if let Err(e) = self.site_available(&site).await {
                p["unavailable"] = serde_json::Value::String(format!("Unavailable: {}", e.reason));
            }
        }
    }

    /// Check every site now (in parallel) and record the results.
    pub async fn check_all(&self) {
        let results =
            futures_util::future::join_all(self.sites.iter().map(|s| self.check_site(s))).await;
        let mut health = self.health.write().await;
        for (site, h) in self.sites.iter().zip(results) {
            if h.available != health.get(&site.id).is_some_and(|old| old.available) {
                if h.available {
                    tracing::info!(site = %site.id, "site is available");
                } else {
                    tracing::warn!(site = %site.id, reasons = ?h.reasons, "site is unavailable");
                }
            }
            health.insert(site.id.clone(), h);
        }
    }

    /// Stop the embedded S3 store.
    pub async fn shutdown(&self) {
        if let Some(e) = self.embedded.lock().await.take() {
            e.shutdown().await;
        }
    }

    /// `(site, health, s3 mode, dask addresses)` for the API.
    pub(crate) async fn snapshot(&self) -> Vec<(Site, Option<SiteHealth>)> {
        let health = self.health.read().await;
        self.sites
            .iter()
            .map(|s| (s.clone(), health.get(&s.id).cloned()))
            .collect()
    }
}

impl Site {
    pub(crate) fn s3_mode(&self) -> Option<SiteS3Mode> {
        self.s3_mode
    }

    /// The site's Dask Gateway, if it has one.
    pub fn dask(&self) -> Option<&SiteDask> {
        self.dask.as_ref()
    }
}
