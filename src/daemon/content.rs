//! The daemon's view of the content directory: every file with its last parse, updated
//! incrementally. Only files whose size, times or inode changed are read again; a file that
//! breaks keeps its last good item published until it is fixed or deleted (SPEC 2).

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::content::scan::{display_path, read_item, walk};
use crate::content::{Corpus, Item, Problem, SiteContext};

/// What identifies a version of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    ino: u64,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Stamp {
            len: meta.len(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
            ino: meta.ino(),
        }
    }
}

struct FileEntry {
    stamp: Stamp,
    /// The item of the last good parse of this file.
    good: Option<Arc<Item>>,
    /// The problem of the latest parse, if it failed.
    problem: Option<Problem>,
    /// Changes whenever the file is parsed again; feeds use it to see what changed.
    revision: u64,
}

/// What a refresh found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Files read again (new or changed), relative paths.
    pub parsed: Vec<String>,
    /// Files that went away.
    pub removed: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.parsed.is_empty() && self.removed.is_empty()
    }
}

/// Every content file and its last parse.
pub struct ContentState {
    dir: PathBuf,
    site: SiteContext,
    files: HashMap<String, FileEntry>,
    /// Every directory walked (relative path) and its stamp: an entry added, removed or
    /// renamed changes its directory's mtime.
    dirs: HashMap<String, Stamp>,
    next_revision: u64,
}

impl ContentState {
    pub fn new(dir: PathBuf, site: SiteContext) -> ContentState {
        ContentState {
            dir,
            site,
            files: HashMap::new(),
            dirs: HashMap::new(),
            next_revision: 1,
        }
    }

    /// Settings changed (a reload): every file is parsed again at the next refresh.
    pub fn reset(&mut self, dir: PathBuf, site: SiteContext) {
        self.dir = dir;
        self.site = site;
        self.files.clear();
        self.dirs.clear();
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Lists the directory, and parses the files that are new or changed since the last call.
    /// Unchanged files cost one `stat` relative to their directory and no allocation but
    /// their relative path.
    pub fn refresh(&mut self) -> std::io::Result<Changes> {
        let mut changed: Vec<(String, PathBuf, Stamp)> = Vec::new();
        // Keys of the known files that are still there, borrowed from the map.
        let mut seen: std::collections::HashSet<&str> =
            std::collections::HashSet::with_capacity(self.files.len());
        let files = &self.files;
        let mut dirs = Vec::new();
        walk(
            &self.dir,
            &mut |rel, entry| {
                // `DirEntry::metadata` does not follow links; a linked file is stat'ed by path.
                let meta = match entry.metadata() {
                    Ok(m) if m.file_type().is_symlink() => std::fs::metadata(entry.path()),
                    other => other,
                };
                let Ok(meta) = meta else { return };
                let stamp = Stamp::of(&meta);
                match files.get_key_value(rel) {
                    Some((key, known)) => {
                        seen.insert(key.as_str());
                        if known.stamp != stamp {
                            changed.push((rel.to_string(), entry.path(), stamp));
                        }
                    }
                    None => changed.push((rel.to_string(), entry.path(), stamp)),
                }
            },
            &mut |rel| dirs.push(rel.to_string()),
        )?;
        let gone: Vec<String> = if seen.len() < files.len() {
            files
                .keys()
                .filter(|k| !seen.contains(k.as_str()))
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        self.dirs = dirs
            .into_iter()
            .filter_map(|rel| {
                Some((
                    rel.clone(),
                    Stamp::of(&std::fs::metadata(self.dir.join(&rel)).ok()?),
                ))
            })
            .collect();
        Ok(self.apply(changed, gone))
    }

    /// Looks at the paths a watcher reported: a content file is stat'ed and read again if
    /// it changed, or dropped if it is gone; anything else (a directory) means a full refresh.
    pub fn refresh_paths(&mut self, paths: &[PathBuf]) -> std::io::Result<Changes> {
        let mut changed = Vec::new();
        let mut gone = Vec::new();
        for p in paths {
            let Ok(rel) = p.strip_prefix(&self.dir) else {
                continue;
            };
            let rel = rel.to_string_lossy().replace('\\', "/");
            if !crate::content::is_content_file(&rel) {
                if crate::content::is_temp_file(&rel) {
                    continue;
                }
                return self.refresh();
            }
            match std::fs::metadata(p) {
                Ok(meta) if meta.is_file() => {
                    let stamp = Stamp::of(&meta);
                    if self.files.get(&rel).is_none_or(|e| e.stamp != stamp) {
                        changed.push((rel, p.clone(), stamp));
                    }
                }
                Ok(_) => return self.refresh(),
                Err(_) => {
                    if self.files.contains_key(&rel) {
                        gone.push(rel);
                    }
                }
            }
        }
        changed.sort_by(|a, b| a.0.cmp(&b.0));
        changed.dedup_by(|a, b| a.0 == b.0);
        Ok(self.apply(changed, gone))
    }

    /// The idle poll beside a working watcher, a safety net for missed events: every
    /// directory is stat'ed (an added, removed or renamed entry means a full refresh), and of
    /// the files only those in `slice` of `slices`, so every file is checked once per
    /// `slices` polls at a tenth of the cost.
    pub fn refresh_light(&mut self, slice: u64, slices: u64) -> std::io::Result<Changes> {
        let dirs_unchanged = !self.dirs.is_empty()
            && self.dirs.iter().all(|(rel, stamp)| {
                std::fs::metadata(self.dir.join(rel)).is_ok_and(|m| Stamp::of(&m) == *stamp)
            });
        if !dirs_unchanged {
            return self.refresh();
        }
        let mut changed = Vec::new();
        let mut gone = Vec::new();
        for (rel, e) in &self.files {
            if slices > 1 && fnv(rel) % slices != slice % slices {
                continue;
            }
            let full = self.dir.join(rel);
            match std::fs::metadata(&full) {
                Ok(meta) if Stamp::of(&meta) == e.stamp => {}
                Ok(meta) => changed.push((rel.clone(), full, Stamp::of(&meta))),
                Err(_) => gone.push(rel.clone()),
            }
        }
        Ok(self.apply(changed, gone))
    }

    /// Reads the changed files and records them, and forgets the files that are gone.
    fn apply(&mut self, changed: Vec<(String, PathBuf, Stamp)>, gone: Vec<String>) -> Changes {
        let mut changes = Changes::default();
        for (rel, full, stamp) in changed {
            let result = read_item(&rel, &full, &self.site);
            let revision = self.next_revision;
            self.next_revision += 1;
            let previous = self.files.remove(&rel).and_then(|e| e.good);
            let entry = match result {
                Ok(item) => FileEntry {
                    stamp,
                    good: Some(Arc::new(item)),
                    problem: None,
                    revision,
                },
                Err(problem) => FileEntry {
                    stamp,
                    good: previous,
                    problem: Some(problem),
                    revision,
                },
            };
            self.files.insert(rel.clone(), entry);
            changes.parsed.push(rel);
        }
        for rel in gone {
            if self.files.remove(&rel).is_some() {
                changes.removed.push(rel);
            }
        }
        changes.parsed.sort();
        changes.parsed.dedup();
        changes.removed.sort();
        changes.removed.dedup();
        changes
    }

    /// The corpus as it stands: the good items (the last good one for a broken file) and the
    /// problems, named by their display path.
    pub fn corpus(&self) -> Corpus {
        let mut results: Vec<Result<Arc<Item>, Problem>> = Vec::with_capacity(self.files.len());
        let mut kept = Vec::new();
        for e in self.files.values() {
            match (&e.good, &e.problem) {
                (Some(item), None) => results.push(Ok(item.clone())),
                (Some(item), Some(p)) => {
                    results.push(Ok(item.clone()));
                    let mut p = p.clone();
                    p.message
                        .push_str(" (the last good version stays published)");
                    kept.push(p);
                }
                (None, Some(p)) => results.push(Err(p.clone())),
                (None, None) => {}
            }
        }
        let mut corpus = Corpus::assemble(results);
        corpus.problems.extend(kept);
        for p in &mut corpus.problems {
            p.path = display_path(&self.dir, &p.path);
        }
        corpus
            .problems
            .sort_by(|a, b| a.path.cmp(&b.path).then(a.line.cmp(&b.line)));
        corpus
    }

    /// The revision of the file an item came from.
    pub fn revision(&self, item: &Item) -> u64 {
        self.files.get(&item.path).map_or(0, |e| e.revision)
    }
}

/// A small, stable string hash (FNV-1a) to spread files over poll slices.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> SiteContext {
        SiteContext {
            timezone: chrono_tz::Europe::Berlin,
            tag_authority: "www.fitko.de".into(),
            item_url: "https://www.fitko.de/{slug}".into(),
            default_author: "FITKO".into(),
        }
    }

    #[test]
    fn only_changed_files_are_read_and_broken_ones_keep_their_last_version() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("a.md", "+++\ntitle = \"A\"\ndate = 2026-01-01\n+++\n");
        write("b.md", "+++\ntitle = \"B\"\ndate = 2026-01-02\n+++\n");
        let mut state = ContentState::new(dir.path().to_path_buf(), site());
        assert_eq!(state.refresh().unwrap().parsed, ["a.md", "b.md"]);
        assert!(state.refresh().unwrap().is_empty());

        write("a.md", "+++\ntitle = \"A kaputt\"\n");
        assert_eq!(state.refresh().unwrap().parsed, ["a.md"]);
        let corpus = state.corpus();
        assert_eq!(
            corpus
                .items
                .iter()
                .map(|i| i.title.as_str())
                .collect::<Vec<_>>(),
            ["B", "A"]
        );
        assert_eq!(corpus.problems.len(), 1);
        assert!(
            corpus.problems[0]
                .message
                .contains("last good version stays published")
        );

        std::fs::remove_file(dir.path().join("a.md")).unwrap();
        assert_eq!(state.refresh().unwrap().removed, ["a.md"]);
        assert_eq!(state.corpus().items.len(), 1);
        assert!(state.corpus().problems.is_empty());
    }

    #[test]
    fn watcher_paths_and_light_polls_find_changes() {
        let dir = tempfile::tempdir().unwrap();
        let item = |title: &str| format!("+++\ntitle = \"{title}\"\ndate = 2026-01-01\n+++\n");
        std::fs::create_dir_all(dir.path().join("2026")).unwrap();
        for n in 0..20 {
            std::fs::write(
                dir.path().join(format!("2026/n{n}.md")),
                item(&format!("N{n}")),
            )
            .unwrap();
        }
        let mut state = ContentState::new(dir.path().to_path_buf(), site());
        assert_eq!(state.refresh().unwrap().parsed.len(), 20);

        // The watcher names the file: only it is looked at.
        let p = dir.path().join("2026/n3.md");
        std::fs::write(&p, item("N3 neu")).unwrap();
        let temp = dir.path().join("2026/.n3.md.swp");
        assert_eq!(
            state.refresh_paths(&[p.clone(), temp]).unwrap().parsed,
            ["2026/n3.md"]
        );
        std::fs::remove_file(&p).unwrap();
        assert_eq!(state.refresh_paths(&[p]).unwrap().removed, ["2026/n3.md"]);

        // An in-place edit the watcher missed: found within one round of slices.
        std::fs::write(dir.path().join("2026/n7.md"), item("N7 anders, länger")).unwrap();
        let found: Vec<String> = (0..10)
            .flat_map(|k| state.refresh_light(k, 10).unwrap().parsed)
            .collect();
        assert_eq!(found, ["2026/n7.md"]);

        // A new file changes its directory: the light poll notices and walks.
        std::fs::write(dir.path().join("2026/neu.md"), item("Neu")).unwrap();
        assert_eq!(state.refresh_light(0, 10).unwrap().parsed, ["2026/neu.md"]);
        assert!(state.refresh_light(1, 10).unwrap().is_empty());
        assert_eq!(state.corpus().items.len(), 20);
    }
}
