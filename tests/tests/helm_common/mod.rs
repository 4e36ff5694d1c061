//! `helm` for the chart tests: the binary (`ensure_k8s_tools` puts it in the cache, or
//! `STACKHUB_HELM`), `helm template` into JSON documents, finding documents by kind, and the
//! bridge-site chart's config files laid out as its gateway pod sees them.

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

/// The bridge-site chart's ConfigMap laid out in `dir` as its Deployment mounts it: each item
/// of the config volume at its path, with the mount `/etc/stackhub` in the files moved to
/// `dir`. Returns the gateway container's `--config` file, moved the same way.
pub fn lay_out_bridge(docs: &[Value], dir: &Path) -> PathBuf {
    let cm = find(docs, "ConfigMap")[0];
    let pod = &find(docs, "Deployment")[0]["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let mount = &container["volumeMounts"][0];
    assert_eq!(mount["mountPath"], "/etc/stackhub");
    let volume = &pod["volumes"][0];
    assert_eq!(volume["name"], mount["name"]);
    let _ = std::fs::remove_dir_all(dir);
    let moved = |text: &str| text.replace("/etc/stackhub", dir.to_str().unwrap());
    for item in volume["configMap"]["items"].as_array().unwrap() {
        let path = dir.join(item["path"].as_str().unwrap());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let key = item["key"].as_str().unwrap();
        let text = cm["data"][key].as_str().unwrap_or_else(|| {
            panic!("the volume names ConfigMap key {key}, which is not rendered")
        });
        std::fs::write(path, moved(text)).unwrap();
    }
    assert_eq!(container["args"][0], "--config");
    PathBuf::from(moved(container["args"][1].as_str().unwrap()))
}
