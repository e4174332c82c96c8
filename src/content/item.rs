//! One news item: its front matter read into a typed [`Item`]. Pure: the caller supplies the
//! bytes, the path to name in errors and the site settings.

use chrono::{DateTime, FixedOffset, LocalResult, NaiveDate, NaiveDateTime, TimeZone};
use serde::{Deserialize, Deserializer};
use url::Url;

use super::Problem;
use super::front::{self, Syntax};
use super::markdown;
use super::slug::slugify;
use super::text::{plain, strip_controls};

/// The site settings an item needs to be read. Built once from the configuration.
#[derive(Debug, Clone)]
pub struct SiteContext {
    pub timezone: chrono_tz::Tz,
    /// The host of `site.base_url`, the tagging authority of `tag:` ids.
    pub tag_authority: String,
    /// `site.item_url`, with `{slug}`, `{year}`, `{month}`, `{day}`.
    pub item_url: String,
    pub default_author: String,
}

impl SiteContext {
    pub fn from_config(config: &crate::config::Config) -> SiteContext {
        SiteContext {
            timezone: config.site.timezone,
            tag_authority: config
                .site
                .base_url
                .host_str()
                .unwrap_or("localhost")
                .to_string(),
            item_url: config.item_url_template(),
            default_author: config.site_author().to_string(),
        }
    }
}

impl SiteContext {
    /// FITKO's settings, for tests: Berlin time, `https://www.fitko.de/{slug}`.
    #[cfg(test)]
    pub fn for_tests() -> SiteContext {
        SiteContext {
            timezone: chrono_tz::Europe::Berlin,
            tag_authority: "www.fitko.de".into(),
            item_url: "https://www.fitko.de/{slug}".into(),
            default_author: "FITKO".into(),
        }
    }
}

/// A parsed news item. Text fields are clean: no control characters, titles on one line.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// The file, relative to the content directory, with `/` separators.
    pub path: String,
    /// The stable identifier: Atom `id`, RSS `guid`, JSON Feed `id`.
    pub id: String,
    pub slug: String,
    pub title: String,
    /// In the site's time zone.
    pub date: DateTime<FixedOffset>,
    pub updated: DateTime<FixedOffset>,
    /// The lead as written in the front matter (plain text); see [`Item::render`] for the
    /// lead every output shows.
    pub summary: Option<String>,
    pub category: Option<String>,
    /// Distinct by slug, in the order written.
    pub tags: Vec<String>,
    /// The slug of each tag, in the same order (computed once, at parse time).
    pub tag_slugs: Vec<String>,
    /// The slug of the category.
    pub category_slug: Option<String>,
    pub author: String,
    pub draft: bool,
    /// Absolute URL of the teaser image.
    pub image: Option<String>,
    /// Absolute URL of the item's page.
    pub link: String,
    /// Markdown source of the body, as written (see [`Item::render`] for the clean output).
    /// Empty when [`Item::source`] is set: a scan of thousands of files keeps no bodies in
    /// memory, and reads a body again when it renders it.
    pub body: String,
    /// Where the body is when it is not kept: the content directory (shared by every item;
    /// the file is `path` below it), and the body's byte offset in the file.
    pub source: Option<(std::sync::Arc<std::path::Path>, usize)>,
    /// The body's byte offset in the file it was parsed from.
    pub body_offset: Option<usize>,
    /// Whether the id derives from the file name (renaming the file would change it).
    pub id_from_file_name: bool,
    /// The line of the `id` or `slug` key (or 1), for duplicate-id reports.
    pub id_line: usize,
    /// Which parse of its file this is (the daemon counts them; 0 elsewhere): feeds
    /// fingerprint their items by id and revision to see what changed.
    pub revision: u64,
    /// A hash of the file's bytes, the same in every process and version: archive documents
    /// are named by the contents of their items (SPEC 11).
    pub content_hash: u64,
    /// [`Item::page_path`] and [`Item::page_key`], made when first asked for.
    pub derived: Derived,
}

/// What is worked out from an item's other fields once, when first asked for: its page
/// path and its page key (the daemon plans every page on every change).
#[derive(Debug, Clone, Default)]
pub struct Derived(std::sync::OnceLock<String>, std::sync::OnceLock<u64>);

/// Derived from the other fields, so never a difference between two items.
impl PartialEq for Derived {
    fn eq(&self, _: &Derived) -> bool {
        true
    }
}

/// What outputs show of an item's body: the HTML and the plain-text lead.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rendition {
    /// Sanitised HTML with absolute URLs; empty for a body without content.
    pub html: String,
    /// The `summary`, else the first paragraph as plain text; may be empty.
    pub summary: String,
}

impl Item {
    /// The Markdown body: as kept, or read again from its file (a file that cannot be read
    /// any more gives an empty body; the next scan reports it).
    pub fn body_text(&self) -> std::borrow::Cow<'_, str> {
        match &self.source {
            Some((dir, offset)) if self.body.is_empty() => {
                let mut bytes = std::fs::read(dir.join(&self.path)).unwrap_or_default();
                bytes.drain(..(*offset).min(bytes.len()));
                std::borrow::Cow::Owned(if simdutf8::basic::from_utf8(&bytes).is_ok() {
                    // SAFETY: just checked to be UTF-8.
                    unsafe { String::from_utf8_unchecked(bytes) }
                } else {
                    String::from_utf8_lossy(&bytes).into_owned()
                })
            }
            _ => std::borrow::Cow::Borrowed(&self.body),
        }
    }

    /// The path of the item's page below the pages (`2026/03/04/ozg-2/`): by its date in
    /// the site's time zone and its slug.
    pub fn page_path(&self) -> &str {
        self.derived.0.get_or_init(|| {
            use chrono::Datelike;
            let d = self.date;
            format!(
                "{:04}/{:02}/{:02}/{}/",
                d.year(),
                d.month(),
                d.day(),
                self.slug
            )
        })
    }

    /// What identifies the item's file and its contents, for the fingerprints of the pages
    /// that show it.
    pub fn page_key(&self) -> u64 {
        *self.derived.1.get_or_init(|| {
            self.content_hash
                ^ stable_hash(self.path.as_bytes()).rotate_left(17)
                ^ stable_hash(self.id.as_bytes()).rotate_left(41)
        })
    }

    /// Drops the body from memory; [`Item::body_text`] reads it from its file below the
    /// content directory `dir` when needed.
    pub fn forget_body(&mut self, dir: &std::sync::Arc<std::path::Path>) {
        if let Some(offset) = self.body_offset {
            self.source = Some((dir.clone(), offset));
            self.body = String::new();
        }
    }

    /// Renders the body. The Markdown is read only here, so a build pays for it only for the
    /// items that appear in some output.
    pub fn render(&self) -> Rendition {
        let text = self.body_text();
        let body = strip_controls(&text);
        let (html, lead) = match Url::parse(&self.link) {
            Ok(base) => markdown::render_with_lead(&body, &base),
            // The link was validated when the item was parsed.
            Err(_) => (String::new(), markdown::first_paragraph_text(&body)),
        };
        let summary = match &self.summary {
            Some(s) => s.clone(),
            None => lead,
        };
        Rendition { html, summary }
    }
}

#[derive(Deserialize, Default, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
struct FrontMatter {
    title: Option<String>,
    date: Option<DateText>,
    updated: Option<DateText>,
    summary: Option<String>,
    category: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    author: Option<String>,
    slug: Option<String>,
    id: Option<String>,
    #[serde(default)]
    draft: bool,
    image: Option<String>,
    /// Free-form data for other tools; herold ignores it.
    #[serde(default)]
    #[allow(dead_code)]
    extra: Option<serde::de::IgnoredAny>,
}

/// A date written as a string, or as a TOML date/datetime value.
#[derive(Debug, PartialEq)]
struct DateText(String);

/// Reads TOML front matter of the plain shape nearly every item has (`key = "text"`,
/// `key = [ "a", "b" ]`, `draft = true`, dates as TOML writes them, comments) without the
/// TOML parser, which was a fifth of a scan's work; `None` for anything else (escapes,
/// tables, several lines to a value, unknown or repeated keys, invalid dates), which the
/// TOML parser then reads, and reports. Where it gives a result, it is the parser's.
fn plain_toml(front: &str) -> Option<FrontMatter> {
    let mut fm = FrontMatter::default();
    let mut seen = 0u16;
    for line in front.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let rest = line.trim_start_matches([' ', '\t']);
        if rest.is_empty() || rest.starts_with('#') {
            if !clean(rest) {
                return None;
            }
            continue;
        }
        let key_len = rest
            .bytes()
            .position(|b| !(b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
            .unwrap_or(rest.len());
        let (key, rest) = rest.split_at(key_len);
        let rest = rest.trim_start_matches([' ', '\t']).strip_prefix('=')?;
        let mut v = Value(rest.trim_start_matches([' ', '\t']));
        let bit = match key {
            "title" => 0,
            "date" => 1,
            "updated" => 2,
            "summary" => 3,
            "category" => 4,
            "tags" => 5,
            "author" => 6,
            "slug" => 7,
            "id" => 8,
            "draft" => 9,
            "image" => 10,
            _ => return None,
        };
        if seen & (1 << bit) != 0 {
            return None;
        }
        seen |= 1 << bit;
        match bit {
            0 => fm.title = Some(v.string()?),
            1 => fm.date = Some(v.date()?),
            2 => fm.updated = Some(v.date()?),
            3 => fm.summary = Some(v.string()?),
            4 => fm.category = Some(v.string()?),
            5 => fm.tags = v.strings()?,
            6 => fm.author = Some(v.string()?),
            7 => fm.slug = Some(v.string()?),
            8 => fm.id = Some(v.string()?),
            9 => {
                fm.draft = if let Some(r) = v.0.strip_prefix("true") {
                    v.0 = r;
                    true
                } else {
                    v.0 = v.0.strip_prefix("false")?;
                    false
                }
            }
            _ => fm.image = Some(v.string()?),
        }
        v.end()?;
    }
    Some(fm)
}

/// Whether `text` has no control character TOML refuses (a tab is fine).
fn clean(text: &str) -> bool {
    !text.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f)
}

/// The unread rest of a front matter line, for [`plain_toml`].
struct Value<'a>(&'a str);

impl Value<'_> {
    /// A string in `"…"` without escapes, or in `'…'`.
    fn string(&mut self) -> Option<String> {
        let quote = self.0.chars().next().filter(|c| *c == '"' || *c == '\'')?;
        let body = &self.0[1..];
        let end = body.find(quote)?;
        let text = &body[..end];
        if !clean(text) || (quote == '"' && text.contains('\\')) {
            return None;
        }
        // Three quotes open a string over several lines.
        if text.is_empty() && body[end + 1..].starts_with(quote) {
            return None;
        }
        self.0 = &body[end + 1..];
        Some(text.to_string())
    }

    /// `[ "a", "b" ]` on one line.
    fn strings(&mut self) -> Option<Vec<String>> {
        let ws = [' ', '\t'];
        self.0 = self.0.strip_prefix('[')?.trim_start_matches(ws);
        let mut out = Vec::new();
        loop {
            if let Some(r) = self.0.strip_prefix(']') {
                self.0 = r;
                return Some(out);
            }
            out.push(self.string()?);
            self.0 = self.0.trim_start_matches(ws);
            if let Some(r) = self.0.strip_prefix(',') {
                self.0 = r.trim_start_matches(ws);
            } else if !self.0.starts_with(']') {
                return None;
            }
        }
    }

    /// A date as a string, or a TOML date (`2026-03-01`) or date-time with seconds
    /// (`2026-03-01T09:30:00`, with `Z` or `+01:00`) written as TOML writes it back.
    fn date(&mut self) -> Option<DateText> {
        if self.0.starts_with(['"', '\'']) {
            return self.string().map(DateText);
        }
        let end = self
            .0
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | ':' | '+')))
            .unwrap_or(self.0.len());
        let text = &self.0[..end];
        let b = text.as_bytes();
        let digits = |r: std::ops::Range<usize>| -> Option<u32> {
            let s = text.get(r)?;
            if s.bytes().all(|c| c.is_ascii_digit()) {
                s.parse().ok()
            } else {
                None
            }
        };
        let (y, m, d) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
        if b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        chrono::NaiveDate::from_ymd_opt(y as i32, m, d)?;
        match b.len() {
            10 => {}
            19..=25 => {
                let (h, mi, s) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
                if b[10] != b'T' || b[13] != b':' || b[16] != b':' || h > 23 || mi > 59 || s > 59 {
                    return None;
                }
                match &text[19..] {
                    "" | "Z" => {}
                    offset => {
                        let (oh, om) = (digits(20..22)?, digits(23..25)?);
                        if offset.len() != 6
                            || !matches!(b[19], b'+' | b'-')
                            || b[22] != b':'
                            || oh > 23
                            || om > 59
                            // TOML writes `-00:00` back as `+00:00`.
                            || (oh == 0 && om == 0 && b[19] == b'-')
                        {
                            return None;
                        }
                    }
                }
            }
            _ => return None,
        }
        self.0 = &self.0[end..];
        Some(DateText(text.to_string()))
    }

    /// Nothing but blanks and a comment may follow a value.
    fn end(&self) -> Option<()> {
        let rest = self.0.trim_start_matches([' ', '\t']);
        (rest.is_empty() || (rest.starts_with('#') && clean(rest))).then_some(())
    }
}

impl<'de> Deserialize<'de> for DateText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = DateText;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a date such as 2026-03-01 or 2026-03-01T09:30:00+01:00")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<DateText, E> {
                Ok(DateText(v.to_string()))
            }
            // TOML hands its native date values over as a one-entry map.
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<DateText, A::Error> {
                let mut text = None;
                while let Some((_, v)) = map.next_entry::<String, String>()? {
                    text = Some(v);
                }
                text.map(DateText)
                    .ok_or_else(|| serde::de::Error::custom("empty date"))
            }
        }
        d.deserialize_any(V)
    }
}

/// A 64-bit hash of `bytes` that never changes between processes, platforms or versions
/// (unlike std's hashers): eight bytes at a time, mixed as in FxHash, finished as in
/// SplitMix64.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h: u64 = bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().expect("eight bytes"));
        h = (h.rotate_left(5) ^ w).wrapping_mul(K);
    }
    let mut last = [0u8; 8];
    last[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    h = (h.rotate_left(5) ^ u64::from_le_bytes(last)).wrapping_mul(K);
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Reads one content file. `path` is relative to the content directory and names the file
/// in problems. A file either gives an item or one problem; it never panics.
pub fn parse_item(path: &str, bytes: &[u8], site: &SiteContext) -> Result<Item, Problem> {
    parse_item_in(path, bytes, site, None)
}

/// [`parse_item`] for a file at `path` below the content directory `dir`, when given: the
/// body is not copied out of `bytes` but read from the file again when it is rendered (a
/// build renders a few hundred of thousands).
pub fn parse_item_in(
    path: &str,
    bytes: &[u8],
    site: &SiteContext,
    dir: Option<&std::sync::Arc<std::path::Path>>,
) -> Result<Item, Problem> {
    let problem = |line: usize, message: String| Problem::error(path, line, message);
    let text = front::decode(bytes).map_err(|e| problem(e.line, e.message))?;
    let mut split = front::split(text).map_err(|e| problem(e.line, e.message))?;
    // Stray control characters (pasted from word processors) would break TOML strings; they
    // go before the front matter is read (line breaks stay, so lines hold). The body is
    // cleaned when it is rendered, so a scan does not pay for bodies nobody shows.
    let front_text = strip_controls(split.front);
    split.front = &front_text;
    let front_line = |line_in_front: usize| split.front_line + line_in_front - 1;
    let key_line = |key: &str| {
        crate::config::key_line(split.front, key)
            .map(front_line)
            .unwrap_or(1)
    };

    let fm: FrontMatter = match split.syntax {
        Syntax::Toml if let Some(fm) = plain_toml(split.front) => fm,
        Syntax::Toml => toml::from_str(split.front).map_err(|e| {
            let line = e
                .span()
                .map(|s| crate::config::line_of(split.front, s.start))
                .unwrap_or(1);
            problem(
                front_line(line),
                format!("front matter: {}", e.message().trim()),
            )
        })?,
        Syntax::Yaml => {
            if split.front.trim().is_empty() {
                return Err(problem(1, "front matter: `title` is missing".into()));
            }
            serde_saphyr::from_str(split.front).map_err(|e| {
                let line = e
                    .location()
                    .map(|l| l.line() as usize)
                    .filter(|l| *l > 0)
                    .unwrap_or(1);
                let msg = yaml_message(&e.to_string());
                problem(front_line(line), format!("front matter: {msg}"))
            })?
        }
    };

    let title = fm
        .title
        .as_deref()
        .ok_or_else(|| problem(1, "front matter: `title` is missing".into()))?;
    let title = plain(title);
    if title.is_empty() {
        return Err(problem(key_line("title"), "`title` is empty".into()));
    }
    let date_text = fm
        .date
        .ok_or_else(|| problem(1, "front matter: `date` is missing".into()))?;
    let date = parse_date(&date_text.0, site.timezone).map_err(|m| problem(key_line("date"), m))?;
    let updated = match fm.updated {
        Some(u) => parse_date(&u.0, site.timezone).map_err(|m| problem(key_line("updated"), m))?,
        None => date,
    };
    if updated < date {
        return Err(problem(
            key_line("updated"),
            "`updated` lies before `date`".into(),
        ));
    }

    let file_stem = file_slug(path);
    let (slug, slug_explicit) = match &fm.slug {
        Some(s) => (slugify(s), true),
        None => (slugify(&file_stem), false),
    };
    if slug.is_empty() {
        return Err(problem(
            key_line("slug"),
            "the slug is empty: give the file a name with letters or digits, or set `slug`".into(),
        ));
    }

    let link = item_link(&site.item_url, &slug, &date).map_err(|m| problem(1, m))?;
    let id = match fm.id.as_deref().map(str::trim) {
        Some(id) => {
            let ok = Url::parse(id).is_ok() && !id.chars().any(char::is_whitespace);
            if !ok {
                return Err(problem(
                    key_line("id"),
                    format!("`id` must be an absolute URI such as tag:… or urn:uuid:…, not `{id}`"),
                ));
            }
            id.to_string()
        }
        None => format!(
            "tag:{},{}:{}",
            site.tag_authority,
            date.format("%Y-%m-%d"),
            slug
        ),
    };
    let id_line = if fm.id.is_some() {
        key_line("id")
    } else if slug_explicit {
        key_line("slug")
    } else {
        1
    };

    let image = match fm.image.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(img) => Some(
            Url::parse(&link)
                .and_then(|base| base.join(img))
                .map_err(|e| {
                    problem(
                        key_line("image"),
                        format!("`image` is not a URL or path: {e}"),
                    )
                })?
                .to_string(),
        ),
        None => None,
    };

    // Where the body starts in the file's bytes (it is a slice of them), to read it again.
    let body_offset = (split.body.as_ptr() as usize)
        .checked_sub(bytes.as_ptr() as usize)
        .filter(|&o| bytes.get(o..) == Some(split.body.as_bytes()));
    let (body, source) = match (dir, body_offset) {
        (Some(dir), Some(offset)) => (String::new(), Some((dir.clone(), offset))),
        _ => (split.body.to_string(), None),
    };
    let summary = fm.summary.as_deref().map(plain).filter(|s| !s.is_empty());

    let mut tags: Vec<String> = Vec::with_capacity(fm.tags.len());
    let mut seen = Vec::with_capacity(fm.tags.len());
    for t in fm.tags.iter().map(|t| plain(t)).filter(|t| !t.is_empty()) {
        let s = slugify(&t);
        if !seen.contains(&s) {
            seen.push(s);
            tags.push(t);
        }
    }

    let category = fm.category.as_deref().map(plain).filter(|c| !c.is_empty());
    Ok(Item {
        path: path.to_string(),
        id,
        slug,
        title,
        date,
        updated,
        summary,
        category_slug: category.as_deref().map(slugify),
        category,
        tags,
        tag_slugs: seen,
        revision: 0,
        content_hash: stable_hash(bytes),
        derived: Derived::default(),
        source,
        body_offset,
        author: fm
            .author
            .as_deref()
            .map(plain)
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| site.default_author.clone()),
        draft: fm.draft,
        image,
        link,
        body,
        id_from_file_name: fm.id.is_none() && !slug_explicit,
        id_line,
    })
}

/// Parses `YYYY-MM-DD` (midnight), `YYYY-MM-DDTHH:MM[:SS]` (local time in `tz`) or RFC 3339,
/// and gives the instant with the offset `tz` has at that moment.
///
/// A local time that does not exist (the hour skipped when clocks go forward) is an error;
/// one that exists twice (the hour repeated in autumn) means the first of the two.
pub fn parse_date(s: &str, tz: chrono_tz::Tz) -> Result<DateTime<FixedOffset>, String> {
    let s = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(s)
        .or_else(|_| DateTime::parse_from_rfc3339(&s.replacen(' ', "T", 1)))
    {
        return Ok(dt.with_timezone(&tz).fixed_offset());
    }
    let naive = if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        d.and_hms_opt(0, 0, 0).expect("midnight exists")
    } else {
        ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M"]
            .iter()
            .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
            .ok_or_else(|| {
                format!("`{s}` is not a date: write 2026-03-01, 2026-03-01T09:30:00 or 2026-03-01T09:30:00+01:00")
            })?
    };
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(dt) => Ok(dt.fixed_offset()),
        LocalResult::Ambiguous(first, _) => Ok(first.fixed_offset()),
        LocalResult::None => Err(format!(
            "`{s}` does not exist in {tz}: the clocks skip that hour; write the time with its offset or pick another"
        )),
    }
}

/// The first line of a YAML error without the location serde-saphyr puts in front (herold
/// names the line of the file itself).
fn yaml_message(raw: &str) -> String {
    let first = raw.lines().next().unwrap_or("invalid YAML").trim();
    let rest = first.strip_prefix("error: ").unwrap_or(first);
    let rest = match rest.strip_prefix("line ") {
        Some(r) => r.split_once(": ").map(|(_, m)| m).unwrap_or(r),
        None => rest,
    };
    rest.trim().to_string()
}

/// The file name without extension and without a leading `YYYY-MM-DD-`.
fn file_slug(path: &str) -> String {
    let name = path.rsplit('/').next().unwrap_or(path);
    let stem = name.strip_suffix(".md").unwrap_or(name);
    let b = stem.as_bytes();
    let dated = b.len() > 11
        && b[..10].iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        })
        && b[10] == b'-';
    if dated {
        stem[11..].to_string()
    } else {
        stem.to_string()
    }
}

fn item_link(template: &str, slug: &str, date: &DateTime<FixedOffset>) -> Result<String, String> {
    use chrono::Datelike;
    let mut link = template.replace("{slug}", slug);
    for (key, value) in [
        ("{year}", format!("{:04}", date.year())),
        ("{month}", format!("{:02}", date.month())),
        ("{day}", format!("{:02}", date.day())),
    ] {
        if link.contains(key) {
            link = link.replace(key, &value);
        }
    }
    let plain_slug = slug
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if plain_slug && canonical_template(template) {
        // Letters, digits and dashes in the path of a URL the parser leaves as written.
        return Ok(link);
    }
    match Url::parse(&link) {
        // Most links come out of the parser as they went in: no second string then.
        Ok(u) if u.as_str() == link => Ok(link),
        Ok(u) => Ok(u.into()),
        Err(e) => Err(format!("the item link `{link}` is not a URL: {e}")),
    }
}

/// Whether every link made from `template` with a slug of letters, digits and dashes is
/// already a URL as the parser writes it: the placeholders lie in the path (after the host)
/// and the template with sample values comes out of the parser unchanged. Remembered per
/// thread for the last template asked about.
fn canonical_template(template: &str) -> bool {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(String, bool)>> = const { std::cell::RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| {
        if let Some((t, ok)) = last
            && t == template
        {
            return *ok;
        }
        let path_start = template
            .find("://")
            .and_then(|i| template[i + 3..].find('/').map(|j| i + 3 + j));
        let ok = path_start.is_some_and(|p| !template[..p].contains('{')) && {
            let sample = template
                .replace("{slug}", "a-1")
                .replace("{year}", "2000")
                .replace("{month}", "01")
                .replace("{day}", "01");
            Url::parse(&sample).is_ok_and(|u| u.as_str() == sample)
        };
        *last = Some((template.to_string(), ok));
        ok
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn links_from_canonical_templates_skip_the_parser_and_others_do_not() {
        let date = DateTime::parse_from_rfc3339("2026-03-04T10:00:00+01:00").unwrap();
        for (template, slug, want) in [
            (
                "https://www.fitko.de/aktuelles/{year}/{month}/{day}/{slug}/",
                "ozg-2",
                "https://www.fitko.de/aktuelles/2026/03/04/ozg-2/",
            ),
            ("https://www.fitko.de/{slug}", "a", "https://www.fitko.de/a"),
            // Not canonical: the parser adds the root path, and lowercases the host.
            ("https://WWW.fitko.de", "a", "https://www.fitko.de/"),
            (
                "https://www.fitko.de/{slug}?x=ä",
                "a",
                "https://www.fitko.de/a?x=%C3%A4",
            ),
            ("https://{slug}.fitko.de/x", "123", "https://123.fitko.de/x"),
        ] {
            assert_eq!(
                item_link(template, slug, &date).unwrap(),
                want,
                "{template}"
            );
            let parsed = Url::parse(
                &template
                    .replace("{slug}", slug)
                    .replace("{year}", "2026")
                    .replace("{month}", "03")
                    .replace("{day}", "04"),
            )
            .unwrap();
            assert_eq!(parsed.as_str(), want);
        }
        assert!(canonical_template("https://www.fitko.de/aktuelles/{slug}"));
        assert!(!canonical_template("https://{slug}.fitko.de/x"));
        assert!(!canonical_template("https://www.fitko.de/{slug}?x=ä"));
    }

    fn site() -> SiteContext {
        SiteContext {
            timezone: chrono_tz::Europe::Berlin,
            tag_authority: "www.fitko.de".into(),
            item_url: "https://www.fitko.de/aktuelles/{year}/{slug}".into(),
            default_author: "FITKO".into(),
        }
    }

    fn parse(path: &str, text: &str) -> Result<Item, Problem> {
        parse_item(path, text.as_bytes(), &site())
    }

    #[test]
    fn toml_item() {
        let item = parse(
            "2020/2020-09-08-auftakt-kommunalgremium.md",
            "+++\ntitle = \"Auftakt für Kommunalgremium\"\ndate = 2020-09-08\ntags = [\"OZG\", \"ozg\", \" IT-Planungsrat \"]\ncategory = \"Pressemitteilung\"\n+++\nDas neue *Kommunalgremium* hat getagt.\n\nMehr.\n",
        )
        .unwrap();
        assert_eq!(
            item.id,
            "tag:www.fitko.de,2020-09-08:auftakt-kommunalgremium"
        );
        assert_eq!(
            item.link,
            "https://www.fitko.de/aktuelles/2020/auftakt-kommunalgremium"
        );
        assert_eq!(item.date.to_rfc3339(), "2020-09-08T00:00:00+02:00");
        assert_eq!(item.summary, None);
        assert_eq!(
            item.render().summary,
            "Das neue Kommunalgremium hat getagt."
        );
        assert_eq!(item.tags, vec!["OZG", "IT-Planungsrat"]);
        assert_eq!(item.author, "FITKO");
        assert!(item.id_from_file_name);
    }

    #[test]
    fn yaml_item_with_explicit_slug() {
        let item = parse(
            "x.md",
            "---\ntitle: \"OZG 2.0\"\ndate: 2026-01-15T10:30:00+01:00\nslug: ozg-zwei\nauthor: Pressestelle\nsummary: Kurz.\nimage: /bilder/ozg.png\n---\nText\n",
        )
        .unwrap();
        assert_eq!(item.id, "tag:www.fitko.de,2026-01-15:ozg-zwei");
        assert_eq!(
            item.image.as_deref(),
            Some("https://www.fitko.de/bilder/ozg.png")
        );
        assert_eq!(
            (item.render().summary.as_str(), item.author.as_str()),
            ("Kurz.", "Pressestelle")
        );
        assert!(!item.id_from_file_name);
    }

    #[test]
    fn title_edit_keeps_id() {
        let a = parse("n.md", "+++\ntitle = \"A\"\ndate = \"2026-02-01\"\n+++\n").unwrap();
        let b = parse("n.md", "+++\ntitle = \"B\"\ndate = \"2026-02-01\"\nupdated = \"2026-02-03T08:00:00Z\"\n+++\nneu").unwrap();
        assert_eq!(a.id, b.id);
    }

    #[test]
    fn problems_name_the_line() {
        let cases = [
            (
                "+++\ntitle = \"a\"\ndate = \"gestern\"\n+++\n",
                3,
                "not a date",
            ),
            ("+++\ndate = \"2026-01-01\"\n+++\n", 1, "`title` is missing"),
            (
                "+++\ntitle = \"a\"\ndate = \"2026-01-01\"\ntitel = \"b\"\n+++\n",
                4,
                "titel",
            ),
            (
                "---\ntitle: a\ndate: 2026-01-01\ntags: [a\n---\n",
                4,
                "front matter",
            ),
            (
                "+++\ntitle = \"a\"\ndate = \"2026-03-29T02:30:00\"\n+++\n",
                3,
                "does not exist",
            ),
            (
                "+++\ntitle = \"a\"\ndate = \"2026-01-01\"\nid = \"keine uri\"\n+++\n",
                4,
                "absolute URI",
            ),
            (
                "+++\ntitle = \"  \"\ndate = \"2026-01-01\"\n+++\n",
                2,
                "empty",
            ),
        ];
        for (text, line, needle) in cases {
            let p = parse("a.md", text).unwrap_err();
            assert_eq!(p.line, line, "{p}");
            assert!(p.message.contains(needle), "{p}");
        }
    }

    #[test]
    fn dst_changes_resolve_predictably() {
        let tz = chrono_tz::Europe::Berlin;
        // Autumn: 02:30 happens twice; the first (summer time) is meant.
        assert_eq!(
            parse_date("2026-10-25T02:30", tz).unwrap().to_rfc3339(),
            "2026-10-25T02:30:00+02:00"
        );
        assert_eq!(
            parse_date("2026-01-05", tz).unwrap().to_rfc3339(),
            "2026-01-05T00:00:00+01:00"
        );
        assert_eq!(
            parse_date("2026-07-05T12:00:00Z", tz).unwrap().to_rfc3339(),
            "2026-07-05T14:00:00+02:00"
        );
        assert!(parse_date("2026-03-29T02:30:00", tz).is_err());
    }

    #[test]
    fn plain_front_matter_reads_as_the_toml_parser_reads_it() {
        // Lines of every shape, plain and not: where the fast path gives a result, the
        // parser gives the same; elsewhere the parser reads the text (and reports).
        let lines = [
            r#"title = "Über „Register“ & <mehr>""#,
            r#"title="a""#,
            "title = 'lit\\eral'",
            r#"title = "with \"escape\"""#,
            r#"title = """#,
            r#"title = """multi""""#,
            "title = 'x' # comment",
            "title = \"x\" junk",
            "\ttitle\t=\t\"tab\"\t",
            "date = 2026-03-01",
            "date = 2026-03-01T09:30:00",
            "date = 2026-03-01T09:30:00Z",
            "date = 2026-03-01T09:30:00+01:00",
            "date = 2026-03-01T09:30:00-00:00",
            "date = 2026-03-01T09:30:00.5+01:00",
            "date = 2026-03-01 09:30:00",
            "date = 2026-03-01t09:30:00z",
            "date = 2026-02-30",
            "date = 2024-02-29",
            "date = 2026-03-01T24:00:00",
            "date = 2026-03-01T09:30+01:00",
            "date = \"gestern\"",
            "date = 20260301",
            "updated = 2026-03-02T10:00:00-05:30",
            "summary = \"Kurz.\"",
            "category = 'Presse'",
            "tags = [\"OZG\", 'FIM', \"Ä b\"]",
            "tags = []",
            "tags = [ \"a\" , \"b\" , ]",
            "tags = [\"a\" \"b\"]",
            "tags = \"OZG\"",
            "tags = [\"a\",",
            "author = \"Jo\"",
            "slug = \"s-1\"",
            "id = \"x:1\"",
            "draft = true",
            "draft = false",
            "draft = yes",
            "draft = truely",
            "image = \"/a.png\"",
            "unknown = \"x\"",
            "extra.note = 1",
            "[extra]",
            "\"title\" = \"quoted key\"",
            "# a comment line",
            "",
            "   ",
            "title = \"\u{7f}\"",
            "title = \"a\" # \u{1}",
        ];
        let mut next = crate::test_rng(0x9e37_79b9_7f4a_7c15_u64);
        let (mut plain, mut total) = (0, 0);
        for round in 0..4000 {
            let n = 1 + next(7);
            let mut front = String::new();
            for _ in 0..n {
                front.push_str(lines[next(lines.len() as u64) as usize]);
                front.push_str(if round % 3 == 0 { "\r\n" } else { "\n" });
            }
            total += 1;
            let Some(fast) = plain_toml(&front) else {
                continue;
            };
            plain += 1;
            let parsed: Result<FrontMatter, _> = toml::from_str(&front);
            assert_eq!(parsed.as_ref().ok(), Some(&fast), "{front:?}: {parsed:?}");
        }
        assert!(plain > total / 20, "{plain} of {total} read plainly");
        // The sample content is read plainly, file by file.
        let text = "title = \"Neue Meldung\"\ndate = 2026-11-21T10:00:00+01:00\ntags = [\"OZG\", \"FIT-Connect\"]\ncategory = \"Presse\"\n";
        assert_eq!(
            plain_toml(text),
            Some(toml::from_str::<FrontMatter>(text).unwrap())
        );
    }

    #[test]
    fn stable_hash_is_fixed() {
        // Archive URLs depend on these values: they must never change.
        assert_eq!(stable_hash(b""), 0);
        assert_eq!(stable_hash(b"herold"), stable_hash(b"herold"));
        assert_ne!(stable_hash(b"herold"), stable_hash(b"herolD"));
        assert_ne!(stable_hash(b"abcdefgh"), stable_hash(b"abcdefgh\0"));
        assert_eq!(
            stable_hash("Bund und Länder".as_bytes()),
            0x4c9d_f14b_985f_108a
        );
    }

    #[test]
    fn file_slugs() {
        assert_eq!(file_slug("a/2026-01-02-ozg-news.md"), "ozg-news");
        assert_eq!(file_slug("2026-01-02.md"), "2026-01-02");
        assert_eq!(file_slug("Über uns.md"), "Über uns");
    }

    proptest! {
        #[test]
        fn parse_item_never_panics(body in "(\\+\\+\\+\n|---\n|title = \"[^\"]{0,8}\"\n|date = [0-9T:+-]{0,25}\n|title: .{0,10}\n|date: .{0,25}\n|tags = \\[.{0,10}\\]\n|.{0,20}\n){0,8}") {
            let _ = parse("p.md", &body);
        }

        #[test]
        fn parse_item_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut input = b"+++\ntitle = \"x\"\ndate = 2026-01-01\n".to_vec();
            input.extend_from_slice(&bytes);
            let _ = parse_item("p.md", &input, &site());
        }
    }
}
