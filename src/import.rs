//! `herold import URL|FILE`: an existing RSS, Atom or JSON feed becomes content files.
//!
//! Each item keeps its id, so readers who follow the old feed see no duplicates. Bodies stay
//! HTML (sanitised like any raw HTML when published). Nothing is ever overwritten, and items
//! whose id the content directory already has are skipped, so a second import adds nothing.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, FixedOffset, Utc};

use crate::config::Config;
use crate::content::scan::{list_files, read_item};
use crate::content::slug::slugify;
use crate::content::{SiteContext, text};

/// Feeds larger than this are refused.
pub const MAX_FEED_BYTES: usize = 32 * 1024 * 1024;

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub written: Vec<PathBuf>,
    /// Items whose id the content directory already has.
    pub present: usize,
    /// Items left out, with the reason.
    pub skipped: Vec<String>,
    /// Ids that were not absolute URIs and were turned into `tag:` URIs.
    pub ids_rewritten: usize,
}

/// Reads the feed at `source` (an http(s) URL or a file path).
pub async fn fetch(source: &str) -> anyhow::Result<Vec<u8>> {
    if source.starts_with("http://") || source.starts_with("https://") {
        let client = crate::websub::client();
        let mut response = client
            .get(source)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .with_context(|| format!("cannot fetch {source}"))?;
        anyhow::ensure!(
            response.status().is_success(),
            "{source} answered {}",
            response.status()
        );
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .with_context(|| format!("cannot read {source}"))?
        {
            bytes.extend_from_slice(&chunk);
            anyhow::ensure!(
                bytes.len() <= MAX_FEED_BYTES,
                "{source} is larger than {} MB",
                MAX_FEED_BYTES >> 20
            );
        }
        Ok(bytes)
    } else {
        let meta = std::fs::metadata(source).with_context(|| format!("cannot read {source}"))?;
        anyhow::ensure!(
            meta.len() as usize <= MAX_FEED_BYTES,
            "{source} is larger than {} MB",
            MAX_FEED_BYTES >> 20
        );
        std::fs::read(source).with_context(|| format!("cannot read {source}"))
    }
}

/// Writes one content file per new item of the feed in `bytes` into `config.content.dir`.
pub fn import(config: &Config, bytes: &[u8], dry_run: bool) -> anyhow::Result<Report> {
    let feed = feed_rs::parser::parse(bytes)
        .map_err(|e| anyhow::anyhow!("not an RSS, Atom or JSON feed: {e}"))?;
    let site = SiteContext::from_config(config);
    let dir = &config.content.dir;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut known: HashSet<String> = list_files(dir)?
        .iter()
        .filter_map(|(rel, full)| read_item(rel, full, &site).ok().map(|i| i.id))
        .collect();
    let authority = feed
        .links
        .iter()
        .find_map(|l| {
            url::Url::parse(&l.href)
                .ok()?
                .host_str()
                .map(str::to_string)
        })
        .unwrap_or_else(|| site.tag_authority.clone());
    let mut report = Report::default();
    for entry in &feed.entries {
        let title = entry
            .title
            .as_ref()
            .map(|t| text::plain(&t.content))
            .unwrap_or_default();
        let Some(date) = entry.published.or(entry.updated) else {
            report
                .skipped
                .push(format!("`{title}` ({}): no date", entry.id));
            continue;
        };
        if title.is_empty() {
            report.skipped.push(format!("{}: no title", entry.id));
            continue;
        }
        let date = date.with_timezone(&config.site.timezone).fixed_offset();
        let id = match entry.id.trim() {
            id if is_absolute_uri(id) => id.to_string(),
            other => {
                report.ids_rewritten += 1;
                let local = slugify(other);
                let local = if local.is_empty() {
                    slugify(&title)
                } else {
                    local
                };
                format!("tag:{authority},{}:{local}", date.format("%Y-%m-%d"))
            }
        };
        if !known.insert(id.clone()) {
            report.present += 1;
            continue;
        }
        let link = entry
            .links
            .iter()
            .find(|l| l.rel.as_deref().is_none_or(|r| r == "alternate"));
        let slug = link
            .and_then(|l| url::Url::parse(&l.href).ok())
            .and_then(|u| {
                u.path_segments()?
                    .rev()
                    .find(|s| !s.is_empty())
                    .map(|s| slugify(s.trim_end_matches(".html")))
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| slugify(&title));
        let slug = if slug.is_empty() {
            "meldung".to_string()
        } else {
            slug
        };
        let html = entry
            .content
            .as_ref()
            .and_then(|c| c.body.clone())
            .or_else(|| entry.summary.as_ref().map(|s| s.content.clone()));
        let summary = entry
            .content
            .as_ref()
            .and(entry.summary.as_ref())
            .map(|s| text::plain(&s.content))
            .filter(|s| !s.is_empty());
        let item = Imported {
            id,
            title,
            slug,
            date,
            updated: entry
                .updated
                .filter(|u| *u > date.with_timezone(&Utc))
                .map(|u| u.with_timezone(&config.site.timezone).fixed_offset()),
            summary,
            tags: entry
                .categories
                .iter()
                .map(|c| c.label.clone().unwrap_or_else(|| c.term.clone()))
                .collect(),
            author: entry
                .authors
                .first()
                .and_then(|a| a.name.as_deref())
                .map(text::plain)
                .filter(|a| !a.is_empty()),
            image: image_of(entry),
            body: html.map(|h| html_block(&h)).unwrap_or_default(),
        };
        let text = item.to_file();
        if dry_run {
            report.written.push(dir.join(format!(
                "{}-{}.md",
                item.date.format("%Y-%m-%d"),
                item.slug
            )));
            continue;
        }
        report.written.push(write_new_file(
            dir,
            &format!("{}-{}", item.date.format("%Y-%m-%d"), item.slug),
            &text,
        )?);
    }
    Ok(report)
}

struct Imported {
    id: String,
    title: String,
    slug: String,
    date: DateTime<FixedOffset>,
    updated: Option<DateTime<FixedOffset>>,
    summary: Option<String>,
    tags: Vec<String>,
    author: Option<String>,
    image: Option<String>,
    body: String,
}

impl Imported {
    fn to_file(&self) -> String {
        let q = |s: &str| toml::Value::String(s.to_string()).to_string();
        let mut t = format!(
            "+++\ntitle = {}\ndate = {}\n",
            q(&self.title),
            self.date.to_rfc3339()
        );
        if let Some(u) = self.updated {
            t.push_str(&format!("updated = {}\n", u.to_rfc3339()));
        }
        t.push_str(&format!("slug = {}\nid = {}\n", q(&self.slug), q(&self.id)));
        if !self.tags.is_empty() {
            let tags: Vec<String> = self.tags.iter().map(|x| q(x)).collect();
            t.push_str(&format!("tags = [{}]\n", tags.join(", ")));
        }
        if let Some(a) = &self.author {
            t.push_str(&format!("author = {}\n", q(a)));
        }
        if let Some(s) = &self.summary {
            t.push_str(&format!("summary = {}\n", q(s)));
        }
        if let Some(i) = &self.image {
            t.push_str(&format!("image = {}\n", q(i)));
        }
        t.push_str("+++\n");
        if !self.body.is_empty() {
            t.push('\n');
            t.push_str(&self.body);
            t.push('\n');
        }
        t
    }
}

fn is_absolute_uri(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(char::is_whitespace) && url::Url::parse(s).is_ok()
}

/// The item's teaser image: an image enclosure or media thumbnail.
fn image_of(entry: &feed_rs::model::Entry) -> Option<String> {
    let from_media = entry.media.iter().find_map(|m| {
        m.content
            .iter()
            .find(|c| {
                c.content_type
                    .as_ref()
                    .is_some_and(|t| t.to_string().starts_with("image/"))
            })
            .and_then(|c| c.url.as_ref().map(|u| u.to_string()))
            .or_else(|| m.thumbnails.first().map(|t| t.image.uri.clone()))
    });
    from_media.or_else(|| {
        entry
            .links
            .iter()
            .find(|l| {
                l.rel.as_deref() == Some("enclosure")
                    && l.media_type
                        .as_deref()
                        .is_some_and(|t| t.starts_with("image/"))
            })
            .map(|l| l.href.clone())
    })
}

/// HTML kept as one Markdown HTML block: wrapped in a `<div>`, with blank lines (which would
/// end the block and let Markdown reinterpret the rest) replaced by an empty comment.
fn html_block(html: &str) -> String {
    let lines: Vec<&str> = html
        .trim()
        .lines()
        .map(|l| if l.trim().is_empty() { "<!-- -->" } else { l })
        .collect();
    format!("<div>\n{}\n</div>", lines.join("\n"))
}

/// Creates `{dir}/{stem}.md`, or `{stem}-2.md`, … if that exists; never overwrites.
fn write_new_file(dir: &Path, stem: &str, text: &str) -> anyhow::Result<PathBuf> {
    for n in 1..1000 {
        let name = if n == 1 {
            format!("{stem}.md")
        } else {
            format!("{stem}-{n}.md")
        };
        let path = dir.join(name);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                f.write_all(text.as_bytes())
                    .with_context(|| format!("cannot write {}", path.display()))?;
                return Ok(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
        }
    }
    anyhow::bail!("too many files named {stem}*.md in {}", dir.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_stays_one_block() {
        let md = html_block("<p>Eins</p>\n\n<p>Zwei</p>\n   \n<pre>a\n\nb</pre>");
        let base = url::Url::parse("https://x.de/a").unwrap();
        let html = crate::content::markdown::render_html(&md, &base);
        assert!(
            html.contains("<p>Eins</p>") && html.contains("<p>Zwei</p>"),
            "{html}"
        );
        assert!(!html.contains("&lt;p&gt;"), "{html}");
    }

    #[test]
    fn uri_check() {
        assert!(is_absolute_uri("tag:www.fitko.de,2020-09-08:x"));
        assert!(is_absolute_uri("https://www.fitko.de/a"));
        assert!(!is_absolute_uri("12345"));
        assert!(!is_absolute_uri("a b:c"));
    }
}
