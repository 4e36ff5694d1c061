//! Shared helpers: a scratch directory, the project venv's Python, running a script.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use s3_exchange::Grant;

/// A fresh directory under the system temp dir, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "s3-exchange-{tag}-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The project venv (env `STACKHUB_VENV`, default `<workspace>/.venv`) with boto3; panics if
/// unusable.
pub fn venv_bin(name: &str) -> PathBuf {
    let venv = std::env::var_os("STACKHUB_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(
                std::env::var_os("CARGO_MANIFEST_DIR")
                    .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
            )
            .join("../.venv")
        });
    let python = venv.join("bin/python3");
    let ok = python.exists()
        && Command::new(&python)
            .args(["-c", "import boto3, moto"])
            .status()
            .is_ok_and(|s| s.success());
    assert!(
        ok,
        "no Python venv with boto3 and moto at {} (set STACKHUB_VENV); run `scripts/test`, which creates it",
        venv.display()
    );
    venv.join("bin").join(name)
}

/// Run `script` with the venv's Python and `env`; returns stdout, panics with stderr on failure.
pub fn python(script: &str, env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(venv_bin("python3"));
    cmd.arg("-c").arg(script);
    for (k, v) in env {
        cmd.env(k, v);
    }
    for k in [
        "AWS_PROFILE",
        "AWS_CONFIG_FILE",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    ] {
        if !env.iter().any(|(e, _)| *e == k) {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python failed:\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// An S3 client for `endpoint` in `region` with the given keys (path-style, rustls).
pub fn client(
    region: &str,
    endpoint: &str,
    id: &str,
    secret: &str,
    token: Option<&str>,
) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(
            id,
            secret,
            token.map(str::to_owned),
            None,
            "test",
        ))
        .force_path_style(true)
        .http_client(
            aws_smithy_http_client::Builder::new()
                .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                    aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                ))
                .build_https(),
        )
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// A client holding what a grant hands out, at its space's endpoint and region.
pub fn grant_client(g: &Grant) -> aws_sdk_s3::Client {
    client(
        &g.space.region,
        &g.space.endpoint,
        &g.credentials.access_key_id,
        g.credentials.secret_access_key.expose(),
        g.credentials.session_token.as_ref().map(|t| t.expose()),
    )
}
