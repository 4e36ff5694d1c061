//! Harness of the Kubernetes end-to-end tests: the real `stackhub` / `stackhub-gateway`
//! binaries reach the in-memory API server of `k8s-fake` through a kubeconfig, and the test
//! plays the kubelet: it runs the pod's real command (`jupyterhub-singleuser`, or the kernel
//! image's launcher with ipykernel) on this machine with the pod's environment, its Secret
//! references resolved, then reports the pod `Running` at 127.0.0.1 (the pod's IP is this host).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code,
    unreachable_pub
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_fake::FakeKube;
use serde_json::{Value, json};
// Not every test binary that includes this module uses each helper.
#[allow(unused_imports)]
pub use stackhub_e2e::support::{free_port, log_tail, venv, workspace};

/// A binary of the workspace (`cargo build` puts it in the target dir).
pub fn binary(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace().join("target"), PathBuf::from);
    let bin = target.join("debug").join(name);
    assert!(
        bin.exists(),
        "{} not found: build it first (`cargo build --workspace`, or run scripts/test)",
        bin.display()
    );
    bin
}

/// A fresh directory for one test, removed (with what still runs in it) by [`Cleanup`].
pub fn test_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "stackhub-{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Removes the test directory when dropped.
pub struct Cleanup(pub PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A kubeconfig pointing at the fake API server (plain HTTP, no credentials).
pub fn kubeconfig(dir: &Path, fake: &FakeKube) -> PathBuf {
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
         clusters:\n- name: fake\n  cluster:\n    server: {}\n\
         users:\n- name: fake\n  user: {{}}\n\
         contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n",
        fake.url()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// A child process in its own process group; the group is killed on drop.
pub struct Proc {
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    /// Wait until this `stackhub` answers `GET {base}/hub/api` with 200 (30 s at most),
    /// failing with its log if it exits or stays silent.
    pub async fn wait_for_hub(&mut self, base: &str) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(
                self.running(),
                "stackhub exited before answering; its log:\n{}",
                log_tail(&self.log)
            );
            if let Ok(r) = client.get(format!("{base}/hub/api")).send().await
                && r.status() == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "stackhub did not answer within 30 s; its log:\n{}",
                log_tail(&self.log)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Spawn `cmd` (already given its program, args and env) logging to `log`.
    pub fn spawn(mut cmd: Command, log: &Path) -> Self {
        use std::os::unix::process::CommandExt as _;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        Self {
            child: Some(child),
            log: log.to_owned(),
        }
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// SIGTERM to the group, then SIGKILL after `grace`; waits for the exit.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let group = format!("-{}", child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = Instant::now() + grace;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Whatever else is left in the group.
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let group = format!("-{}", child.id());
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = child.wait();
        }
    }
}

/// Poll `check` every 50 ms until it returns `Some`, for at most `secs` seconds.
pub async fn wait_for<T, F, Fut>(what: &str, secs: u64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait for the first pod in `ns` whose labels hold every pair of `labels`.
pub async fn wait_for_pod(fake: &FakeKube, ns: &str, labels: &[(&str, &str)]) -> Value {
    wait_for(
        &format!("a pod labelled {labels:?} in {ns}"),
        60,
        || async {
            fake.list("pods").into_iter().find(|p| {
                p["metadata"]["namespace"] == ns
                    && labels
                        .iter()
                        .all(|(k, v)| p["metadata"]["labels"][*k].as_str() == Some(*v))
            })
        },
    )
    .await
}

/// The pod's first container environment as the kubelet gives it: plain values, and
/// `secretKeyRef`s read from the Secret in the pod's namespace (which must exist).
pub fn container_env(fake: &FakeKube, pod: &Value) -> Vec<(String, String)> {
    let ns = pod["metadata"]["namespace"].as_str().unwrap();
    let mut out = Vec::new();
    for e in pod["spec"]["containers"][0]["env"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = e["name"].as_str().unwrap().to_owned();
        if let Some(v) = e["value"].as_str() {
            out.push((name, v.to_owned()));
            continue;
        }
        let r = &e["valueFrom"]["secretKeyRef"];
        let secret_name = r["name"]
            .as_str()
            .unwrap_or_else(|| panic!("env {name}: {e}"));
        let key = r["key"].as_str().unwrap();
        let secret = fake
            .get("secrets", ns, secret_name)
            .unwrap_or_else(|| panic!("env {name}: no Secret {ns}/{secret_name}"));
        let value = secret["stringData"][key]
            .as_str()
            .unwrap_or_else(|| panic!("env {name}: Secret {secret_name} has no key {key}"));
        out.push((name, value.to_owned()));
    }
    out
}

/// Report the pod running with IP 127.0.0.1 and its containers ready (the kubelet's update).
pub fn pod_running_on_loopback(fake: &FakeKube, pod: &Value) {
    pod_running_at(fake, pod, "127.0.0.1");
}

/// Report the pod running with IP `ip` (a loopback address: the pod's processes run here) and
/// its containers ready.
pub fn pod_running_at(fake: &FakeKube, pod: &Value, ip: &str) {
    let ns = pod["metadata"]["namespace"].as_str().unwrap();
    let name = pod["metadata"]["name"].as_str().unwrap();
    let statuses: Vec<Value> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            json!({"name": c["name"], "image": c["image"], "imageID": "", "ready": true,
                   "restartCount": 0, "started": true,
                   "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}})
        })
        .collect();
    fake.set_pod_status(
        ns,
        name,
        json!({"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
               "conditions": [{"type": "Ready", "status": "True"}],
               "containerStatuses": statuses}),
    );
}

/// The kubelet's part for a server pod: run its container's command (from the venv's `bin`)
/// and args in `home`, with the pod's environment ([`container_env`]) where `map_env` turns
/// each `(name, value)` into what it means on this machine (the pod's network, the cluster's
/// DNS, files of the image); logs to `log`. `--allow-root`: the image runs as uid 1000, this
/// machine's test user may be root.
pub fn run_server_pod(
    fake: &FakeKube,
    pod: &Value,
    home: &Path,
    log: &Path,
    map_env: impl Fn(&str, String) -> String,
) -> Proc {
    let container = &pod["spec"]["containers"][0];
    let words = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|w| w.as_str().unwrap().to_owned())
            .collect()
    };
    let command = words(&container["command"]);
    std::fs::create_dir_all(home).unwrap();
    let bin = venv().join("bin");
    let mut cmd = Command::new(bin.join(&command[0]));
    cmd.args(&command[1..])
        .args(words(&container["args"]))
        .arg("--allow-root")
        .env_clear()
        .envs(
            container_env(fake, pod)
                .into_iter()
                .map(|(k, v)| (k.clone(), map_env(&k, v))),
        )
        .env(
            "PATH",
            format!("{}:/usr/local/bin:/usr/bin:/bin", bin.display()),
        )
        .env("HOME", home)
        .current_dir(home);
    Proc::spawn(cmd, log)
}

/// A copy of `pod` as another client would create it: new name, `changes` merged into the
/// labels and annotations (no uid, resourceVersion or status: the fake assigns them).
pub fn pod_like(
    pod: &Value,
    name: &str,
    labels: &[(&str, &str)],
    annotations: &[(&str, &str)],
) -> Value {
    let mut p = json!({
        "metadata": {
            "name": name,
            "labels": pod["metadata"]["labels"],
            "annotations": pod["metadata"]["annotations"],
        },
        "spec": pod["spec"],
    });
    for (k, v) in labels {
        p["metadata"]["labels"][*k] = json!(v);
    }
    for (k, v) in annotations {
        p["metadata"]["annotations"][*k] = json!(v);
    }
    p
}
