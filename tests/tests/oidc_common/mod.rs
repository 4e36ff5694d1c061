//! Harness of the OpenID Connect end-to-end tests: the real test identity provider
//! (`tests/idp/idp.mjs`, npm `oidc-provider`, installed by `scripts/test`), the real `stackhub`
//! binary configured with `[auth.oidc]`, and a cookie-keeping HTTP client that walks the login
//! by hand (so tests can tamper with each step).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code,
    unreachable_pub
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::cookie::Jar;

pub const CLIENT_SECRET: &str = "oidc-e2e-client-secret";

pub use crate::hub_common::{stackhub_bin, venv, workspace};
// Not every test binary that includes this module uses each helper.
#[allow(unused_imports)]
pub use stackhub_e2e::support::{free_port, log_tail};

fn idp_dir() -> PathBuf {
    let dir = workspace().join("tests/idp");
    assert!(
        dir.join("node_modules/oidc-provider/package.json").exists(),
        "the test identity provider's npm packages are missing in {}: run scripts/test \
         (ensure_idp installs them)",
        dir.display()
    );
    dir
}

/// A child process killed on drop.
pub struct Proc(pub Option<Child>);

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A test directory, removed (with any process still running in it) on drop.
pub struct TestDir(pub PathBuf);

impl TestDir {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "stackhub-oidc-{name}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i64>().ok())
            else {
                continue;
            };
            if std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|c| c.starts_with(&self.0))
            {
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .arg(pid.to_string())
                    .status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The test identity provider and the hub configured to log in through it.
pub struct Stack {
    pub dir: PathBuf,
    pub hub: String,
    pub hub_port: u16,
    pub idp: String,
    admin_token: String,
    _idp: Proc,
    _hub: Proc,
}

impl Stack {
    /// Start the provider (access tokens living `access_ttl` seconds) and the hub with
    /// `extra_oidc` appended to its `[auth.oidc]` section. A port taken by a test running beside
    /// this one between choosing and binding makes a process exit: then new ports are tried.
    pub async fn start(dir: &Path, access_ttl: u64, extra_oidc: &str) -> Self {
        let mut last = String::new();
        for attempt in 1..=3 {
            match Self::try_start(dir, access_ttl, extra_oidc).await {
                Ok(stack) => return stack,
                Err(e) => {
                    eprintln!("starting the provider and hub, attempt {attempt}: {e}");
                    last = e;
                }
            }
        }
        panic!("could not start the provider and the hub: {last}");
    }

    async fn try_start(dir: &Path, access_ttl: u64, extra_oidc: &str) -> Result<Self, String> {
        let t0 = Instant::now();
        let hub_port = free_port();
        let hub_internal = free_port();
        let idp_port = free_port();
        let admin_token = format!("oidc-e2e-admin-{}-{hub_port}", std::process::id());
        let hub = format!("http://127.0.0.1:{hub_port}");
        let idp = format!("http://127.0.0.1:{idp_port}");
        let idp_log = std::fs::File::create(dir.join("idp.log")).unwrap();
        let idp_child = Command::new("node")
            .arg(idp_dir().join("idp.mjs"))
            .env("IDP_PORT", idp_port.to_string())
            .env("IDP_CLIENT_ID", "stackhub")
            .env("IDP_CLIENT_SECRET", CLIENT_SECRET)
            .env("IDP_REDIRECT_URIS", format!("{hub}/hub/oauth_callback"))
            .env("IDP_POST_LOGOUT_URIS", format!("{hub}/hub/login"))
            .env("IDP_ACCESS_TTL", access_ttl.to_string())
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(idp_log.try_clone().unwrap())
            .stderr(idp_log)
            .spawn()
            .expect("run node (Node.js is needed for the test identity provider)");
        let mut idp_proc = Proc(Some(idp_child));
        // Ours, not another test's provider: the issuer names our port.
        let issuer = idp.clone();
        ready(
            &mut idp_proc,
            reqwest::Client::new().get(format!("{idp}/.well-known/openid-configuration")),
            move |body| body["issuer"] == issuer.as_str(),
            &dir.join("idp.log"),
            "the test identity provider",
        )
        .await?;
        let idp_ready = t0.elapsed();
        let config = dir.join("hub.toml");
        std::fs::write(
            &config,
            format!(
                "[auth.oidc]\nissuer = \"{idp}\"\nclient_id = \"stackhub\"\n\
                 scopes = [\"openid\", \"profile\", \"email\", \"offline_access\", \"groups\", \"roles\"]\n\
                 allowed_roles = [\"stack-jupyter\"]\nadmin_roles = [\"stackhub-admin\"]\n{extra_oidc}\n"
            ),
        )
        .unwrap();
        let hub_log = std::fs::File::create(dir.join("hub.log")).unwrap();
        let hub_child = Command::new(stackhub_bin())
            .arg("--config")
            .arg(&config)
            .env("STACKHUB_PORT", hub_port.to_string())
            .env("STACKHUB_HUB_PORT", hub_internal.to_string())
            .env("STACKHUB_DATA_DIR", dir.join("data"))
            .env("STACKHUB_ADMIN_TOKEN", &admin_token)
            .env("STACKHUB_OIDC_CLIENT_SECRET", CLIENT_SECRET)
            .env(
                "STACKHUB_COOKIE_SECRET",
                "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
            )
            .env("STACKHUB_VENV", venv())
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(hub_log.try_clone().unwrap())
            .stderr(hub_log)
            .spawn()
            .expect("run stackhub");
        let mut hub_proc = Proc(Some(hub_child));
        // Ours, not another test's hub: it knows our admin token.
        ready(
            &mut hub_proc,
            reqwest::Client::new()
                .get(format!("{hub}/hub/api/user"))
                .header("Authorization", format!("token {admin_token}")),
            |_| true,
            &dir.join("hub.log"),
            "stackhub",
        )
        .await?;
        eprintln!(
            "identity provider ready after {:.2}s, hub after {:.2}s",
            idp_ready.as_secs_f64(),
            t0.elapsed().as_secs_f64()
        );
        Ok(Self {
            dir: dir.to_owned(),
            hub,
            hub_port,
            idp,
            admin_token,
            _idp: idp_proc,
            _hub: hub_proc,
        })
    }

    pub fn hub_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("hub.log")).unwrap_or_default()
    }

    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .request(method, format!("{}{path}", self.hub))
            .header("Authorization", format!("token {}", self.admin_token))
    }

    pub async fn admin_get(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self.admin(reqwest::Method::GET, path).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }
}

/// Wait until `req` answers 200 with a body `check` accepts; an error if the process exits first
/// or after 30 s.
async fn ready(
    proc: &mut Proc,
    req: reqwest::RequestBuilder,
    check: impl Fn(&serde_json::Value) -> bool,
    log: &Path,
    what: &str,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = proc.0.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            return Err(format!(
                "{what} exited with {status}; its log:\n{}",
                log_tail(log)
            ));
        }
        if let Ok(r) = req.try_clone().unwrap().send().await
            && r.status() == 200
            && let Ok(body) = r.json::<serde_json::Value>().await
            && check(&body)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{what} did not answer within 30 s; its log:\n{}",
                log_tail(log)
            ));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A browser-like client: cookies kept in `jar`, redirects not followed (tests walk them).
pub struct Browser {
    pub jar: Arc<Jar>,
    pub http: reqwest::Client,
}

/// One step's answer.
#[derive(Debug)]
pub struct Page {
    pub url: String,
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
}

impl Browser {
    pub fn new() -> Self {
        let jar = Arc::new(Jar::default());
        let http = reqwest::Client::builder()
            .cookie_provider(Arc::clone(&jar))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Self { jar, http }
    }

    /// A client sharing the cookies that follows redirects (for the Lab's OAuth dance).
    pub fn following(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .cookie_provider(Arc::clone(&self.jar))
            .build()
            .unwrap()
    }

    pub async fn get(&self, url: &str) -> Page {
        let r = self.http.get(url).send().await.unwrap();
        page(url, r).await
    }

    pub async fn post_form(&self, url: &str, form: &[(&str, &str)]) -> Page {
        let r = self.http.post(url).form(form).send().await.unwrap();
        page(url, r).await
    }

    /// Follow redirects from `url` until `stop(url)` holds for the next location (returned
    /// unvisited) or a page without a redirect is reached.
    pub async fn follow_until(&self, url: &str, stop: impl Fn(&str) -> bool) -> Page {
        let mut page = self.get(url).await;
        for _ in 0..20 {
            let Some(next) = page.location.clone() else {
                return page;
            };
            if stop(&next) {
                return page;
            }
            page = self.get(&next).await;
        }
        panic!("too many redirects from {url}");
    }

    /// Start a login at the hub: the provider's authorization URL.
    pub async fn start_login(&self, hub: &str) -> String {
        let p = self
            .get(&format!("{hub}/hub/oauth_login?next=%2Fhub%2Fhome"))
            .await;
        assert_eq!(p.status, 302, "{p:?}");
        p.location.expect("redirect to the identity provider")
    }

    /// At the provider: open `authorize`, sign in through its form, and return the hub callback
    /// URL it redirects to (not visited).
    pub async fn provider_login(&self, hub: &str, authorize: &str, user: &str, pw: &str) -> String {
        let callback = format!("{hub}/hub/oauth_callback");
        let form = self
            .follow_until(authorize, |u| u.starts_with(&callback))
            .await;
        assert_eq!(form.status, 200, "login form: {form:?}");
        assert!(form.body.contains("name=\"password\""), "{}", form.body);
        let p = self
            .post_form(
                &format!("{}/login", form.url),
                &[("username", user), ("password", pw)],
            )
            .await;
        let next = p
            .location
            .clone()
            .unwrap_or_else(|| panic!("login at the provider: {p:?}"));
        if next.starts_with(&callback) {
            return next;
        }
        let p = self.follow_until(&next, |u| u.starts_with(&callback)).await;
        p.location
            .clone()
            .filter(|l| l.starts_with(&callback))
            .unwrap_or_else(|| panic!("the provider did not send us back to the hub: {p:?}"))
    }

    /// The whole login; the page it ends on (following the hub's redirects).
    pub async fn login(&self, hub: &str, user: &str, pw: &str) -> Page {
        let authorize = self.start_login(hub).await;
        let callback = self.provider_login(hub, &authorize, user, pw).await;
        self.follow_until(&callback, |_| false).await
    }
}

async fn page(url: &str, r: reqwest::Response) -> Page {
    let status = r.status().as_u16();
    let location = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(|l| {
            url::Url::parse(url)
                .and_then(|base| base.join(l))
                .map_or_else(|_| l.to_owned(), |u| u.to_string())
        });
    let body = r.text().await.unwrap_or_default();
    Page {
        url: url.to_owned(),
        status,
        location,
        body,
    }
}
