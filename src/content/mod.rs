//! Content: news items read from Markdown files, and the corpus they form.
//!
//! Everything here but [`scan`] is pure. A scan never fails because of one bad file: it
//! returns the good items *and* the problems, each naming file, line and reason.

pub mod cache;
pub mod front;
pub mod item;
pub mod markdown;
pub mod scan;
pub mod slug;
pub mod text;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

pub use item::{Item, Rendition, SiteContext, parse_item};

/// How bad a problem is: errors skip the file, warnings only inform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Warning,
    Error,
}

/// Something wrong with a content file, reported as `PATH:LINE: reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub line: usize,
    pub message: String,
    pub severity: Severity,
}

impl Problem {
    pub fn error(path: &str, line: usize, message: impl Into<String>) -> Problem {
        Problem {
            path: path.to_string(),
            line,
            message: message.into(),
            severity: Severity::Error,
        }
    }

    pub fn warning(path: &str, line: usize, message: impl Into<String>) -> Problem {
        Problem {
            path: path.to_string(),
            line,
            message: message.into(),
            severity: Severity::Warning,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.severity == Severity::Warning {
            "warning: "
        } else {
            ""
        };
        write!(f, "{}:{}: {kind}{}", self.path, self.line, self.message)
    }
}

/// The published-or-scheduled items of a site (drafts left out), newest first, and the
/// problems found while reading them.
#[derive(Debug, Clone, Default)]
pub struct Corpus {
    /// Sorted by `date` descending, ties broken by `id` ascending.
    pub items: Vec<Arc<Item>>,
    pub problems: Vec<Problem>,
    pub drafts: usize,
}

impl Corpus {
    /// Forms the corpus from the result of each file. Files are taken in path order, so when
    /// two items share an id the file that sorts first keeps it and the other is reported.
    pub fn assemble(mut results: Vec<Result<Arc<Item>, Problem>>) -> Corpus {
        fn path(r: &Result<Arc<Item>, Problem>) -> &str {
            match r {
                Ok(i) => &i.path,
                Err(p) => &p.path,
            }
        }
        results.sort_unstable_by(|a, b| path(a).cmp(path(b)));
        let mut corpus = Corpus::default();
        let mut first: HashMap<&str, &str> = HashMap::with_capacity(results.len());
        let mut items = Vec::with_capacity(results.len());
        for r in &results {
            match r {
                Err(p) => corpus.problems.push(p.clone()),
                Ok(item) => {
                    if let Some(first) = first.get(item.id.as_str()) {
                        corpus.problems.push(Problem::error(
                            &item.path,
                            item.id_line,
                            format!("duplicate id `{}`: {first} has the same; set another `slug` or `id`", item.id),
                        ));
                        continue;
                    }
                    first.insert(&item.id, &item.path);
                    if item.draft {
                        corpus.drafts += 1;
                    } else {
                        items.push(item.clone());
                    }
                }
            }
        }
        drop(first);
        corpus.items = items;
        corpus
            .items
            .sort_unstable_by(|a, b| b.date.cmp(&a.date).then_with(|| a.id.cmp(&b.id)));
        corpus
            .problems
            .sort_by(|a, b| a.path.cmp(&b.path).then(a.line.cmp(&b.line)));
        corpus
    }

    pub fn errors(&self) -> usize {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
            .count()
    }
}

/// Whether a path (relative to the content directory, `/`-separated) is a content file:
/// `*.md`, no part of it starting with `.` or `_`, no editor temp file (`*~`, `*.swp`, `#*#`).
pub fn is_content_file(rel_path: &str) -> bool {
    let mut parts = rel_path.split('/').peekable();
    while let Some(part) = parts.next() {
        if part.is_empty() || part.starts_with('.') || part.starts_with('_') {
            return false;
        }
        if parts.peek().is_none() {
            return part.ends_with(".md")
                && part.len() > 3
                && !part.starts_with('#')
                && !part.ends_with('~')
                && !part.ends_with(".swp");
        }
    }
    false
}

/// Whether a path (relative, `/`-separated) names an editor's temporary or backup file,
/// which never matters: `*~`, `*.swp`, `*.swx`, `#*#`, `.#*`, vim's `4913` probe.
pub fn is_temp_file(rel_path: &str) -> bool {
    let name = rel_path.rsplit('/').next().unwrap_or(rel_path);
    name.ends_with('~')
        || name.ends_with(".swp")
        || name.ends_with(".swx")
        || name.starts_with(".#")
        || (name.starts_with('#') && name.ends_with('#'))
        || name == "4913"
        || name.ends_with(".tmp")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_files() {
        for yes in ["a.md", "2026/01/a.md", "ä ö.md"] {
            assert!(is_content_file(yes), "{yes}");
        }
        for no in [
            ".a.md",
            "_index.md",
            "a.md~",
            "#a.md#",
            "a.md.swp",
            ".git/a.md",
            "_drafts/a.md",
            "a.txt",
            ".md",
            "a/.#a.md",
        ] {
            assert!(!is_content_file(no), "{no}");
        }
    }
}
