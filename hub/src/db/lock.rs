//! SQLite serves one hub: the first `stackhub` on a database file takes an exclusive lock on
//! `FILE.lock` beside it and holds it for its lifetime (the kernel drops it when the process
//! ends, also on a crash); a second one is refused at start-up, saying why and what to do
//! (replicas need PostgreSQL). Several processes on one SQLite file would each keep caches and
//! a route table the others' writes never reach.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

use super::DbError;

/// Lock `db`'s lock file; the open file holds the lock.
pub(super) fn exclusive(db: &Path) -> Result<File, DbError> {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    let lock = Path::new(&name);
    let shown = lock.display().to_string();
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock)
        .map_err(|source| DbError::Lock {
            lock: shown.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(DbError::InUse {
            db: db.display().to_string(),
            lock: shown,
        }),
        Err(TryLockError::Error(source)) => Err(DbError::Lock {
            lock: shown,
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use stackhub_common::Secret;

    use crate::db::{Db, DbError, new_secret};

    #[tokio::test]
    async fn a_second_hub_on_one_sqlite_file_is_refused_until_the_first_is_gone() {
        let dir = std::env::temp_dir().join(format!("stackhub-lock-{}", new_secret()));
        let url = Secret::new(format!("sqlite://{}/hub.sqlite?mode=rwc", dir.display()));
        let first = Db::connect(&url).await.unwrap();
        let clone = first.clone();
        let err = Db::connect(&url).await.unwrap_err();
        assert!(matches!(err, DbError::InUse { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("hub.sqlite.lock"), "{msg}");
        assert!(msg.contains("PostgreSQL"), "{msg}");
        drop(first);
        assert!(
            Db::connect(&url).await.is_err(),
            "a clone still holds the lock"
        );
        clone.pool().close().await;
        drop(clone);
        let again = Db::connect(&url).await.unwrap();
        again.pool().close().await;
        std::fs::remove_dir_all(dir).unwrap();
    }
}
