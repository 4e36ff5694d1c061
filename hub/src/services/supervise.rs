//! Managed services: child processes the hub starts, restarts with back-off when they exit,
//! and stops (SIGTERM to the process group, SIGKILL after a grace period) when it stops.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::{Service, Services};
use crate::config::Config;

/// Variables of the hub's own environment a managed service keeps (as JupyterHub's
/// `env_keep`); nothing else of the hub's environment (its secrets) reaches it.
const ENV_KEEP: &[&str] = &[
    "PATH",
    "PYTHONPATH",
    "LANG",
    "LC_ALL",
    "LD_LIBRARY_PATH",
    "VIRTUAL_ENV",
    "HOME",
    "TMPDIR",
    "TZ",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

/// The first restart waits this long; each quick exit doubles it up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between restarts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A process that ran this long is restarted after [`FIRST_BACKOFF`] again.
const HEALTHY_RUN: Duration = Duration::from_secs(60);
/// Time a service gets to exit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// What a managed service is told about the hub.
#[derive(Debug, Clone)]
struct HubInfo {
    api_url: String,
    base_url: String,
    host: String,
    public_url: Option<String>,
}

/// The running managed services.
#[derive(Debug)]
pub struct Supervisor {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Supervisor {
    /// Start every managed service of `services`; they reach the hub's API at `hub_api_url`.
    pub fn start(services: &Services, config: &Config, hub_api_url: &str) -> Self {
        let hub = HubInfo {
            api_url: hub_api_url.to_owned(),
            base_url: config.base_url.clone(),
            host: config
                .subdomain_host
                .as_ref()
                .map(|s| s.hub_origin())
                .unwrap_or_default(),
            public_url: config.public_url.clone(),
        };
        let (stop, rx) = watch::channel(false);
        let tasks = services
            .iter()
            .filter(|s| s.config.managed())
            .map(|s| {
                let span = tracing::info_span!("service", service = %s.name());
                tokio::spawn(supervise(Arc::clone(s), hub.clone(), rx.clone()).instrument(span))
            })
            .collect();
        Self { stop, tasks }
    }

    /// Stop every managed service and wait for them to exit.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// The `JUPYTERHUB_*` environment JupyterHub gives a managed service.
fn service_env(s: &Service, hub: &HubInfo) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        env.insert(k.to_owned(), v);
    };
    set("JUPYTERHUB_SERVICE_NAME", s.name().to_owned());
    set("JUPYTERHUB_API_URL", hub.api_url.clone());
    set("JUPYTERHUB_BASE_URL", hub.base_url.clone());
    set("JUPYTERHUB_HOST", hub.host.clone());
    if let Some(token) = s.token() {
        set("JUPYTERHUB_API_TOKEN", token.expose().to_owned());
    }
    if let Some(url) = &s.config.url {
        set("JUPYTERHUB_SERVICE_URL", url.clone());
        set("JUPYTERHUB_SERVICE_PREFIX", s.prefix.clone());
        if let Some(public) = &hub.public_url
            && let Ok(u) = url::Url::parse(public)
        {
            set(
                "JUPYTERHUB_PUBLIC_URL",
                format!("{}{}", u.origin().ascii_serialization(), s.prefix),
            );
        }
    }
    if let Some(oauth) = &s.oauth {
        let json = |v: &[String]| serde_json::to_string(v).unwrap_or_else(|_| "[]".to_owned());
        set("JUPYTERHUB_CLIENT_ID", oauth.client_id.clone());
        set("JUPYTERHUB_OAUTH_CALLBACK_URL", oauth.redirect_uri.clone());
        set("JUPYTERHUB_OAUTH_SCOPES", json(&oauth.access_scopes));
        set("JUPYTERHUB_OAUTH_ACCESS_SCOPES", json(&oauth.access_scopes));
        set(
            "JUPYTERHUB_OAUTH_CLIENT_ALLOWED_SCOPES",
            json(&oauth.allowed_scopes),
        );
    }
    env
}

/// Start the service's process once.
fn launch(s: &Service, hub: &HubInfo) -> std::io::Result<Child> {
    let (program, args) = s
        .config
        .command
        .split_first()
        .ok_or_else(|| std::io::Error::other("no command"))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .stdin(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    for key in ENV_KEEP {
        if let Some(v) = std::env::var_os(key) {
            cmd.env(key, v);
        }
    }
    cmd.envs(&s.config.environment);
    cmd.envs(service_env(s, hub));
    if let Some(dir) = &s.config.cwd {
        cmd.current_dir(dir);
    }
    match &s.config.log_file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            cmd.stdout(file.try_clone()?).stderr(file);
        }
        None => {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        }
    }
    let mut child = cmd.spawn()?;
    if let Some(out) = child.stdout.take() {
        tokio::spawn(forward(out).in_current_span());
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(forward(err).in_current_span());
    }
    Ok(child)
}

/// Copy a service's output lines into the hub's log.
async fn forward(stream: impl AsyncRead + Unpin) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(target: "stackhub::service", "{line}");
    }
}

/// Run one managed service until `stop` turns true.
async fn supervise(s: Arc<Service>, hub: HubInfo, mut stop: watch::Receiver<bool>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        if *stop.borrow() {
            return;
        }
        let started = tokio::time::Instant::now();
        match launch(&s, &hub) {
            Ok(mut child) => {
                s.set_pid(child.id());
                tracing::info!(pid = ?child.id(), command = ?s.config.command, "service started");
                tokio::select! {
                    status = child.wait() => {
                        s.set_pid(None);
                        tracing::error!(status = ?status.ok(), "service exited; restarting it");
                    }
                    () = stopped(&mut stop) => {
                        terminate(&mut child).await;
                        s.set_pid(None);
                        tracing::info!("service stopped");
                        return;
                    }
                }
            }
            Err(e) => {
                tracing::error!(command = ?s.config.command, error = %e, "cannot start service")
            }
        }
        if started.elapsed() >= HEALTHY_RUN {
            backoff = FIRST_BACKOFF;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stopped(&mut stop) => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Resolves when `stop` turns true (the guard `wait_for` returns is dropped here).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|v| *v).await;
}

/// SIGTERM to the process group, SIGKILL after [`STOP_GRACE`].
async fn terminate(child: &mut Child) {
    let Some(group) = child.id().and_then(|p| i32::try_from(p).ok()) else {
        return;
    };
    let group = Pid::from_raw(group);
    let _ = killpg(group, Signal::SIGTERM);
    if tokio::time::timeout(STOP_GRACE, child.wait())
        .await
        .is_err()
    {
        tracing::warn!("service did not exit after SIGTERM; killing it");
        let _ = killpg(group, Signal::SIGKILL);
        let _ = child.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_managed_service_gets_jupyterhubs_environment() {
        let mut config = Config::default();
        let mut svc = crate::config::services::ServiceConfig::named("grades");
        svc.command = vec!["python3".into()];
        svc.url = Some("http://127.0.0.1:10101".into());
        config.services.push(svc);
        let services = Services::from_config(&config);
        let s = services.get("grades").expect("configured");
        let hub = HubInfo {
            api_url: "http://127.0.0.1:8081/hub/api".into(),
            base_url: "/".into(),
            host: String::new(),
            public_url: Some("https://hub.example/".into()),
        };
        let env = service_env(s, &hub);
        assert_eq!(env["JUPYTERHUB_SERVICE_NAME"], "grades");
        assert_eq!(env["JUPYTERHUB_SERVICE_PREFIX"], "/services/grades/");
        assert_eq!(env["JUPYTERHUB_SERVICE_URL"], "http://127.0.0.1:10101");
        assert_eq!(env["JUPYTERHUB_CLIENT_ID"], "service-grades");
        assert_eq!(
            env["JUPYTERHUB_OAUTH_CALLBACK_URL"],
            "/services/grades/oauth_callback"
        );
        assert_eq!(
            env["JUPYTERHUB_OAUTH_ACCESS_SCOPES"],
            r#"["access:services","access:services!service=grades"]"#
        );
        assert_eq!(
            env["JUPYTERHUB_PUBLIC_URL"],
            "https://hub.example/services/grades/"
        );
        // A managed service without a configured token gets one made for this run.
        assert_eq!(env["JUPYTERHUB_API_TOKEN"].len(), 32);
    }
}
