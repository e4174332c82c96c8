//! Reading the content directory: the only file IO of the content module.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;

use super::cache::{CacheStream, Stamp};
use super::item::parse_item_in;
use super::{Corpus, Item, Problem, SiteContext, is_content_file, parse_item};

/// Every content file under `dir`, as (`/`-separated path relative to `dir`, full path), sorted.
/// A missing directory is an error; unreadable subdirectories are skipped.
/// Directories are listed in parallel; what is listed is what [`walk`] visits.
pub fn list_files(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut out = list_dir(std::fs::read_dir(dir)?, "");
    out.par_sort_unstable();
    Ok(out)
}

fn list_dir(entries: std::fs::ReadDir, prefix: &str) -> Vec<(String, PathBuf)> {
    let mut files = Vec::new();
    let mut subdirs = Vec::new();
    for entry in entries.flatten() {
        match classify(&entry, prefix) {
            Some(Listed::Dir(rel)) => subdirs.push((rel, entry.path())),
            Some(Listed::File(rel)) => files.push((rel, entry.path())),
            None => {}
        }
    }
    let nested: Vec<Vec<(String, PathBuf)>> = subdirs
        .into_par_iter()
        .filter_map(|(rel, path)| Some(list_dir(std::fs::read_dir(path).ok()?, &rel)))
        .collect();
    files.extend(nested.into_iter().flatten());
    files
}

/// What a directory entry is to a scan, with its path relative to the content directory.
enum Listed {
    Dir(String),
    File(String),
}

/// Directories and content files below `prefix`; `None` for what a scan skips (names
/// starting with `.` or `_`, other files, links to directories).
fn classify(entry: &std::fs::DirEntry, prefix: &str) -> Option<Listed> {
    let name = entry.file_name();
    let name = name.to_string_lossy();
    if name.starts_with('.') || name.starts_with('_') {
        return None;
    }
    let rel = if prefix.is_empty() {
        name.into_owned()
    } else {
        format!("{prefix}/{name}")
    };
    let ft = entry.file_type().ok()?;
    if ft.is_dir() {
        Some(Listed::Dir(rel))
    } else if is_content_file(&rel) && (ft.is_file() || (ft.is_symlink() && entry.path().is_file()))
    {
        Some(Listed::File(rel))
    } else {
        None
    }
}

/// Calls `f` with the relative path and directory entry of every content file under `dir`,
/// and `on_dir` with the relative path of every directory walked (`""` for `dir` itself).
/// Directories starting with `.` or `_` are skipped; symbolic links to files are followed,
/// links to directories are not (no loops).
pub fn walk(
    dir: &Path,
    f: &mut dyn FnMut(&str, &std::fs::DirEntry),
    on_dir: &mut dyn FnMut(&str),
) -> std::io::Result<()> {
    let mut stack = vec![(String::new(), std::fs::read_dir(dir)?)];
    on_dir("");
    while let Some((prefix, mut entries)) = stack.pop() {
        for entry in entries.by_ref().flatten() {
            match classify(&entry, &prefix) {
                Some(Listed::Dir(rel)) => {
                    if let Ok(sub) = std::fs::read_dir(entry.path()) {
                        on_dir(&rel);
                        stack.push((rel, sub));
                    }
                }
                Some(Listed::File(rel)) => f(&rel, &entry),
                None => {}
            }
        }
    }
    Ok(())
}

/// Reads and parses one file; problems name it by `rel`.
pub fn read_item(rel: &str, full: &Path, site: &SiteContext) -> Result<Item, Problem> {
    let bytes =
        std::fs::read(full).map_err(|e| Problem::error(rel, 1, format!("cannot read: {e}")))?;
    parse_item(rel, &bytes, site)
}

/// The directories of a scan, each opened once: a file is opened relative to its directory
/// (no walk over the whole path per file) and read into a buffer its thread reuses.
struct Directories(std::collections::HashMap<String, std::fs::File>);

/// At most this many directories are held open during a scan (a content tree with a
/// directory per day must not use up the process's file descriptors); files elsewhere are
/// opened by their full path.
const OPEN_DIRECTORIES: usize = 128;

impl Directories {
    /// Opens the directories of `files` (paths relative to `root`) that hold the most.
    fn open(root: &Path, files: &[String]) -> Directories {
        let mut counts: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for rel in files {
            let parent = rel.rsplit_once('/').map_or("", |(d, _)| d);
            *counts.entry(parent).or_insert(0) += 1;
        }
        // The directories with the most files; one with a single file gains nothing.
        let mut by_size: Vec<(&str, usize)> = counts.into_iter().filter(|(_, n)| *n > 1).collect();
        by_size.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let map = by_size
            .into_iter()
            .take(OPEN_DIRECTORIES)
            .filter_map(|(rel, _)| {
                Some((rel.to_string(), std::fs::File::open(root.join(rel)).ok()?))
            })
            .collect();
        Directories(map)
    }

    /// The stamp of the file at `rel` (full path `full`), following a symbolic link.
    fn stat(&self, rel: &str, full: &Path) -> std::io::Result<Stamp> {
        use std::os::fd::AsRawFd;
        let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        match (self.0.get(parent), std::ffi::CString::new(name)) {
            (Some(d), Ok(name)) => {
                let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
                // SAFETY: `name` is a valid C string, `d` an open directory, `st` room for
                // one `stat` that the call fills when it succeeds.
                let st = unsafe {
                    if libc::fstatat(d.as_raw_fd(), name.as_ptr(), st.as_mut_ptr(), 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    st.assume_init()
                };
                Ok(Stamp::of_stat(&st))
            }
            _ => Ok(Stamp::of(&std::fs::metadata(full)?)),
        }
    }

    /// Reads the file at `rel` (full path `full`) into `buf` and gives its length; with the
    /// `size` its stamp gave, it stops there (no last read to learn of the end: the stamp
    /// the scan records is the one of those bytes).
    fn read(
        &self,
        rel: &str,
        full: &Path,
        buf: &mut Vec<u8>,
        size: Option<u64>,
    ) -> std::io::Result<usize> {
        let file = self.open_file(rel, full)?;
        read_into(&file, buf, size)
    }

    /// Opens the file at `rel` (full path `full`) for reading.
    fn open_file(&self, rel: &str, full: &Path) -> std::io::Result<std::fs::File> {
        use std::os::fd::{AsRawFd, FromRawFd};
        let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        match (self.0.get(parent), std::ffi::CString::new(name)) {
            (Some(d), Ok(name)) => {
                // SAFETY: `name` is a valid C string and `d` an open directory; the new
                // descriptor is owned by the `File` alone.
                let fd = unsafe {
                    libc::openat(
                        d.as_raw_fd(),
                        name.as_ptr(),
                        libc::O_RDONLY | libc::O_CLOEXEC,
                    )
                };
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(unsafe { std::fs::File::from_raw_fd(fd) })
            }
            _ => std::fs::File::open(full),
        }
    }
}

/// Reads `file` into `buf` and gives its length; with the `size` its stamp gave, it stops
/// there (no last read to learn of the end: the stamp the scan records is the one of those
/// bytes).
fn read_into(file: &std::fs::File, buf: &mut Vec<u8>, size: Option<u64>) -> std::io::Result<usize> {
    use std::io::Read;
    {
        // Plain reads into the thread's buffer (zeroed once, grown when a file fills it):
        // `read_to_end` would ask for the file's size and position first, two system calls
        // per file for nothing.
        let mut filled = 0;
        loop {
            if size == Some(filled as u64) {
                return Ok(filled);
            }
            if filled == buf.len() {
                buf.resize((buf.len() * 2).max(64 << 10), 0);
            }
            match { file }.read(&mut buf[filled..]) {
                Ok(0) => return Ok(filled),
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// How problems name a file: the content directory joined with the relative path, shown
/// relative to the working directory when it lies below it.
pub fn display_path(dir: &Path, rel: &str) -> String {
    let full = dir.join(rel);
    let shown = std::env::current_dir()
        .ok()
        .and_then(|cwd| full.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or(full);
    shown.to_string_lossy().into_owned()
}

/// Told how a long scan goes, for a progress bar.
pub trait Progress: Sync {
    fn start(&self, _files: usize) {}
    fn file_done(&self) {}
}

/// No progress shown.
impl Progress for () {}

/// How many files a scan takes from the cache and reads at a time.
const SCAN_SLICE: usize = 4096;

/// Reads every content file under `dir` in parallel and forms the corpus.
pub fn scan(dir: &Path, site: &SiteContext, progress: &dyn Progress) -> std::io::Result<Corpus> {
    scan_cached(dir, site, progress, None).map(|(corpus, _)| corpus)
}

/// The scan cache being written on a thread of its own, while the caller goes on with the
/// corpus; dropping this waits for the write to end.
#[must_use]
#[derive(Default)]
pub struct PendingSave(Option<std::thread::JoinHandle<()>>);

impl Drop for PendingSave {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            let _ = h.join();
        }
    }
}

/// [`scan`], taking unchanged files from the scan cache at `cache` and writing it anew
/// when something changed (see [`super::cache`]), on a thread of its own that the
/// [`PendingSave`] waits for. A cache that cannot be written is left as it was: the scan's
/// result does not depend on it.
pub fn scan_cached(
    dir: &Path,
    site: &SiteContext,
    progress: &dyn Progress,
    cache: Option<&Path>,
) -> std::io::Result<(Corpus, PendingSave)> {
    let start_ns = crate::clock::unix_nanos();
    // Relative paths only: a full path per file would be held by the whole scan.
    let files: Vec<String> = list_files(dir)?.into_iter().map(|(rel, _)| rel).collect();
    progress.start(files.len());
    let dirs = Directories::open(dir, &files);
    let root: Arc<Path> = Arc::from(dir);
    // The cache is read a slice of files at a time, in step with the sorted list.
    let mut stream = cache
        .map(|p| CacheStream::open(p, site))
        .unwrap_or_default();
    let cached_files = stream.len();
    let misses = std::sync::atomic::AtomicUsize::new(0);
    type Scanned = (Option<Stamp>, Result<Arc<Item>, Problem>);
    let mut results: Vec<Scanned> = Vec::with_capacity(files.len());
    for slice in files.chunks(SCAN_SLICE) {
        let cached = stream.take(slice);
        results.par_extend(
            slice
                .par_iter()
                .enumerate()
                .map_init(Vec::new, |buf, (k, rel)| {
                    let full = &dir.join(rel);
                    let (mut stamp, mut hit, mut file) = (None, None, None);
                    if cache.is_some() {
                        if cached.has(k) {
                            stamp = dirs.stat(rel, full).ok();
                            hit = stamp.and_then(|s| cached.get(k, rel, &s));
                        } else if let Ok(f) = dirs.open_file(rel, full) {
                            // Not in the cache (a first build): opened, then stat'ed by its
                            // descriptor, one lookup of its name instead of two.
                            stamp = f.metadata().ok().map(|m| Stamp::of(&m));
                            file = Some(f);
                        }
                    }
                    let r = match hit {
                        Some(item) => Ok(item),
                        None => {
                            misses.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let size = stamp.map(|s| s.size);
                            match &file {
                                Some(f) => read_into(f, buf, size),
                                None => dirs.read(rel, full, buf, size),
                            }
                            .map_err(|e| Problem::error(rel, 1, format!("cannot read: {e}")))
                            .and_then(|len| parse_item_in(rel, &buf[..len], site, Some(&root)))
                        }
                    };
                    // A build keeps no bodies: it reads the few it renders again.
                    let r = r.map(|mut item| {
                        item.forget_body(&root);
                        Arc::new(item)
                    });
                    progress.file_done();
                    (stamp, r)
                }),
        );
    }
    drop(stream);
    let mut pending = PendingSave::default();
    if let Some(path) = cache {
        let misses = misses.into_inner();
        tracing::debug!(
            files = results.len(),
            cached = results.len() - misses,
            read = misses,
            "scan"
        );
        // Rewritten when a file was read, or the cache holds files that are gone.
        if misses > 0 || cached_files != results.len() {
            let keep: Vec<(Stamp, Arc<Item>)> = results
                .iter()
                .filter_map(|(stamp, r)| match (stamp, r) {
                    (Some(s), Ok(item)) if s.settled(start_ns) => Some((*s, item.clone())),
                    _ => None,
                })
                .collect();
            let (path, site) = (path.to_path_buf(), site.clone());
            let save = move || {
                let keep: Vec<(Stamp, &Item)> = keep.iter().map(|(s, i)| (*s, &**i)).collect();
                if let Err(e) = super::cache::save(&path, &site, &keep) {
                    tracing::debug!(cache = %path.display(), "cannot write the scan cache: {e}");
                }
            };
            pending = match std::thread::Builder::new()
                .name("scan-cache".into())
                .spawn(save)
            {
                Ok(h) => PendingSave(Some(h)),
                // No thread to be had: the cache stays as it was.
                Err(_) => PendingSave(None),
            };
        }
    }
    let results: Vec<Result<Arc<Item>, Problem>> = results.into_iter().map(|(_, r)| r).collect();
    let mut corpus = Corpus::assemble(results);
    for p in &mut corpus.problems {
        p.path = display_path(dir, &p.path);
    }
    Ok((corpus, pending))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_per_item_holds_no_descriptor_per_directory() {
        let dir = tempfile::tempdir().unwrap();
        // More directories than a process may commonly hold open (1,024), one item each,
        // and a few with several items.
        for d in 0..1100 {
            let sub = dir.path().join(format!("{d:04}"));
            std::fs::create_dir(&sub).unwrap();
            let items = if d < 3 { 3 } else { 1 };
            for k in 0..items {
                std::fs::write(
                    sub.join(format!("i{d}-{k}.md")),
                    format!("+++\ntitle = \"Ä {d} {k}\"\ndate = 2026-01-01\n+++\nText\n"),
                )
                .unwrap();
            }
        }
        let files = list_files(dir.path()).unwrap();
        assert_eq!(files.len(), 1097 + 9);
        let rels: Vec<String> = files.into_iter().map(|(rel, _)| rel).collect();
        let dirs = Directories::open(dir.path(), &rels);
        assert_eq!(
            dirs.0.len(),
            3,
            "only directories with several files are held open"
        );
        let corpus = scan(dir.path(), &SiteContext::for_tests(), &()).unwrap();
        assert_eq!(corpus.items.len(), 1106, "{:?}", corpus.problems.first());
    }

    #[test]
    fn a_scan_keeps_no_bodies_and_renders_them_from_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let files = [
            (
                "bom.md",
                "\u{feff}+++\r\ntitle = \"Ä\"\r\ndate = 2026-01-01\r\n+++\r\nDer „erste“ Absatz.\r\n\r\nZweiter.\r\n",
            ),
            (
                "yaml.md",
                "---\ntitle: Ö\ndate: 2026-01-02\n---\n\n## Überschrift\n\nText mit *Betonung*.\n",
            ),
            ("leer.md", "+++\ntitle = \"Ü\"\ndate = 2026-01-03\n+++\n"),
        ];
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let site = SiteContext {
            timezone: chrono_tz::Europe::Berlin,
            tag_authority: "www.fitko.de".into(),
            item_url: "https://www.fitko.de/{slug}".into(),
            default_author: "FITKO".into(),
        };
        let corpus = scan(dir.path(), &site, &()).unwrap();
        assert_eq!(corpus.items.len(), 3, "{:?}", corpus.problems);
        for item in &corpus.items {
            assert!(item.body.is_empty(), "{}", item.path);
            let eager = read_item(&item.path, &dir.path().join(&item.path), &site).unwrap();
            assert!(eager.source.is_none());
            assert_eq!(item.render(), eager.render(), "{}", item.path);
        }
        let bom = corpus.items.iter().find(|i| i.path == "bom.md").unwrap();
        assert!(bom.render().html.contains("Der „erste“ Absatz."));
    }
}
