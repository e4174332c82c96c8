//! A build: corpus in, feed files out. [`render_feeds`] decides every byte (pure but for the
//! body cache); [`write_feeds`] puts them on disk. `herold build` and the daemon share both.

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, FixedOffset};
use rayon::prelude::*;

use crate::config::Format;
use crate::content::{Corpus, Item, Problem};
use crate::feed::{self, FeedMeta};
use crate::output::{Written, write_if_changed};

/// Rendered bodies, kept between builds so that only new or edited items are rendered again.
#[derive(Default)]
pub struct HtmlCache {
    entries: HashMap<String, (u64, Arc<str>)>,
}

impl HtmlCache {
    fn fingerprint(item: &Item) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&item.link, &item.body).hash(&mut h);
        h.finish()
    }

    fn get(&self, item: &Item) -> Option<Arc<str>> {
        self.entries
            .get(&item.id)
            .filter(|(f, _)| *f == Self::fingerprint(item))
            .map(|(_, h)| h.clone())
    }

    /// Renders the bodies of `wanted` items that are not cached (in parallel) and forgets
    /// the bodies of items not wanted any more.
    fn fill(&mut self, items: &[Item], wanted: &BTreeSet<usize>) -> Vec<Arc<str>> {
        let missing: Vec<usize> = wanted
            .iter()
            .copied()
            .filter(|&i| self.get(&items[i]).is_none())
            .collect();
        let rendered: Vec<(usize, Arc<str>)> = missing
            .par_iter()
            .map(|&i| (i, Arc::from(items[i].render_html())))
            .collect();
        for (i, html) in rendered {
            self.entries
                .insert(items[i].id.clone(), (Self::fingerprint(&items[i]), html));
        }
        let keep: std::collections::HashSet<&str> =
            wanted.iter().map(|&i| items[i].id.as_str()).collect();
        self.entries.retain(|id, _| keep.contains(id.as_str()));
        // Indexed by corpus position; unwanted positions hold an empty body.
        let empty: Arc<str> = Arc::from("");
        (0..items.len())
            .map(|i| {
                if wanted.contains(&i) {
                    self.get(&items[i]).unwrap_or_else(|| empty.clone())
                } else {
                    empty.clone()
                }
            })
            .collect()
    }
}

/// The files of one build, each a path below `feeds.dir` with its bytes.
pub struct Rendered {
    pub files: Vec<(String, Vec<u8>)>,
    /// Warnings from planning (tags without a slug).
    pub warnings: Vec<Problem>,
    /// Items in some feed now.
    pub published: usize,
    /// Items whose date lies after `now`.
    pub scheduled: usize,
    /// When the next scheduled item is due.
    pub next_due: Option<DateTime<FixedOffset>>,
    pub feeds: usize,
}

/// Renders every feed of `corpus` as it stands at `now`.
pub fn render_feeds(
    corpus: &Corpus,
    now: DateTime<FixedOffset>,
    meta: &FeedMeta,
    cache: &mut HtmlCache,
) -> Rendered {
    let items = &corpus.items;
    let (specs, warnings) = feed::plan(items, now, meta);
    let wanted: BTreeSet<usize> = specs.iter().flat_map(|s| s.items.iter().copied()).collect();
    let bodies = cache.fill(items, &wanted);
    let jobs: Vec<(usize, Format)> = (0..specs.len())
        .flat_map(|s| meta.formats.iter().map(move |&f| (s, f)))
        .collect();
    let files = jobs
        .par_iter()
        .map(|&(s, f)| {
            let spec = &specs[s];
            (spec.file(f), feed::render(f, meta, spec, items, &bodies))
        })
        .collect();
    let scheduled = feed::published_from(items, now);
    Rendered {
        files,
        warnings,
        published: items.len() - scheduled,
        scheduled,
        // Items are newest first, so the last scheduled one is due first.
        next_due: scheduled.checked_sub(1).map(|i| items[i].date),
        feeds: specs.len(),
    }
}

/// What [`write_feeds`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriteStats {
    pub changed: Vec<String>,
    pub unchanged: usize,
    pub removed: Vec<String>,
}

/// Writes the files below `dir` (each atomically, only if its bytes change) and removes the
/// feed files herold wrote earlier that are no longer part of the build (a tag that went away).
pub fn write_feeds(dir: &Path, files: &[(String, Vec<u8>)]) -> std::io::Result<WriteStats> {
    let mut stats = WriteStats::default();
    let results: Vec<std::io::Result<(String, Written)>> = files
        .par_iter()
        .map(|(rel, bytes)| write_if_changed(&dir.join(rel), bytes).map(|w| (rel.clone(), w)))
        .collect();
    for r in results {
        match r? {
            (rel, Written::Changed) => stats.changed.push(rel),
            (_, Written::Unchanged) => stats.unchanged += 1,
        }
    }
    let expected: BTreeSet<&str> = files.iter().map(|(r, _)| r.as_str()).collect();
    for rel in existing_feed_files(dir) {
        if !expected.contains(rel.as_str()) {
            std::fs::remove_file(dir.join(&rel))?;
            if let Some((parent, _)) = rel.rsplit_once('/') {
                // Only succeeds when the directory is empty, which is what we want.
                let _ = std::fs::remove_dir(dir.join(parent));
            }
            stats.removed.push(rel);
        }
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
    out.sort();
    out
}
