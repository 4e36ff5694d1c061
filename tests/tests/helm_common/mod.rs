//! `helm` for the chart tests: the binary (`ensure_k8s_tools` puts it in the cache, or
//! `STACKHUB_HELM`), `helm template` into JSON documents, and finding documents by kind.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

pub fn repo() -> PathBuf {
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("..")
}

pub fn helm() -> PathBuf {
    let path = std::env::var_os("STACKHUB_HELM")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
                });
            cache.join("stackhub/tools/helm/helm")
        });
    assert!(
        path.exists(),
        "helm not found at {}: run scripts/test (or `source scripts/lib.sh; ensure_k8s_tools`), \
         or set STACKHUB_HELM",
        path.display()
    );
    path
}

/// `helm ARGS` in the repository: (success, stdout and stderr).
pub fn run_helm(args: &[&str]) -> (bool, String) {
    let out = Command::new(helm())
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `helm template rel CHART` in namespace `ns` with values files (`-f`) and `--set`s → the
/// rendered documents as JSON.
pub fn template_with(chart: &str, ns: &str, files: &[&Path], sets: &[&str]) -> Vec<Value> {
    let mut args = vec![
        "template",
        "rel",
        chart,
        "--namespace",
        ns,
        "--kube-version",
        "1.33.0",
    ];
    for f in files {
        args.push("--values");
        args.push(f.to_str().unwrap());
    }
    for s in sets {
        args.push("--set");
        args.push(s);
    }
    let (ok, out) = run_helm(&args);
    assert!(
        ok,
        "helm template {chart} {files:?} {sets:?} failed:\n{out}"
    );
    serde_yaml::Deserializer::from_str(&out)
        .map(|d| {
            let v: serde_yaml::Value = serde::Deserialize::deserialize(d).unwrap();
            serde_json::to_value(v).unwrap()
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// The documents of `kind`.
pub fn find<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}
