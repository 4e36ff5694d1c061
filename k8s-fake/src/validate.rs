//! Schema-level checks: `kubernetes-validate --strict` (PyPI; the official schemas) on manifests.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// The Kubernetes version we target (k8s-openapi's `v1_33` feature, the charts' `kubeVersion`).
pub const KUBERNETES_VERSION: &str = "1.33.0";

/// Where `kubernetes-validate` is: `$STACKHUB_KUBERNETES_VALIDATE`, else the tools venv that
/// `scripts/lib.sh ensure_k8s_tools` makes under the user cache.
///
/// # Panics
/// When it is not installed: schema tests fail, never skip.
pub fn kubernetes_validate_tool() -> PathBuf {
    let path = std::env::var_os("STACKHUB_KUBERNETES_VALIDATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
                });
            cache.join("stackhub/tools/venv/bin/kubernetes-validate")
        });
    assert!(
        path.exists(),
        "kubernetes-validate not found at {}: run scripts/test (or `source scripts/lib.sh; \
         ensure_k8s_tools`), or set STACKHUB_KUBERNETES_VALIDATE",
        path.display()
    );
    path
}

/// Validate `docs` (one manifest each) with `--strict` for [`KUBERNETES_VERSION`]; returns
/// the tool's output on failure.
///
/// # Errors
/// The validator's report when any manifest is invalid.
///
/// # Panics
/// When the tool is missing or cannot run.
pub fn kubernetes_validate(docs: &[Value]) -> Result<(), String> {
    let tool = kubernetes_validate_tool();
    let dir = std::env::temp_dir().join(format!("k8s-validate-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut files = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        let f = dir.join(format!("{i:03}.json"));
        std::fs::write(&f, serde_json::to_vec_pretty(doc).expect("json")).expect("write");
        files.push(f);
    }
    let out = Command::new(&tool)
        .arg("--strict")
        .args(["-k", KUBERNETES_VERSION])
        .args(&files)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", tool.display()));
    let _ = std::fs::remove_dir_all(&dir);
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(())
    } else {
        Err(report)
    }
}
