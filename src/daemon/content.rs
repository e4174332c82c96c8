//! The daemon's view of the content directory: every file with its last parse, updated
//! incrementally. Only files whose size, times, inode or device changed are read again; a
//! file that breaks keeps its last good item published until it is fixed or deleted (SPEC 2).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::content::cache::Stamp;
use crate::content::scan::{display_path, read_item, walk};
use crate::content::{Corpus, Item, Problem, SiteContext};

struct FileEntry {
    stamp: Stamp,
    /// Which slice of the light poll checks this file (a hash of its path).
    slice: u64,
    /// The full path, for the light poll's `stat`.
    full: PathBuf,
    /// The item of the last good parse of this file.
    good: Option<Arc<Item>>,
    /// The problem of the latest parse, if it failed.
    problem: Option<Problem>,
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
    /// The published and scheduled items in corpus order (newest first, ties by id): the
    /// item of each id's first file, drafts left out. Kept up to date file by file, so a
    /// change costs what it changes, not a sort of every item.
    sorted: Vec<Arc<Item>>,
    /// Per id, the files whose good item has it; the first in path order keeps it.
    ids: HashMap<String, BTreeSet<String>>,
    /// What planning reads of each item of `sorted`, at the same positions.
    plan_index: crate::feed::PlanIndex,
    /// Ids that more than one file claims.
    duplicates: BTreeSet<String>,
    /// Drafts among the items that keep their id.
    drafts: usize,
    /// Files whose latest parse failed.
    problems: BTreeSet<String>,
    /// While many files are taken in at once (a start): `sorted` and `plan_index` are
    /// built once at the end instead of item by item.
    bulk: bool,
}

/// From how many changed files on they are parsed in parallel and sorted in at once.
const BULK: usize = 256;

/// Corpus order: newest first, ties broken by id.
fn corpus_order(a: &Item, b: &Item) -> std::cmp::Ordering {
    b.date.cmp(&a.date).then_with(|| a.id.cmp(&b.id))
}

impl ContentState {
    pub fn new(dir: PathBuf, site: SiteContext) -> ContentState {
        ContentState {
            dir,
            site,
            files: HashMap::new(),
            dirs: HashMap::new(),
            next_revision: 1,
            sorted: Vec::new(),
            plan_index: crate::feed::PlanIndex::default(),
            ids: HashMap::new(),
            duplicates: BTreeSet::new(),
            drafts: 0,
            problems: BTreeSet::new(),
            bulk: false,
        }
    }

    /// Settings changed (a reload): every file is parsed again at the next refresh.
    pub fn reset(&mut self, dir: PathBuf, site: SiteContext) {
        self.dir = dir;
        self.site = site;
        self.files.clear();
        self.dirs.clear();
        self.sorted.clear();
        self.plan_index = crate::feed::PlanIndex::default();
        self.ids.clear();
        self.duplicates.clear();
        self.drafts = 0;
        self.problems.clear();
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
        // A file that came or went changed its directory's times. List that directory (a
        // new file the watcher did not report is read too; a known file that went is found
        // by the light poll's slices) and note its new stamp, so the next light poll does not take the change
        // for one it must walk everything for. The stamp is read before the listing: a
        // change after it leaves the stamp stale, and the poll walks everything, as it must.
        let touched: BTreeSet<String> = changed
            .iter()
            .filter(|(rel, _, _)| !self.files.contains_key(rel))
            .map(|(rel, _, _)| rel.clone())
            .chain(gone.iter().cloned())
            .map(|rel| match rel.rfind('/') {
                Some(i) => rel[..i].to_string(),
                None => String::new(),
            })
            .collect();
        for dir in touched {
            if !self.dirs.contains_key(&dir) {
                continue;
            }
            let full_dir = self.dir.join(&dir);
            let Ok(meta) = std::fs::metadata(&full_dir) else {
                continue;
            };
            let Ok(entries) = std::fs::read_dir(&full_dir) else {
                continue;
            };
            let prefix = if dir.is_empty() {
                String::new()
            } else {
                format!("{dir}/")
            };
            for entry in entries.flatten() {
                let rel = format!("{prefix}{}", entry.file_name().to_string_lossy());
                let is_file = entry
                    .file_type()
                    .is_ok_and(|t| t.is_file() || t.is_symlink());
                if !is_file || !crate::content::is_content_file(&rel) {
                    continue;
                }
                if !self.files.contains_key(&rel)
                    && !changed.iter().any(|(c, _, _)| *c == rel)
                    && let Ok(m) = std::fs::metadata(entry.path())
                {
                    changed.push((rel.clone(), entry.path(), Stamp::of(&m)));
                }
            }
            if let Some(stamp) = self.dirs.get_mut(&dir) {
                *stamp = Stamp::of(&meta);
            }
        }
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
            if slices > 1 && e.slice % slices != slice % slices {
                continue;
            }
            match std::fs::metadata(&e.full) {
                Ok(meta) if Stamp::of(&meta) == e.stamp => {}
                Ok(meta) => changed.push((rel.clone(), e.full.clone(), Stamp::of(&meta))),
                Err(_) => gone.push(rel.clone()),
            }
        }
        Ok(self.apply(changed, gone))
    }

    /// Reads the changed files and records them, and forgets the files that are gone.
    fn apply(&mut self, changed: Vec<(String, PathBuf, Stamp)>, gone: Vec<String>) -> Changes {
        let mut changes = Changes::default();
        self.bulk = changed.len() + gone.len() >= BULK;
        let site = &self.site;
        let parse = |(rel, full, stamp): (String, PathBuf, Stamp)| {
            let result = read_item(&rel, &full, site);
            (rel, full, stamp, result)
        };
        let read: Vec<_> = if self.bulk {
            use rayon::prelude::*;
            changed.into_par_iter().map(parse).collect()
        } else {
            changed.into_iter().map(parse).collect()
        };
        for (rel, full, stamp, result) in read {
            let revision = self.next_revision;
            self.next_revision += 1;
            let previous = self.files.remove(&rel).and_then(|e| e.good);
            let slice = fnv(&rel);
            let full_path = full.clone();
            let entry = match result {
                Ok(mut item) => {
                    item.revision = revision;
                    FileEntry {
                        stamp,
                        slice,
                        full: full_path,
                        good: Some(Arc::new(item)),
                        problem: None,
                    }
                }
                Err(problem) => {
                    self.problems.insert(rel.clone());
                    FileEntry {
                        stamp,
                        slice,
                        full: full_path,
                        good: previous.clone(),
                        problem: Some(problem),
                    }
                }
            };
            if entry.problem.is_none() {
                self.problems.remove(&rel);
            }
            let now = entry.good.clone();
            self.files.insert(rel.clone(), entry);
            if let Some(old) = previous {
                self.unindex(&old);
            }
            if let Some(new) = now {
                self.index(&new);
            }
            changes.parsed.push(rel);
        }
        for rel in gone {
            self.problems.remove(&rel);
            if let Some(e) = self.files.remove(&rel) {
                if let Some(old) = e.good {
                    self.unindex(&old);
                }
                changes.removed.push(rel);
            }
        }
        if self.bulk {
            self.bulk = false;
            self.resort();
        }
        changes.parsed.sort();
        changes.parsed.dedup();
        changes.removed.sort();
        changes.removed.dedup();
        changes
    }

    /// The item of the file at `path`, if it parsed once.
    fn item_at(&self, path: &str) -> Option<Arc<Item>> {
        self.files.get(path).and_then(|e| e.good.clone())
    }

    /// Takes `item` (just recorded for its file) into the sorted items if its file is the
    /// first to claim its id, displacing the one that had it.
    fn index(&mut self, item: &Arc<Item>) {
        let paths = self.ids.entry(item.id.clone()).or_default();
        let before = paths.first().cloned();
        paths.insert(item.path.clone());
        if paths.len() > 1 {
            self.duplicates.insert(item.id.clone());
        }
        if paths.first() != Some(&item.path) {
            return;
        }
        if let Some(displaced) = before.and_then(|p| self.item_at(&p)) {
            self.remove_sorted(&displaced);
        }
        self.insert_sorted(item.clone());
    }

    /// Takes `item` (its file changed or went away) out; the next file claiming its id, if
    /// any, gets it.
    fn unindex(&mut self, item: &Arc<Item>) {
        let Some(paths) = self.ids.get_mut(&item.id) else {
            return;
        };
        let was_first = paths.first() == Some(&item.path);
        paths.remove(&item.path);
        let next = paths.first().cloned();
        if paths.len() < 2 {
            self.duplicates.remove(&item.id);
        }
        if paths.is_empty() {
            self.ids.remove(&item.id);
        }
        if was_first {
            self.remove_sorted(item);
            if let Some(next) = next.and_then(|p| self.item_at(&p)) {
                self.insert_sorted(next);
            }
        }
    }

    /// Builds `sorted` and `plan_index` from the files: each id's first file's item.
    fn resort(&mut self) {
        self.sorted.clear();
        self.drafts = 0;
        for paths in self.ids.values() {
            let Some(item) = paths.first().and_then(|p| self.item_at(p)) else {
                continue;
            };
            if item.draft {
                self.drafts += 1;
            } else {
                self.sorted.push(item);
            }
        }
        self.sorted.sort_unstable_by(|a, b| corpus_order(a, b));
        self.plan_index.rebuild(&self.sorted);
    }

    fn insert_sorted(&mut self, item: Arc<Item>) {
        if self.bulk {
            return;
        }
        if item.draft {
            self.drafts += 1;
            return;
        }
        let at = self
            .sorted
            .binary_search_by(|x| corpus_order(x, &item))
            .unwrap_or_else(|at| at);
        self.plan_index.insert(at, &item);
        self.sorted.insert(at, item);
    }

    fn remove_sorted(&mut self, item: &Item) {
        if self.bulk {
            return;
        }
        if item.draft {
            self.drafts = self.drafts.saturating_sub(1);
            return;
        }
        if let Ok(at) = self.sorted.binary_search_by(|x| corpus_order(x, item)) {
            self.sorted.remove(at);
            self.plan_index.remove(at);
        }
    }

    /// The items as they stand, in corpus order (newest first): the good items (the last
    /// good one for a broken file), each id's first file only, no drafts. Borrowed: a change
    /// costs no copy of every item.
    pub fn items(&self) -> &[Arc<Item>] {
        &self.sorted
    }

    /// What planning reads of [`Self::items`], at the same positions.
    pub fn plan_index(&self) -> &crate::feed::PlanIndex {
        &self.plan_index
    }

    /// The corpus as it stands, as an owned snapshot (for digest sends): [`Self::items`]
    /// and [`Self::problems`].
    pub fn corpus(&self) -> Corpus {
        Corpus {
            items: self.sorted.clone(),
            drafts: self.drafts,
            problems: self.problems(),
        }
    }

    /// The problems of the files, named by their display path.
    pub fn problems(&self) -> Vec<Problem> {
        let mut corpus = Corpus::default();
        for e in self.problems.iter().filter_map(|p| self.files.get(p)) {
            if let Some(p) = &e.problem {
                let mut p = p.clone();
                if e.good.is_some() {
                    p.message
                        .push_str(" (the last good version stays published)");
                }
                corpus.problems.push(p);
            }
        }
        for id in &self.duplicates {
            let Some(paths) = self.ids.get(id) else {
                continue;
            };
            let mut paths = paths.iter();
            let Some(first) = paths.next() else { continue };
            for path in paths {
                if let Some(item) = self.item_at(path) {
                    corpus.problems.push(Problem::error(
                        path,
                        item.id_line,
                        format!(
                            "duplicate id `{id}`: {first} has the same; set another `slug` or `id`"
                        ),
                    ));
                }
            }
        }
        for p in &mut corpus.problems {
            p.path = display_path(&self.dir, &p.path);
        }
        corpus
            .problems
            .sort_by(|a, b| a.path.cmp(&b.path).then(a.line.cmp(&b.line)));
        corpus.problems
    }

    /// The corpus assembled from every file at once, as `herold build` does: what the
    /// incremental [`ContentState::corpus`] must always equal.
    #[cfg(test)]
    fn corpus_by_assembly(&self) -> Corpus {
        let mut results: Vec<Result<Arc<Item>, Problem>> = Vec::new();
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
        SiteContext::for_tests()
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

    #[test]
    fn the_incremental_corpus_equals_a_full_assembly_after_any_changes() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = ContentState::new(dir.path().to_path_buf(), site());
        let mut next = crate::test_rng(0x9e37_79b9_7f4a_7c15_u64);
        for step in 0..400 {
            let name = format!("{}.md", next(12));
            let path = dir.path().join(&name);
            match next(6) {
                0 => {
                    let _ = std::fs::remove_file(&path);
                }
                1 => std::fs::write(&path, "+++\ntitle = \"kaputt\"\n").unwrap(),
                kind => {
                    // Few slugs and days, so ids collide; some drafts; equal dates.
                    let text = format!(
                        "+++\ntitle = \"T{step}\"\ndate = 2026-0{}-0{}\nslug = \"s{}\"\ndraft = {}\n+++\nText {step}\n",
                        1 + next(2),
                        1 + next(3),
                        next(5),
                        kind == 2,
                    );
                    std::fs::write(&path, text).unwrap();
                }
            }
            let changes = if step % 3 == 0 {
                state.refresh().unwrap()
            } else {
                state.refresh_paths(&[path]).unwrap()
            };
            let _ = changes;
            let (a, b) = (state.corpus(), state.corpus_by_assembly());
            let ids = |c: &Corpus| {
                c.items
                    .iter()
                    .map(|i| (i.id.clone(), i.path.clone()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(ids(&a), ids(&b), "step {step}");
            assert_eq!(a.drafts, b.drafts, "step {step}");
            let mut pa: Vec<String> = a.problems.iter().map(|p| p.to_string()).collect();
            let mut pb: Vec<String> = b.problems.iter().map(|p| p.to_string()).collect();
            pa.sort();
            pb.sort();
            assert_eq!(pa, pb, "step {step}");
        }
    }

    #[test]
    fn a_new_file_the_watcher_did_not_report_is_found_beside_one_it_did() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = ContentState::new(dir.path().to_path_buf(), site());
        std::fs::create_dir_all(dir.path().join("2026")).unwrap();
        let item =
            |t: &str| format!("+++\ntitle = \"{t}\"\ndate = 2026-01-01\nslug = \"{t}\"\n+++\nx\n");
        std::fs::write(dir.path().join("2026/a.md"), item("a")).unwrap();
        assert_eq!(state.refresh().unwrap().parsed, ["2026/a.md"]);
        std::fs::write(dir.path().join("2026/b.md"), item("b")).unwrap();
        std::fs::write(dir.path().join("2026/c.md"), item("c")).unwrap();
        let changes = state
            .refresh_paths(&[dir.path().join("2026/b.md")])
            .unwrap();
        assert_eq!(changes.parsed, ["2026/b.md", "2026/c.md"]);
        // The directory is reconciled: a light poll finds nothing more.
        assert!(state.refresh_light(0, 10).unwrap().is_empty());
        assert_eq!(state.items().len(), 3);
    }
}
