//! One daemon per database: an exclusive lock on a file beside it. The kernel drops the lock
//! when the process ends, however it ends (also `kill -9`), so it can never be left behind.

use std::fs::File;
use std::path::{Path, PathBuf};

/// Holds the lock while alive.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
    pub path: PathBuf,
}

/// Takes the lock for sending digest `name` (one process sends a run at a time). On
/// PostgreSQL there is none: nodes share a run by claiming its deliveries.
pub fn acquire_digest(
    database: &crate::config::Database,
    name: &str,
) -> anyhow::Result<Option<InstanceLock>> {
    if database.url.is_some() {
        return Ok(None);
    }
    take(&database.path, &format!("digest-{name}.lock"), |path| {
        format!(
            "another herold process is sending the digest `{name}` right now ({} is locked)",
            path.display()
        )
    })
    .map(Some)
}

/// Takes the lock file `{database}.{suffix}`; `busy` says who holds it when it is taken.
fn take(
    database: &Path,
    suffix: &str,
    busy: impl FnOnce(&Path) -> String,
) -> anyhow::Result<InstanceLock> {
    let (file, path) = open(database, suffix)?;
    match file.try_lock() {
        Ok(()) => Ok(InstanceLock { _file: file, path }),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!("{}", busy(&path)),
        Err(std::fs::TryLockError::Error(e)) => {
            anyhow::bail!("cannot lock {}: {e}", path.display())
        }
    }
}

fn open(database: &Path, suffix: &str) -> anyhow::Result<(File, PathBuf)> {
    let dir = database
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    let name = database
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "herold".into());
    let path = dir.join(format!("{name}.{suffix}"));
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("cannot open the lock file {}: {e}", path.display()))?;
    Ok((file, path))
}

/// Takes the daemon lock for the SQLite database at `database`, or says who holds it. On
/// PostgreSQL several daemons may run (SPEC 14): there is no lock.
pub fn acquire(database: &crate::config::Database) -> anyhow::Result<Option<InstanceLock>> {
    if database.url.is_some() {
        return Ok(None);
    }
    take(&database.path, "daemon.lock", |path| {
        format!(
            "another herold daemon is running on the database {} (it holds {}); refusing to start",
            database.path.display(),
            path.display()
        )
    })
    .map(Some)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::config::Database {
            path: dir.path().join("data/herold.sqlite3"),
            ..Default::default()
        };
        let first = super::acquire(&db).unwrap();
        let err = super::acquire(&db).unwrap_err().to_string();
        assert!(err.contains("another herold daemon is running"), "{err}");
        drop(first);
        super::acquire(&db).unwrap();
    }
}
