//! Secret hygiene of an end-to-end run: every secret the run handled (API tokens, S3 keys and
//! session tokens, kernel keys, OAuth client secrets, the cookie secret) is registered here, and
//! the places a secret must never appear are searched for it: log files, error bodies, URLs in
//! logs, the argument lists of the processes the run started (read while they run), Slurm job
//! scripts.
//!
//! A secret is looked for as written, percent-encoded (a URL) and in standard base64 (a Basic
//! header or a cookie value). Findings name the secret's label and the place, never the value.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Shortest value taken as a secret: shorter ones would match unrelated text.
const MIN_LEN: usize = 12;

/// The secrets of a run and where they were found.
#[derive(Debug, Default)]
pub struct SecretScan {
    secrets: Vec<(String, String)>,
    findings: BTreeSet<String>,
    /// What was searched, for the failure message.
    searched: Vec<String>,
}

impl SecretScan {
    pub fn new() -> Self {
        Self::default()
    }

    /// Register `value` under `label` (e.g. "alice's API token"). Values shorter than 12
    /// characters are refused: the test must hand over real secrets.
    pub fn add(&mut self, label: &str, value: &str) -> &mut Self {
        let value = value.trim();
        assert!(
            value.len() >= MIN_LEN,
            "{label}: a secret of {} characters is too short to search for",
            value.len()
        );
        if !self.secrets.iter().any(|(_, v)| v == value) {
            self.secrets.push((label.to_owned(), value.to_owned()));
        }
        self
    }

    /// Register the secrets in the environment of process `pid` (variables whose name holds
    /// SECRET, TOKEN, KEY or PASSWORD, except paths and URLs); returns how many were added.
    pub fn add_environ(&mut self, pid: i64) -> usize {
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/environ")) else {
            return 0;
        };
        let mut added = 0;
        for var in raw.split(|&b| b == 0) {
            let var = String::from_utf8_lossy(var);
            let Some((name, value)) = var.split_once('=') else {
                continue;
            };
            let secret_name = ["SECRET", "TOKEN", "KEY", "PASSWORD"]
                .iter()
                .any(|m| name.contains(m))
                && ![
                    "_FILE",
                    "_PATH",
                    "_URL",
                    "_DIR",
                    "_TIMEOUT",
                    "_LIFETIME",
                    "_ROLES",
                ]
                .iter()
                .any(|s| name.ends_with(s));
            let value = value.trim();
            if secret_name
                && value.len() >= MIN_LEN
                && !value.starts_with('/')
                && !value.contains("://")
            {
                let before = self.secrets.len();
                self.add(&format!("{name} of process {pid}"), value);
                added += self.secrets.len() - before;
            }
        }
        added
    }

    /// Register the message key of every kernel among `pids` (read from the connection file
    /// named by `-f FILE` in its argument list); returns how many were added.
    pub fn add_kernel_keys(&mut self, pids: &[i64]) -> usize {
        let mut added = 0;
        for pid in pids {
            let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let args: Vec<String> = raw
                .split(|&b| b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let file = args
                .windows(2)
                .find(|w| w[0] == "-f" && w[1].ends_with(".json"))
                .map(|w| w[1].clone())
                .or_else(|| {
                    args.iter()
                        .find_map(|a| a.strip_prefix("--f=").map(str::to_owned))
                });
            let Some(text) = file.and_then(|f| std::fs::read_to_string(f).ok()) else {
                continue;
            };
            let key = text
                .split("\"key\"")
                .nth(1)
                .and_then(|rest| rest.split('"').nth(1))
                .unwrap_or_default()
                .to_owned();
            if key.len() >= MIN_LEN && !self.secrets.iter().any(|(_, v)| *v == key) {
                self.add(&format!("the message key of kernel process {pid}"), &key);
                added += 1;
            }
        }
        added
    }

    /// How many secrets are registered.
    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Search `text`, found at `place` (an error body, a job script, ...).
    pub fn text(&mut self, place: &str, text: &str) -> &mut Self {
        self.searched.push(place.to_owned());
        for (label, value) in &self.secrets {
            if forms(value).iter().any(|form| text.contains(form.as_str())) {
                self.findings.insert(format!("{label} in {place}"));
            }
        }
        self
    }

    /// Search one file (missing files are skipped: a log a component did not write).
    pub fn file(&mut self, path: &Path) -> &mut Self {
        if let Ok(bytes) = std::fs::read(path) {
            let text = String::from_utf8_lossy(&bytes);
            self.text(&path.display().to_string(), &text);
        }
        self
    }

    /// Search every log below `dir`: files named `*.log`, `*.out`, `*.err`, and every file in a
    /// directory named `logs`. Returns how many files were searched.
    pub fn logs_under(&mut self, dir: &Path) -> usize {
        let logs = log_files(dir);
        for log in &logs {
            self.file(log);
        }
        logs.len()
    }

    /// Search the argument list (`/proc/PID/cmdline`) of each of `pids` that is still alive;
    /// returns how many were read.
    pub fn cmdlines(&mut self, pids: &[i64]) -> usize {
        let mut read = 0;
        for pid in pids {
            if let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) {
                read += 1;
                let text = String::from_utf8_lossy(&raw).replace('\0', " ");
                let name = text.split(' ').next().unwrap_or("").to_owned();
                self.text(
                    &format!("the argument list of process {pid} ({name})"),
                    &text,
                );
            }
        }
        read
    }

    /// Fail, naming every finding, unless no secret was found anywhere.
    pub fn assert_clean(&self) {
        assert!(
            !self.secrets.is_empty(),
            "no secrets were registered: the scan cannot fail"
        );
        if self.findings.is_empty() {
            return;
        }
        let mut msg = format!(
            "{} secret leak(s) (searched {} places for {} secrets):\n",
            self.findings.len(),
            self.searched.len(),
            self.secrets.len()
        );
        for f in &self.findings {
            let _ = writeln!(msg, "  {f}");
        }
        panic!("{msg}");
    }

    /// The findings so far ("LABEL in PLACE").
    pub fn findings(&self) -> Vec<String> {
        self.findings.iter().cloned().collect()
    }
}

/// The spellings of `value` worth searching for.
fn forms(value: &str) -> Vec<String> {
    let mut out = vec![value.to_owned()];
    let encoded: String = value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    if encoded != value {
        out.push(encoded);
    }
    out.push(base64(value.as_bytes()));
    out
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    // Without padding: a base64 value inside longer text need not end where the secret does.
    out.trim_end_matches('=').to_owned()
}

fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_owned(), false)];
    while let Some((dir, in_logs)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let name = entry.file_name().to_string_lossy().into_owned();
            if kind.is_dir() {
                stack.push((path, in_logs || name == "logs"));
            } else if kind.is_file()
                && (in_logs || [".log", ".out", ".err"].iter().any(|s| name.ends_with(s)))
            {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Live processes that descend from any of `roots` (children, grandchildren, ...), roots
/// included.
pub fn descendants(roots: &[i64]) -> Vec<i64> {
    let mut parent_of = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i64>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some(close) = stat.rfind(')') else {
                continue;
            };
            let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
            if let Some(ppid) = fields.get(1).and_then(|s| s.parse::<i64>().ok()) {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut out: Vec<i64> = roots.to_vec();
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        for &(pid, ppid) in &parent_of {
            if ppid == parent && !out.contains(&pid) {
                out.push(pid);
            }
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_raw_percent_encoded_and_base64_spellings() {
        let mut scan = SecretScan::new();
        scan.add("token", "abc/def+ghi=jkl0123");
        scan.text("a log", "GET /x?token=abc%2Fdef%2Bghi%3Djkl0123 200");
        scan.text(
            "a header",
            "Authorization: Basic YWJjL2RlZitnaGk9amtsMDEyMw==",
        );
        scan.text("clean", "nothing here abc/def");
        assert_eq!(
            scan.findings(),
            ["token in a header", "token in a log"],
            "{:?}",
            scan.findings()
        );
    }

    #[test]
    fn base64_matches_a_reference() {
        assert_eq!(base64(b"hello world"), "aGVsbG8gd29ybGQ");
        assert_eq!(base64(b"ab"), "YWI");
        assert_eq!(base64(b""), "");
    }

    #[test]
    #[should_panic(expected = "1 secret leak")]
    fn a_leak_fails_without_printing_the_secret() {
        let mut scan = SecretScan::new();
        scan.add("s3 secret", "0123456789abcdef");
        scan.text("hub.log", "key=0123456789abcdef");
        scan.assert_clean();
    }

    #[test]
    fn logs_are_found_recursively() {
        let dir = std::env::temp_dir().join(format!("secrets-scan-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("data/logs")).unwrap();
        std::fs::write(dir.join("hub.log"), "ok").unwrap();
        std::fs::write(dir.join("data/logs/alice"), "tok=0123456789abcdef").unwrap();
        std::fs::write(dir.join("data/state.db"), "0123456789abcdef").unwrap();
        let mut scan = SecretScan::new();
        scan.add("token", "0123456789abcdef");
        assert_eq!(scan.logs_under(&dir), 2);
        assert_eq!(scan.findings().len(), 1);
        assert!(scan.findings()[0].contains("data/logs/alice"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
