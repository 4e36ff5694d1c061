//! The jupyter_server configuration the hub gives every single-user server: the files of
//! `hub/share/server/`, written under the hub's data directory for local servers (the
//! single-user image carries the same files), and the `JUPYTER_CONFIG_PATH` pointing at them.

use std::path::{Path, PathBuf};

/// The jupyter_server configuration of every single-user server (`hub/share/server/`): file
/// name and content. `jupyter_server_config.py` loads the others.
pub const SERVER_CONFIG_FILES: &[(&str, &str)] = &[
    (
        "jupyter_server_config.py",
        include_str!("../../share/server/jupyter_server_config.py"),
    ),
    (
        "stackhub_remote.py",
        include_str!("../../share/server/stackhub_remote.py"),
    ),
    (
        "stackhub_s3.py",
        include_str!("../../share/server/stackhub_s3.py"),
    ),
    (
        "stackhub_s3_credentials.py",
        include_str!("../../share/server/stackhub_s3_credentials.py"),
    ),
    (
        "stackhub_lab.py",
        include_str!("../../share/server/stackhub_lab.py"),
    ),
    (
        "overrides.json",
        include_str!("../../share/server/overrides.json"),
    ),
];

/// Write [`SERVER_CONFIG_FILES`] into `dir` (created if needed; files that differ are
/// replaced); returns `dir` for `JUPYTER_CONFIG_PATH`.
///
/// # Errors
/// The directory or a file cannot be written.
pub fn write_server_config(dir: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    for (name, content) in SERVER_CONFIG_FILES {
        let path = dir.join(name);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(*content) {
            std::fs::write(&path, content)?;
        }
    }
    Ok(dir.to_path_buf())
}
