//! The full JupyterLab as the Data Lake's users know it, in a real browser: headless Chromium
//! signs in, picks "JupyterLab (Full working environment)", and in the stock
//! `jupyterhub-singleuser` it lands in finds the Git panel on a repository of the home, the S3
//! browser (jupyter-fs) listing an object of the user's S3 space with no form filled, the Dask
//! panel, and the "Python DEDL" kernel, in which a cell imports the Data Lake's libraries and
//! lists the same object with `boto3`. Underneath: the real `stackhub` with its embedded S3
//! store; the server holds no S3 key, its credentials come from
//! `POST /hub/api/sites/central/s3-credentials` through the AWS `credential_process` the hub's
//! server configuration sets up. Screenshots: `full-lab-*.png` in the test artifacts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod browser_common;
mod hub_common;

use std::path::Path;
use std::process::Command;

use browser_common::{artifacts, node};
use hub_common::{ADMIN_TOKEN, Hub, PASSWORD, free_ports, live_under, log_tail, scratch_dir, venv};
use serde_json::Value;

const REPO: &str = "demo-repo";
const COMMIT: &str = "first commit from the test";
const OBJECT: &str = "from-the-test.txt";

/// The Python DEDL kernelspec `scripts/test` installs into the venv (`ensure_dedl_env`), with its
/// environment's Python there.
fn dedl_kernelspec() -> Value {
    let spec = venv().join("share/jupyter/kernels/python_dedl/kernel.json");
    let text = std::fs::read_to_string(&spec).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: run scripts/test (ensure_dedl_env installs the Python DEDL kernel, \
             STACKHUB_DEDL_VENV names its environment)",
            spec.display()
        )
    });
    let json: Value = serde_json::from_str(&text).unwrap();
    let python = json["argv"][0].as_str().unwrap_or_default();
    assert!(
        Path::new(python).exists(),
        "{}: {python} does not exist: run scripts/test (ensure_dedl_env)",
        spec.display()
    );
    json
}

/// A git repository with one commit in `home`/[`REPO`].
fn git_repository(home: &Path) {
    let repo = home.join(REPO);
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(repo.join("README.md"), "# a repository in the home\n").unwrap();
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "README.md"],
        &["commit", "-q", "-m", COMMIT],
    ] {
        let out = Command::new("git")
            .args(args)
            .current_dir(&repo)
            .env("GIT_AUTHOR_NAME", "Test")
            .env("GIT_AUTHOR_EMAIL", "test@example.org")
            .env("GIT_COMMITTER_NAME", "Test")
            .env("GIT_COMMITTER_EMAIL", "test@example.org")
            .output()
            .expect("run git");
        assert!(out.status.success(), "git {args:?}: {out:?}");
    }
}

/// Put [`OBJECT`] into `user`'s space through the embedded S3 store with the store's root key
/// (boto3 from the venv; the key travels in the environment, never in arguments).
fn put_object(endpoint: &str, root_key: &str, user: &str) {
    let (id, secret) = root_key.trim().split_once(':').unwrap();
    let script = "import boto3, os, sys\n\
                  s3 = boto3.client('s3', endpoint_url=os.environ['ENDPOINT'], region_name='local')\n\
                  s3.put_object(Bucket='stackhub', Key=os.environ['KEY'], Body=b'put by the test')\n";
    let out = Command::new(venv().join("bin/python"))
        .args(["-c", script])
        .env("ENDPOINT", endpoint)
        .env("KEY", format!("users/{user}/{OBJECT}"))
        .env("AWS_ACCESS_KEY_ID", id)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_CONFIG_FILE")
        .output()
        .unwrap();
    assert!(out.status.success(), "put the test's object: {out:?}");
}

/// The environment of the `jupyterhub-singleuser` process running below `dir`.
fn server_environ(dir: &Path) -> Vec<(String, String)> {
    let pid = live_under(dir)
        .into_iter()
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("jupyterhub-singleuser"))
        })
        .expect("the single-user server runs");
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    raw.split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            let (k, v) = kv.split_once('=')?;
            Some((k.to_owned(), v.to_owned()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_full_lab_has_git_the_s3_browser_dask_and_python_dedl() {
    let dedl = dedl_kernelspec();
    let (dir, _cleanup) = scratch_dir("full-lab");
    let [port, hub_port] = free_ports();
    let base = format!("http://127.0.0.1:{port}");
    // One site, `central`, with S3 in the hub's embedded store: the full Lab's S3 site by
    // default. No gateway runs there (a full Lab's kernels run beside it).
    std::fs::write(
        dir.join("hub.toml"),
        "[s3]\nhealth_interval_secs = 300\n\n[spawner]\nstart_timeout = 90\n\n\
         [[sites]]\nid = \"central\"\nname = \"Central Site\"\n\
         gateway_url = \"http://127.0.0.1:9/\"\ns3 = { mode = \"embedded\" }\n\n\
         [[profile_list]]\ndisplay_name = \"JupyterLab (Full working environment)\"\n\
         slug = \"jupyterlab\"\ndefault = true\n\n\
         [[profile_list]]\ndisplay_name = \"JupyterLab - Light\"\nslug = \"light\"\n",
    )
    .unwrap();
    // The local spawner's home of alice: <data>/users/alice.
    git_repository(&dir.join("data/users/alice"));
    let config = dir.join("hub.toml").display().to_string();
    let _hub = Hub::start_with(&dir, port, hub_port, &["--config", &config]).await;
    let api = reqwest::Client::new();
    let sites: Value = api
        .get(format!("{base}/hub/api/sites"))
        .header("authorization", format!("token {ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let endpoint = sites[0]["s3"]["endpoint"]
        .as_str()
        .unwrap_or_else(|| panic!("no embedded S3 endpoint: {sites}"))
        .to_owned();
    let root_key = std::fs::read_to_string(dir.join("data/s3/root-key")).unwrap();
    put_object(&endpoint, &root_key, "alice");

    let art = artifacts().display().to_string();
    let b = base.clone();
    let code = "import destinelab, earthkit.data, pystac_client, xarray, zarr, s3fs, dask_gateway, \
                os, boto3; r = boto3.client('s3').list_objects_v2(\
                Bucket=os.environ['STACKHUB_S3_BUCKET'], Prefix=os.environ['STACKHUB_S3_PREFIX']); \
                print('DEDL-OK', boto3.Session().get_credentials().method, \
                [o['Key'] for o in r.get('Contents', [])])";
    let started = std::time::Instant::now();
    let seen = tokio::task::spawn_blocking(move || {
        node(
            "browser_full_lab.mjs",
            &[
                &b,
                "alice",
                PASSWORD,
                &art,
                "jupyterlab",
                REPO,
                COMMIT,
                OBJECT,
                code,
                "DEDL-OK",
            ],
        )
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nhub log:\n{}\nserver log:\n{}",
            log_tail(&dir.join("hub.log")),
            log_tail(&dir.join("data/logs/alice.log"))
        )
    });
    eprintln!(
        "browser saw ({:.1} s): {seen}",
        started.elapsed().as_secs_f64()
    );
    let text = |k: &str| seen[k].as_str().unwrap_or_default().to_owned();

    // The launcher offers the Python DEDL kernel (scripts/test's environment).
    let launcher: Vec<&str> = seen["launcher"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        launcher.contains(&"Notebook: Python DEDL"),
        "{launcher:?} ({dedl})"
    );
    // The hub's JupyterLab settings (hub/share/server/overrides.json) are the Lab's defaults: no
    // news, no update checks (no toast asked about them), the Git panel's polling.
    let settings = &seen["settings"];
    assert_eq!(settings["notification"]["fetchNews"], "false", "{seen}");
    assert_eq!(settings["notification"]["checkForUpdates"], false, "{seen}");
    assert_eq!(settings["git"]["refreshInterval"], 10000, "{seen}");
    assert!(
        !seen["toasts"].to_string().contains("news"),
        "a news toast: {seen}"
    );
    // The Git panel shows the repository of the home and its commit.
    assert_eq!(text("git_repository"), REPO, "{seen}");
    assert!(text("git_history").contains(COMMIT), "{seen}");
    // The Dask panel.
    assert!(text("dask_panel").contains("CLUSTERS"), "{seen}");
    // The S3 browser opened on alice's space at the Central Site, listing the test's object.
    assert_eq!(text("s3_title"), "S3 Object Storage - Central Site");
    assert!(text("s3_listing").contains(OBJECT), "{seen}");
    // The DEDL kernel imported the Data Lake's libraries, and boto3 there saw the same object
    // with credentials from the hub's credential_process.
    let output = text("output");
    assert!(
        output.contains("DEDL-OK custom-process")
            && output.contains(&format!("'users/alice/{OBJECT}'")),
        "{output}"
    );

    // The server holds the space's coordinates, never a key: its credentials come from the hub.
    let env = server_environ(&dir);
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    for k in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    ] {
        assert!(get(k).is_none(), "the full Lab's environment holds {k}");
    }
    assert_eq!(get("STACKHUB_S3_PREFIX"), Some("users/alice/"));
    assert_eq!(get("AWS_ENDPOINT_URL"), Some(endpoint.as_str()));
    assert!(
        get("STACKHUB_S3_CREDENTIALS_URL")
            .is_some_and(|u| u.ends_with("/hub/api/sites/central/s3-credentials")),
        "{env:?}"
    );
    let hub_log = std::fs::read_to_string(dir.join("hub.log")).unwrap();
    assert!(
        hub_log.contains("issued S3 credentials"),
        "the hub issued no S3 credentials:\n{hub_log}"
    );
}
