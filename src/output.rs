//! Writing output files: atomically, and only when the bytes change.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// What [`write_if_changed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Changed,
    Unchanged,
}

/// Writes `bytes` to `path` unless the file already holds exactly these bytes (then neither
/// the file nor its mtime changes). Parent directories are created.
pub fn write_if_changed(path: &Path, bytes: &[u8]) -> std::io::Result<Written> {
    let written = replace_if_changed(path, bytes)?;
    if written == Written::Changed {
        sync_dir(parent(path));
    }
    Ok(written)
}

/// [`write_if_changed`] for `count` files that `produce(i)` makes (path and bytes). The
/// work (bound by fsync more than by the CPU) runs on several threads, each producing a file
/// just before writing it, so only the files in flight are in memory; each directory is
/// synced once at the end.
pub fn write_all_if_changed<F>(count: usize, produce: F) -> std::io::Result<Vec<Written>>
where
    F: Fn(usize) -> (PathBuf, Vec<u8>) + Sync,
{
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut results = Vec::with_capacity(count);
    for (path, result) in on_threads(16, count, produce, replace_if_changed) {
        let written = result?;
        if written == Written::Changed {
            dirs.push(parent(&path).to_path_buf());
        }
        results.push(written);
    }
    dirs.sort();
    dirs.dedup();
    for d in dirs {
        sync_dir(&d);
    }
    Ok(results)
}

/// [`write_all_if_changed`] for many small derived files (the pages): each is still
/// replaced atomically (temporary file and rename), but instead of syncing every file and
/// directory, one `syncfs` at the end makes them all durable together (with `sync`; else
/// the kernel flushes them in its time). Thousands of item pages cost one flush, not
/// thousands.
pub fn write_batch_if_changed<F>(
    root: &Path,
    flush: Flush,
    count: usize,
    produce: F,
) -> std::io::Result<Vec<Written>>
where
    F: Fn(usize) -> (PathBuf, Vec<u8>) + Sync,
{
    let sync = flush == Flush::Here;
    let writeback = flush != Flush::Kernel;
    // When three quarters are written, a flush starts beside the writers, so that the
    // last one finds little left to do.
    let written = AtomicUsize::new(0);
    let early = std::sync::Once::new();
    let results: Vec<Written> = std::thread::scope(|scope| {
        on_threads(batch_threads(), count, produce, |p, b| {
            let r = unchanged_or(p, b, |p, b| replace_with(p, b, false, writeback));
            if sync && written.fetch_add(1, Ordering::Relaxed) + 1 == count * 3 / 4 {
                early.call_once(|| {
                    scope.spawn(|| {
                        let _ = sync_fs(root);
                    });
                });
            }
            r
        })
    })
    .into_iter()
    .map(|(_, r)| r)
    .collect::<std::io::Result<_>>()?;
    if sync && results.contains(&Written::Changed) {
        sync_fs(root)?;
    }
    Ok(results)
}

/// Who makes a batch durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// The batch ends with a `syncfs`.
    Here,
    /// The caller flushes soon after (each file's writeback starts as it is written).
    ByCaller,
    /// The kernel, in its time (nothing is started early: the daemon's pages).
    Kernel,
}

/// Writer threads for batches: the work is mostly CPU (rendering), so two per core.
fn batch_threads() -> usize {
    std::thread::available_parallelism().map_or(4, |n| (2 * n.get()).clamp(2, 16))
}

/// Produces and writes `count` files on up to `threads` threads, each file produced just
/// before it is written; gives each file's path and outcome in order.
fn on_threads<F, W>(
    threads: usize,
    count: usize,
    produce: F,
    write: W,
) -> Vec<(PathBuf, std::io::Result<Written>)>
where
    F: Fn(usize) -> (PathBuf, Vec<u8>) + Sync,
    W: Fn(&Path, &[u8]) -> std::io::Result<Written> + Sync,
{
    let next = AtomicUsize::new(0);
    let worker = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= count {
                return done;
            }
            let (path, bytes) = produce(i);
            let result = write(&path, &bytes);
            done.push((i, path, result));
        }
    };
    let mut indexed: Vec<(usize, PathBuf, std::io::Result<Written>)> =
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads.min(count))
                .map(|_| scope.spawn(worker))
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("a writer thread panicked"))
                .collect()
        });
    indexed.sort_by_key(|(i, _, _)| *i);
    indexed.into_iter().map(|(_, p, r)| (p, r)).collect()
}

/// Flushes the file system that holds `dir` (`syncfs(2)`).
pub fn sync_fs(dir: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let d = std::fs::File::open(dir)?;
    // SAFETY: `d` is an open descriptor for the duration of the call.
    if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Writes a temporary file in the same directory, syncs it and renames it over `path`, so a
/// reader sees the old file or the new one, never a part; a failure leaves the old file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    replace(path, bytes)?;
    sync_dir(parent(path));
    Ok(())
}

fn replace_if_changed(path: &Path, bytes: &[u8]) -> std::io::Result<Written> {
    unchanged_or(path, bytes, replace)
}

/// `Unchanged` when `path` holds `bytes`, else what `write` does.
fn unchanged_or(
    path: &Path,
    bytes: &[u8],
    write: impl FnOnce(&Path, &[u8]) -> std::io::Result<()>,
) -> std::io::Result<Written> {
    if let Ok(meta) = std::fs::metadata(path)
        && meta.len() == bytes.len() as u64
        && std::fs::read(path).is_ok_and(|old| old == bytes)
    {
        return Ok(Written::Unchanged);
    }
    write(path, bytes)?;
    Ok(Written::Changed)
}

/// The temporary-file-and-rename step, without the directory sync.
fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    replace_with(path, bytes, true, false)
}

/// [`replace`], syncing the temporary file first when `sync` (else the caller syncs), and
/// starting its writeback without waiting when `writeback`.
fn replace_with(path: &Path, bytes: &[u8], sync: bool, writeback: bool) -> std::io::Result<()> {
    let dir = parent(path);
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        if sync {
            f.sync_all()?;
        } else if writeback {
            start_writeback(&f);
        }
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Asks the kernel to start writing `f` to disk now, without waiting: the `syncfs` that
/// ends a batch then finds the data on its way instead of starting it all at once.
fn start_writeback(f: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: `f` is an open descriptor for the duration of the call. Failure (a file
    // system without support) only means the final flush does the work.
    unsafe {
        libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

fn parent(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Makes renames in `dir` durable. Best effort: some file systems cannot sync a directory.
fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_bytes_keep_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b/rss.xml");
        assert_eq!(write_if_changed(&p, b"one").unwrap(), Written::Changed);
        let before = std::fs::metadata(&p).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(write_if_changed(&p, b"one").unwrap(), Written::Unchanged);
        assert_eq!(std::fs::metadata(&p).unwrap().modified().unwrap(), before);
        assert_eq!(write_if_changed(&p, b"two").unwrap(), Written::Changed);
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let leftovers: Vec<_> = std::fs::read_dir(p.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file stays behind");
    }

    #[test]
    fn failure_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rss.xml");
        write_atomic(&p, b"old").unwrap();
        // A directory in the way of the target makes the rename fail.
        let blocked = dir.path().join("blocked");
        std::fs::create_dir_all(blocked.join("x")).unwrap();
        assert!(write_atomic(&blocked, b"new").is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
