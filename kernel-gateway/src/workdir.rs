//! Where a kernel runs: the site's own working area, never a path the client sends.
//!
//! jupyter_server in gateway mode sends `KERNEL_WORKING_DIR` (the Lab's current directory,
//! empty for a remote-kernels Lab). Enterprise Gateway honours it only with
//! `mirror_working_dirs`, for gateways that share the Lab's file system; so do we (when the
//! directory exists here). Otherwise a
//! kernel runs in `<kernel_working_root>/<user>` (created for local and Slurm kernels, owner
//! only), or, with no root configured, in the gateway's own working directory.

use std::path::PathBuf;

use crate::config::Config;
use crate::error::GatewayError;

/// The directory `user`'s kernel starts in, given what the client asked for (`requested`,
/// its `KERNEL_WORKING_DIR`). `None`: the launcher's default (the gateway's directory, or the
/// image's for a pod).
///
/// # Errors
/// [`GatewayError::BadRequest`] when `user` cannot name a directory (`.`, `..`, a slash).
pub(crate) fn kernel_working_dir(
    config: &Config,
    user: &str,
    requested: Option<&str>,
) -> Result<Option<PathBuf>, GatewayError> {
    // Mirroring: the client's directory when it exists here, else the user's area.
    if config.mirror_working_dirs
        && let Some(dir) = requested.map(PathBuf::from).filter(|d| d.is_dir())
    {
        return Ok(Some(dir));
    }
    let Some(root) = &config.kernel_working_root else {
        return Ok(None);
    };
    if user.is_empty()
        || user == "."
        || user == ".."
        || user.contains(['/', '\\'])
        || user.chars().any(char::is_control)
    {
        return Err(GatewayError::BadRequest(format!(
            "user name {user:?} cannot name a working directory under kernel_working_root"
        )));
    }
    Ok(Some(root.join(user)))
}

/// Make `dir` (a user's working area) if it is missing: owner-only, as are any parents made.
///
/// # Errors
/// The directory cannot be made.
pub(crate) fn ensure(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(root: Option<&str>, mirror: bool) -> Config {
        Config {
            kernel_working_root: root.map(PathBuf::from),
            mirror_working_dirs: mirror,
            ..Config::default()
        }
    }

    #[test]
    fn the_clients_directory_is_honoured_only_when_mirroring() {
        let tmp = std::env::temp_dir();
        let lab_dir = tmp.to_str().unwrap();
        let site = config(Some("/srv/site/work"), false);
        assert_eq!(
            kernel_working_dir(&site, "ada", Some(lab_dir)).unwrap(),
            Some(PathBuf::from("/srv/site/work/ada"))
        );
        assert_eq!(
            kernel_working_dir(&config(None, false), "ada", Some(lab_dir)).unwrap(),
            None
        );
        let mirror = config(Some("/srv/site/work"), true);
        assert_eq!(
            kernel_working_dir(&mirror, "ada", Some(lab_dir)).unwrap(),
            Some(tmp.clone())
        );
        // Mirroring needs a directory that exists here; else the user's area.
        assert_eq!(
            kernel_working_dir(&mirror, "ada", Some("/no/such/dir")).unwrap(),
            Some(PathBuf::from("/srv/site/work/ada"))
        );
        assert_eq!(
            kernel_working_dir(&config(None, true), "ada", Some("/no/such/dir")).unwrap(),
            None
        );
        assert_eq!(
            kernel_working_dir(&mirror, "ada", Some("")).unwrap(),
            Some(PathBuf::from("/srv/site/work/ada"))
        );
    }

    #[test]
    fn a_user_name_cannot_climb_out_of_the_root() {
        let site = config(Some("/srv/site/work"), false);
        for bad in ["..", ".", "", "a/../../etc", "a\\b", "x\n"] {
            let err = kernel_working_dir(&site, bad, None).unwrap_err();
            assert!(
                err.to_string().contains("cannot name a working directory"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn working_areas_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let root = std::env::temp_dir().join(format!("workdir-test-{}", std::process::id()));
        let dir = root.join("ada");
        ensure(&dir).unwrap();
        ensure(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
