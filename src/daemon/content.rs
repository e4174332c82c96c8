//! The daemon's view of the content directory: every file with its last parse, updated
//! incrementally. Only files whose size, times or inode changed are read again; a file that
//! breaks keeps its last good item published until it is fixed or deleted (SPEC 2).

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::content::scan::{display_path, list_files, read_item};
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
    next_revision: u64,
}

impl ContentState {
    pub fn new(dir: PathBuf, site: SiteContext) -> ContentState {
        ContentState {
            dir,
            site,
            files: HashMap::new(),
            next_revision: 1,
        }
    }

    /// Settings changed (a reload): every file is parsed again at the next refresh.
    pub fn reset(&mut self, dir: PathBuf, site: SiteContext) {
        self.dir = dir;
        self.site = site;
        self.files.clear();
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Lists the directory, and parses the files that are new or changed since the last call.
    pub fn refresh(&mut self) -> std::io::Result<Changes> {
        let listed = list_files(&self.dir)?;
        let mut changes = Changes::default();
        let mut seen = std::collections::HashSet::with_capacity(listed.len());
        for (rel, full) in listed {
            let Ok(meta) = std::fs::metadata(&full) else {
                continue;
            };
            let stamp = Stamp::of(&meta);
            seen.insert(rel.clone());
            if self.files.get(&rel).is_some_and(|e| e.stamp == stamp) {
                continue;
            }
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
        let gone: Vec<String> = self
            .files
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for rel in gone {
            self.files.remove(&rel);
            changes.removed.push(rel);
        }
        changes.parsed.sort();
        changes.removed.sort();
        Ok(changes)
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
}
