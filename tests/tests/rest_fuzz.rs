//! A fuzzing run of the hub's REST API against JupyterHub's OpenAPI description (`rest-api.yml`
//! from the `jupyterhub` source distribution on PyPI, fetched by `scripts/lib.sh`
//! `ensure_jupyterhub_rest_api`, named in `STACKHUB_JUPYTERHUB_REST_API`) with schemathesis, a
//! property-based API fuzzer from PyPI (pinned in `scripts/requirements-test.txt`). The real `stackhub` binary
//! runs with the development authenticator; schemathesis calls every operation of the
//! description with the admin token, with valid and invalid data, and checks that no answer is
//! a server error. The hub's log must then hold no panic.
//!
//! Bounded so it fits in `scripts/test`: `STACKHUB_FUZZ_EXAMPLES` cases per operation
//! (default 30) and `STACKHUB_FUZZ_SECONDS` in all (default 150); `STACKHUB_FUZZ_SEED` fixes
//! the generated data (default: a fixed seed, so a failure reproduces; `random` for a new one
//! every run). `STACKHUB_SCHEMATHESIS` names the `schemathesis` executable (default: the one
//! in `$STACKHUB_VENV`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod hub_common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use hub_common::{ADMIN_TOKEN, Hub, free_ports, log_tail, scratch_dir, venv};

fn schemathesis() -> PathBuf {
    let bin = std::env::var_os("STACKHUB_SCHEMATHESIS")
        .map_or_else(|| venv().join("bin/schemathesis"), PathBuf::from);
    assert!(
        bin.exists(),
        "{} not found: run scripts/test (it installs scripts/requirements-test.txt into the venv) \
         or set STACKHUB_SCHEMATHESIS",
        bin.display()
    );
    bin
}

/// Where JupyterHub's REST API description is: `STACKHUB_JUPYTERHUB_REST_API`, else where
/// `scripts/lib.sh` `ensure_jupyterhub_rest_api` caches it.
fn jupyterhub_rest_api() -> PathBuf {
    let path = std::env::var_os("STACKHUB_JUPYTERHUB_REST_API")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
                })
                .join("stackhub/jupyterhub/rest-api.yml")
        });
    assert!(
        path.is_file(),
        "JupyterHub's REST API description is not at {}: run scripts/test, or `source \
         scripts/lib.sh; ensure_venv; ensure_jupyterhub_rest_api` (it fetches the jupyterhub \
         sdist from PyPI), or set STACKHUB_JUPYTERHUB_REST_API",
        path.display()
    );
    path
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rest_operation_fuzzed_from_the_openapi_description_answers_without_a_5xx_or_panic() {
    let spec = jupyterhub_rest_api();
    let (dir, _cleanup) = scratch_dir("rest-fuzz");
    let [port, hub_port] = free_ports();
    let mut hub = Hub::start(&dir, port, hub_port).await;
    // The token reaches schemathesis through its environment, not its argument list.
    let config = dir.join("schemathesis.toml");
    std::fs::write(
        &config,
        "headers = { Authorization = \"token ${STACKHUB_FUZZ_TOKEN}\" }\n",
    )
    .unwrap();
    let examples = env_or("STACKHUB_FUZZ_EXAMPLES", "30");
    let seconds = env_or("STACKHUB_FUZZ_SECONDS", "150");
    let seed = env_or("STACKHUB_FUZZ_SEED", "18");
    let mut cmd = Command::new(schemathesis());
    cmd.arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(&spec)
        .args(["--url", &format!("http://127.0.0.1:{port}/hub/api")])
        .args(["--checks", "not_a_server_error"])
        .args(["--max-examples", &examples])
        .args(["--max-time", &seconds])
        .args(["--workers", "2"])
        .args(["--request-timeout", "20"])
        .args(["--max-redirects", "0"])
        .args(["--suppress-health-check", "all"])
        .arg("--continue-on-failure")
        .args(["--report", "junit"])
        .arg("--report-dir")
        .arg(dir.join("report"));
    if seed != "random" {
        cmd.args(["--seed", &seed]);
    }
    let started = Instant::now();
    let out = cmd
        .current_dir(&dir)
        .env("STACKHUB_FUZZ_TOKEN", ADMIN_TOKEN)
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .stdin(Stdio::null())
        .output()
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "schemathesis ran {:.0} s:\n{}",
        started.elapsed().as_secs_f64(),
        stdout
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    hub.terminate();
    let log = std::fs::read_to_string(dir.join("hub.log")).unwrap();
    let panics: Vec<&str> = log.lines().filter(|l| l.contains("panicked")).collect();
    assert!(
        panics.is_empty(),
        "the hub panicked under fuzzing:\n{}\n(log tail:\n{})",
        panics.join("\n"),
        log_tail(&dir.join("hub.log"))
    );
    // Something was tested: schemathesis ends with "N generated, ..." test cases.
    let generated: u64 = stdout
        .lines()
        .find_map(|l| {
            l.trim()
                .split_once(" generated, ")
                .map(|(n, _)| n.trim().to_owned())
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        generated >= 100,
        "schemathesis generated {generated} test cases:\n{stdout}\n{stderr}"
    );
    // The hub's own account of each failure: every warning and error it logged.
    let complaints: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" ERROR ") || l.contains(" WARN "))
        .collect();
    assert!(
        out.status.success(),
        "schemathesis found server errors (exit {}):\n{stdout}\n{stderr}\nthe hub's warnings and errors:\n{}",
        out.status,
        complaints.join("\n")
    );
}
