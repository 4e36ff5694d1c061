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

#[cfg(test)]
mod tests {
    use super::*;

    /// The single-user image copies the whole of `hub/share/server/`; local servers get
    /// [`SERVER_CONFIG_FILES`]: the two must hold the same files, or local servers and the image
    /// run different configurations.
    #[test]
    fn every_file_of_share_server_is_written_for_local_servers() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("share/server");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".pyc"))
            .collect();
        on_disk.sort();
        let mut listed: Vec<String> = SERVER_CONFIG_FILES
            .iter()
            .map(|(n, _)| (*n).to_owned())
            .collect();
        listed.sort();
        assert_eq!(on_disk, listed);
        for (name, content) in SERVER_CONFIG_FILES {
            let file = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
            assert_eq!(&file, content, "{name}");
        }
    }
}
