//! A build: corpus in, feed files out. [`prepare`] decides which files exist and renders the
//! bodies they show; [`write_feeds`] renders each file and writes it. `herold build` and the
//! daemon share both.
//!
//! Files are rendered by the thread that writes them, so a build of thousands of items holds
//! only the files in flight in memory, not every feed at once.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, FixedOffset};
use rayon::prelude::*;
use rustc_hash::{FxHashMap, FxHashSet};

use crate::config::Format;
use crate::content::{Item, Problem, Rendition};
use crate::feed::{self, FeedMeta, FeedSpec};
use crate::output::{Flush, Written, write_all_if_changed, write_batch_if_changed};

/// Rendered bodies, kept between builds so that only new or edited items are rendered again.
#[derive(Default)]
pub struct HtmlCache {
    entries: FxHashMap<String, (u64, Arc<Rendition>)>,
    /// The names of the archive documents of the last plan.
    archive_names: feed::archive::Names,
}

impl HtmlCache {
    /// What identifies an item's version: its revision where the daemon counts them (no
    /// hashing of every body on every change), else a hash of what its rendition shows.
    fn fingerprint(item: &Item) -> u64 {
        if item.revision != 0 {
            return item.revision;
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&item.link, &item.body, &item.summary).hash(&mut h);
        h.finish() | 1 << 63
    }

    fn get(&self, item: &Item) -> Option<Arc<Rendition>> {
        self.entries
            .get(&item.id)
            .filter(|(f, _)| *f == Self::fingerprint(item))
            .map(|(_, h)| h.clone())
    }

    /// Renders the bodies of `wanted` items (corpus positions) that are not cached (in
    /// parallel), forgets the bodies of items not wanted any more, and gives the rendition
    /// of each wanted item by corpus position. Costs what is wanted, not what the corpus
    /// holds.
    pub fn fill(&mut self, items: &[Arc<Item>], wanted: &[usize]) -> Bodies {
        let mut bodies = Bodies::with_capacity_and_hasher(wanted.len(), Default::default());
        let mut missing = Vec::new();
        for &i in wanted {
            match self.get(&items[i]) {
                Some(r) => {
                    bodies.insert(i, r);
                }
                None => missing.push(i),
            }
        }
        let rendered: Vec<(usize, Arc<Rendition>)> = missing
            .par_iter()
            .map(|&i| (i, Arc::new(items[i].render())))
            .collect();
        for (i, r) in rendered {
            self.entries.insert(
                items[i].id.clone(),
                (Self::fingerprint(&items[i]), r.clone()),
            );
            bodies.insert(i, r);
        }
        if self.entries.len() > bodies.len() {
            let keep: FxHashSet<&str> = bodies.keys().map(|&i| items[i].id.as_str()).collect();
            self.entries.retain(|id, _| keep.contains(id.as_str()));
        }
        bodies
    }
}

/// The renditions of the items a build shows, by corpus position.
pub type Bodies = FxHashMap<usize, Arc<Rendition>>;

/// Bodies rendered for archive documents, handed on to the item pages of the same build,
/// which show the same renditions: a build into empty directories renders each body once,
/// not twice. Bounded: past `cap` bytes nothing more is kept (the page renders its own).
pub struct SharedBodies {
    map: std::sync::Mutex<HashMap<usize, Rendition>>,
    bytes: std::sync::atomic::AtomicUsize,
    cap: usize,
}

impl SharedBodies {
    pub fn new(cap: usize) -> SharedBodies {
        SharedBodies {
            map: Default::default(),
            bytes: Default::default(),
            cap,
        }
    }

    fn offer(&self, idx: usize, r: &Rendition) {
        use std::sync::atomic::Ordering::Relaxed;
        let size = r.html.len() + r.summary.len();
        if self.bytes.fetch_add(size, Relaxed) + size > self.cap {
            self.bytes.fetch_sub(size, Relaxed);
            return;
        }
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(idx, r.clone());
    }

    /// The rendition of the item at corpus position `idx`, if one was kept (it is given
    /// out once).
    pub fn take(&self, idx: usize) -> Option<Rendition> {
        let r = self
            .map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&idx)?;
        self.bytes.fetch_sub(
            r.html.len() + r.summary.len(),
            std::sync::atomic::Ordering::Relaxed,
        );
        Some(r)
    }
}

/// The renditions of an archive document's items, in its order.
type ArchiveBodies = Arc<Vec<Arc<Rendition>>>;

/// One file of a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Job {
    /// A feed (index into the specs) in one format.
    Feed(usize, Format),
    /// An archive document of the site feed (index into the archives) in one format.
    Archive(usize, Format),
}

/// A decided build: the feeds, their formats, and the rendered bodies they show.
pub struct Build<'a> {
    items: &'a [Arc<Item>],
    meta: &'a FeedMeta,
    specs: Vec<FeedSpec>,
    /// The site feed's archive documents, oldest first.
    archives: Vec<feed::archive::ArchiveDoc>,
    /// Where archive bodies go for the item pages, when the caller writes those next.
    shared: Option<&'a SharedBodies>,
    bodies: Bodies,
    /// One per file.
    jobs: Vec<Job>,
    /// The path of each file below `feeds.dir`.
    paths: Vec<String>,
    /// Warnings from planning (tags without a slug).
    pub warnings: Vec<Problem>,
    /// Bodies of archive documents being written: both formats of a document share one
    /// rendering, which is dropped when the second has taken it.
    #[allow(clippy::type_complexity)]
    archive_bodies:
        std::sync::Mutex<HashMap<usize, (usize, Arc<std::sync::OnceLock<ArchiveBodies>>)>>,
    /// Items in some feed now.
    pub published: usize,
    /// Items whose date lies after `now`.
    pub scheduled: usize,
    /// When the next scheduled item is due.
    pub next_due: Option<DateTime<FixedOffset>>,
}

/// Decides every feed of `items` (a corpus's, newest first) as it stands at `now` and
/// renders the bodies they show.
pub fn prepare<'a>(
    items: &'a [Arc<Item>],
    now: DateTime<FixedOffset>,
    meta: &'a FeedMeta,
    cache: &mut HtmlCache,
) -> Build<'a> {
    prepare_indexed(items, None, now, meta, cache)
}

/// [`prepare`], planning from `index` when given (the daemon keeps one beside its items).
pub fn prepare_indexed<'a>(
    items: &'a [Arc<Item>],
    index: Option<&feed::PlanIndex>,
    now: DateTime<FixedOffset>,
    meta: &'a FeedMeta,
    cache: &mut HtmlCache,
) -> Build<'a> {
    let (specs, warnings) = match index {
        Some(index) => feed::plan_indexed(items, index, now, meta),
        None => feed::plan(items, now, meta),
    };
    let scheduled = feed::published_from(items, now);
    let archives = match meta.archive_size {
        Some(size) => match index {
            Some(index) => feed::archive::plan_with(
                items,
                scheduled,
                meta.limit,
                size,
                &format!("{meta:?}"),
                &|i| index.key(i),
                &mut cache.archive_names,
            ),
            None => feed::archive::plan(items, scheduled, meta.limit, size, &format!("{meta:?}")),
        },
        None => Vec::new(),
    };
    // The bodies the feeds show, and those of the newest archive document: the one that
    // changes as items leave the site feed (its items were in the feed before, so the
    // daemon has their bodies already).
    let mut wanted: Vec<usize> = specs
        .iter()
        .flat_map(|s| s.items.iter().copied())
        .chain(
            archives
                .last()
                .into_iter()
                .flat_map(|d| d.items.iter().copied()),
        )
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    let bodies = cache.fill(items, &wanted);
    let mut jobs: Vec<Job> = (0..specs.len())
        .flat_map(|s| meta.formats.iter().map(move |&f| Job::Feed(s, f)))
        .collect();
    for (a, doc) in archives.iter().enumerate() {
        for &f in &meta.formats {
            if doc.file(f).is_some() {
                jobs.push(Job::Archive(a, f));
            }
        }
    }
    let paths = jobs
        .iter()
        .map(|job| match *job {
            Job::Feed(s, f) => specs[s].file(f),
            Job::Archive(a, f) => archives[a].file(f).expect("a format with archives"),
        })
        .collect();
    Build {
        items,
        meta,
        paths,
        specs,
        archives,
        shared: None,
        archive_bodies: Default::default(),
        bodies,
        jobs,
        warnings,
        published: items.len() - scheduled,
        scheduled,
        // Items are newest first, so the last scheduled one is due first.
        next_due: scheduled.checked_sub(1).map(|i| items[i].date),
    }
}

impl<'a> Build<'a> {
    /// How many feeds (each in every configured format).
    pub fn feeds(&self) -> usize {
        self.specs.len()
    }

    /// The names of the tags that have a feed (published items only), by slug.
    pub fn tag_names(&self) -> Vec<String> {
        self.specs
            .iter()
            .filter_map(|s| match &s.kind {
                feed::FeedKind::Tag { name, .. } => Some(name.clone()),
                _ => None,
            })
            .collect()
    }

    /// How many files.
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// The path of file `i` below `feeds.dir`.
    pub fn path(&self, i: usize) -> &str {
        &self.paths[i]
    }

    /// Whether file `i` is named by its contents (an archive document): when it exists, it
    /// holds these bytes.
    pub fn immutable(&self, i: usize) -> bool {
        matches!(self.jobs[i], Job::Archive(..))
    }

    /// The bytes of file `i`.
    pub fn render(&self, i: usize) -> Vec<u8> {
        match self.jobs[i] {
            Job::Feed(s, f) => {
                let spec = &self.specs[s];
                let history = feed::History {
                    prev_archive: match (&spec.kind, self.archives.last()) {
                        (feed::FeedKind::Site, Some(newest)) => newest
                            .file(f)
                            .map(|file| format!("{}/{file}", self.meta.base_url)),
                        _ => None,
                    },
                    current: None,
                };
                feed::render(
                    f,
                    self.meta,
                    spec,
                    self.items,
                    &|i| &self.bodies[&i],
                    &history,
                )
            }
            Job::Archive(a, f) => {
                let doc = &self.archives[a];
                let bodies = self.archive_bodies(a);
                let prev = a.checked_sub(1).map(|p| &self.archives[p]);
                feed::render_archive(f, self.meta, doc, prev, self.items, &bodies)
            }
        }
    }

    /// The renditions of archive document `a`'s items: rendered by the first of its formats
    /// to ask, handed to the others, then forgotten (archives hold every old item, and a
    /// build does not keep their bodies).
    fn archive_bodies(&self, a: usize) -> ArchiveBodies {
        let formats = self
            .meta
            .formats
            .iter()
            .filter(|&&f| self.archives[a].file(f).is_some())
            .count();
        // The first to ask renders; one asking meanwhile waits for that rendering.
        let slot = {
            let mut map = self
                .archive_bodies
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let (taken, slot) = map.entry(a).or_default();
            *taken += 1;
            let slot = slot.clone();
            if *taken >= formats {
                map.remove(&a);
            }
            slot
        };
        slot.get_or_init(|| {
            Arc::new(
                self.archives[a]
                    .items
                    .iter()
                    .map(|&i| {
                        let r = match self.bodies.get(&i) {
                            Some(r) => r.clone(),
                            None => Arc::new(self.items[i].render()),
                        };
                        if let Some(shared) = self.shared {
                            shared.offer(i, &r);
                        }
                        r
                    })
                    .collect(),
            )
        })
        .clone()
    }

    /// Hands the bodies rendered for archive documents on to `shared`.
    pub fn share_bodies(&mut self, shared: &'a SharedBodies) {
        self.shared = Some(shared);
    }

    /// A fingerprint of everything file `i` shows: its feed, format and, for each of its
    /// items, the id and revision (which changes whenever the item's file is parsed again).
    /// Equal fingerprints in two builds with the same settings mean equal bytes.
    pub fn fingerprint(&self, i: usize) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let (s, f) = match self.jobs[i] {
            Job::Feed(s, f) => (s, f),
            Job::Archive(..) => {
                self.path(i).hash(&mut h);
                return h.finish();
            }
        };
        let spec = &self.specs[s];
        (f, &spec.kind).hash(&mut h);
        if spec.kind == feed::FeedKind::Site {
            self.archives.last().map(|d| d.hash).hash(&mut h);
        }
        for &idx in &spec.items {
            let item = &self.items[idx];
            (&item.id, item.revision).hash(&mut h);
        }
        h.finish()
    }

    /// Every file with its bytes, in memory at once (for tests and small sites).
    pub fn files(&self) -> Vec<(String, Vec<u8>)> {
        (0..self.len())
            .map(|i| (self.path(i).to_string(), self.render(i)))
            .collect()
    }
}

/// What [`write_feeds`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriteStats {
    pub changed: Vec<String>,
    pub unchanged: usize,
    pub removed: Vec<String>,
}

/// Renders and writes every file of `build` below `dir` (each atomically, only if its bytes
/// change) and removes the feed files herold wrote earlier that are no longer part of the
/// build (a tag that went away).
///
/// Written as a batch: no file is synced on its own; the caller flushes them all at once
/// with [`crate::output::sync_fs`] (a build writes hundreds of feed and archive files; a
/// crash before that leaves files that the next build or daemon start finds different and
/// writes again).
pub fn write_feeds(dir: &Path, build: &Build) -> std::io::Result<WriteStats> {
    write_feeds_with(dir, build, &|_| true, None, true)
}

/// [`write_feeds`] for the files `select(i)` picks; the others are known to be on disk as
/// they would be rendered now, and are left alone. Stale files are still removed: of
/// `before`, the files written earlier, when the caller knows them; else every feed file
/// in `dir` is looked at.
pub fn write_feeds_where(
    dir: &Path,
    build: &Build,
    select: &(dyn Fn(usize) -> bool + Sync),
    before: Option<&mut dyn Iterator<Item = &str>>,
) -> std::io::Result<WriteStats> {
    write_feeds_with(dir, build, select, before, false)
}

/// [`write_feeds_where`], each file synced on its own, or (`batch`) all with one `syncfs`.
fn write_feeds_with(
    dir: &Path,
    build: &Build,
    select: &(dyn Fn(usize) -> bool + Sync),
    before: Option<&mut dyn Iterator<Item = &str>>,
    batch: bool,
) -> std::io::Result<WriteStats> {
    let mut stats = WriteStats::default();
    let picked: Vec<usize> = (0..build.len())
        .filter(|&i| select(i) && !(build.immutable(i) && dir.join(build.path(i)).is_file()))
        .collect();
    stats.unchanged = build.len() - picked.len();
    let produce = |k: usize| {
        let i = picked[k];
        (dir.join(build.path(i)), build.render(i))
    };
    let written = if batch {
        std::fs::create_dir_all(dir)?;
        write_batch_if_changed(dir, Flush::ByCaller, picked.len(), produce)?
    } else {
        write_all_if_changed(picked.len(), produce)?
    };
    for (&i, w) in picked.iter().zip(written) {
        match w {
            Written::Changed => stats.changed.push(build.path(i).to_string()),
            Written::Unchanged => stats.unchanged += 1,
        }
    }
    let expected: FxHashSet<&str> = build.paths.iter().map(String::as_str).collect();
    let stale: Vec<String> = match before {
        Some(before) => before
            .filter(|rel| !expected.contains(rel))
            .map(str::to_string)
            .collect(),
        None => existing_feed_files(dir)
            .into_iter()
            .filter(|rel| !expected.contains(rel.as_str()))
            .collect(),
    };
    for rel in stale {
        match std::fs::remove_file(dir.join(&rel)) {
            Ok(()) => {}
            // Removed by someone else meanwhile: what was wanted.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
        if let Some((parent, _)) = rel.rsplit_once('/') {
            // Only succeeds when the directory is empty, which is what we want.
            let _ = std::fs::remove_dir(dir.join(parent));
        }
        stats.removed.push(rel);
    }
    stats.changed.sort();
    Ok(stats)
}

/// Feed files that herold may have written under `dir`: the three names at the top and in
/// every `tags/*` and `categories/*` directory. Nothing else there is ever touched.
fn existing_feed_files(dir: &Path) -> Vec<String> {
    let names = Format::ALL.map(Format::file_name);
    let mut out: Vec<String> = names
        .iter()
        .filter(|n| dir.join(n).is_file())
        .map(|n| n.to_string())
        .collect();
    for group in ["tags", "categories"] {
        let Ok(entries) = std::fs::read_dir(dir.join(group)) else {
            continue;
        };
        for e in entries.flatten() {
            let sub = e.file_name().to_string_lossy().into_owned();
            for n in names {
                if e.path().join(n).is_file() {
                    out.push(format!("{group}/{sub}/{n}"));
                }
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(dir.join("archive")) {
        for e in entries.flatten() {
            let rel = format!("archive/{}", e.file_name().to_string_lossy());
            if feed::archive::is_archive_file(&rel) {
                out.push(rel);
            }
        }
    }
    out.sort();
    out
}
