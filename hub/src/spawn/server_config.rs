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
    (
        "stackhub_examples.py",
        include_str!("../../share/server/stackhub_examples.py"),
    ),
    (
        "stackhub_dask.py",
        include_str!("../../share/server/stackhub_dask.py"),
    ),
];

macro_rules! example {
    ($path:literal) => {
        (
            $path,
            include_str!(concat!("../../share/server/examples/", $path)),
        )
    };
}

/// The example notebooks (`hub/share/server/examples/`, written to `examples/` beside the
/// configuration): path below `examples/` and content. `stackhub_examples.py` copies them into a
/// new home or S3 space on a server's first start.
pub const EXAMPLE_FILES: &[(&str, &str)] = &[
    example!("01-stac-search.ipynb"),
    example!("02-zarr-cube-from-s3.ipynb"),
    example!("03-dask-at-the-site.ipynb"),
    example!("04-save-results-to-s3.ipynb"),
    example!("README.md"),
    example!("stac-fixture/catalog.json"),
    example!("stac-fixture/sentinel-2-l2a-fixture/collection.json"),
    example!("stac-fixture/sentinel-2-l2a-fixture/items/S2B_MSIL2A_T31TDF_20240812.json"),
    example!("stac-fixture/sentinel-2-l2a-fixture/items/S2B_MSIL2A_T32TQM_20250614.json"),
    example!("stac-fixture/sentinel-2-l2a-fixture/items/S2B_MSIL2A_T32TQM_20250724.json"),
    example!("stac-fixture/sentinel-2-l2a-fixture/items/S2B_MSIL2A_T33TUG_20250709.json"),
    example!("stac-fixture/sentinel-2-l2a-fixture/items/S2B_MSIL2A_T35VLG_20250702.json"),
];

/// Where [`EXAMPLE_FILES`] go in the configuration directory.
const EXAMPLES_DIR: &str = "examples";

/// Write [`SERVER_CONFIG_FILES`] and [`EXAMPLE_FILES`] into `dir` (created if needed; files
/// that differ are replaced, files in `examples/` that are no longer examples are removed, so a
/// later release never offers a dropped example); returns `dir` for `JUPYTER_CONFIG_PATH`.
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
    let examples = dir.join(EXAMPLES_DIR);
    std::fs::create_dir_all(&examples)?;
    for (name, content) in EXAMPLE_FILES {
        let path = examples.join(name);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(*content) {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, content)?;
        }
    }
    remove_stale(&examples, &examples)?;
    Ok(dir.to_path_buf())
}

/// Remove what is below `dir` (inside `root`) and not in [`EXAMPLE_FILES`].
fn remove_stale(root: &Path, dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let rel = path
            .strip_prefix(root)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        if path.is_dir() {
            let prefix = format!("{rel}/");
            if EXAMPLE_FILES.iter().any(|(n, _)| n.starts_with(&prefix)) {
                remove_stale(root, &path)?;
            } else {
                std::fs::remove_dir_all(&path)?;
            }
        } else if !EXAMPLE_FILES.iter().any(|(n, _)| *n == rel) {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files_below(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files_below(root, &path, out);
            } else {
                out.push(
                    path.strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }

    /// Every file of `hub/share/server/examples/` is in [`EXAMPLE_FILES`] and nothing else.
    #[test]
    fn example_files_list_the_examples_directory() {
        let root = std::path::PathBuf::from(
            std::env::var_os("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("share/server/examples");
        let mut on_disk = Vec::new();
        files_below(&root, &root, &mut on_disk);
        on_disk.sort();
        let mut listed: Vec<String> = EXAMPLE_FILES.iter().map(|(n, _)| (*n).to_owned()).collect();
        listed.sort();
        assert_eq!(listed, on_disk);
    }

    /// The examples land in `examples/`; a dropped example (a file, a directory) and a stale
    /// copy are mended at the next write; the user's copies are not the hub's business.
    #[test]
    fn write_puts_the_examples_beside_the_config_and_drops_stale_ones() {
        let dir = std::env::temp_dir().join(format!(
            "stackhub-server-config-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        write_server_config(&dir).unwrap();
        for (name, content) in EXAMPLE_FILES {
            assert_eq!(
                std::fs::read_to_string(dir.join("examples").join(name)).unwrap(),
                *content,
                "{name}"
            );
        }
        std::fs::write(dir.join("examples/old.ipynb"), "{}").unwrap();
        std::fs::create_dir_all(dir.join("examples/old-data/x")).unwrap();
        std::fs::write(dir.join("examples/old-data/x/y.json"), "{}").unwrap();
        let (first, content) = EXAMPLE_FILES[0];
        std::fs::write(dir.join("examples").join(first), "changed").unwrap();
        write_server_config(&dir).unwrap();
        assert!(!dir.join("examples/old.ipynb").exists());
        assert!(!dir.join("examples/old-data").exists());
        assert_eq!(
            std::fs::read_to_string(dir.join("examples").join(first)).unwrap(),
            content
        );
        assert!(dir.join("stackhub_examples.py").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The single-user image copies the whole of `hub/share/server/`; local servers get
    /// [`SERVER_CONFIG_FILES`]: the two must hold the same files, or local servers and the image
    /// run different configurations.
    #[test]
    fn every_file_of_share_server_is_written_for_local_servers() {
        let dir = std::path::PathBuf::from(
            std::env::var_os("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("share/server");
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
