//! What the local-process spawner leaves on disk about each server it launched: a small record
//! (`<work_root>/.servers/<user>.<server>.json`, names hex-encoded) with the process id, its
//! start time, port and URL, written as soon as the process runs. Another hub replica on the
//! same host (one that takes over a spawn whose replica died before saving the state) finds the
//! server through it, and the leader's orphan removal finds processes no server row names.
//! Beside each record, `<port>.port` (a second name of the record's file) marks its port as
//! taken, so that a start checks the port it is offered with one lookup instead of reading every
//! record.
//! Nothing secret is in a record.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ServerId;

/// One launched server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub user: String,
    pub server: String,
    pub pid: i32,
    pub port: u16,
    pub start_time: u64,
    pub url: String,
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The directory of the records under `work_root`.
pub(crate) fn dir(work_root: &Path) -> PathBuf {
    work_root.join(".servers")
}

fn path(work_root: &Path, server: &ServerId) -> PathBuf {
    // `.` never occurs in hex, so user and server cannot run into each other.
    dir(work_root).join(format!("{}.{}.json", hex(&server.user), hex(&server.name)))
}

fn port_path(work_root: &Path, port: u16) -> PathBuf {
    dir(work_root).join(format!("{port}.port"))
}

/// Whether a record names `port` (its marker is there).
pub(crate) fn port_taken(work_root: &Path, port: u16) -> bool {
    std::fs::symlink_metadata(port_path(work_root, port)).is_ok()
}

/// Mark the port of `record` (stored) taken, if it is not already.
pub(crate) fn mark_port(work_root: &Path, record: &Record) -> std::io::Result<()> {
    let id = ServerId {
        user: record.user.clone(),
        name: record.server.clone(),
    };
    link_port(&path(work_root, &id), work_root, record.port)
}

/// Name `file` (a record) `<port>.port` too: no inode of its own to create.
fn link_port(file: &Path, work_root: &Path, port: u16) -> std::io::Result<()> {
    match std::fs::hard_link(file, port_path(work_root, port)) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

/// Write `record` (replacing the server's previous one and its port's marker), atomically.
pub(crate) fn write(work_root: &Path, record: &Record) -> std::io::Result<()> {
    let id = ServerId {
        user: record.user.clone(),
        name: record.server.clone(),
    };
    let path = path(work_root, &id);
    std::fs::create_dir_all(dir(work_root))?;
    if let Some(old) = read(work_root, &id)
        && old.port != record.port
    {
        let _ = std::fs::remove_file(port_path(work_root, old.port));
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(
        &tmp,
        serde_json::to_vec(record).map_err(std::io::Error::other)?,
    )?;
    link_port(&tmp, work_root, record.port)?;
    std::fs::rename(tmp, path)
}

/// The record of `server`, if any (an unreadable one counts as none).
pub(crate) fn read(work_root: &Path, server: &ServerId) -> Option<Record> {
    let bytes = std::fs::read(path(work_root, server)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Remove the record of `server` if it is still the one of process `pid` (a newer start's
/// record stays).
pub(crate) fn remove_if(work_root: &Path, server: &ServerId, pid: i32) {
    if let Some(r) = read(work_root, server).filter(|r| r.pid == pid) {
        let _ = std::fs::remove_file(path(work_root, server));
        let _ = std::fs::remove_file(port_path(work_root, r.port));
    }
}

/// Take the records' lock (exclusive between the processes of this host; blocks), held while a
/// start chooses its port and until its record is written. Released when dropped.
pub(crate) fn lock(work_root: &Path) -> std::io::Result<nix::fcntl::Flock<std::fs::File>> {
    std::fs::create_dir_all(dir(work_root))?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir(work_root).join(".lock"))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| std::io::Error::from(e))
}

/// Every readable record.
pub(crate) fn all(work_root: &Path) -> Vec<Record> {
    let Ok(entries) = std::fs::read_dir(dir(work_root)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(user: &str, server: &str, pid: i32) -> Record {
        Record {
            user: user.into(),
            server: server.into(),
            pid,
            port: 1,
            start_time: 2,
            url: "http://127.0.0.1:1".into(),
        }
    }

    #[test]
    fn the_lock_keeps_a_second_start_out_until_released() {
        let root = std::env::temp_dir().join(format!("records-lock-{}", std::process::id()));
        let held = lock(&root).unwrap();
        let other = std::fs::OpenOptions::new()
            .write(true)
            .open(dir(&root).join(".lock"))
            .unwrap();
        let other = nix::fcntl::Flock::lock(other, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map(|_| ())
            .map_err(|(_, e)| e);
        assert_eq!(other, Err(nix::errno::Errno::EWOULDBLOCK), "held");
        drop(held);
        let again = lock(&root).unwrap();
        drop(again);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn records_of_look_alike_names_stay_apart() {
        let root = std::env::temp_dir().join(format!("records-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        // "a-b" + "" and "a" + "-b" would collide in a naive "user-server" file name.
        write(&root, &rec("a-b", "", 1)).unwrap();
        write(&root, &rec("a", "-b", 2)).unwrap();
        write(&root, &rec("a", "b.c", 3)).unwrap();
        let id = |u: &str, s: &str| ServerId {
            user: u.into(),
            name: s.into(),
        };
        assert_eq!(read(&root, &id("a-b", "")).unwrap().pid, 1);
        assert_eq!(read(&root, &id("a", "-b")).unwrap().pid, 2);
        assert_eq!(all(&root).len(), 3);
        remove_if(&root, &id("a", "-b"), 99);
        assert!(
            read(&root, &id("a", "-b")).is_some(),
            "another pid's record stays"
        );
        remove_if(&root, &id("a", "-b"), 2);
        assert!(read(&root, &id("a", "-b")).is_none());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_record_marks_its_port_until_it_is_removed_or_replaced() {
        let root = std::env::temp_dir().join(format!("records-ports-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let id = ServerId {
            user: "a".into(),
            name: String::new(),
        };
        let mut r = rec("a", "", 7);
        r.port = 40001;
        assert!(!port_taken(&root, 40001));
        write(&root, &r).unwrap();
        assert!(port_taken(&root, 40001));
        r.port = 40002;
        r.pid = 8;
        write(&root, &r).unwrap();
        assert!(
            !port_taken(&root, 40001),
            "the replaced record's port is free"
        );
        assert!(port_taken(&root, 40002));
        // A record of an earlier version, without a marker: orphan removal marks it.
        std::fs::remove_file(port_path(&root, 40002)).unwrap();
        assert!(!port_taken(&root, 40002));
        mark_port(&root, &r).unwrap();
        mark_port(&root, &r).unwrap();
        assert!(port_taken(&root, 40002));
        remove_if(&root, &id, 7);
        assert!(
            port_taken(&root, 40002),
            "another pid's record keeps its port"
        );
        remove_if(&root, &id, 8);
        assert!(!port_taken(&root, 40002));
        assert!(all(&root).is_empty(), "markers are not records");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
