//! A tiny vocabulary for tests: a site in a temporary directory, the real binary, and
//! feeds read back with `feed-rs`.

use std::path::{Path, PathBuf};
use std::process::Output;

pub const BASE_CONFIG: &str = r#"[site]
title = "FITKO – Aktuelles"
description = "Neuigkeiten der Föderalen IT-Kooperation"
base_url = "https://www.fitko.de"
link = "https://www.fitko.de/aktuelles"
item_url = "https://www.fitko.de/aktuelles/{slug}"
author = "FITKO"

[feeds]
base_url = "https://www.fitko.de/feeds"
"#;

/// A site in a temporary directory: `config.toml`, `content/`, `feeds/`.
pub struct Site {
    pub dir: tempfile::TempDir,
}

impl Site {
    pub fn new() -> Site {
        Site::with_config(BASE_CONFIG)
    }

    pub fn with_config(config: &str) -> Site {
        let site = Site {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::write(site.path("config.toml"), config).unwrap();
        std::fs::create_dir_all(site.path("content")).unwrap();
        site
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes `content/{rel}`.
    pub fn write(&self, rel: &str, text: impl AsRef<[u8]>) {
        let p = self.path("content").join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// Writes a TOML item with the given extra front matter lines.
    pub fn item(&self, rel: &str, title: &str, date: &str, extra: &str, body: &str) {
        self.write(
            rel,
            format!("+++\ntitle = {title:?}\ndate = {date}\n{extra}\n+++\n{body}\n"),
        );
    }

    /// Runs the real binary in the site's directory.
    pub fn herold(&self, args: &[&str]) -> Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_herold"))
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    }

    /// `herold build`, which must succeed; gives stderr.
    pub fn build(&self) -> String {
        let out = self.herold(&["build"]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "build failed: {err}");
        err
    }

    pub fn feed_bytes(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.path("feeds").join(rel)).unwrap_or_else(|e| panic!("feeds/{rel}: {e}"))
    }

    /// Reads `feeds/{rel}` back with feed-rs.
    pub fn feed(&self, rel: &str) -> feed_rs::model::Feed {
        feed_rs::parser::parse(&self.feed_bytes(rel)[..])
            .unwrap_or_else(|e| panic!("feeds/{rel} does not parse: {e}"))
    }

    /// Every file below `feeds/` with its bytes and mtime.
    pub fn snapshot_feeds(&self) -> Vec<(PathBuf, Vec<u8>, std::time::SystemTime)> {
        let mut out = Vec::new();
        walk(&self.path("feeds"), &mut out);
        out.sort();
        out
    }
}

fn walk(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>, std::time::SystemTime)>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push((
                p.clone(),
                std::fs::read(&p).unwrap(),
                e.metadata().unwrap().modified().unwrap(),
            ));
        }
    }
}

pub fn titles(feed: &feed_rs::model::Feed) -> Vec<String> {
    feed.entries
        .iter()
        .map(|e| {
            e.title
                .as_ref()
                .map(|t| t.content.clone())
                .unwrap_or_default()
        })
        .collect()
}

pub fn ids(feed: &feed_rs::model::Feed) -> Vec<String> {
    feed.entries.iter().map(|e| e.id.clone()).collect()
}

pub const FORMATS: [&str; 3] = ["rss.xml", "atom.xml", "feed.json"];

/// Runs Python feedparser over every XML feed below `dir` and asserts `bozo == 0`
/// (feedparser 6.0 does not read JSON Feed; feed-rs checks those).
pub fn assert_feedparser_clean(dir: &Path) {
    let script = r#"
import sys, os, feedparser
bad = []
for d, _, files in os.walk(sys.argv[1]):
    for f in files:
        if f.endswith('.xml'):
            p = os.path.join(d, f)
            r = feedparser.parse(open(p, 'rb').read())
            if r.bozo or not r.entries and 'tags' in p:
                bad.append('%s: %r' % (p, r.get('bozo_exception')))
print('\n'.join(bad))
sys.exit(1 if bad else 0)
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(dir)
        .output()
        .expect("python3 with feedparser is installed (see .ci/run)");
    assert!(
        out.status.success(),
        "feedparser: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
