//! Kernelspecs: `<dir>/<name>/kernel.json` found in, in order, the configured directories,
//! `JUPYTER_PATH`, the user data dir (`JUPYTER_DATA_DIR` or `~/.local/share/jupyter`), the
//! virtualenv/prefix data dir, `/usr/local/share/jupyter` and `/usr/share/jupyter` (each + `kernels`).
//! The first directory holding a name wins, as in jupyter_client.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Value, json};

/// How a kernel is interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterruptMode {
    /// SIGINT to the kernel's process group.
    Signal,
    /// `interrupt_request` on the control channel.
    Message,
}

#[derive(Deserialize)]
struct KernelJson {
    argv: Vec<String>,
    #[serde(default)]
    language: String,
    #[serde(default)]
    interrupt_mode: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
}

/// One kernelspec as found on disk.
#[derive(Debug, Clone)]
pub struct KernelSpec {
    /// Directory name (the kernelspec name).
    pub name: String,
    /// Directory holding `kernel.json` and resources.
    pub dir: PathBuf,
    /// Command line, with `{connection_file}` still in it.
    pub argv: Vec<String>,
    /// Language (`python`, ...).
    pub language: String,
    /// Environment stanza of the spec.
    pub env: BTreeMap<String, String>,
    /// How to interrupt.
    pub interrupt_mode: InterruptMode,
    /// `kernel.json` verbatim (served as `spec`).
    pub raw: Value,
}

fn user_list(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => s
            .split(',')
            .map(|u| u.trim().to_owned())
            .filter(|u| !u.is_empty())
            .collect(),
        Value::Array(a) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

impl KernelSpec {
    /// Loads `<dir>/kernel.json`; `None` (with a log line) when it is missing or invalid.
    pub fn load(name: &str, dir: &Path) -> Option<Self> {
        let path = dir.join("kernel.json");
        let text = std::fs::read_to_string(&path).ok()?;
        let raw: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring invalid kernel.json");
                return None;
            }
        };
        let k: KernelJson = match serde_json::from_value(raw.clone()) {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring kernel.json without argv");
                return None;
            }
        };
        if k.argv.is_empty() {
            tracing::warn!(path = %path.display(), "ignoring kernel.json with empty argv");
            return None;
        }
        let interrupt_mode = match k.interrupt_mode.as_deref() {
            Some("message") => InterruptMode::Message,
            _ => InterruptMode::Signal,
        };
        Some(KernelSpec {
            name: name.to_owned(),
            dir: dir.to_owned(),
            argv: k.argv,
            language: k.language,
            env: k.env,
            interrupt_mode,
            raw,
        })
    }

    /// `metadata.stackhub.launcher`: which launcher runs this kernelspec (`None` = the default).
    pub fn launcher_name(&self) -> Option<&str> {
        self.raw["metadata"]["stackhub"]["launcher"].as_str()
    }

    /// `metadata.stackhub.<key>` as a string (launcher options such as `slurm_profile`).
    pub fn stackhub_option(&self, key: &str) -> Option<&str> {
        self.raw["metadata"]["stackhub"][key].as_str()
    }

    /// `metadata.stackhub.pending_start`: `POST /api/kernels` answers 201 at once with the kernel
    /// `starting` (for queued batch jobs) instead of waiting until it is ready.
    pub fn pending_start(&self) -> bool {
        self.raw["metadata"]["stackhub"]["pending_start"].as_bool() == Some(true)
    }

    fn process_proxy_config(&self, key: &str) -> Vec<String> {
        user_list(&self.raw["metadata"]["process_proxy"]["config"][key])
    }

    /// EG semantics: the spec's `unauthorized_users` adds to the global list; its
    /// `authorized_users`, when set, replaces the global one.
    pub fn allows(
        &self,
        user: &str,
        global_unauthorized: &[String],
        global_authorized: &[String],
    ) -> bool {
        let spec_unauth = self.process_proxy_config("unauthorized_users");
        if global_unauthorized
            .iter()
            .chain(&spec_unauth)
            .any(|u| u == user)
        {
            return false;
        }
        let spec_auth = self.process_proxy_config("authorized_users");
        let allowed = if spec_auth.is_empty() {
            global_authorized.to_vec()
        } else {
            spec_auth
        };
        allowed.is_empty() || allowed.iter().any(|u| u == user)
    }

    /// Resource files (`logo-64x64.png`, `kernel.js`, ...) as `{key: url}`.
    pub fn resources(&self, base_url: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return out;
        };
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            let key = if file.starts_with("logo-") {
                file.rsplit_once('.')
                    .map(|(stem, _)| stem.to_owned())
                    .unwrap_or_else(|| file.clone())
            } else if file == "kernel.js" || file == "kernel.css" {
                file.clone()
            } else {
                continue;
            };
            out.insert(key, format!("{base_url}/kernelspecs/{}/{file}", self.name));
        }
        out
    }

    /// The KernelSpecModel of the REST API.
    pub fn model(&self, base_url: &str) -> Value {
        json!({ "name": self.name, "spec": self.raw, "resources": self.resources(base_url) })
    }

    /// [`Self::model`] with the display name saying where the kernel runs (`… at SITE`), unless
    /// it names the site already.
    pub fn model_at(&self, base_url: &str, site: Option<&str>) -> Value {
        let mut model = self.model(base_url);
        if let Some(site) = site
            && let Some(name) = model["spec"]["display_name"].as_str()
            && !name.contains(site)
        {
            model["spec"]["display_name"] = Value::String(format!("{name} at {site}"));
        }
        model
    }

    /// argv with `python`/`python3` resolved to the interpreter of the prefix the spec lives in
    /// (`<prefix>/share/jupyter/kernels/<name>` → `<prefix>/bin/python3`), as jupyter_client does
    /// for its native kernel; other commands are left for `PATH`.
    pub fn resolved_argv(&self) -> Vec<String> {
        let mut argv = self.argv.clone();
        if matches!(argv[0].as_str(), "python" | "python3") {
            let prefix = self.dir.ancestors().nth(4);
            if let Some(python) = prefix
                .map(|p| p.join("bin").join("python3"))
                .filter(|p| p.exists())
            {
                argv[0] = python.to_string_lossy().into_owned();
            }
        }
        argv
    }
}

/// Where kernelspecs are searched, in order.
#[derive(Debug, Clone)]
pub struct KernelSpecDirs(pub Vec<PathBuf>);

impl KernelSpecDirs {
    /// The standard search path: `configured`, then `JUPYTER_PATH`, the user data dir, the prefix
    /// of the running virtualenv (`VIRTUAL_ENV`), then the system dirs. `lookup` reads the env.
    pub fn standard(configured: &[PathBuf], lookup: impl Fn(&str) -> Option<String>) -> Self {
        let mut dirs: Vec<PathBuf> = configured.to_vec();
        if let Some(jp) = lookup("JUPYTER_PATH") {
            dirs.extend(
                std::env::split_paths(&jp)
                    .filter(|p| !p.as_os_str().is_empty())
                    .map(|p| p.join("kernels")),
            );
        }
        if let Some(d) = lookup("JUPYTER_DATA_DIR") {
            dirs.push(PathBuf::from(d).join("kernels"));
        } else if let Some(home) = lookup("HOME") {
            dirs.push(PathBuf::from(home).join(".local/share/jupyter/kernels"));
        }
        if let Some(venv) = lookup("VIRTUAL_ENV") {
            dirs.push(PathBuf::from(venv).join("share/jupyter/kernels"));
        }
        dirs.push(PathBuf::from("/usr/local/share/jupyter/kernels"));
        dirs.push(PathBuf::from("/usr/share/jupyter/kernels"));
        KernelSpecDirs(dirs)
    }

    /// All kernelspecs, first directory wins per name.
    pub fn all(&self) -> BTreeMap<String, KernelSpec> {
        let mut out = BTreeMap::new();
        for dir in &self.0 {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if out.contains_key(&name) || !valid_name(&name) {
                    continue;
                }
                if let Some(spec) = KernelSpec::load(&name, &entry.path()) {
                    out.insert(name, spec);
                }
            }
        }
        out
    }

    /// One kernelspec by name.
    pub fn find(&self, name: &str) -> Option<KernelSpec> {
        if !valid_name(name) {
            return None;
        }
        self.0
            .iter()
            .find_map(|dir| KernelSpec::load(name, &dir.join(name)))
    }
}

/// Kernelspec names are `[\w.\-]+` (jupyter_server's route regex, minus `%`).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(meta: Value) -> KernelSpec {
        KernelSpec {
            name: "t".into(),
            dir: PathBuf::from("/nonexistent"),
            argv: vec!["python".into()],
            language: "python".into(),
            env: BTreeMap::new(),
            interrupt_mode: InterruptMode::Signal,
            raw: json!({ "metadata": meta }),
        }
    }

    #[test]
    fn eg_authorization_semantics() {
        let s = spec(json!({"process_proxy": {"config": {
            "authorized_users": "bob,alice,bad_guy", "unauthorized_users": "bad_guy"}}}));
        let root = vec!["root".to_owned()];
        assert!(s.allows("bob", &root, &[]));
        assert!(!s.allows("bad_guy", &root, &[]));
        assert!(!s.allows("carol", &root, &[]));
        let open = spec(json!({}));
        assert!(open.allows("carol", &root, &[]));
        assert!(!open.allows("root", &root, &[]));
        assert!(!open.allows("carol", &root, &["dave".to_owned()]));
    }

    #[test]
    fn display_names_say_where_the_kernel_runs() {
        let mut s = spec(json!({}));
        s.raw["display_name"] = json!("Python 3 (ipykernel)");
        assert_eq!(
            s.model_at("", Some("LUMI Bridge"))["spec"]["display_name"],
            "Python 3 (ipykernel) at LUMI Bridge"
        );
        assert_eq!(
            s.model_at("", None)["spec"]["display_name"],
            "Python 3 (ipykernel)"
        );
        s.raw["display_name"] = json!("Python on LUMI Bridge");
        assert_eq!(
            s.model_at("", Some("LUMI Bridge"))["spec"]["display_name"],
            "Python on LUMI Bridge"
        );
    }

    #[test]
    fn names_cannot_escape_the_directory() {
        assert!(valid_name("python3"));
        assert!(!valid_name(".."));
        assert!(!valid_name("a/b"));
    }
}
