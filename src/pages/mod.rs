//! The news as HTML pages (SPEC 10): the index with pagination, one page per item, the tag
//! and category pages, the digest archive and the sitemap. [`plan`] decides which pages
//! exist and what each shows; [`write_pages`] renders and writes them by the rules of the
//! feeds (atomically, only when the bytes change, stale pages removed).
//!
//! Pages are files below `pages.dir`, so any web server can serve them; herold serves them
//! too (`web::pages`). Which files herold wrote is kept in a manifest (`.herold-pages`), so
//! removing a page never touches a file somebody else put there.

use std::collections::BTreeSet;

use rustc_hash::{FxHashMap, FxHashSet};
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, FixedOffset};
use serde::Serialize;

use crate::config::{Config, Format};
use crate::content::{Item, Problem};
use crate::output::{Flush, Written, write_batch_if_changed, write_if_changed};
use crate::templates::Language;

/// The file listing every page herold wrote, relative to `pages.dir`.
pub const MANIFEST: &str = ".herold-pages";

/// URLs per sitemap file. The sitemap protocol allows 50,000; with smaller files a new
/// item rewrites the last file of the sitemap instead of one with every URL of the site.
const SITEMAP_LIMIT: usize = 2_000;

/// The URLs per sitemap file: [`SITEMAP_LIMIT`], or less in tests.
fn sitemap_limit() -> usize {
    #[cfg(test)]
    if let Some(n) = TEST_SITEMAP_LIMIT.with(|l| l.get()) {
        return n;
    }
    SITEMAP_LIMIT
}

#[cfg(test)]
thread_local! {
    static TEST_SITEMAP_LIMIT: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// The site-wide settings every page shows. Built once from the configuration.
#[derive(Debug, Clone)]
pub struct PageMeta {
    /// `{server.public_url}/{pages.path}`, no trailing slash.
    pub base: String,
    pub per_page: usize,
    /// Newest-first pages of a list at most; a longer list also has month or year pages.
    pub max_pages: usize,
    pub noindex: bool,
    pub site_title: String,
    pub description: String,
    /// The subscription page.
    pub subscribe_url: String,
    pub privacy_url: Option<String>,
    pub imprint_url: Option<String>,
    pub accessibility_url: Option<String>,
    /// Public URL of `feeds.dir`, no trailing slash.
    pub feeds_url: String,
    pub formats: Vec<Format>,
    pub per_tag: bool,
    pub per_category: bool,
    /// Digests whose runs are archived: name and title.
    pub archived_digests: Vec<(String, String)>,
    /// `site.timezone`, for the dates of digest runs.
    pub timezone: chrono_tz::Tz,
}

impl PageMeta {
    pub fn from_config(c: &Config) -> PageMeta {
        let mut formats = c.feeds.formats.clone();
        formats.sort();
        formats.dedup();
        PageMeta {
            base: c.pages_url(),
            per_page: c.pages.per_page,
            max_pages: c.pages.max_pages,
            noindex: c.pages.noindex,
            site_title: crate::content::text::plain(&c.site.title),
            description: crate::content::text::plain(&c.site.description),
            subscribe_url: format!("{}/", c.public_url()),
            privacy_url: c.site.privacy_url.as_ref().map(|u| u.to_string()),
            imprint_url: c.site.imprint_url.as_ref().map(|u| u.to_string()),
            accessibility_url: c.site.accessibility_url.as_ref().map(|u| u.to_string()),
            feeds_url: c.feeds_base_url(),
            formats,
            per_tag: c.feeds.per_tag,
            per_category: c.feeds.per_category,
            archived_digests: c
                .digest
                .iter()
                .filter(|d| d.archive)
                .map(|d| (d.name.clone(), d.title.clone().unwrap_or(d.name.clone())))
                .collect(),
            timezone: c.site.timezone,
        }
    }

    /// The public URL of a page path (`""`, `tags/ozg/`, `sitemap.xml`).
    pub fn url(&self, rel: &str) -> String {
        format!("{}/{rel}", self.base)
    }
}

/// The page path of an item, relative to the pages: `{year}/{month}/{day}/{slug}/`, by its
/// date in the site's time zone.
pub fn item_path(item: &Item) -> String {
    item.page_path().to_owned()
}

/// The pages herold wrote below `pages.dir` and the fingerprint of what each shows. A
/// fingerprint covers what identifies its page (its kind, number, term or item), so two
/// pages never share one, and a change costs a lookup of each page's fingerprint, not of
/// its path.
#[derive(Debug, Default)]
pub struct Manifest {
    fingerprints: FxHashSet<u64>,
    /// Path → fingerprint (for a page whose contents are not known: one that is not in
    /// `fingerprints`).
    by_path: FxHashMap<String, u64>,
    /// Lines in the file (it grows by appended lines between rewrites).
    lines: usize,
}

impl Manifest {
    /// How many pages.
    pub fn len(&self) -> usize {
        self.by_path.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }

    /// Records `path` with `fingerprint` (`None`: contents not known, so the page is
    /// rendered again).
    fn insert(&mut self, path: String, fingerprint: Option<u64>) {
        let f = match fingerprint {
            Some(f) => {
                self.fingerprints.insert(f);
                f
            }
            None => crate::content::item::stable_hash(path.as_bytes()),
        };
        if let Some(old) = self.by_path.insert(path, f)
            && old != f
        {
            self.fingerprints.remove(&old);
        }
    }

    /// Forgets what each page showed, keeping which pages there are: every page is then
    /// rendered again and compared with its file.
    pub fn forget_fingerprints(&mut self) {
        self.fingerprints.clear();
    }
}

/// The page path of the archived run `run` of digest `name`.
pub fn run_path(name: &str, run: i64) -> String {
    format!("digests/{name}/{run}/")
}

/// The public URL of an archived run, when the digest is archived and pages are written.
pub fn run_url(config: &Config, digest: &crate::config::Digest, run: i64) -> Option<String> {
    (config.pages.enabled && digest.archive)
        .then(|| format!("{}/{}", config.pages_url(), run_path(&digest.name, run)))
}

/// Which group of items a list page shows.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TermKind {
    Tag,
    Category,
}

impl TermKind {
    fn dir(&self) -> &'static str {
        match self {
            TermKind::Tag => "tags",
            TermKind::Category => "categories",
        }
    }
}

/// A tag or category with every published item that has it, newest first.
#[derive(Debug, Clone)]
pub struct Term {
    pub kind: TermKind,
    pub slug: String,
    pub name: String,
    pub items: Vec<usize>,
}

/// A digest run as the archive shows it: what it sent, to nobody in particular.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ArchivedRun {
    pub id: i64,
    pub started_at: i64,
    /// Item ids, as the run planned them.
    pub items: Vec<String>,
}

/// The archived runs of one digest, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct DigestArchive {
    pub name: String,
    pub runs: Vec<ArchivedRun>,
}

/// Reads the runs of every archived digest (runs without items sent nothing and are left
/// out).
pub fn load_archives(
    store: &crate::store::Store,
    meta: &PageMeta,
) -> anyhow::Result<Vec<DigestArchive>> {
    let mut out = Vec::new();
    for (name, _) in &meta.archived_digests {
        let runs = store
            .archived_runs(name)?
            .into_iter()
            .map(|r| ArchivedRun {
                id: r.id,
                started_at: r.started_at,
                items: r.items,
            })
            .collect();
        out.push(DigestArchive {
            name: name.clone(),
            runs,
        });
    }
    Ok(out)
}

/// Items as lists show them (title, link, date, lead, tags), kept between builds so that
/// a change makes only the entries of new or edited items: a new item moves every list
/// page, and those pages are then made of entries already made.
#[derive(Default)]
pub struct EntryCache {
    /// The settings and templates the entries were made with.
    settings: u64,
    /// By item key (its file and contents, see `PagePlan::keys`).
    entries: FxHashMap<u64, minijinja::Value>,
}

impl EntryCache {
    /// The entry of the item with `key`, made with `settings`.
    fn get(&self, key: u64, settings: u64) -> Option<&minijinja::Value> {
        (settings == self.settings)
            .then(|| self.entries.get(&key))
            .flatten()
    }

    /// Keeps the entries a plan made (see [`PagePlan::made_entries`]), and forgets those of
    /// items it no longer lists.
    pub fn absorb(&mut self, made: MadeEntries) {
        if self.settings != made.settings {
            self.entries.clear();
            self.settings = made.settings;
        }
        self.entries.extend(made.entries);
        if let Some(keep) = made.keep
            && self.entries.len() > keep.len()
        {
            self.entries.retain(|k, _| keep.contains(k));
        }
    }
}

/// The entries a plan made, for [`EntryCache::absorb`].
pub struct MadeEntries {
    settings: u64,
    entries: Vec<(u64, minijinja::Value)>,
    /// The keys of every listed item, when the cache may hold entries of others.
    keep: Option<FxHashSet<u64>>,
}

/// The lead an index shows: the `summary`, else the body's first paragraph.
fn lead_of(item: &Item) -> String {
    match &item.summary {
        Some(s) => s.clone(),
        None => crate::content::markdown::first_paragraph_text(
            &crate::content::text::strip_controls(&item.body_text()),
        ),
    }
}

/// One page (or sitemap file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Job {
    /// Page `n` (from 1) of the index.
    Index(usize),
    /// The page of the item at this corpus position.
    Item(usize),
    /// Page `n` of term `t`.
    Term(usize, usize),
    /// Month `m` (from 0, newest first) of list `l` (see [`PagePlan::list`]).
    Month(usize, usize),
    /// The archive of digest `d`.
    DigestIndex(usize),
    /// Run `r` of digest `d`.
    DigestRun(usize, usize),
    /// Sitemap file `n` (0: `sitemap.xml`; from 1: the parts when there are more URLs than
    /// one file may hold).
    Sitemap(usize),
    /// `style.css`, which every page links (one file the browser caches, not the same
    /// rules in every page).
    Stylesheet,
}

/// A decided set of pages.
pub struct PagePlan<'a> {
    items: &'a [Arc<Item>],
    meta: &'a PageMeta,
    lang: &'a Language,
    /// Each item as lists show it, made once for the index, tag and category pages (the
    /// entries `cache` has are taken from there).
    entries: Slots,
    cache: &'a EntryCache,
    /// Published items with a page, newest first.
    listed: Vec<usize>,
    terms: Vec<Term>,
    /// Per list (0: the index, `t + 1`: term `t`): its months, newest first, when it is
    /// longer than its newest-first pages show.
    months: Vec<Vec<Month>>,
    archives: &'a [DigestArchive],
    /// Per archive and run: the corpus positions of the run's items still published.
    run_items: Vec<Vec<Vec<usize>>>,
    /// The jobs after the item pages (which are `listed`, in that order, and not stored:
    /// see [`PagePlan::job`]).
    jobs: Vec<Job>,
    /// How many jobs are pages (they come first; the sitemap lists them).
    page_jobs: usize,
    /// Page URL clashes (errors naming both files).
    pub problems: Vec<Problem>,
    /// A hash of the settings and templates every page depends on.
    settings: u64,
    /// Per corpus position: what identifies the item's file and its contents (see
    /// [`PagePlan::key`]; empty when `index` has them).
    keys: Vec<u64>,
    index: Option<&'a crate::feed::PlanIndex>,
    /// Bodies already rendered in this build (for the archive documents).
    shared: Option<&'a crate::build::SharedBodies>,
}

/// One lazily made value per corpus position, in chunks allocated when first touched: a
/// plan of 50,000 items makes the entries of the few dozen that its rendered pages list.
struct Slots {
    chunks: Vec<OnceLock<Box<[OnceLock<minijinja::Value>]>>>,
}

const SLOT_CHUNK: usize = 256;

impl Slots {
    fn new(n: usize) -> Slots {
        Slots {
            chunks: (0..n.div_ceil(SLOT_CHUNK))
                .map(|_| OnceLock::new())
                .collect(),
        }
    }

    fn slot(&self, idx: usize) -> &OnceLock<minijinja::Value> {
        &self.chunks[idx / SLOT_CHUNK]
            .get_or_init(|| (0..SLOT_CHUNK).map(|_| OnceLock::new()).collect())[idx % SLOT_CHUNK]
    }

    /// The values made, by position.
    fn made(&self) -> impl Iterator<Item = (usize, &minijinja::Value)> {
        self.chunks.iter().enumerate().flat_map(|(c, chunk)| {
            chunk.get().into_iter().flat_map(move |slots| {
                slots
                    .iter()
                    .enumerate()
                    .filter_map(move |(k, v)| Some((c * SLOT_CHUNK + k, v.get()?)))
            })
        })
    }
}

/// The items of one month (or year) of a list: positions `from..to` of the list (newest
/// first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Month {
    year: i32,
    /// 1 to 12; 0 for the whole year.
    month: u32,
    from: usize,
    to: usize,
}

/// The newest-first pages of a list of `n` items.
fn pages_of(n: usize, meta: &PageMeta) -> usize {
    n.div_ceil(meta.per_page).clamp(1, meta.max_pages)
}

fn list_path(prefix: &str, page: usize) -> String {
    match page {
        1 => prefix.to_string(),
        n => format!("{prefix}page/{n}/"),
    }
}

fn month_path(prefix: &str, m: &Month) -> String {
    match m.month {
        0 => format!("{prefix}{:04}/", m.year),
        month => format!("{prefix}{:04}/{month:02}/", m.year),
    }
}

/// Where each month begins among the published items: its month code
/// ([`crate::feed::month_code`]) and its first corpus position, newest first. The corpus
/// is newest first, so a month is a run of positions, found by a galloping search.
fn month_starts(
    items: &[Arc<Item>],
    index: Option<&crate::feed::PlanIndex>,
    listed: &[usize],
) -> Vec<(i32, usize)> {
    let code_of = |idx: usize| match index {
        Some(index) => index.month(idx),
        None => crate::feed::month_code(&items[idx].date),
    };
    let mut starts = Vec::new();
    let mut pos = 0;
    while pos < listed.len() {
        let code = code_of(listed[pos]);
        starts.push((code, listed[pos]));
        pos += 1 + gallop(&listed[pos + 1..], |&idx| code_of(idx) == code);
    }
    starts
}

/// `v.partition_point(pred)`, searched from the front: a few steps when the point is near.
fn gallop<T>(v: &[T], pred: impl Fn(&T) -> bool) -> usize {
    let mut hi = 1;
    while hi <= v.len() && pred(&v[hi - 1]) {
        hi *= 2;
    }
    let lo = hi / 2;
    let hi = hi.min(v.len());
    lo + v[lo..hi].partition_point(pred)
}

/// The months of a list (newest first), when its newest-first pages do not show all of it:
/// each month's page then shows every item of that month, and a new item changes the
/// newest-first pages and its month's page, not the pages of every older item. With
/// `by_year`, years instead of months (for tags and categories, which have fewer items a
/// month than the index: a page a month would often show one item). `starts` are the
/// months of all published items ([`month_starts`]); a list's months are found in it by
/// binary search, without looking at its items.
fn months_of(
    list: &[usize],
    starts: &[(i32, usize)],
    meta: &PageMeta,
    by_year: bool,
) -> Vec<Month> {
    if list.len() <= meta.per_page * meta.max_pages {
        return Vec::new();
    }
    // A month's code, or its year's (as the code of its January).
    let period = |code: i32| {
        if by_year {
            code.div_euclid(12) * 12
        } else {
            code
        }
    };
    // Each period begins in the list where the one before it ended: found by galloping
    // from there, so a list costs a few steps per period, not a search of the whole list.
    let mut months: Vec<Month> = Vec::new();
    let (mut k, mut from) = (0, 0);
    while k < starts.len() && from < list.len() {
        let code = period(starts[k].0);
        let mut next = k + 1;
        while next < starts.len() && period(starts[next].0) == code {
            next += 1;
        }
        let to = match starts.get(next) {
            Some(&(_, end)) => from + gallop(&list[from..], |&i| i < end),
            None => list.len(),
        };
        if to > from {
            months.push(Month {
                year: code.div_euclid(12),
                month: if by_year {
                    0
                } else {
                    code.rem_euclid(12) as u32 + 1
                },
                from,
                to,
            });
        }
        (k, from) = (next, to);
    }
    months
}

/// The tags and categories of the `listed` items, by slug, each named by its first
/// spelling in sort order (as the feeds are); tags first, each kind by slug.
fn terms_of<'i>(items: &'i [Arc<Item>], listed: &[usize]) -> Vec<Term> {
    type Terms<'i> = FxHashMap<&'i str, (&'i str, Vec<usize>)>;
    let mut tags: Terms = FxHashMap::default();
    let mut cats: Terms = FxHashMap::default();
    let add = |map: &mut Terms<'i>, name: &'i str, slug: &'i str, i: usize| {
        let e = map.entry(slug).or_insert((name, Vec::new()));
        if name < e.0 {
            e.0 = name;
        }
        // An item with two spellings of one slug is listed once.
        if e.1.last() != Some(&i) {
            e.1.push(i);
        }
    };
    for &i in listed {
        let item = &items[i];
        for (t, slug) in item.tags.iter().zip(&item.tag_slugs) {
            if !slug.is_empty() {
                add(&mut tags, t.as_str(), slug.as_str(), i);
            }
        }
        if let (Some(c), Some(slug)) = (&item.category, &item.category_slug)
            && !slug.is_empty()
        {
            add(&mut cats, c.as_str(), slug.as_str(), i);
        }
    }
    let mut terms: Vec<Term> = Vec::with_capacity(tags.len() + cats.len());
    for (kind, map) in [(TermKind::Tag, tags), (TermKind::Category, cats)] {
        let mut v: Vec<_> = map.into_iter().collect();
        v.sort_unstable_by_key(|(slug, _)| *slug);
        terms.extend(v.into_iter().map(|(slug, (name, items))| Term {
            kind: kind.clone(),
            slug: slug.to_string(),
            name: name.to_string(),
            items,
        }));
    }
    terms
}

/// Decides every page of `items` (a corpus's, newest first) as it stands at `now`.
pub fn plan<'a>(
    items: &'a [Arc<Item>],
    index: Option<&'a crate::feed::PlanIndex>,
    now: DateTime<FixedOffset>,
    meta: &'a PageMeta,
    lang: &'a Language,
    archives: &'a [DigestArchive],
    cache: &'a EntryCache,
) -> PagePlan<'a> {
    let start = crate::feed::published_from(items, now);
    let settings =
        crate::content::item::stable_hash(format!("{meta:?}\0{}", lang.fingerprint).as_bytes());
    let (listed, problems) = page_owners(items, index, start);
    let terms = match index {
        // The daemon's index has every item's terms as numbers: no item is visited.
        Some(index) => index
            .terms_of(&listed)
            .into_iter()
            .map(|(category, slug, name, items)| Term {
                kind: if category {
                    TermKind::Category
                } else {
                    TermKind::Tag
                },
                slug,
                name,
                items,
            })
            .collect(),
        None => terms_of(items, &listed),
    };
    // Only digest archives look items up by id.
    let by_id: FxHashMap<u64, usize> = if archives.is_empty() {
        FxHashMap::default()
    } else {
        listed
            .iter()
            .map(|&i| {
                let id = match index {
                    Some(index) => index.id_hash(i),
                    None => crate::content::item::stable_hash(items[i].id.as_bytes()),
                };
                (id, i)
            })
            .collect()
    };
    let find = |id: &str| {
        by_id
            .get(&crate::content::item::stable_hash(id.as_bytes()))
            .copied()
            .filter(|&i| items[i].id == id)
    };
    let run_items: Vec<Vec<Vec<usize>>> = archives
        .iter()
        .map(|a| {
            a.runs
                .iter()
                .map(|r| r.items.iter().filter_map(|id| find(id)).collect())
                .collect()
        })
        .collect();

    let starts = if listed.len() > meta.per_page * meta.max_pages {
        month_starts(items, index, &listed)
    } else {
        Vec::new()
    };
    let months: Vec<Vec<Month>> = std::iter::once(&listed)
        .chain(terms.iter().map(|t| &t.items))
        .enumerate()
        .map(|(l, list)| months_of(list, &starts, meta, l > 0))
        .collect();
    // Item pages first: rendering one gives its lead from the same parse, and the list
    // pages after them find their entries made.
    let mut jobs: Vec<Job> = (1..=pages_of(listed.len(), meta)).map(Job::Index).collect();
    for (t, term) in terms.iter().enumerate() {
        jobs.extend((1..=pages_of(term.items.len(), meta)).map(|n| Job::Term(t, n)));
    }
    for (l, m) in months.iter().enumerate() {
        jobs.extend((0..m.len()).map(|k| Job::Month(l, k)));
    }
    for (d, a) in archives.iter().enumerate() {
        jobs.push(Job::DigestIndex(d));
        jobs.extend((0..a.runs.len()).map(|r| Job::DigestRun(d, r)));
    }
    let page_jobs = listed.len() + jobs.len();
    let parts = if page_jobs > sitemap_limit() {
        page_jobs.div_ceil(sitemap_limit())
    } else {
        0
    };
    jobs.extend((0..=parts).map(Job::Sitemap));
    jobs.push(Job::Stylesheet);
    let keys: Vec<u64> = match index {
        Some(_) => Vec::new(),
        None => items.iter().map(|it| it.page_key()).collect(),
    };
    PagePlan {
        items,
        meta,
        lang,
        entries: Slots::new(items.len()),
        cache,
        listed,
        terms,
        months,
        archives,
        run_items,
        jobs,
        page_jobs,
        problems,
        settings,
        keys,
        index,
        shared: None,
    }
}

/// Published items whose pages would have the same URL (for `herold check`).
pub fn url_clashes(items: &[Arc<Item>], now: DateTime<FixedOffset>) -> Vec<Problem> {
    page_owners(items, None, crate::feed::published_from(items, now)).1
}

/// The published items that get a page, newest first: of two items whose pages would have
/// the same URL, the first file in path order keeps it and the other is an error.
fn page_owners(
    items: &[Arc<Item>],
    index: Option<&crate::feed::PlanIndex>,
    start: usize,
) -> (Vec<usize>, Vec<Problem>) {
    if index.is_some_and(|index| index.pages_unique()) {
        return ((start..items.len()).collect(), Vec::new());
    }
    // By a hash of the page path (from the index, without visiting the item); equal
    // hashes are compared by their paths.
    let mut owner: FxHashMap<u64, usize> =
        FxHashMap::with_capacity_and_hasher(items.len() - start, Default::default());
    let mut clashes = Vec::new();
    for i in start..items.len() {
        let key = match index {
            Some(index) => index.page_hash(i),
            None => crate::content::item::stable_hash(items[i].page_path().as_bytes()),
        };
        match owner.get_mut(&key) {
            None => {
                owner.insert(key, i);
            }
            Some(o) if items[*o].page_path() != items[i].page_path() => {
                // Two paths with one hash (never seen): the later one is kept apart.
                let mut k = key;
                while owner.contains_key(&k) {
                    k = k.wrapping_add(1);
                }
                owner.insert(k, i);
            }
            Some(o) => {
                let (keep, lose) = if items[i].path < items[*o].path {
                    (i, *o)
                } else {
                    (*o, i)
                };
                *o = keep;
                clashes.push((keep, lose, item_path(&items[i])));
            }
        }
    }
    let mut problems = Vec::new();
    let mut losers = BTreeSet::new();
    for (keep, lose, path) in clashes {
        losers.insert(lose);
        problems.push(Problem::error(
            &items[lose].path,
            items[lose].id_line,
            format!(
                "its page would have the same URL as the page of {} (`{path}`): give one of them another `slug`",
                items[keep].path
            ),
        ));
    }
    let listed = if losers.is_empty() {
        (start..items.len()).collect()
    } else {
        (start..items.len())
            .filter(|i| !losers.contains(i))
            .collect()
    };
    (listed, problems)
}

/// What every page shows.
#[derive(Serialize)]
struct Base<'a> {
    lang: &'a str,
    site_title: &'a str,
    privacy_url: Option<&'a str>,
    imprint_url: Option<&'a str>,
    accessibility_url: Option<&'a str>,
    /// Other languages are not offered on the pages (they are in the site's language).
    languages: [(); 0],
    home_url: String,
    subscribe_url: &'a str,
    noindex: bool,
    stylesheet: String,
    /// `<link rel="alternate">` to the feeds of what the page shows.
    alternates: Vec<Alternate>,
    canonical: String,
}

#[derive(Serialize)]
struct Alternate {
    href: String,
    mime: &'static str,
    title: String,
    name: &'static str,
}

#[derive(Serialize)]
struct Entry<'a> {
    /// The id of the entry's heading: from the item's id, so unique on any page and the
    /// same across edits.
    anchor: String,
    title: &'a str,
    url: String,
    date_iso: String,
    date: String,
    lead: String,
    category: Option<Link<'a>>,
    tags: Vec<Link<'a>>,
}

#[derive(Serialize)]
struct Link<'a> {
    name: &'a str,
    url: String,
}

#[derive(Serialize)]
struct Pager {
    /// The newest-first page (from 1), 0 on a month's page.
    page: usize,
    pages: usize,
    /// Whether this is the list's first page (its newest items).
    front: bool,
    /// What the page shows ("Seite 2 von 10", "Januar 2026").
    label: String,
    newer: Option<String>,
    older: Option<String>,
}

impl<'a> PagePlan<'a> {
    /// The entries this plan made (it found the others in its cache).
    pub fn made_entries(&self) -> MadeEntries {
        let entries: Vec<(u64, minijinja::Value)> = self
            .entries
            .made()
            .map(|(i, v)| (self.key(i), v.clone()))
            .collect();
        let same = self.cache.settings == self.settings;
        let keep = (!same || self.cache.entries.len() + entries.len() > self.listed.len())
            .then(|| self.listed.iter().map(|&i| self.key(i)).collect());
        MadeEntries {
            settings: self.settings,
            entries,
            keep,
        }
    }

    /// How many files.
    pub fn len(&self) -> usize {
        self.listed.len() + self.jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// File `i`: the item pages first, in `listed` order, then the others.
    fn job(&self, i: usize) -> Job {
        match self.listed.get(i) {
            Some(&idx) => Job::Item(idx),
            None => self.jobs[i - self.listed.len()],
        }
    }

    /// What identifies the file and contents of the item at corpus position `idx`.
    fn key(&self, idx: usize) -> u64 {
        match self.index {
            Some(index) => index.key(idx),
            None => self.keys[idx],
        }
    }

    /// Takes item bodies from `shared` where it has them instead of rendering them again.
    pub fn share_bodies(&mut self, shared: &'a crate::build::SharedBodies) {
        self.shared = Some(shared);
    }

    /// Whether page `i` belongs to the archive of digest `name`.
    pub fn is_archive_of(&self, i: usize, name: &str) -> bool {
        match self.job(i) {
            Job::DigestIndex(d) | Job::DigestRun(d, _) => self.archives[d].name == name,
            _ => false,
        }
    }

    /// How many items have a page.
    pub fn listed(&self) -> usize {
        self.listed.len()
    }

    /// The file of page `i` below `pages.dir`.
    pub fn path(&self, i: usize) -> String {
        match self.job(i) {
            Job::Sitemap(0) => "sitemap.xml".into(),
            Job::Sitemap(n) => format!("sitemap-{n}.xml"),
            Job::Stylesheet => "style.css".into(),
            Job::Item(idx) => {
                let dir = self.items[idx].page_path();
                let mut path = String::with_capacity(dir.len() + 10);
                path.push_str(dir);
                path.push_str("index.html");
                path
            }
            _ => format!("{}index.html", self.url_path(i)),
        }
    }

    /// The URL path of page `i` relative to the pages (`""`, `tags/ozg/page/2/`).
    fn url_path(&self, i: usize) -> String {
        match self.job(i) {
            Job::Index(n) => list_path("", n),
            Job::Item(idx) => item_path(&self.items[idx]),
            Job::Term(t, n) => list_path(&self.term_prefix(t), n),
            Job::Month(l, m) => month_path(&self.list_prefix(l), &self.months[l][m]),
            Job::DigestIndex(d) => format!("digests/{}/", self.archives[d].name),
            Job::DigestRun(d, r) => run_path(&self.archives[d].name, self.archives[d].runs[r].id),
            Job::Sitemap(_) | Job::Stylesheet => String::new(),
        }
    }

    fn term_prefix(&self, t: usize) -> String {
        let term = &self.terms[t];
        format!("{}/{}/", term.kind.dir(), term.slug)
    }

    /// List `l`: the index (0) or term `l - 1`, newest first.
    fn list(&self, l: usize) -> &[usize] {
        match l {
            0 => &self.listed,
            l => &self.terms[l - 1].items,
        }
    }

    fn list_prefix(&self, l: usize) -> String {
        match l {
            0 => String::new(),
            l => self.term_prefix(l - 1),
        }
    }

    /// What a page's links to its neighbours depend on, beside its own items: the size of
    /// its list's newest-first pages and the months their last page and a month link to.
    fn neighbours(&self, l: usize, page: Option<usize>, month: Option<usize>) -> impl Hash {
        let pages = pages_of(self.list(l).len(), self.meta);
        let months = &self.months[l];
        let ym = |m: Option<&Month>| m.map(|m| (m.year, m.month));
        match (page, month) {
            (Some(n), _) if n == pages => (pages, ym(self.after_pages(l)), None),
            (None, Some(m)) => (
                pages,
                ym(m.checked_sub(1).map(|k| &months[k])),
                ym(months.get(m + 1)),
            ),
            _ => (pages, None, None),
        }
    }

    /// The month (or year) that the last newest-first page of list `l` links as older:
    /// the one of the first item it does not show.
    fn after_pages(&self, l: usize) -> Option<&Month> {
        let shown = pages_of(self.list(l).len(), self.meta) * self.meta.per_page;
        let months = &self.months[l];
        months.get(months.partition_point(|m| m.to <= shown))
    }

    /// A fingerprint of everything page `i` shows: the settings and templates, and the
    /// contents of the files of its items. Equal fingerprints mean equal bytes, so a page
    /// whose fingerprint the manifest already records is not rendered again.
    pub fn fingerprint(&self, i: usize) -> u64 {
        let mut h = rustc_hash::FxHasher::default();
        self.settings.hash(&mut h);
        let item = |h: &mut rustc_hash::FxHasher, idx: usize| {
            self.key(idx).hash(h);
        };
        match self.job(i) {
            Job::Index(n) => {
                (0u8, n, self.neighbours(0, Some(n), None)).hash(&mut h);
                for &idx in self.page_slice(&self.listed, n) {
                    item(&mut h, idx);
                }
            }
            Job::Item(idx) => {
                1u8.hash(&mut h);
                item(&mut h, idx);
            }
            Job::Term(t, n) => {
                let term = &self.terms[t];
                (2u8, &term.kind, &term.slug, &term.name, n).hash(&mut h);
                self.neighbours(t + 1, Some(n), None).hash(&mut h);
                for &idx in self.page_slice(&term.items, n) {
                    item(&mut h, idx);
                }
            }
            Job::Month(l, m) => {
                let month = &self.months[l][m];
                (7u8, month.year, month.month).hash(&mut h);
                if let Some(term) = l.checked_sub(1).map(|t| &self.terms[t]) {
                    (&term.kind, &term.slug, &term.name).hash(&mut h);
                }
                self.neighbours(l, None, Some(m)).hash(&mut h);
                for &idx in &self.list(l)[month.from..month.to] {
                    item(&mut h, idx);
                }
            }
            Job::DigestIndex(d) => {
                (3u8, &self.archives[d]).hash(&mut h);
                for run in &self.run_items[d] {
                    run.len().hash(&mut h);
                }
            }
            Job::DigestRun(d, r) => {
                (4u8, &self.archives[d].name, &self.archives[d].runs[r]).hash(&mut h);
                for &idx in &self.run_items[d][r] {
                    item(&mut h, idx);
                }
            }
            Job::Sitemap(n) => {
                (5u8, n).hash(&mut h);
                for j in self.sitemap_part(n) {
                    match self.job(j) {
                        // The key covers `updated` (the item's file).
                        Job::Item(idx) => self.key(idx).hash(&mut h),
                        Job::Term(t, n) => (&self.terms[t].slug, n).hash(&mut h),
                        Job::Month(l, m) => (l, self.months[l][m]).hash(&mut h),
                        Job::DigestIndex(d) => self.archives[d].name.hash(&mut h),
                        Job::DigestRun(d, r) => self.archives[d].runs[r].id.hash(&mut h),
                        job => job.hash(&mut h),
                    }
                }
            }
            Job::Stylesheet => 6u8.hash(&mut h),
        }
        h.finish()
    }

    fn page_slice<'s>(&self, v: &'s [usize], n: usize) -> &'s [usize] {
        let per = self.meta.per_page;
        let from = ((n - 1) * per).min(v.len());
        &v[from..(from + per).min(v.len())]
    }

    /// The page jobs that sitemap file `n` lists: the list and archive pages, then the item
    /// pages oldest first (so that a new item changes the last file, not every one).
    fn sitemap_part(&self, n: usize) -> impl Iterator<Item = usize> + '_ {
        let range = if n == 0 {
            if self.page_jobs > sitemap_limit() {
                0..0
            } else {
                0..self.page_jobs
            }
        } else {
            let from = (n - 1) * sitemap_limit();
            from..(from + sitemap_limit()).min(self.page_jobs)
        };
        // Item pages are the first jobs, in `listed` order (newest first).
        let items = self.listed.len();
        let others = self.page_jobs - items;
        range.map(move |k| {
            if k < others {
                items + k
            } else {
                items - 1 - (k - others)
            }
        })
    }

    /// The bytes of page `i`.
    pub fn render(&self, i: usize) -> anyhow::Result<Vec<u8>> {
        let html = match self.job(i) {
            Job::Index(n) => self.render_list(i, None, &self.listed, n),
            Job::Term(t, n) => self.render_list(i, Some(t), &self.terms[t].items, n),
            Job::Month(l, m) => self.render_month(i, l, m),
            Job::Item(idx) => self.render_item(i, idx),
            Job::DigestIndex(d) => self.render_digest_index(i, d),
            Job::DigestRun(d, r) => self.render_run(i, d, r),
            Job::Sitemap(n) => return Ok(self.render_sitemap(n).into_bytes()),
            Job::Stylesheet => self.lang.render("style.css", ()),
        }?;
        Ok(html.into_bytes())
    }

    fn base(&self, i: usize, alternates: Vec<Alternate>) -> Base<'a> {
        let m = self.meta;
        Base {
            lang: &self.lang.code,
            site_title: &m.site_title,
            privacy_url: m.privacy_url.as_deref(),
            imprint_url: m.imprint_url.as_deref(),
            accessibility_url: m.accessibility_url.as_deref(),
            languages: [],
            home_url: m.url(""),
            subscribe_url: &m.subscribe_url,
            noindex: m.noindex,
            stylesheet: m.url("style.css"),
            alternates,
            canonical: m.url(&self.url_path(i)),
        }
    }

    /// Renders template `name` with `page`'s fields beside those every page has.
    fn page<T: Serialize>(
        &self,
        name: &str,
        i: usize,
        alternates: Vec<Alternate>,
        page: T,
    ) -> anyhow::Result<String> {
        #[derive(Serialize)]
        struct Page<'b, T> {
            #[serde(flatten)]
            base: Base<'b>,
            #[serde(flatten)]
            page: T,
        }
        self.lang.render(
            name,
            Page {
                base: self.base(i, alternates),
                page,
            },
        )
    }

    /// The feeds of the site (`None`) or of a term.
    fn alternates(&self, term: Option<usize>) -> Vec<Alternate> {
        let m = self.meta;
        let (dir, title) = match term.map(|t| &self.terms[t]) {
            Some(t)
                if (t.kind == TermKind::Tag && m.per_tag)
                    || (t.kind == TermKind::Category && m.per_category) =>
            {
                (
                    format!("{}/{}/", t.kind.dir(), t.slug),
                    format!("{} – {}", m.site_title, t.name),
                )
            }
            _ => (String::new(), m.site_title.clone()),
        };
        m.formats
            .iter()
            .map(|&f| Alternate {
                href: format!("{}/{dir}{}", m.feeds_url, f.file_name()),
                mime: f.content_type(),
                title: format!("{title} ({})", format_name(f)),
                name: format_name(f),
            })
            .collect()
    }

    fn entry(&self, idx: usize) -> Entry<'_> {
        self.entry_with_lead(idx, lead_of(&self.items[idx]))
    }

    fn entry_with_lead(&self, idx: usize, lead: String) -> Entry<'_> {
        let item = &self.items[idx];
        let m = self.meta;
        Entry {
            anchor: format!(
                "m{:016x}",
                crate::content::item::stable_hash(item.id.as_bytes())
            ),
            title: &item.title,
            url: m.url(&item_path(item)),
            date_iso: item.date.to_rfc3339(),
            date: self.lang.long_date(&item.date),
            lead,
            category: match (&item.category, &item.category_slug) {
                (Some(name), Some(slug)) if !slug.is_empty() => Some(Link {
                    name,
                    url: m.url(&format!("categories/{slug}/")),
                }),
                _ => None,
            },
            tags: item
                .tags
                .iter()
                .zip(&item.tag_slugs)
                .filter(|(_, s)| !s.is_empty())
                .map(|(name, slug)| Link {
                    name,
                    url: m.url(&format!("tags/{slug}/")),
                })
                .collect(),
        }
    }

    /// The item as lists show it (`pages/entry.html`), rendered once per item: the index,
    /// tag, category and run pages then only put entries together.
    fn entry_value(&self, idx: usize) -> anyhow::Result<minijinja::Value> {
        if let Some(v) = self.entries.slot(idx).get() {
            return Ok(v.clone());
        }
        if let Some(v) = self.cache.get(self.key(idx), self.settings) {
            return Ok(v.clone());
        }
        let v = self.entry_html(&self.entry(idx))?;
        let _ = self.entries.slot(idx).set(v.clone());
        Ok(v)
    }

    fn entry_html(&self, entry: &Entry) -> anyhow::Result<minijinja::Value> {
        #[derive(Serialize)]
        struct Ctx<'e, 'f> {
            e: &'e Entry<'f>,
        }
        let html = self.lang.render("pages/entry.html", Ctx { e: entry })?;
        Ok(minijinja::Value::from_safe_string(html))
    }

    fn render_list(
        &self,
        i: usize,
        term: Option<usize>,
        all: &[usize],
        n: usize,
    ) -> anyhow::Result<String> {
        let l = term.map_or(0, |t| t + 1);
        let pages = pages_of(all.len(), self.meta);
        let prefix = self.list_prefix(l);
        let older = if n < pages {
            Some(self.meta.url(&list_path(&prefix, n + 1)))
        } else {
            self.after_pages(l)
                .map(|m| self.meta.url(&month_path(&prefix, m)))
        };
        let pager = Pager {
            page: n,
            pages,
            front: n == 1,
            label: self.lang.t(
                "pages.page",
                &[("page", &n.to_string()), ("pages", &pages.to_string())],
            ),
            newer: (n > 1).then(|| self.meta.url(&list_path(&prefix, n - 1))),
            older,
        };
        self.render_entries(i, term, self.page_slice(all, n), pager)
    }

    /// The page of month (or year) `m` of list `l`: every item of it, newest first.
    fn render_month(&self, i: usize, l: usize, m: usize) -> anyhow::Result<String> {
        let months = &self.months[l];
        let month = &months[m];
        let prefix = self.list_prefix(l);
        let newer = match m {
            0 => list_path(&prefix, 1),
            m => month_path(&prefix, &months[m - 1]),
        };
        let first = self.items[self.list(l)[month.from]].date;
        let pager = Pager {
            page: 0,
            pages: pages_of(self.list(l).len(), self.meta),
            front: false,
            label: match month.month {
                0 => month.year.to_string(),
                _ => self.lang.t(
                    "pages.month",
                    &[
                        ("month", &self.lang.month_name(&first)),
                        ("year", &month.year.to_string()),
                    ],
                ),
            },
            newer: Some(self.meta.url(&newer)),
            older: months
                .get(m + 1)
                .map(|o| self.meta.url(&month_path(&prefix, o))),
        };
        let term = l.checked_sub(1);
        self.render_entries(i, term, &self.list(l)[month.from..month.to], pager)
    }

    fn render_entries(
        &self,
        i: usize,
        term: Option<usize>,
        shown: &[usize],
        pager: Pager,
    ) -> anyhow::Result<String> {
        let heading = match term.map(|t| &self.terms[t]) {
            None => self.meta.site_title.clone(),
            Some(t) => match t.kind {
                TermKind::Tag => self.lang.t("pages.tag", &[("name", &t.name)]),
                TermKind::Category => self.lang.t("pages.category", &[("name", &t.name)]),
            },
        };
        let entries: Vec<minijinja::Value> = shown
            .iter()
            .map(|&idx| self.entry_value(idx))
            .collect::<anyhow::Result<_>>()?;
        #[derive(Serialize)]
        struct List<'e> {
            heading: String,
            is_index: bool,
            description: Option<&'e str>,
            entries: Vec<minijinja::Value>,
            pager: Pager,
        }
        let list = List {
            heading,
            is_index: term.is_none(),
            description: term.is_none().then_some(self.meta.description.as_str()),
            entries,
            pager,
        };
        self.page("pages/list.html", i, self.alternates(term), list)
    }

    fn render_item(&self, i: usize, idx: usize) -> anyhow::Result<String> {
        let item = &self.items[idx];
        let body = self
            .shared
            .and_then(|s| s.take(idx))
            .unwrap_or_else(|| item.render());
        let entry = self.entry_with_lead(idx, body.summary);
        if self.entries.slot(idx).get().is_none() {
            let _ = self.entries.slot(idx).set(self.entry_html(&entry)?);
        }
        let entry = minijinja::Value::from(minijinja::value::Serde(entry));
        #[derive(Serialize)]
        struct ItemPage<'e> {
            item: minijinja::Value,
            summary: Option<&'e str>,
            body: String,
            author: &'e str,
            updated: Option<String>,
            updated_iso: String,
        }
        let page = ItemPage {
            item: entry,
            summary: item.summary.as_deref(),
            body: body.html,
            author: &item.author,
            updated: (item.updated > item.date).then(|| self.lang.long_date(&item.updated)),
            updated_iso: item.updated.to_rfc3339(),
        };
        self.page("pages/item.html", i, self.alternates(None), page)
    }

    fn render_digest_index(&self, i: usize, d: usize) -> anyhow::Result<String> {
        let a = &self.archives[d];
        let runs: Vec<_> = a
            .runs
            .iter()
            .zip(&self.run_items[d])
            .map(|(run, items)| {
                let date = self.run_date(run);
                RunLink {
                    url: self.meta.url(&run_path(&a.name, run.id)),
                    date_iso: date.to_rfc3339(),
                    date: self.lang.long_date(&date),
                    count: items.len(),
                }
            })
            .collect();
        #[derive(Serialize)]
        struct RunLink {
            url: String,
            date_iso: String,
            date: String,
            count: usize,
        }
        #[derive(Serialize)]
        struct Archive<'e> {
            title: &'e str,
            runs: Vec<RunLink>,
        }
        let page = Archive {
            title: self.digest_title(d),
            runs,
        };
        self.page("pages/digests.html", i, self.alternates(None), page)
    }

    fn render_run(&self, i: usize, d: usize, r: usize) -> anyhow::Result<String> {
        let a = &self.archives[d];
        let run = &a.runs[r];
        let date = self.run_date(run);
        let entries: Vec<minijinja::Value> = self.run_items[d][r]
            .iter()
            .map(|&idx| self.entry_value(idx))
            .collect::<anyhow::Result<_>>()?;
        #[derive(Serialize)]
        struct RunPage<'e> {
            title: &'e str,
            date: String,
            date_iso: String,
            archive_url: String,
            entries: Vec<minijinja::Value>,
            missing: usize,
        }
        let page = RunPage {
            title: self.digest_title(d),
            date: self.lang.long_date(&date),
            date_iso: date.to_rfc3339(),
            archive_url: self.meta.url(&format!("digests/{}/", a.name)),
            entries,
            missing: run.items.len() - self.run_items[d][r].len(),
        };
        self.page("pages/run.html", i, self.alternates(None), page)
    }

    fn digest_title(&self, d: usize) -> &str {
        let name = &self.archives[d].name;
        self.meta
            .archived_digests
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.as_str())
            .unwrap_or(name)
    }

    fn run_date(&self, run: &ArchivedRun) -> DateTime<FixedOffset> {
        DateTime::from_timestamp(run.started_at, 0)
            .unwrap_or_default()
            .with_timezone(&self.meta.timezone)
            .fixed_offset()
    }

    fn render_sitemap(&self, n: usize) -> String {
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        if n == 0 && self.page_jobs > sitemap_limit() {
            out.push_str("<sitemapindex xmlns=\"http://www.sitemaps.org/schemas/sitemap/0.9\">\n");
            for k in 1..=self.page_jobs.div_ceil(sitemap_limit()) {
                out.push_str(&format!(
                    "<sitemap><loc>{}</loc></sitemap>\n",
                    crate::content::text::escape_html(&self.meta.url(&format!("sitemap-{k}.xml")))
                ));
            }
            out.push_str("</sitemapindex>\n");
            return out;
        }
        out.push_str("<urlset xmlns=\"http://www.sitemaps.org/schemas/sitemap/0.9\">\n");
        let base = crate::content::text::escape_html(&self.meta.url(""));
        for j in self.sitemap_part(n) {
            out.push_str("<url><loc>");
            out.push_str(&base);
            match self.job(j) {
                Job::Item(idx) => {
                    let item = &self.items[idx];
                    push_escaped(&mut out, item.page_path());
                    out.push_str("</loc><lastmod>");
                    out.push_str(
                        &item
                            .updated
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    );
                    out.push_str("</lastmod>");
                }
                _ => {
                    push_escaped(&mut out, &self.url_path(j));
                    out.push_str("</loc>");
                }
            }
            out.push_str("</url>\n");
        }
        out.push_str("</urlset>\n");
        out
    }
}

/// Appends `s` to `out`, escaped for XML (a page path rarely needs it).
fn push_escaped(out: &mut String, s: &str) {
    if s.bytes().any(|b| matches!(b, b'&' | b'<' | b'>' | b'"')) {
        out.push_str(&crate::content::text::escape_html(s));
    } else {
        out.push_str(s);
    }
}

fn format_name(f: Format) -> &'static str {
    match f {
        Format::Rss => "RSS",
        Format::Atom => "Atom",
        Format::Json => "JSON Feed",
    }
}

/// What [`write_pages`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PageStats {
    /// Pages rendered (the others were known to be on disk as they are).
    pub rendered: usize,
    pub changed: usize,
    pub unchanged: usize,
    pub removed: usize,
}

/// Renders and writes the pages of `plan` below `dir` whose fingerprint `known` does not
/// record (each atomically, only if its bytes change), removes the pages herold wrote
/// earlier that are no longer part of the plan, and records the new fingerprints in `known`
/// and in the manifest. With `verify`, a page `known` records is rendered anyway when its
/// file is missing (`known` was read from the manifest, not kept by this process). With
/// `sync`, the pages are on disk when this returns (one `syncfs`); without, they are
/// written atomically but left to the kernel to flush (the daemon: it renders and compares
/// every page when it starts, so a power cut cannot leave a stale page behind).
pub fn write_pages(
    dir: &Path,
    plan: &PagePlan,
    known: &mut Manifest,
    verify: bool,
    sync: bool,
) -> anyhow::Result<PageStats> {
    let fingerprints: Vec<u64> = (0..plan.len()).map(|i| plan.fingerprint(i)).collect();
    let selected: Vec<bool> = fingerprints
        .iter()
        .enumerate()
        .map(|(i, f)| {
            !known.fingerprints.contains(f) || (verify && !dir.join(plan.path(i)).is_file())
        })
        .collect();
    let mut stats = write_selected(dir, plan, &|i| selected[i], sync)?;
    stats.rendered = selected.iter().filter(|&&s| s).count();
    // Rendered pages replace what their paths showed before, or came.
    let mut came = String::new();
    let mut came_lines = 0;
    for (i, &f) in fingerprints.iter().enumerate() {
        if !selected[i] {
            continue;
        }
        let path = plan.path(i);
        if !known.by_path.contains_key(&path) {
            push_manifest_line(&mut came, &path, f);
            came_lines += 1;
        }
        known.insert(path, Some(f));
    }
    // Pages herold wrote that the plan no longer has: only then is every page looked at.
    let mut gone = false;
    if known.by_path.len() > plan.len() {
        let planned: FxHashSet<u64> = fingerprints.iter().copied().collect();
        let stale: Vec<String> = known
            .by_path
            .iter()
            .filter(|(_, f)| !planned.contains(f))
            .map(|(p, _)| p.clone())
            .collect();
        for rel in stale {
            if let Some(f) = known.by_path.remove(&rel) {
                known.fingerprints.remove(&f);
            }
            gone = true;
            if !safe_relative(&rel) {
                continue;
            }
            match std::fs::remove_file(dir.join(&rel)) {
                Ok(()) => stats.removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
            prune_empty_dirs(dir, &rel);
        }
    }
    let file = dir.join(MANIFEST);
    if sync || gone || known.lines > 2 * known.len() + 1000 || !file.exists() {
        write_manifest(&file, known)?;
    } else if came_lines > 0 {
        // Pages only came: the daemon appends them rather than writing every line again
        // (the fingerprints in the file need not be current: the daemon renders every page
        // and compares it with its file when it starts).
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(&file)?
            .write_all(came.as_bytes())?;
        known.lines += came_lines;
    }
    Ok(stats)
}

/// Writes the manifest whole: one line per page, its path and fingerprint.
fn write_manifest(file: &Path, known: &mut Manifest) -> anyhow::Result<()> {
    let mut lines: Vec<(&str, u64)> = known
        .by_path
        .iter()
        .map(|(p, f)| (p.as_str(), *f))
        .collect();
    lines.sort_unstable();
    let mut list = String::with_capacity(lines.len() * 60);
    for (p, f) in &lines {
        // 0: contents not known.
        let f = if known.fingerprints.contains(f) {
            *f
        } else {
            0
        };
        push_manifest_line(&mut list, p, f);
    }
    write_if_changed(file, list.as_bytes())?;
    known.lines = lines.len();
    Ok(())
}

fn push_manifest_line(out: &mut String, path: &str, fingerprint: u64) {
    use std::fmt::Write;
    out.push_str(path);
    let _ = writeln!(out, "\t{fingerprint:016x}");
}

/// The pages herold wrote below `dir` and their fingerprints, from the manifest. A line
/// without a fingerprint (an older manifest) gives a page whose contents are not known,
/// and a line cut short by a crash while it was appended is no page.
pub fn read_manifest(dir: &Path) -> Manifest {
    let text = std::fs::read_to_string(dir.join(MANIFEST)).unwrap_or_default();
    let mut by_path: FxHashMap<&str, Option<u64>> = FxHashMap::default();
    let mut lines = 0;
    for line in text.split_inclusive('\n') {
        let Some(line) = line.strip_suffix('\n') else {
            continue;
        };
        lines += 1;
        match line.split_once('\t') {
            Some((p, f)) if f.len() == 16 => {
                if let Ok(f) = u64::from_str_radix(f, 16) {
                    by_path.insert(p, Some(f).filter(|&f| f != 0));
                }
            }
            Some(_) => {}
            None if line.ends_with("index.html")
                || line.ends_with(".xml")
                || line.ends_with(".css") =>
            {
                by_path.insert(line, None);
            }
            None => {}
        }
    }
    let mut m = Manifest::default();
    for (p, f) in by_path {
        m.insert(p.to_string(), f);
    }
    m.lines = lines;
    m
}

/// Writes the pages `select(i)` picks, and nothing else: no page is removed and the
/// manifest stays as it is (for a digest run's pages, written beside a daemon that owns
/// the rest; its next build lists them).
pub fn write_only(
    dir: &Path,
    plan: &PagePlan,
    select: &(dyn Fn(usize) -> bool + Sync),
) -> anyhow::Result<PageStats> {
    write_selected(dir, plan, select, true)
}

fn write_selected(
    dir: &Path,
    plan: &PagePlan,
    select: &(dyn Fn(usize) -> bool + Sync),
    sync: bool,
) -> anyhow::Result<PageStats> {
    let mut stats = PageStats::default();
    let picked: Vec<usize> = (0..plan.len()).filter(|&i| select(i)).collect();
    stats.unchanged = plan.len() - picked.len();
    let failure = std::sync::Mutex::new(None);
    let flush = if sync { Flush::Here } else { Flush::Kernel };
    let written = write_batch_if_changed(dir, flush, picked.len(), |k| {
        let i = picked[k];
        let bytes = plan.render(i).unwrap_or_else(|e| {
            failure
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert(e);
            Vec::new()
        });
        (dir.join(plan.path(i)), bytes)
    });
    if let Some(e) = failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    for w in written? {
        match w {
            Written::Changed => stats.changed += 1,
            Written::Unchanged => stats.unchanged += 1,
        }
    }
    Ok(stats)
}

/// A manifest line herold may act on: relative, without `..`.
fn safe_relative(rel: &str) -> bool {
    !rel.starts_with('/')
        && rel
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..")
}

/// Removes the directories of `rel` that became empty, innermost first, never `dir` itself.
fn prune_empty_dirs(dir: &Path, rel: &str) {
    let mut parts: Vec<&str> = rel.split('/').collect();
    parts.pop();
    while !parts.is_empty() {
        if std::fs::remove_dir(dir.join(parts.join("/"))).is_err() {
            return;
        }
        parts.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn corpus(n: usize) -> (Config, Vec<Arc<Item>>) {
        corpus_with(n, "", |i| {
            format!("2026-01-{:02}T{:02}:00:00+01:00", 1 + i / 24, i % 24)
        })
    }

    /// `n` items, item `i` dated `date(i)`, four a page and `pages` added to `[pages]`.
    fn corpus_with(
        n: usize,
        pages: &str,
        date: impl Fn(usize) -> String,
    ) -> (Config, Vec<Arc<Item>>) {
        let config = Config::parse(
            &format!("[site]\ntitle = \"T\"\nbase_url = \"https://www.fitko.de\"\n[server]\npublic_url = \"https://n.example.org\"\n[pages]\nper_page = 4\n{pages}"),
            "config.toml",
            &[],
            Path::new("/srv"),
        )
        .unwrap();
        let site = crate::content::SiteContext::from_config(&config);
        let mut items: Vec<Arc<Item>> = (0..n)
            .map(|i| {
                let text = format!(
                    "+++\ntitle = \"Meldung {i}\"\ndate = {}\ntags = [\"OZG\"]\n+++\nText {i}.\n",
                    date(i)
                );
                Arc::new(
                    crate::content::item::parse_item(&format!("m{i}.md"), text.as_bytes(), &site)
                        .unwrap(),
                )
            })
            .collect();
        items.sort_by_key(|i| std::cmp::Reverse(i.date));
        (config, items)
    }

    /// What `f` makes of the plan of `n` items.
    fn with_plan<T>(n: usize, f: impl FnOnce(&PagePlan) -> T) -> T {
        plan_of(corpus(n), f)
    }

    fn plan_of<T>((config, items): (Config, Vec<Arc<Item>>), f: impl FnOnce(&PagePlan) -> T) -> T {
        let templates = crate::templates::Templates::for_config(&config).unwrap();
        let meta = PageMeta::from_config(&config);
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-01T00:00:00+01:00").unwrap();
        let cache = EntryCache::default();
        f(&plan(
            &items,
            None,
            now,
            &meta,
            templates.default_language(),
            &[],
            &cache,
        ))
    }

    #[test]
    fn a_sitemap_past_the_limit_becomes_an_index_of_parts() {
        TEST_SITEMAP_LIMIT.with(|l| l.set(Some(10)));
        let files: Vec<(String, String)> = with_plan(30, |plan| {
            (0..plan.len())
                .filter(|&i| plan.path(i).starts_with("sitemap"))
                .map(|i| {
                    (
                        plan.path(i),
                        String::from_utf8(plan.render(i).unwrap()).unwrap(),
                    )
                })
                .collect()
        });
        TEST_SITEMAP_LIMIT.with(|l| l.set(None));
        // 30 item pages, 8 index pages, 8 tag pages: 46 URLs in 5 parts of at most 10.
        assert_eq!(
            files.len(),
            6,
            "{:?}",
            files.iter().map(|f| &f.0).collect::<Vec<_>>()
        );
        let (_, index) = files.iter().find(|(p, _)| p == "sitemap.xml").unwrap();
        assert!(index.contains("<sitemapindex"), "{index}");
        assert_eq!(index.matches("<sitemap>").count(), 5);
        assert!(index.contains("<loc>https://n.example.org/aktuelles/sitemap-5.xml</loc>"));
        let urls: usize = files
            .iter()
            .filter(|(p, _)| p != "sitemap.xml")
            .map(|(_, x)| {
                assert!(x.matches("<url>").count() <= 10);
                x.matches("<url>").count()
            })
            .sum();
        assert_eq!(urls, 46);
    }

    #[test]
    fn pagination_is_newest_first_and_every_item_is_listed_once() {
        let pages: HashMap<String, String> = with_plan(10, |plan| {
            (0..plan.len())
                .map(|i| {
                    let bytes = plan.render(i).unwrap();
                    (plan.path(i), String::from_utf8(bytes).unwrap())
                })
                .collect()
        });
        let page = |p: &str| pages[p].clone();
        let mut seen = Vec::new();
        for p in ["index.html", "page/2/index.html", "page/3/index.html"] {
            let html = page(p);
            for k in (0..10).rev() {
                if html.contains(&format!(">Meldung {k}</a>")) {
                    seen.push(k);
                }
            }
        }
        assert_eq!(seen, (0..10).rev().collect::<Vec<_>>());
        assert!(page("index.html").contains("rel=\"next\""));
        assert!(!page("page/3/index.html").contains("rel=\"next\""));
        assert!(page("page/3/index.html").contains("Seite 3 von 3"));
    }

    /// Items of three months, four a page, at most two pages newest first.
    #[test]
    fn a_manifest_line_cut_short_is_no_page() {
        let dir = std::env::temp_dir().join(format!("herold-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(MANIFEST),
            "a/index.html\t00000000000000ff\nold/index.html\nz/index.html\t0000000000000000\ngarbage\nb/index.html\t00000000000000ee\ncut/index.html\t0000",
        )
        .unwrap();
        let m = read_manifest(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        let mut paths: Vec<&str> = m.by_path.keys().map(String::as_str).collect();
        paths.sort();
        assert_eq!(
            paths,
            [
                "a/index.html",
                "b/index.html",
                "old/index.html",
                "z/index.html"
            ]
        );
        // Known contents only where a fingerprint was written (0: not known).
        assert!(m.fingerprints.contains(&0xff) && m.fingerprints.contains(&0xee));
        assert_eq!(m.fingerprints.len(), 2);
        assert_eq!(m.lines, 5);
    }

    /// Ten items a month from December 2025, four a page, at most two pages newest first.
    #[test]
    fn galloping_finds_what_a_binary_search_finds() {
        for len in 0..70 {
            let v: Vec<usize> = (0..len).map(|i| i * 3).collect();
            for x in 0..len * 3 + 2 {
                assert_eq!(
                    gallop(&v, |&i| i < x),
                    v.partition_point(|&i| i < x),
                    "len {len}, x {x}"
                );
            }
        }
    }

    fn months_corpus(n: usize) -> (Config, Vec<Arc<Item>>) {
        corpus_with(n, "max_pages = 2\n", |i| match i / 10 {
            0 => format!("2025-12-{:02}T12:00:00+01:00", 1 + i % 10),
            m => format!("2026-{m:02}-{:02}T12:00:00+01:00", 1 + i % 10),
        })
    }

    fn rendered(plan: &PagePlan) -> HashMap<String, (u64, String)> {
        (0..plan.len())
            .map(|i| {
                let html = String::from_utf8(plan.render(i).unwrap()).unwrap();
                (plan.path(i), (plan.fingerprint(i), html))
            })
            .collect()
    }

    #[test]
    fn a_long_list_goes_on_by_month_and_a_new_item_moves_no_older_page() {
        let before = plan_of(months_corpus(30), rendered);
        let page = |p: &str| &before[p].1;
        // Two pages newest first, then the months: the last page links the month of the
        // first item it does not show (item 21, the ninth newest, is in February).
        assert!(before.contains_key("page/2/index.html"));
        assert!(!before.contains_key("page/3/index.html"));
        assert!(
            page("page/2/index.html")
                .contains("href=\"https://n.example.org/aktuelles/2026/02/\" rel=\"next\""),
            "{}",
            page("page/2/index.html")
        );
        // Every item on its month's page, February to December by the older links.
        let mut seen = Vec::new();
        let mut at = "2026/02/index.html".to_string();
        loop {
            let html = page(&at);
            for k in (0..30).rev() {
                if html.contains(&format!(">Meldung {k}</a>")) {
                    seen.push(k);
                }
            }
            match html
                .split("\" rel=\"next\"")
                .next()
                .and_then(|h| h.rsplit("href=\"https://n.example.org/aktuelles/").next())
            {
                Some(next) if html.contains("rel=\"next\"") => at = format!("{next}index.html"),
                _ => break,
            }
        }
        assert_eq!(seen, (0..30).rev().collect::<Vec<_>>());
        assert!(page("2026/02/index.html").contains("Februar 2026"));
        assert!(
            page("2026/02/index.html")
                .contains("href=\"https://n.example.org/aktuelles/\" rel=\"prev\"")
        );
        // A tag goes on by year.
        assert!(page("tags/ozg/2025/index.html").contains("(2025)"));
        assert!(page("tags/ozg/2026/index.html").contains(">Meldung 10</a>"));
        assert!(!before.contains_key("tags/ozg/2026/01/index.html"));
        // A new newest item: the newest-first pages, its month (March), the month before
        // it (whose newer link now goes to March instead of the index), its tag's year, its
        // own page and the sitemap change; January and December stay as they were.
        let after = plan_of(months_corpus(31), rendered);
        let mut changed: Vec<&str> = after
            .iter()
            .filter(|(p, (f, _))| before.get(*p).map(|b| b.0) != Some(*f))
            .map(|(p, _)| p.as_str())
            .collect();
        changed.sort();
        assert_eq!(
            changed,
            [
                "2026/03/01/m30/index.html",
                "2026/03/index.html",
                "2026/02/index.html",
                "index.html",
                "page/2/index.html",
                "sitemap.xml",
                "tags/ozg/2026/index.html",
                "tags/ozg/index.html",
                "tags/ozg/page/2/index.html",
            ]
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
        );
        for (p, (f, html)) in &after {
            if before.get(p).map(|b| b.0) == Some(*f) {
                assert_eq!(&before[p].1, html, "{p}: same fingerprint, other bytes");
            }
        }
    }
}
