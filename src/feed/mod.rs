//! Feeds: which feeds exist with which items ([`plan`]), and their rendering as RSS 2.0,
//! Atom 1.0 and JSON Feed 1.1. Pure: rendering returns bytes, the shell writes them.

pub mod archive;
mod atom;
mod json;
mod rss;

use std::collections::HashMap;

use std::sync::Arc;

use chrono::{DateTime, FixedOffset};

use crate::config::{Config, Format};
use crate::content::{Item, Problem, Rendition};

/// What a feed collects.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FeedKind {
    Site,
    Tag { slug: String, name: String },
    Category { slug: String, name: String },
}

/// One feed (in every configured format): where it lives and which items it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedSpec {
    pub kind: FeedKind,
    /// Indexes into the corpus items, newest first, at most `feeds.limit`.
    pub items: Vec<usize>,
}

impl FeedSpec {
    /// The directory of this feed below `feeds.dir`: `""`, `tags/{slug}`, `categories/{slug}`.
    pub fn dir(&self) -> String {
        match &self.kind {
            FeedKind::Site => String::new(),
            FeedKind::Tag { slug, .. } => format!("tags/{slug}"),
            FeedKind::Category { slug, .. } => format!("categories/{slug}"),
        }
    }

    /// The path of one format's file below `feeds.dir`.
    pub fn file(&self, format: Format) -> String {
        match self.dir().as_str() {
            "" => format.file_name().to_string(),
            d => format!("{d}/{}", format.file_name()),
        }
    }
}

/// The site-wide settings every feed shows. Built once from the configuration.
#[derive(Debug, Clone)]
pub struct FeedMeta {
    pub title: String,
    pub description: String,
    /// The news page.
    pub link: String,
    pub language: String,
    pub author: String,
    /// Public URL of `feeds.dir`, no trailing slash.
    pub base_url: String,
    pub hubs: Vec<String>,
    pub limit: usize,
    pub per_tag: bool,
    pub per_category: bool,
    pub formats: Vec<Format>,
    /// The public URL of herold's pages (no trailing slash), when they are written: the
    /// HTML link of a tag or category feed is its page there.
    pub pages_url: Option<String>,
    /// Items per RFC 5005 archive document; `None` without archives.
    pub archive_size: Option<usize>,
}

impl FeedMeta {
    pub fn from_config(c: &Config) -> FeedMeta {
        let mut formats = c.feeds.formats.clone();
        formats.sort();
        formats.dedup();
        FeedMeta {
            title: crate::content::text::plain(&c.site.title),
            description: crate::content::text::plain(&c.site.description),
            link: c.site_link().to_string(),
            language: c.site.language.clone(),
            author: crate::content::text::plain(c.site_author()),
            base_url: c.feeds_base_url(),
            hubs: c.feeds.websub_hubs.iter().map(|u| u.to_string()).collect(),
            limit: c.feeds.limit,
            per_tag: c.feeds.per_tag,
            per_category: c.feeds.per_category,
            formats,
            pages_url: c.pages.enabled.then(|| c.pages_url()),
            archive_size: c.feeds.archive.then_some(c.feeds.archive_size),
        }
    }

    /// The HTML page of a feed: the news page for the site feed, the tag or category page
    /// for theirs (the news page without pages).
    pub fn page_of(&self, spec: &FeedSpec) -> String {
        match (&self.pages_url, &spec.kind) {
            (Some(base), FeedKind::Tag { .. } | FeedKind::Category { .. }) => {
                format!("{base}/{}/", spec.dir())
            }
            _ => self.link.clone(),
        }
    }

    /// The public URL of a feed file.
    pub fn url(&self, spec: &FeedSpec, format: Format) -> String {
        format!("{}/{}", self.base_url, spec.file(format))
    }

    fn title_of(&self, spec: &FeedSpec) -> String {
        match &spec.kind {
            FeedKind::Site => self.title.clone(),
            FeedKind::Tag { name, .. } | FeedKind::Category { name, .. } => {
                format!("{} – {name}", self.title)
            }
        }
    }
}

/// The items of a corpus that are published at `now`: not scheduled for later.
/// `items` is sorted newest first, so the scheduled ones lead.
pub fn published_from(items: &[Arc<Item>], now: DateTime<FixedOffset>) -> usize {
    items.partition_point(|i| i.date > now)
}

/// Decides the feeds: the site feed, and one per tag and per category (by slug; spellings
/// that give the same slug are one feed, named by the first spelling in sort order).
/// `items` must be sorted newest first. Tags whose slug is empty get no feed and a warning.
pub fn plan<'a>(
    items: &'a [Arc<Item>],
    now: DateTime<FixedOffset>,
    meta: &FeedMeta,
) -> (Vec<FeedSpec>, Vec<Problem>) {
    let start = published_from(items, now);
    let limit = meta.limit;
    let mut specs = vec![FeedSpec {
        kind: FeedKind::Site,
        items: (start..items.len()).take(limit).collect(),
    }];
    let mut warnings = Vec::new();
    // Keyed by slugs borrowed from the items (computed at parse time); sorted at the end.
    let mut tags: SlugMap<'a> = HashMap::default();
    let mut cats: SlugMap<'a> = HashMap::default();
    let add = |map: &mut SlugMap<'a>,
               name: &'a str,
               slug: &'a str,
               idx: usize,
               warnings: &mut Vec<Problem>| {
        if slug.is_empty() {
            warnings.push(Problem::warning(
                &items[idx].path,
                1,
                format!("`{name}` has no letters or digits, so it gets no feed"),
            ));
            return;
        }
        let entry = map.entry(slug).or_insert((name, Vec::new()));
        if name < entry.0 {
            entry.0 = name;
        }
        if entry.1.len() < limit {
            entry.1.push(idx);
        }
    };
    for (idx, item) in items.iter().enumerate().skip(start) {
        if meta.per_tag {
            for (t, slug) in item.tags.iter().zip(&item.tag_slugs) {
                add(&mut tags, t, slug, idx, &mut warnings);
            }
        }
        if meta.per_category
            && let (Some(c), Some(slug)) = (&item.category, &item.category_slug)
        {
            add(&mut cats, c, slug, idx, &mut warnings);
        }
    }
    fn sorted<'s>(map: SlugMap<'s>) -> Vec<(&'s str, (&'s str, Vec<usize>))> {
        let mut v: Vec<_> = map.into_iter().collect();
        v.sort_unstable_by_key(|(slug, _)| *slug);
        v
    }
    specs.extend(
        sorted(tags)
            .into_iter()
            .map(|(slug, (name, items))| FeedSpec {
                kind: FeedKind::Tag {
                    slug: slug.to_string(),
                    name: name.to_string(),
                },
                items,
            }),
    );
    specs.extend(
        sorted(cats)
            .into_iter()
            .map(|(slug, (name, items))| FeedSpec {
                kind: FeedKind::Category {
                    slug: slug.to_string(),
                    name: name.to_string(),
                },
                items,
            }),
    );
    (specs, warnings)
}

/// What planning reads of every item, laid out contiguously and with tags and categories as
/// small numbers: the daemon keeps it beside its sorted items, so a change plans without
/// visiting every item's strings (on a machine whose caches have gone cold between two
/// changes, those visits were most of a change's cost).
///
/// Rows are kept oldest first, so a new newest item (the usual change) is appended and
/// moves no row; each tag's and category's items are kept as lists beside them, so the
/// feeds of a change are read from those lists instead of from a pass over every row.
#[derive(Debug, Default, Clone)]
pub struct PlanIndex {
    /// One row per item, oldest first (the reverse of corpus order: corpus position `at`
    /// is row `len - 1 - at`).
    rows: Vec<Row>,
    /// Per row, its item's [`Item::page_key`] and [`month_code`], apart from the rows: the
    /// pages read them for every item on every change, as contiguous as can be.
    keys: Vec<u64>,
    months: Vec<i32>,
    /// Slug id → the rows of the items that have it, ascending, each row once.
    members: Vec<Vec<u32>>,
    /// Term id → its kind, slug id and spelling.
    terms: Vec<Term>,
    term_ids: HashMap<(bool, String), u32>,
    /// Term id → how many items have it.
    term_counts: Vec<u32>,
    /// Slug id → (kind, slug).
    slugs: Vec<(bool, String)>,
    slug_ids: HashMap<(bool, String), u32>,
    /// Slug id → its terms (the spellings of the slug).
    slug_terms: Vec<Vec<u32>>,
    /// Term id → the rank of its spelling among all terms (names are the least spelling).
    ranks: Vec<u32>,
    /// Page path hash → how many items have it, and how many hashes more than one has.
    pages: rustc_hash::FxHashMap<u64, u32>,
    shared_pages: usize,
}

#[derive(Debug, Clone)]
struct Row {
    /// The item's date in nanoseconds since the epoch.
    nanos: i64,
    /// Tags first, then the category: the first few inline (no pointer to follow), the
    /// rest, for an item with many tags, in `more`.
    inline: [u32; INLINE_TERMS],
    len: u8,
    more: Option<Box<[u32]>>,
    /// A hash of the item's page path, and of its id.
    page: u64,
    id: u64,
}

const INLINE_TERMS: usize = 5;

impl Row {
    fn terms(&self) -> impl Iterator<Item = u32> + '_ {
        self.inline[..usize::from(self.len).min(INLINE_TERMS)]
            .iter()
            .chain(self.more.iter().flat_map(|m| m.iter()))
            .copied()
    }
}

#[derive(Debug, Clone)]
struct Term {
    slug: u32,
    spelling: String,
}

impl PlanIndex {
    /// An index of `items` (in corpus order), built at once: what a start or a reload
    /// does instead of inserting the items one by one.
    pub fn rebuild(&mut self, items: &[Arc<Item>]) {
        self.rows.clear();
        self.rows.reserve(items.len());
        self.keys.clear();
        self.months.clear();
        for m in &mut self.members {
            m.clear();
        }
        self.term_counts.iter_mut().for_each(|c| *c = 0);
        self.pages.clear();
        self.shared_pages = 0;
        // Oldest first, each the newest so far: appended, nothing moves.
        for item in items.iter().rev() {
            self.insert(0, item);
        }
    }

    /// Records `item` at corpus position `at` (as `Vec::insert`).
    pub fn insert(&mut self, at: usize, item: &Item) {
        let row = self.row(item);
        let j = self.rows.len() - at.min(self.rows.len());
        if j < self.rows.len() {
            // Rows from `j` on move up by one (an older item: rare, and a pass over
            // numbers).
            for m in &mut self.members {
                let from = m.partition_point(|&r| (r as usize) < j);
                m[from..].iter_mut().for_each(|r| *r += 1);
            }
        }
        self.enter(&row, j as u32);
        self.rows.insert(j, row);
        self.keys.insert(j, item.page_key());
        self.months.insert(j, month_code(&item.date));
    }

    /// Forgets the item at corpus position `at` (as `Vec::remove`).
    pub fn remove(&mut self, at: usize) {
        let j = self.rows.len() - 1 - at;
        let row = self.rows.remove(j);
        self.keys.remove(j);
        self.months.remove(j);
        for t in row.terms() {
            self.term_counts[t as usize] -= 1;
            let m = &mut self.members[self.terms[t as usize].slug as usize];
            if let Ok(k) = m.binary_search(&(j as u32)) {
                m.remove(k);
            }
        }
        if j < self.rows.len() {
            for m in &mut self.members {
                let from = m.partition_point(|&r| (r as usize) <= j);
                m[from..].iter_mut().for_each(|r| *r -= 1);
            }
        }
        if let Some(n) = self.pages.get_mut(&row.page) {
            *n -= 1;
            if *n == 1 {
                self.shared_pages -= 1;
            }
            if *n == 0 {
                self.pages.remove(&row.page);
            }
        }
    }

    /// The row of `item`, its terms recorded.
    fn row(&mut self, item: &Item) -> Row {
        let mut terms: Vec<u32> = item
            .tags
            .iter()
            .zip(&item.tag_slugs)
            .map(|(t, s)| self.term(false, t, s))
            .collect();
        if let (Some(c), Some(s)) = (&item.category, &item.category_slug) {
            terms.push(self.term(true, c, s));
        }
        let nanos = item.date.timestamp_nanos_opt().unwrap_or(i64::MAX);
        let mut inline = [0; INLINE_TERMS];
        let n = terms.len().min(INLINE_TERMS);
        inline[..n].copy_from_slice(&terms[..n]);
        let more = (terms.len() > INLINE_TERMS).then(|| terms[INLINE_TERMS..].into());
        Row {
            nanos,
            inline,
            len: n as u8,
            more,
            page: crate::content::item::stable_hash(item.page_path().as_bytes()),
            id: crate::content::item::stable_hash(item.id.as_bytes()),
        }
    }

    /// Counts `row` (to be row `j`) in its terms, slugs and page path.
    fn enter(&mut self, row: &Row, j: u32) {
        for t in row.terms() {
            self.term_counts[t as usize] += 1;
            let m = &mut self.members[self.terms[t as usize].slug as usize];
            // An item with two spellings of one slug is listed once.
            if let Err(k) = m.binary_search(&j) {
                m.insert(k, j);
            }
        }
        let count = self.pages.entry(row.page).or_insert(0);
        *count += 1;
        if *count == 2 {
            self.shared_pages += 1;
        }
    }

    fn at(&self, at: usize) -> &Row {
        &self.rows[self.rows.len() - 1 - at]
    }

    /// [`Item::page_key`] of the item at corpus position `at`.
    pub fn key(&self, at: usize) -> u64 {
        self.keys[self.keys.len() - 1 - at]
    }

    /// A hash of the page path of the item at `at` (equal paths, equal hashes).
    pub fn page_hash(&self, at: usize) -> u64 {
        self.at(at).page
    }

    /// A hash of the id of the item at `at`.
    pub fn id_hash(&self, at: usize) -> u64 {
        self.at(at).id
    }

    /// [`month_code`] of the item at `at`.
    pub fn month(&self, at: usize) -> i32 {
        self.months[self.months.len() - 1 - at]
    }

    /// How many items lie after `now` (the first corpus position of a published one).
    fn published_from(&self, now: i64) -> usize {
        self.rows.len() - self.rows.partition_point(|r| r.nanos <= now)
    }

    /// Per slug id, the term that names it among the items from corpus position `start`
    /// on: the least spelling that one of them has.
    fn names_from(&self, start: usize) -> Vec<Option<u32>> {
        // The scheduled items (a handful) are taken out of the counts.
        let mut scheduled: rustc_hash::FxHashMap<u32, u32> = Default::default();
        for row in &self.rows[self.rows.len() - start..] {
            for t in row.terms() {
                *scheduled.entry(t).or_default() += 1;
            }
        }
        self.slug_terms
            .iter()
            .map(|terms| {
                terms
                    .iter()
                    .copied()
                    .filter(|t| {
                        self.term_counts[*t as usize] > scheduled.get(t).copied().unwrap_or(0)
                    })
                    .min_by_key(|&t| self.ranks[t as usize])
            })
            .collect()
    }

    /// The corpus positions of the items from `start` on that have slug `slug`, newest
    /// first, at most `limit`.
    fn newest_of(&self, slug: usize, start: usize, limit: usize) -> Vec<usize> {
        let n = self.rows.len();
        let m = &self.members[slug];
        let end = m.partition_point(|&j| (j as usize) < n - start);
        m[..end]
            .iter()
            .rev()
            .take(limit)
            .map(|&j| n - 1 - j as usize)
            .collect()
    }

    /// The tags and categories of the items at `positions` (in that order), by slug: kind
    /// (category or not), slug, name (the least spelling) and positions; tags first, each
    /// kind by slug. Slugs without letters or digits are left out.
    pub fn terms_of(&self, positions: &[usize]) -> Vec<(bool, String, String, Vec<usize>)> {
        let n = self.rows.len();
        let by_slug: Vec<(Vec<usize>, Option<u32>)> = match positions {
            // Every item from some position on (the pages of a site without URL clashes):
            // read from the lists.
            [first, .., last] if *last == n - 1 && positions.len() == n - first => self
                .names_from(*first)
                .into_iter()
                .enumerate()
                .map(|(slug, name)| match name {
                    Some(_) if !self.slugs[slug].1.is_empty() => {
                        (self.newest_of(slug, *first, usize::MAX), name)
                    }
                    _ => (Vec::new(), None),
                })
                .collect(),
            _ => {
                let mut by_slug = vec![(Vec::new(), None); self.slugs.len()];
                for &at in positions {
                    for t in self.at(at).terms() {
                        let term = &self.terms[t as usize];
                        if self.slugs[term.slug as usize].1.is_empty() {
                            continue;
                        }
                        let e: &mut (Vec<usize>, Option<u32>) = &mut by_slug[term.slug as usize];
                        if e.1
                            .is_none_or(|n| self.ranks[t as usize] < self.ranks[n as usize])
                        {
                            e.1 = Some(t);
                        }
                        // An item with two spellings of one slug is listed once.
                        if e.0.last() != Some(&at) {
                            e.0.push(at);
                        }
                    }
                }
                by_slug
            }
        };
        self.named(by_slug)
            .into_iter()
            .map(|(category, slug, name, items)| (category, slug.to_string(), name, items))
            .collect()
    }

    /// Per slug id its items and the term that names it → kind, slug, name and items of
    /// the slugs that have a name; tags first, each kind by slug.
    fn named(
        &self,
        by_slug: Vec<(Vec<usize>, Option<u32>)>,
    ) -> Vec<(bool, &str, String, Vec<usize>)> {
        let mut found: Vec<(bool, &str, String, Vec<usize>)> = by_slug
            .into_iter()
            .enumerate()
            .filter_map(|(slug, (items, name))| {
                let (category, s) = &self.slugs[slug];
                name.map(|n| {
                    (
                        *category,
                        s.as_str(),
                        self.terms[n as usize].spelling.clone(),
                        items,
                    )
                })
            })
            .collect();
        found.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        found
    }

    /// Whether no two items have the same page path (then none of them needs a look).
    pub fn pages_unique(&self) -> bool {
        self.shared_pages == 0
    }

    fn term(&mut self, category: bool, spelling: &str, slug: &str) -> u32 {
        if let Some(&id) = self.term_ids.get(&(category, spelling.to_string())) {
            return id;
        }
        let slug_id = match self.slug_ids.get(&(category, slug.to_string())) {
            Some(&id) => id,
            None => {
                let id = self.slugs.len() as u32;
                self.slugs.push((category, slug.to_string()));
                self.slug_ids.insert((category, slug.to_string()), id);
                self.members.push(Vec::new());
                self.slug_terms.push(Vec::new());
                id
            }
        };
        let id = self.terms.len() as u32;
        self.terms.push(Term {
            slug: slug_id,
            spelling: spelling.to_string(),
        });
        self.term_counts.push(0);
        self.slug_terms[slug_id as usize].push(id);
        self.term_ids.insert((category, spelling.to_string()), id);
        let mut order: Vec<u32> = (0..self.terms.len() as u32).collect();
        order.sort_by(|&a, &b| {
            self.terms[a as usize]
                .spelling
                .cmp(&self.terms[b as usize].spelling)
        });
        self.ranks = vec![0; order.len()];
        for (rank, t) in order.into_iter().enumerate() {
            self.ranks[t as usize] = rank as u32;
        }
        id
    }
}

/// A month as a number that orders months: `year * 12 + month - 1` of `d` (an item's date,
/// in the site's time zone, as its page path has it).
pub fn month_code(d: &DateTime<FixedOffset>) -> i32 {
    use chrono::Datelike;
    d.year() * 12 + d.month0() as i32
}

/// [`plan`] for items recorded in `index` (the same order): the same feeds, read from the
/// index instead of from every item.
pub fn plan_indexed(
    items: &[Arc<Item>],
    index: &PlanIndex,
    now: DateTime<FixedOffset>,
    meta: &FeedMeta,
) -> (Vec<FeedSpec>, Vec<Problem>) {
    debug_assert_eq!(items.len(), index.rows.len());
    let start = index.published_from(now.timestamp_nanos_opt().unwrap_or(i64::MAX));
    let limit = meta.limit;
    let mut specs = vec![FeedSpec {
        kind: FeedKind::Site,
        items: (start..items.len()).take(limit).collect(),
    }];
    let mut warnings = Vec::new();
    let names = index.names_from(start);
    // Per slug id: the items, and the term whose spelling names the feed.
    let mut feeds: Vec<(Vec<usize>, Option<u32>)> = vec![(Vec::new(), None); index.slugs.len()];
    for (slug, (category, s)) in index.slugs.iter().enumerate() {
        if (*category && !meta.per_category) || (!*category && !meta.per_tag) {
            continue;
        }
        if names[slug].is_none() {
            continue;
        }
        if s.is_empty() {
            for at in index.newest_of(slug, start, usize::MAX) {
                for t in index.at(at).terms() {
                    let term = &index.terms[t as usize];
                    if term.slug as usize == slug {
                        warnings.push((
                            at,
                            Problem::warning(
                                &items[at].path,
                                1,
                                format!(
                                    "`{}` has no letters or digits, so it gets no feed",
                                    term.spelling
                                ),
                            ),
                        ));
                    }
                }
            }
            continue;
        }
        feeds[slug] = (index.newest_of(slug, start, limit), names[slug]);
    }
    // In corpus order, as a pass over the items gives them.
    warnings.sort_by_key(|(at, _)| *at);
    let warnings = warnings.into_iter().map(|(_, p)| p).collect();
    let found = index.named(feeds);
    specs.extend(
        found
            .into_iter()
            .map(|(category, slug, name, items)| FeedSpec {
                kind: if category {
                    FeedKind::Category {
                        slug: slug.to_string(),
                        name,
                    }
                } else {
                    FeedKind::Tag {
                        slug: slug.to_string(),
                        name,
                    }
                },
                items,
            }),
    );
    (specs, warnings)
}

/// Feeds by slug while planning: the name and the item positions. Every published item's
/// tags are looked up here on every change, so the hash is a cheap one (slugs are short and
/// come from the site's own files, not from strangers).
type SlugMap<'a> =
    HashMap<&'a str, (&'a str, Vec<usize>), std::hash::BuildHasherDefault<SlugHasher>>;

/// FNV-1a over 8-byte words: a few nanoseconds for a slug where SipHash takes tens.
#[derive(Default)]
struct SlugHasher(u64);

impl std::hash::Hasher for SlugHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            h = (h ^ u64::from_le_bytes(c.try_into().expect("8 bytes")))
                .wrapping_mul(0x100_0000_01b3);
        }
        for &b in chunks.remainder() {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        self.0 = h;
    }

    fn finish(&self) -> u64 {
        // Mix the high bits down: hashbrown takes the top 7 bits and the low bits.
        let h = self.0;
        (h ^ (h >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ (h >> 32)
    }
}

/// The RFC 5005 links of a feed document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// `prev-archive`: the archive document before this one (or the newest, from the
    /// current feed).
    pub prev_archive: Option<String>,
    /// For an archive document: the URL of the current feed (`current`); it carries
    /// `fh:archive` then.
    pub current: Option<String>,
}

/// Renders one feed in one format, with the RFC 5005 links of `history`. `body(i)` is the
/// rendition of item `i`.
pub fn render<'r>(
    format: Format,
    meta: &FeedMeta,
    spec: &FeedSpec,
    items: &'r [Arc<Item>],
    body: &dyn Fn(usize) -> &'r Rendition,
    history: &History,
) -> Vec<u8> {
    render_view(
        format,
        FeedView {
            meta,
            link: meta.page_of(spec),
            title: meta.title_of(spec),
            self_url: meta.url(spec, format),
            updated: spec.items.iter().map(|&i| items[i].updated).max(),
            entries: spec.items.iter().map(|&i| (&*items[i], body(i))).collect(),
            history: history.clone(),
        },
    )
}

/// Renders an archive document of the site feed; `bodies` are its items' renditions in
/// order.
pub fn render_archive(
    format: Format,
    meta: &FeedMeta,
    doc: &archive::ArchiveDoc,
    prev: Option<&archive::ArchiveDoc>,
    items: &[Arc<Item>],
    bodies: &[Arc<Rendition>],
) -> Vec<u8> {
    let site = FeedSpec {
        kind: FeedKind::Site,
        items: Vec::new(),
    };
    let url = |d: &archive::ArchiveDoc| {
        d.file(format)
            .map(|f| format!("{}/{f}", meta.base_url))
            .unwrap_or_default()
    };
    render_view(
        format,
        FeedView {
            meta,
            link: meta.page_of(&site),
            title: meta.title.clone(),
            self_url: url(doc),
            updated: doc.items.iter().map(|&i| items[i].updated).max(),
            entries: doc
                .items
                .iter()
                .zip(bodies)
                .map(|(&i, b)| (&*items[i], &**b))
                .collect(),
            history: History {
                prev_archive: prev.map(url),
                current: Some(meta.url(&site, format)),
            },
        },
    )
}

fn render_view(format: Format, view: FeedView) -> Vec<u8> {
    let out = match format {
        Format::Rss => hex_escapes(rss::render(&view)),
        Format::Atom => atom::render(&view),
        Format::Json => json::render(&view),
    };
    if view.is_archive() {
        empty_archive_marker(out)
    } else {
        out
    }
}

/// The writers indent the inside of `<fh:archive></fh:archive>`; RFC 5005's marker is empty.
/// The marker sits near the head (RSS) or the tail (Atom) of a document that may be large,
/// so only those ends are searched.
fn empty_archive_marker(mut xml: Vec<u8>) -> Vec<u8> {
    const OPEN: &[u8] = b"<fh:archive>";
    const CLOSE: &[u8] = b"</fh:archive>";
    const WINDOW: usize = 8192;
    let find = |hay: &[u8], needle: &[u8], from: usize| {
        hay.get(from..)?
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|p| p + from)
    };
    let tail = xml.len().saturating_sub(WINDOW);
    let head = &xml[..xml.len().min(WINDOW)];
    let Some(start) = find(head, OPEN, 0).or_else(|| find(&xml, OPEN, tail)) else {
        return xml;
    };
    let Some(close) = find(&xml[..(start + WINDOW).min(xml.len())], CLOSE, start) else {
        return xml;
    };
    xml.splice(start..close + CLOSE.len(), b"<fh:archive/>".iter().copied());
    xml
}

/// Writes `&amp;` and `&lt;` as `&#x26;` and `&#x3C;` in RSS, as the RSS Best Practices
/// Profile asks. The same characters to an XML parser, also inside CDATA sections (their HTML
/// reads the references alike), but readers that treat RSS text as HTML no longer mistake an
/// escaped `<` in a title for markup.
fn hex_escapes(xml: Vec<u8>) -> Vec<u8> {
    // One pass over the bytes: the writers emit UTF-8, and both patterns are ASCII.
    let mut out = Vec::with_capacity(xml.len() + xml.len() / 64);
    let mut rest = &xml[..];
    while let Some(p) = rest.iter().position(|&b| b == b'&') {
        out.extend_from_slice(&rest[..p]);
        let tail = &rest[p..];
        if tail.starts_with(b"&amp;") {
            out.extend_from_slice(b"&#x26;");
            rest = &tail[5..];
        } else if tail.starts_with(b"&lt;") {
            out.extend_from_slice(b"&#x3C;");
            rest = &tail[4..];
        } else {
            out.push(b'&');
            rest = &tail[1..];
        }
    }
    out.extend_from_slice(rest);
    out
}

/// Everything a renderer needs for one feed.
struct FeedView<'a> {
    meta: &'a FeedMeta,
    /// The feed's HTML page.
    link: String,
    title: String,
    self_url: String,
    /// The newest `updated` of the feed's items; `None` for an empty feed.
    updated: Option<DateTime<FixedOffset>>,
    entries: Vec<(&'a Item, &'a Rendition)>,
    history: History,
}

/// The namespace of RFC 5005's `fh:archive`.
const FH_NS: &str = "http://purl.org/syndication/history/1.0";

impl FeedView<'_> {
    /// Whether this is an archive document.
    fn is_archive(&self) -> bool {
        self.history.current.is_some()
    }

    /// `(rel, href)` of the RFC 5005 links.
    fn history_links(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(c) = &self.history.current {
            out.push(("current", c.clone()));
        }
        if let Some(p) = &self.history.prev_archive {
            out.push(("prev-archive", p.clone()));
        }
        out
    }
}

impl FeedView<'_> {
    /// The item's category first, then its tags, without repeats.
    fn categories(item: &Item) -> Vec<&str> {
        let mut out: Vec<&str> = item.category.iter().map(String::as_str).collect();
        for t in &item.tags {
            if !out.contains(&t.as_str()) {
                out.push(t);
            }
        }
        out
    }
}

/// RFC 822 date with English names and the numeric offset: `Tue, 08 Sep 2020 00:00:00 +0200`.
pub fn rfc822(dt: &DateTime<FixedOffset>) -> String {
    dt.format("%a, %d %b %Y %H:%M:%S %z").to_string()
}

/// The MIME type of an image URL, from its extension.
fn image_type(url: &str) -> &'static str {
    let path = url
        .split(['?', '#'])
        .next()
        .unwrap_or(url)
        .to_ascii_lowercase();
    match path.rsplit('.').next() {
        Some("png") => "image/png",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("svg") => "image/svg+xml",
        Some("avif") => "image/avif",
        _ => "image/jpeg",
    }
}

/// The XML declaration herold writes on top of every XML feed.
const XML_DECL: &[u8] = b"<?xml version=\"1.0\" encoding=\"utf-8\"?>\n";

/// The generator's name and version.
pub const GENERATOR: &str = concat!("herold ", env!("CARGO_PKG_VERSION"));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planning_from_the_index_equals_planning_from_the_items() {
        use crate::content::SiteContext;
        let site = SiteContext {
            timezone: chrono_tz::Europe::Berlin,
            tag_authority: "www.fitko.de".into(),
            item_url: "https://www.fitko.de/{slug}".into(),
            default_author: "FITKO".into(),
        };
        let spellings = [
            "OZG",
            "ozg",
            "Ozg",
            "FIM",
            "Föderal",
            "Foederal",
            "🚀",
            "Straße & Verkehr",
        ];
        let mut next = crate::test_rng(0x2545_f491_4f6c_dd1d_u64);
        for round in 0..40 {
            let mut items: Vec<Arc<Item>> = (0..60)
                .map(|i| {
                    let tags: Vec<String> = (0..next(4))
                        .map(|_| format!("{:?}", spellings[next(8) as usize]))
                        .collect();
                    let category = match next(3) {
                        0 => String::new(),
                        _ => format!("category = {:?}\n", spellings[next(8) as usize]),
                    };
                    let text = format!(
                        "+++\ntitle = \"T\"\ndate = 2026-{:02}-{:02}T10:00:00+01:00\nslug = \"s{i}\"\ntags = [{}]\n{category}+++\nx\n",
                        1 + next(12),
                        1 + next(28),
                        tags.join(", ")
                    );
                    Arc::new(crate::content::parse_item(&format!("{i}.md"), text.as_bytes(), &site).unwrap())
                })
                .collect();
            items.sort_by(|a, b| b.date.cmp(&a.date).then_with(|| a.id.cmp(&b.id)));
            // Build the index in an order of its own, as the daemon does file by file.
            let mut index = PlanIndex::default();
            let mut placed: Vec<Arc<Item>> = Vec::new();
            for item in items.iter().rev() {
                let at = placed
                    .binary_search_by(|x| {
                        x.date
                            .cmp(&item.date)
                            .reverse()
                            .then_with(|| x.id.cmp(&item.id))
                    })
                    .unwrap_or_else(|at| at);
                placed.insert(at, item.clone());
                index.insert(at, item);
            }
            if round % 2 == 0 {
                // Take some out and put them back, older ones first.
                for at in [7, 0, 59, 31] {
                    index.remove(at);
                    index.insert(at, &items[at]);
                }
            } else {
                // Or build it at once, as a start does.
                index.rebuild(&items);
            }
            let now = DateTime::parse_from_rfc3339("2026-07-01T00:00:00+02:00").unwrap();
            let mut meta = FeedMeta::from_config(
                &crate::config::Config::parse(
                    "[site]\ntitle = \"t\"\nbase_url = \"https://x.de\"\n[feeds]\nlimit = 5\n",
                    "c",
                    &[],
                    std::path::Path::new("/"),
                )
                .unwrap(),
            );
            meta.per_category = round % 3 != 0;
            let (a, wa) = plan(&items, now, &meta);
            let (b, wb) = plan_indexed(&items, &index, now, &meta);
            assert_eq!(a, b, "round {round}");
            let text = |w: Vec<Problem>| w.into_iter().map(|p| p.to_string()).collect::<Vec<_>>();
            assert_eq!(text(wa), text(wb), "round {round}");
            // Archive documents: named the same with the names of earlier plans kept.
            let mut names = archive::Names::default();
            for limit in [5, 4, 5, 2] {
                let kept =
                    archive::plan_with(&items, 0, limit, 7, "s", &|i| index.key(i), &mut names);
                assert_eq!(
                    kept,
                    archive::plan(&items, 0, limit, 7, "s"),
                    "round {round}"
                );
            }
            // Pages: the same pages with the same fingerprints.
            if round % 4 == 0 {
                let config = crate::config::Config::parse(
                    "[site]\ntitle = \"t\"\nbase_url = \"https://x.de\"\n[pages]\nper_page = 3\nmax_pages = 2\n",
                    "c",
                    &[],
                    std::path::Path::new("/"),
                )
                .unwrap();
                let templates = crate::templates::Templates::for_config(&config).unwrap();
                let meta = crate::pages::PageMeta::from_config(&config);
                let cache = crate::pages::EntryCache::default();
                let lang = templates.default_language();
                let pages = |index| {
                    let p = crate::pages::plan(&items, index, now, &meta, lang, &[], &cache);
                    (0..p.len())
                        .map(|i| (p.path(i), p.fingerprint(i)))
                        .collect::<Vec<_>>()
                };
                let (a, b) = (pages(None), pages(Some(&index)));
                assert!(a.iter().any(|(p, _)| p.starts_with("tags/ozg/")), "{a:?}");
                assert_eq!(a, b, "round {round}");
            }
        }
    }

    #[test]
    fn rfc822_uses_english_names_and_padded_day() {
        let dt = DateTime::parse_from_rfc3339("2020-09-08T00:00:00+02:00").unwrap();
        assert_eq!(rfc822(&dt), "Tue, 08 Sep 2020 00:00:00 +0200");
    }
}
