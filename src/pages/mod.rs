//! The news as HTML pages (SPEC 10): the index with pagination, one page per item, the tag
//! and category pages, the digest archive and the sitemap. [`plan`] decides which pages
//! exist and what each shows; [`write_pages`] renders and writes them by the rules of the
//! feeds (atomically, only when the bytes change, stale pages removed).
//!
//! Pages are files below `pages.dir`, so any web server can serve them; herold serves them
//! too (`web::pages`). Which files herold wrote is kept in a manifest (`.herold-pages`), so
//! removing a page never touches a file somebody else put there.

use std::collections::{BTreeSet, HashMap};

use rustc_hash::FxHashMap;
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

/// URLs per sitemap file (the sitemap protocol's limit is 50,000).
const SITEMAP_LIMIT: usize = 50_000;

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

/// The pages written and their fingerprints, by path below `pages.dir`.
pub type Manifest = FxHashMap<String, u64>;

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
    /// A slot per corpus position, filled where the cache knows the item's entry.
    fn slots(&self, keys: &[u64], settings: u64) -> Vec<OnceLock<minijinja::Value>> {
        keys.iter()
            .map(|k| {
                let slot = OnceLock::new();
                if settings == self.settings
                    && let Some(entry) = self.entries.get(k)
                {
                    let _ = slot.set(entry.clone());
                }
                slot
            })
            .collect()
    }

    /// Keeps the entries `plan` made, and forgets those of items it no longer lists.
    pub fn absorb(&mut self, plan: &PagePlan) {
        if self.settings != plan.settings {
            self.entries.clear();
            self.settings = plan.settings;
        }
        for &i in &plan.listed {
            if let Some(entry) = plan.entries[i].get() {
                self.entries.insert(plan.keys[i], entry.clone());
            }
        }
        if self.entries.len() > plan.listed.len() {
            let keep: std::collections::HashSet<u64> =
                plan.listed.iter().map(|&i| plan.keys[i]).collect();
            self.entries.retain(|k, _| keep.contains(k));
        }
    }
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
    /// Each item as lists show it, made once for the index, tag and category pages.
    entries: Vec<OnceLock<minijinja::Value>>,
    /// Published items with a page, newest first.
    listed: Vec<usize>,
    terms: Vec<Term>,
    archives: &'a [DigestArchive],
    /// Per archive and run: the corpus positions of the run's items still published.
    run_items: Vec<Vec<Vec<usize>>>,
    jobs: Vec<Job>,
    /// How many of `jobs` are pages (they come first; the sitemap lists them).
    page_jobs: usize,
    /// Page URL clashes (errors naming both files).
    pub problems: Vec<Problem>,
    /// A hash of the settings and templates every page depends on.
    settings: u64,
    /// Per corpus position: what identifies the item's file and its contents.
    keys: Vec<u64>,
    /// Bodies already rendered in this build (for the archive documents).
    shared: Option<&'a crate::build::SharedBodies>,
}

fn pages_of(n: usize, per_page: usize) -> usize {
    n.div_ceil(per_page).max(1)
}

fn list_path(prefix: &str, page: usize) -> String {
    match page {
        1 => prefix.to_string(),
        n => format!("{prefix}page/{n}/"),
    }
}

/// Decides every page of `items` (a corpus's, newest first) as it stands at `now`.
pub fn plan<'a>(
    items: &'a [Arc<Item>],
    now: DateTime<FixedOffset>,
    meta: &'a PageMeta,
    lang: &'a Language,
    archives: &'a [DigestArchive],
    cache: &EntryCache,
) -> PagePlan<'a> {
    let start = crate::feed::published_from(items, now);
    let settings =
        crate::content::item::stable_hash(format!("{meta:?}\0{}", lang.fingerprint).as_bytes());
    let (listed, problems) = page_owners(items, start);
    // Terms, keyed by slug; named by the first spelling in sort order (as the feeds are).
    let mut tags: FxHashMap<&str, (&str, Vec<usize>)> = FxHashMap::default();
    let mut cats: FxHashMap<&str, (&str, Vec<usize>)> = FxHashMap::default();
    for &i in &listed {
        let item = &items[i];
        for (t, slug) in item.tags.iter().zip(&item.tag_slugs) {
            if slug.is_empty() {
                continue;
            }
            let e = tags.entry(slug).or_insert((t, Vec::new()));
            if t.as_str() < e.0 {
                e.0 = t;
            }
            e.1.push(i);
        }
        if let (Some(c), Some(slug)) = (&item.category, &item.category_slug)
            && !slug.is_empty()
        {
            let e = cats.entry(slug).or_insert((c, Vec::new()));
            if c.as_str() < e.0 {
                e.0 = c;
            }
            e.1.push(i);
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
    // Only digest archives look items up by id.
    let by_id: HashMap<&str, usize> = if archives.is_empty() {
        HashMap::new()
    } else {
        listed.iter().map(|&i| (items[i].id.as_str(), i)).collect()
    };
    let run_items: Vec<Vec<Vec<usize>>> = archives
        .iter()
        .map(|a| {
            a.runs
                .iter()
                .map(|r| {
                    r.items
                        .iter()
                        .filter_map(|id| by_id.get(id.as_str()).copied())
                        .collect()
                })
                .collect()
        })
        .collect();

    let per = meta.per_page;
    // Item pages first: rendering one gives its lead from the same parse, and the list
    // pages after them find their entries made.
    let mut jobs: Vec<Job> = listed.iter().map(|&i| Job::Item(i)).collect();
    jobs.extend((1..=pages_of(listed.len(), per)).map(Job::Index));
    for (t, term) in terms.iter().enumerate() {
        jobs.extend((1..=pages_of(term.items.len(), per)).map(|n| Job::Term(t, n)));
    }
    for (d, a) in archives.iter().enumerate() {
        jobs.push(Job::DigestIndex(d));
        jobs.extend((0..a.runs.len()).map(|r| Job::DigestRun(d, r)));
    }
    let page_jobs = jobs.len();
    let parts = if page_jobs > sitemap_limit() {
        page_jobs.div_ceil(sitemap_limit())
    } else {
        0
    };
    jobs.extend((0..=parts).map(Job::Sitemap));
    jobs.push(Job::Stylesheet);
    let keys: Vec<u64> = items
        .iter()
        .map(|it| {
            it.content_hash
                ^ crate::content::item::stable_hash(it.path.as_bytes()).rotate_left(17)
                ^ crate::content::item::stable_hash(it.id.as_bytes()).rotate_left(41)
        })
        .collect();
    PagePlan {
        items,
        meta,
        lang,
        entries: cache.slots(&keys, settings),
        listed,
        terms,
        archives,
        run_items,
        jobs,
        page_jobs,
        problems,
        settings,
        keys,
        shared: None,
    }
}

/// Published items whose pages would have the same URL (for `herold check`).
pub fn url_clashes(items: &[Arc<Item>], now: DateTime<FixedOffset>) -> Vec<Problem> {
    page_owners(items, crate::feed::published_from(items, now)).1
}

/// The published items that get a page, newest first: of two items whose pages would have
/// the same URL, the first file in path order keeps it and the other is an error.
fn page_owners(items: &[Arc<Item>], start: usize) -> (Vec<usize>, Vec<Problem>) {
    use chrono::Datelike;
    let mut owner: FxHashMap<(i32, u32, u32, &str), usize> =
        FxHashMap::with_capacity_and_hasher(items.len() - start, Default::default());
    let mut clashes = Vec::new();
    for i in start..items.len() {
        let d = items[i].date;
        let key = (d.year(), d.month(), d.day(), items[i].slug.as_str());
        match owner.get_mut(&key) {
            None => {
                owner.insert(key, i);
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
    let listed = (start..items.len())
        .filter(|i| !losers.contains(i))
        .collect();
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
    page: usize,
    pages: usize,
    newer: Option<String>,
    older: Option<String>,
}

impl<'a> PagePlan<'a> {
    /// How many files.
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Takes item bodies from `shared` where it has them instead of rendering them again.
    pub fn share_bodies(&mut self, shared: &'a crate::build::SharedBodies) {
        self.shared = Some(shared);
    }

    /// Whether page `i` belongs to the archive of digest `name`.
    pub fn is_archive_of(&self, i: usize, name: &str) -> bool {
        match self.jobs[i] {
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
        match self.jobs[i] {
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
        match self.jobs[i] {
            Job::Index(n) => list_path("", n),
            Job::Item(idx) => item_path(&self.items[idx]),
            Job::Term(t, n) => list_path(&self.term_prefix(t), n),
            Job::DigestIndex(d) => format!("digests/{}/", self.archives[d].name),
            Job::DigestRun(d, r) => run_path(&self.archives[d].name, self.archives[d].runs[r].id),
            Job::Sitemap(_) | Job::Stylesheet => String::new(),
        }
    }

    fn term_prefix(&self, t: usize) -> String {
        let term = &self.terms[t];
        format!("{}/{}/", term.kind.dir(), term.slug)
    }

    /// A fingerprint of everything page `i` shows: the settings and templates, and the
    /// contents of the files of its items. Equal fingerprints mean equal bytes, so a page
    /// whose fingerprint the manifest already records is not rendered again.
    pub fn fingerprint(&self, i: usize) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.settings.hash(&mut h);
        let item = |h: &mut std::collections::hash_map::DefaultHasher, idx: usize| {
            self.keys[idx].hash(h);
        };
        match self.jobs[i] {
            Job::Index(n) => {
                (0u8, n, pages_of(self.listed.len(), self.meta.per_page)).hash(&mut h);
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
                pages_of(term.items.len(), self.meta.per_page).hash(&mut h);
                for &idx in self.page_slice(&term.items, n) {
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
                    match self.jobs[j] {
                        Job::Item(idx) => (self.keys[idx], self.items[idx].updated).hash(&mut h),
                        Job::Term(t, n) => (&self.terms[t].slug, n).hash(&mut h),
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

    /// The page jobs that sitemap file `n` lists.
    fn sitemap_part(&self, n: usize) -> std::ops::Range<usize> {
        if n == 0 {
            if self.page_jobs > sitemap_limit() {
                return 0..0;
            }
            return 0..self.page_jobs;
        }
        let from = (n - 1) * sitemap_limit();
        from..(from + sitemap_limit()).min(self.page_jobs)
    }

    /// The bytes of page `i`.
    pub fn render(&self, i: usize) -> anyhow::Result<Vec<u8>> {
        let html = match self.jobs[i] {
            Job::Index(n) => self.render_list(i, None, &self.listed, n),
            Job::Term(t, n) => self.render_list(i, Some(t), &self.terms[t].items, n),
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
        if let Some(v) = self.entries[idx].get() {
            return Ok(v.clone());
        }
        let v = self.entry_html(&self.entry(idx))?;
        let _ = self.entries[idx].set(v.clone());
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
        let pages = pages_of(all.len(), self.meta.per_page);
        let prefix = term.map(|t| self.term_prefix(t)).unwrap_or_default();
        let pager = Pager {
            page: n,
            pages,
            newer: (n > 1).then(|| self.meta.url(&list_path(&prefix, n - 1))),
            older: (n < pages).then(|| self.meta.url(&list_path(&prefix, n + 1))),
        };
        let heading = match term.map(|t| &self.terms[t]) {
            None => self.meta.site_title.clone(),
            Some(t) => match t.kind {
                TermKind::Tag => self.lang.t("pages.tag", &[("name", &t.name)]),
                TermKind::Category => self.lang.t("pages.category", &[("name", &t.name)]),
            },
        };
        let entries: Vec<minijinja::Value> = self
            .page_slice(all, n)
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
        if self.entries[idx].get().is_none() {
            let _ = self.entries[idx].set(self.entry_html(&entry)?);
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
        for j in self.sitemap_part(n) {
            out.push_str("<url><loc>");
            out.push_str(&crate::content::text::escape_html(
                &self.meta.url(&self.url_path(j)),
            ));
            out.push_str("</loc>");
            if let Job::Item(idx) = self.jobs[j] {
                let u = self.items[idx].updated;
                out.push_str("<lastmod>");
                out.push_str(&u.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
                out.push_str("</lastmod>");
            }
            out.push_str("</url>\n");
        }
        out.push_str("</urlset>\n");
        out
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

/// Renders and writes the pages of `plan` below `dir` whose fingerprint differs from what
/// `known` records (each atomically, only if its bytes change), removes the pages herold
/// wrote earlier that are no longer part of the plan, and records the new fingerprints in
/// `known` and in the manifest. With `verify`, a page `known` records is rendered anyway
/// when its file is missing (`known` was read from the manifest, not kept by this process).
/// With `sync`, the pages are on disk when this returns (one `syncfs`); without, they are
/// written atomically but left to the kernel to flush (the daemon: it renders and compares
/// every page when it starts, so a power cut cannot leave a stale page behind).
pub fn write_pages(
    dir: &Path,
    plan: &PagePlan,
    known: &mut Manifest,
    verify: bool,
    sync: bool,
) -> anyhow::Result<PageStats> {
    let paths: Vec<String> = (0..plan.len()).map(|i| plan.path(i)).collect();
    let fingerprints: Vec<u64> = (0..plan.len()).map(|i| plan.fingerprint(i)).collect();
    let selected: Vec<bool> = (0..plan.len())
        .map(|i| {
            known.get(&paths[i]) != Some(&fingerprints[i])
                || (verify && !dir.join(&paths[i]).is_file())
        })
        .collect();
    let mut stats = write_selected(dir, plan, &|i| selected[i], sync)?;
    stats.rendered = selected.iter().filter(|&&s| s).count();
    let same_pages = known.len() == paths.len() && paths.iter().all(|p| known.contains_key(p));
    let before = std::mem::replace(known, paths.into_iter().zip(fingerprints).collect());
    for rel in before.into_keys() {
        if known.contains_key(&rel) || !safe_relative(&rel) {
            continue;
        }
        match std::fs::remove_file(dir.join(&rel)) {
            Ok(()) => stats.removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        prune_empty_dirs(dir, &rel);
    }
    if same_pages && !sync {
        // The daemon records fingerprints in the manifest only when pages come or go: it
        // checks every page against its rendering when it starts anyway.
        return Ok(stats);
    }
    let mut lines: Vec<(&String, &u64)> = known.iter().collect();
    lines.sort();
    let mut list = String::with_capacity(lines.len() * 60);
    for (p, f) in lines {
        list.push_str(p);
        list.push('\t');
        list.push_str(&format!("{f:016x}"));
        list.push('\n');
    }
    write_if_changed(&dir.join(MANIFEST), list.as_bytes())?;
    Ok(stats)
}

/// The pages herold wrote below `dir` and their fingerprints, from the manifest (a page of
/// an older manifest without fingerprints gets none, so it is rendered again).
pub fn read_manifest(dir: &Path) -> Manifest {
    std::fs::read_to_string(dir.join(MANIFEST))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| match l.split_once('\t') {
            Some((p, f)) => (p.to_string(), u64::from_str_radix(f, 16).unwrap_or(0)),
            None => (l.to_string(), 0),
        })
        .collect()
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

    fn corpus(n: usize) -> (Config, Vec<Arc<Item>>) {
        let config = Config::parse(
            "[site]\ntitle = \"T\"\nbase_url = \"https://www.fitko.de\"\n[server]\npublic_url = \"https://n.example.org\"\n[pages]\nper_page = 4\n",
            "config.toml",
            &[],
            Path::new("/srv"),
        )
        .unwrap();
        let site = crate::content::SiteContext::from_config(&config);
        let mut items: Vec<Arc<Item>> = (0..n)
            .map(|i| {
                let text = format!(
                    "+++\ntitle = \"Meldung {i}\"\ndate = 2026-01-{:02}T{:02}:00:00+01:00\ntags = [\"OZG\"]\n+++\nText {i}.\n",
                    1 + i / 24,
                    i % 24
                );
                Arc::new(crate::content::item::parse_item(&format!("m{i}.md"), text.as_bytes(), &site).unwrap())
            })
            .collect();
        items.sort_by_key(|i| std::cmp::Reverse(i.date));
        (config, items)
    }

    /// What `f` makes of the plan of `n` items.
    fn with_plan<T>(n: usize, f: impl FnOnce(&PagePlan) -> T) -> T {
        let (config, items) = corpus(n);
        let templates = crate::templates::Templates::for_config(&config).unwrap();
        let meta = PageMeta::from_config(&config);
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-01T00:00:00+01:00").unwrap();
        let cache = EntryCache::default();
        f(&plan(
            &items,
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
}
