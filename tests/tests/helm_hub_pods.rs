//! The Helm chart installed as an operator would, then run (issue 19). `helm template` renders
//! `helm/stackhub` with its default values plus what the test needs to reach five sites, and
//! again with `ci/custom-profile-values.yaml` added. The real `stackhub` then runs with exactly
//! the rendered `stackhub.toml` and `kubernetes-spawner.json`, against the in-memory API server
//! (`k8s-fake`), with the environment the rendered Deployment gives it.
//!
//! Each of the six default profiles is started through the picker's form, and the custom
//! profile through the REST API with KubeSpawner's `user_options`. For each created pod the
//! test checks the image, command and args, the limits from the user's quota, the requests,
//! the node selector, the tolerations and the storage. It then plays the kubelet (it runs the
//! pod's command from the venv with the pod's environment) until the hub sees the server
//! ready.
//!
//! The sites run on real components: one `stackhub-gateway` per site (each checks the hub's
//! JWTs for its own audience; EUMETSAT takes a shared token instead) and moto's S3 server
//! (STS for three sites, static keys for two). Their secrets are Secret references in the
//! values; the test provides them as the variables the rendered Deployment names.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod helm_common;
mod helm_rendered;
mod hub_common;
mod k8s_common;
mod remote_common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use helm_common::repo;
use helm_rendered::{Hub, NS, Rendered, Secrets, render};
use hub_common::{ADMIN_TOKEN, PASSWORD, free_ports, scratch_dir, venv};
use k8s_common::{
    Proc, container_env, log_tail, pod_running_at, run_server_pod, wait_for, wait_for_pod,
};
use k8s_fake::FakeKube;
use remote_common::{Gateway, Moto, wait_site};
use serde_json::{Value, json};
use spawner::ServerId;
use spawner::k8s::{KubeSpawnerConfig, LABEL_SERVER, LABEL_USER, server_labels};

/// The token the `token`-auth site's gateway takes.
const EUMETSAT_TOKEN: &str = "eumetsat-gateway-token-0123456789";
/// `stack-jupyter-medium` of the hub's default quota table: 6 CPUs, 18 GiB.
const MEDIUM_LIMITS: (&str, u64) = ("6000m", 18 << 30);

/// The Data Lake sites of the default profiles: (id, name, gateway_auth, S3 mode).
const SITES: [(&str, &str, &str, &str); 5] = [
    ("central", "Central Site", "hub-jwt", "sts"),
    ("lumi", "LUMI Bridge", "hub-jwt", "sts"),
    ("leonardo", "LEONARDO Bridge", "hub-jwt", "static"),
    ("eumetsat", "EUMETSAT Bridge", "token", "static"),
    ("marenostrum", "MareNostrum Bridge", "hub-jwt", "sts"),
];

fn site_secret(id: &str) -> String {
    format!("{id}-s3-secret-key-0123456789")
}

/// The values a test needs on top of the defaults. The admin token is a Secret reference, so
/// the test can use the REST API. The five sites get their gateways (`gateways[i]` is
/// `SITES[i]`'s port) and a bucket each on `s3`, with their secrets as Secret references.
/// Returns the values and the Secrets they name.
fn site_values(gateways: &[u16], s3: &str) -> (String, Secrets) {
    let mut secrets = Secrets::from([(
        ("hub-admin".to_owned(), "token".to_owned()),
        ADMIN_TOKEN.to_owned(),
    )]);
    // The idle culler runs as the chart configures it, from the venv's copy of the release the
    // hub image installs (the one value moved from the image's path).
    let culler = venv().join("bin/jupyterhub-idle-culler");
    let mut values = format!(
        "adminToken:\n  existingSecret: hub-admin\ncull:\n  command: [{}]\nsites:\n",
        culler.display()
    );
    for ((id, name, auth, mode), port) in SITES.iter().zip(gateways) {
        values.push_str(&format!(
            "  - id: {id}\n    name: {name}\n    gateway_url: http://127.0.0.1:{port}/\n    \
             gateway_auth: {auth}\n"
        ));
        if *auth == "token" {
            values.push_str(&format!(
                "    token: {{existingSecret: {id}-gateway, key: token}}\n"
            ));
            secrets.insert(
                (format!("{id}-gateway"), "token".to_owned()),
                EUMETSAT_TOKEN.to_owned(),
            );
        }
        values.push_str(&format!(
            "    s3:\n      mode: {mode}\n      endpoint: {s3}\n      region: us-east-1\n      \
             bucket: {id}-users\n      access_key_id: {}\n      \
             secret_access_key: {{existingSecret: {id}-s3, key: secret-access-key}}\n",
            access_key(id)
        ));
        if *mode == "sts" {
            values.push_str(&format!("      role_prefix: {id}-user-\n"));
        }
        secrets.insert(
            (format!("{id}-s3"), "secret-access-key".to_owned()),
            site_secret(id),
        );
    }
    (values, secrets)
}

fn access_key(site: &str) -> String {
    format!("{}HUBKEY", site.to_uppercase())
}

impl Hub {
    async fn user(&self, name: &str) -> Value {
        let r = self
            .admin(reqwest::Method::GET, &format!("/hub/api/users/{name}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// Create `name` and put them in group `quota` (a quota role of the hub's default table).
    async fn user_in_quota_group(&self, name: &str, quota: &str) {
        let r = self
            .admin(reqwest::Method::POST, &format!("/hub/api/users/{name}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "create {name}");
        let r = self
            .admin(reqwest::Method::POST, &format!("/hub/api/groups/{quota}"))
            .json(&json!({"users": [name]}))
            .send()
            .await
            .unwrap();
        assert!(
            [200, 201].contains(&r.status().as_u16()),
            "{name} into group {quota}: {}",
            r.status()
        );
    }

    /// Log `name` in through the development password form like a browser, landing on the
    /// picker; the client (cookie jar, no redirects followed), the picker page and its `_xsrf`.
    async fn browser_login(&self, name: &str) -> (reqwest::Client, String, String) {
        let browser = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let r = browser
            .post(format!("{}/hub/login?next=%2Fhub%2Fspawn", self.base))
            .form(&[("username", name), ("password", PASSWORD)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302, "login");
        assert_eq!(r.headers()["location"], "/hub/spawn");
        let r = browser
            .get(format!("{}/hub/spawn", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "the picker");
        let page = r.text().await.unwrap();
        let xsrf = page
            .split("name=\"_xsrf\" value=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .expect("_xsrf in the picker's form")
            .to_owned();
        let quota = &self.user(name).await["quota"];
        assert!(quota["role"].is_string(), "{name}'s quota stored at login");
        (browser, xsrf, page)
    }

    /// Wait until `user`'s server `server` is ready, failing with the logs.
    async fn wait_ready(&self, user: &str, server: &str, server_log: &Path) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let u = self.user(user).await;
            if u["servers"][server]["ready"] == true {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{user}/{server} not ready within 90 s: {u}\nhub log:\n{}\nserver log:\n{}",
                log_tail(&self.proc.log),
                log_tail(server_log)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stop `user`'s `server` by REST; the pod goes, the kubelet stops its process, the hub
    /// forgets the server.
    async fn stop(&self, fake: &FakeKube, pod: &Value, user: &str, server: &str, mut proc: Proc) {
        let r = self
            .admin(
                reqwest::Method::DELETE,
                &format!("/hub/api/users/{user}/servers/{server}"),
            )
            .send()
            .await
            .unwrap();
        assert!(
            [202, 204].contains(&r.status().as_u16()),
            "stop: {}",
            r.status()
        );
        let name = pod["metadata"]["name"].as_str().unwrap();
        wait_for(&format!("pod {name} deleted"), 30, || async {
            fake.get("pods", NS, name).is_none().then_some(())
        })
        .await;
        proc.stop(Duration::from_secs(10));
        wait_for(
            &format!("{user}/{server} stopped in the hub"),
            30,
            || async {
                self.user(user).await["servers"]
                    .get(server)
                    .is_none()
                    .then_some(())
            },
        )
        .await;
        assert!(fake.get("secrets", NS, name).is_none(), "the pod's Secret");
    }

    /// `GET /user/<user>/<server>/api` through the hub's proxy (answered without a login).
    async fn server_api(&self, user: &str, server: &str) -> reqwest::StatusCode {
        self.api
            .get(format!("{}/user/{user}/{server}/api", self.base))
            .send()
            .await
            .unwrap()
            .status()
    }
}

/// Docker's `COPY FROM TO`: a file to the path `to`, a directory's contents (recursively) into
/// the directory `to`.
fn copy_into_image(from: &Path, to: &Path) {
    if from.is_dir() {
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy_into_image(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap();
    }
}

/// The test's kubelet and cluster, for servers' pods: a pod's processes run on this machine in
/// `dir` at the pod's own loopback address `ip` (its network namespace: the server's
/// `0.0.0.0` is that address), the hub API's Service name resolves to the hub's port here
/// (the cluster's DNS), and the single-user image's own files (`COPY` lines of
/// `images/singleuser/Dockerfile`) sit below `<dir>/image`.
struct Kubelet {
    dir: PathBuf,
    ip: &'static str,
    image_root: PathBuf,
    hub_api_service: String,
    hub_api_here: String,
}

impl Kubelet {
    fn new(dir: &Path, ip: &'static str, r: &Rendered, hub: &Hub) -> Self {
        let image_root = dir.join("image");
        let dockerfile =
            std::fs::read_to_string(repo().join("images/singleuser/Dockerfile")).unwrap();
        for line in dockerfile.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            if let ["COPY", from, to] = words[..]
                && !from.starts_with("--")
            {
                copy_into_image(
                    &repo().join(from),
                    &image_root.join(to.trim_start_matches('/')),
                );
            }
        }
        Self {
            dir: dir.to_owned(),
            ip,
            image_root,
            hub_api_service: r.hub_api_service.clone(),
            hub_api_here: format!("127.0.0.1:{}", hub.hub_port),
        }
    }

    /// Run the pod's server and report the pod running.
    fn run(&self, fake: &FakeKube, pod: &Value) -> (Proc, PathBuf) {
        let name = pod["metadata"]["name"].as_str().unwrap();
        let log = self.dir.join(format!("{name}.log"));
        let proc = run_server_pod(fake, pod, &self.dir.join(name), &log, |k, v| {
            let v = v.replace(&self.hub_api_service, &self.hub_api_here);
            if k == "JUPYTERHUB_SERVICE_URL" {
                return v.replace("0.0.0.0", self.ip);
            }
            let in_image = self.image_root.join(v.trim_start_matches('/'));
            if v.starts_with('/') && in_image.exists() {
                return in_image.display().to_string();
            }
            v
        });
        pod_running_at(fake, pod, self.ip);
        (proc, log)
    }
}

/// The pod of `user`'s `server`, once created.
async fn pod_of(fake: &FakeKube, config: &KubeSpawnerConfig, user: &str, server: &str) -> Value {
    let labels = server_labels(
        config,
        &ServerId {
            user: user.to_owned(),
            name: server.to_owned(),
        },
    );
    wait_for_pod(
        fake,
        NS,
        &[
            (LABEL_USER, labels[LABEL_USER].as_str()),
            (LABEL_SERVER, labels[LABEL_SERVER].as_str()),
        ],
    )
    .await
}

fn env_of(fake: &FakeKube, pod: &Value) -> HashMap<String, String> {
    container_env(fake, pod).into_iter().collect()
}

/// Limits or requests as the pod states them.
fn quantities(cpu: &str, memory: u64) -> Value {
    json!({"cpu": cpu, "memory": memory.to_string()})
}

/// The claim volume of a lab pod, mounted where the chart says; the claim exists with the
/// chart's size.
fn check_claim(fake: &FakeKube, config: &KubeSpawnerConfig, pod: &Value, user: &str) {
    let claim = spawner::k8s::claim_name(
        config,
        &spawner::LaunchSpec::default(),
        &ServerId {
            user: user.to_owned(),
            name: String::new(),
        },
    );
    assert_eq!(
        pod["spec"]["volumes"],
        json!([{"name": "user-data", "persistentVolumeClaim": {"claimName": claim}}])
    );
    assert_eq!(
        pod["spec"]["containers"][0]["volumeMounts"],
        json!([{"name": "user-data", "mountPath": "/home/jovyan/user_data"}])
    );
    let claim = fake
        .get("persistentvolumeclaims", NS, &claim)
        .expect("the user's claim");
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "10Gi");
}

/// The image of each profile in the chart's default values.
fn default_images() -> HashMap<String, String> {
    let values: Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo().join("helm/stackhub/values.yaml")).unwrap(),
    )
    .unwrap();
    values["profileList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["slug"].as_str().unwrap().to_owned(),
                p["kubespawner_override"]["image"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_six_default_profiles_start_from_the_picker_as_pods() {
    let (dir, _cleanup) = scratch_dir("helm-hub-pods");
    let fake = FakeKube::start().await;
    let [port, hub_port, moto_port, g0, g1, g2, g3, g4] = free_ports();
    let gateway_ports = [g0, g1, g2, g3, g4];
    let base = format!("http://127.0.0.1:{port}");
    let buckets: Vec<String> = SITES.iter().map(|s| format!("{}-users", s.0)).collect();
    let buckets: Vec<&str> = buckets.iter().map(String::as_str).collect();
    let moto = Moto::start(&dir, moto_port, &buckets).await;
    // One gateway per site, as deployed: each takes the hub's tokens for its own audience
    // only (or EUMETSAT's shared token).
    let gateways: Vec<Gateway> = SITES
        .iter()
        .zip(gateway_ports)
        .map(|((id, _, auth, _), p)| {
            if *auth == "token" {
                Gateway::start_token(&dir, id, p, EUMETSAT_TOKEN)
            } else {
                Gateway::start(&dir, id, p, &base)
            }
        })
        .collect();
    for g in &gateways {
        g.wait_ready().await;
    }
    let (values, secrets) = site_values(&gateway_ports, &moto.endpoint);
    let values_file = dir.join("values.yaml");
    std::fs::write(&values_file, values).unwrap();
    let r = render(&dir, &[&values_file], &secrets);
    let env: HashMap<&str, &str> = r
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        env["STACKHUB_SITE_EUMETSAT_GATEWAY_TOKEN"], EUMETSAT_TOKEN,
        "{env:?}"
    );
    // The admin token, EUMETSAT's gateway token and the five sites' S3 secrets.
    assert_eq!(env.len(), 1 + 1 + SITES.len(), "{env:?}");
    let hub = Hub::start(&dir, &r, &fake, port, hub_port).await;
    // The kubelet's probes, as rendered, answer on the hub's API port without credentials.
    for path in &r.probes {
        let probe = reqwest::get(format!("http://127.0.0.1:{hub_port}{path}"))
            .await
            .unwrap();
        assert_eq!(probe.status(), 200, "probe {path}");
    }
    for (id, ..) in SITES {
        let s = wait_site(&hub.api, &base, id, true).await;
        assert_eq!(s["available"], true, "{s}");
    }
    // The chart's idle culler runs as a managed service with its own role, not admin.
    let culler: Value = hub
        .admin(reqwest::Method::GET, "/hub/api/services/idle-culler")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(culler["roles"], json!(["idle-culler"]), "{culler}");
    assert_eq!(culler["admin"], false, "{culler}");
    assert!(culler["pid"].as_u64().is_some_and(|p| p > 0), "{culler}");

    // alice holds stack-jupyter-medium (a group named like the quota role) and logs in; the
    // picker offers the six profiles, none unavailable.
    hub.user_in_quota_group("alice", "stack-jupyter-medium")
        .await;
    let (browser, xsrf, page) = hub.browser_login("alice").await;
    assert_eq!(
        hub.user("alice").await["quota"]["role"],
        "stack-jupyter-medium"
    );
    for name in [
        "JupyterLab (Full working environment)",
        "Remote Compute Kernels - Central Site",
        "Remote Compute Kernels - LUMI Bridge",
        "Remote Compute Kernels - LEONARDO Bridge",
        "Remote Compute Kernels - EUMETSAT Bridge",
        "Remote Compute Kernels - MareNostrum Bridge",
    ] {
        assert!(page.contains(name), "{name} not on the picker:\n{page}");
    }
    assert!(!page.contains("Unavailable"), "{page}");

    let images = default_images();
    let kubelet = Kubelet::new(&dir, "127.0.0.2", &r, &hub);
    let secret_values: Vec<&String> = secrets.values().collect();
    // The remote-kernels profiles first: until the lab starts, no claim exists at all.
    let profiles = SITES
        .iter()
        .map(|s| (format!("remote-{}", s.0), Some(*s)))
        .chain([("jupyterlab".to_owned(), None)]);
    for (slug, site) in profiles {
        // A named server per profile, started from the picker's form.
        let server = slug.as_str();
        let r2 = browser
            .post(format!("{base}/hub/spawn/alice/{server}"))
            .form(&[("_xsrf", xsrf.as_str()), ("profile", slug.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(r2.status(), 302, "{slug}: {}", r2.text().await.unwrap());
        assert!(
            r2.headers()["location"]
                .to_str()
                .unwrap()
                .starts_with(&format!("/hub/spawn-pending/alice/{server}")),
            "{slug}: {:?}",
            r2.headers()
        );
        let pod = pod_of(&fake, &r.spawner, "alice", server).await;
        let c = &pod["spec"]["containers"][0];
        assert_eq!(pod["metadata"]["annotations"]["stackhub.io/profile"], slug);
        assert_eq!(c["image"], images[&slug], "{slug}");
        assert_eq!(c["command"], json!(["jupyterhub-singleuser"]), "{slug}");
        assert_eq!(c["args"], Value::Null, "{slug}");
        // Limits are the quota's (the default profiles set none); requests the same.
        let (cpu, memory) = MEDIUM_LIMITS;
        assert_eq!(c["resources"]["limits"], quantities(cpu, memory), "{slug}");
        assert_eq!(
            c["resources"]["requests"],
            quantities(cpu, memory),
            "{slug}"
        );
        assert_eq!(pod["spec"]["nodeSelector"], Value::Null, "{slug}");
        assert_eq!(pod["spec"]["tolerations"], Value::Null, "{slug}");
        let env = env_of(&fake, &pod);
        assert_eq!(env["STACKHUB_QUOTA_ROLE"], "stack-jupyter-medium");
        assert_eq!(env["MEM_LIMIT"], memory.to_string());
        let text = pod.to_string();
        for secret in &secret_values {
            assert!(!text.contains(secret.as_str()), "a secret in the pod spec");
        }
        if let Some((id, name, auth, mode)) = site {
            // No home: no volume, no mount, no claim.
            assert_eq!(pod["spec"]["volumes"], Value::Null, "{slug}");
            assert_eq!(c["volumeMounts"], Value::Null, "{slug}");
            assert!(fake.list("persistentvolumeclaims").is_empty(), "{slug}");
            // The server talks to its site's gateway and keeps files in its site's bucket.
            let gateway = &gateways[SITES.iter().position(|s| s.0 == id).unwrap()];
            assert_eq!(env["JUPYTER_GATEWAY_URL"], format!("{}/", gateway.url));
            assert_eq!(env["STACKHUB_SITE"], id);
            assert_eq!(env["STACKHUB_SITE_NAME"], name);
            assert_eq!(env["JUPYTER_CONFIG_PATH"], "/etc/stackhub/server");
            assert_eq!(env["AWS_ENDPOINT_URL"], moto.endpoint);
            assert_eq!(env["STACKHUB_S3_BUCKET"], format!("{id}-users"));
            if auth == "token" {
                assert_eq!(env["JUPYTER_GATEWAY_AUTH_SCHEME"], "token");
                assert_eq!(env["JUPYTER_GATEWAY_AUTH_TOKEN"], EUMETSAT_TOKEN);
            } else {
                assert_eq!(env["JUPYTER_GATEWAY_AUTH_SCHEME"], "Bearer");
            }
            if mode == "static" {
                assert_eq!(env["AWS_ACCESS_KEY_ID"], access_key(id));
                assert_eq!(env["AWS_SECRET_ACCESS_KEY"], site_secret(id));
            } else {
                assert_ne!(
                    env["AWS_ACCESS_KEY_ID"],
                    access_key(id),
                    "a role session's key"
                );
                assert!(env.contains_key("AWS_SESSION_TOKEN"), "{slug}");
            }
        } else {
            check_claim(&fake, &r.spawner, &pod, "alice");
            assert!(!env.contains_key("JUPYTER_GATEWAY_URL"));
        }
        let (proc, log) = kubelet.run(&fake, &pod);
        hub.wait_ready("alice", server, &log).await;
        assert_eq!(hub.server_api("alice", server).await, 200, "{slug} proxied");
        let model = hub.user("alice").await;
        assert_eq!(
            model["servers"][server]["user_options"],
            json!({"profile": slug})
        );
        hub.stop(&fake, &pod, "alice", server, proc).await;
    }
}

/// The custom profile of `ci/custom-profile-values.yaml`, started by REST with KubeSpawner's
/// `user_options`, for a user whose quota is above the profile's limits (the profile's hold)
/// and one whose quota is below them (the quota's hold).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_profile_starts_by_rest_with_kubespawner_options() {
    let (dir, _cleanup) = scratch_dir("helm-hub-custom");
    let fake = FakeKube::start().await;
    let [port, hub_port, s3_port, g0, g1, g2, g3, g4] = free_ports();
    // The same values as the operator's install above (the sites are not needed here: nothing
    // listens on their ports), plus the custom profile.
    let (values, secrets) = site_values(
        &[g0, g1, g2, g3, g4],
        &format!("http://127.0.0.1:{s3_port}"),
    );
    let values_file = dir.join("values.yaml");
    std::fs::write(&values_file, values).unwrap();
    let example = repo().join("helm/stackhub/ci/custom-profile-values.yaml");
    let r = render(&dir, &[&values_file, &example], &secrets);
    let hub = Hub::start(&dir, &r, &fake, port, hub_port).await;
    let custom: Value = serde_yaml::from_str(&std::fs::read_to_string(&example).unwrap()).unwrap();
    let profile = &custom["profileList"][0];
    let slug = profile["slug"].as_str().unwrap();
    let o = &profile["kubespawner_override"];

    // bob's quota (stack-jupyter-low: 2 CPUs, 2 GiB) is below the profile's 4 CPUs and 8 GiB.
    hub.user_in_quota_group("bob", "stack-jupyter-low").await;
    hub.browser_login("bob").await;
    let r_bob = hub
        .admin(reqwest::Method::POST, "/hub/api/users/bob/servers/gpu")
        .json(&json!({"profile": slug}))
        .send()
        .await
        .unwrap();
    assert!(
        [201, 202].contains(&r_bob.status().as_u16()),
        "{}",
        r_bob.text().await.unwrap()
    );
    let pod = pod_of(&fake, &r.spawner, "bob", "gpu").await;
    let c = &pod["spec"]["containers"][0];
    assert_eq!(c["resources"]["limits"], quantities("2000m", 2 << 30));
    assert_eq!(c["resources"]["requests"], quantities("1500m", 2 << 30));

    // alice's quota (stack-jupyter-medium: 6 CPUs, 18 GiB) is above them.
    hub.user_in_quota_group("alice", "stack-jupyter-medium")
        .await;
    hub.browser_login("alice").await;
    let r_alice = hub
        .admin(reqwest::Method::POST, "/hub/api/users/alice/servers/gpu")
        .json(&json!({"profile": slug}))
        .send()
        .await
        .unwrap();
    assert!(
        [201, 202].contains(&r_alice.status().as_u16()),
        "{}",
        r_alice.text().await.unwrap()
    );
    let pod = pod_of(&fake, &r.spawner, "alice", "gpu").await;
    let c = &pod["spec"]["containers"][0];
    assert_eq!(pod["metadata"]["annotations"]["stackhub.io/profile"], slug);
    assert_eq!(c["image"], o["image"]);
    assert_ne!(
        c["image"],
        r.spawner.image.as_str(),
        "not the spawner's default"
    );
    assert_eq!(c["command"], o["cmd"]);
    assert_eq!(c["args"], o["args"]);
    // Limits: the lower of profile (4 CPUs, 8 GiB) and quota; requests: the guarantees.
    assert_eq!(c["resources"]["limits"], quantities("4000m", 8 << 30));
    assert_eq!(c["resources"]["requests"], quantities("1500m", 2 << 30));
    assert_eq!(pod["spec"]["nodeSelector"], o["node_selector"]);
    assert_eq!(pod["spec"]["tolerations"], o["tolerations"]);
    let env = env_of(&fake, &pod);
    assert_eq!(
        env["STACKHUB_PROFILE_NOTE"],
        o["environment"]["STACKHUB_PROFILE_NOTE"]
    );
    assert_eq!(env["STACKHUB_QUOTA_ROLE"], "stack-jupyter-medium");
    check_claim(&fake, &r.spawner, &pod, "alice");

    let kubelet = Kubelet::new(&dir, "127.0.0.3", &r, &hub);
    let (proc, log) = kubelet.run(&fake, &pod);
    hub.wait_ready("alice", "gpu", &log).await;
    assert_eq!(hub.server_api("alice", "gpu").await, 200, "proxied");
    assert_eq!(
        hub.user("alice").await["servers"]["gpu"]["user_options"],
        json!({"profile": slug})
    );
    hub.stop(&fake, &pod, "alice", "gpu", proc).await;
}
