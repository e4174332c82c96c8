//! The directory of nasty inputs in `tests/fixtures/nasty`: each file's expected outcome.

use std::path::Path;

use crate::helpers::*;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

fn nasty_site() -> Site {
    let site = Site::new();
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nasty"),
        &site.path("content"),
    );
    site
}

#[test]
fn every_bad_file_is_reported_with_line_and_reason_and_skipped() {
    let site = nasty_site();
    let log = site.build();
    let problems: Vec<&str> = log.lines().filter(|l| l.starts_with("content/")).collect();
    let expected = [
        "content/bad-date.md:3: `31.12.2025` is not a date",
        "content/bad-utf8.md:5: not valid UTF-8",
        "content/dup-b.md:4: duplicate id `tag:www.fitko.de,2026-01-06:doppelt`: dup-a.md has the same",
        "content/empty.md:1: the file is empty",
        "content/missing-title.md:1: front matter: `title` is missing",
        "content/unclosed.md:1: the front matter opened here is never closed with a `+++` line",
        "content/yaml-unknown-key.md:4: front matter: unknown field `tilte`",
    ];
    assert_eq!(problems.len(), expected.len(), "{log}");
    for (got, want) in problems.iter().zip(expected) {
        assert!(got.starts_with(want), "got {got:?}, want {want:?}");
    }
    assert!(
        log.contains("skipped=7") && log.contains("drafts=1") && log.contains("scheduled=1"),
        "{log}"
    );
}

#[test]
fn the_good_nasty_files_are_published_cleanly() {
    let site = nasty_site();
    site.build();
    let feed = site.feed("atom.xml");
    let mut got = titles(&feed);
    got.sort();
    assert_eq!(
        got,
        [
            "BOM und CRLF",
            "Erste Meldung",
            "Feindliches HTML",
            "R&D fett \"zitiert\" ]]> 'einfach' & mehr",
            "Steuerzeichen im Titel",
            "Tief verschachtelt",
            "Umlaute und Emoji 🚀 in Stichwörtern",
        ]
    );
    for f in FORMATS {
        let bytes = site.feed_bytes(f);
        let text = String::from_utf8(bytes).unwrap();
        for bad in [
            "<script",
            "onerror",
            "onclick",
            "javascript:",
            "<iframe",
            "\u{1}",
            "\u{1b}",
            "\u{c}",
            "\u{7}",
        ] {
            assert!(!text.contains(bad), "{f} contains {bad:?}");
        }
    }
    let hostile = feed
        .entries
        .iter()
        .find(|e| e.id.ends_with(":feindliches-html"))
        .unwrap();
    let body = hostile.content.as_ref().unwrap().body.clone().unwrap();
    assert!(
        body.contains("href=\"https://www.fitko.de/anderes\""),
        "{body}"
    );
    assert!(
        body.contains("src=\"https://www.fitko.de/grafik.svg\""),
        "{body}"
    );
    assert!(
        body.contains("src=\"https://www.fitko.de/aktuelles/bild.png\""),
        "{body}"
    );
    let specials = feed
        .entries
        .iter()
        .find(|e| e.id.ends_with(":sonderzeichen"))
        .unwrap();
    let body = specials.content.as_ref().unwrap().body.clone().unwrap();
    assert!(body.contains("]]&gt; mitten drin"), "{body}");
    assert_eq!(
        specials.summary.as_ref().unwrap().content,
        "Zusammenfassung mit & und <tag> und ]]>"
    );
}

#[test]
fn emoji_and_umlaut_tags_get_clean_feeds() {
    let site = nasty_site();
    site.build();
    let check = String::from_utf8(site.herold(&["check"]).stderr).unwrap();
    assert!(
        check.contains(
            "content/emoji-tags.md:1: warning: `🚀` has no letters or digits, so it gets no feed"
        ),
        "{check}"
    );
    assert_eq!(
        titles(&site.feed("tags/digitalisierung/rss.xml")),
        ["Tief verschachtelt", "Umlaute und Emoji 🚀 in Stichwörtern"]
    );
    assert_eq!(
        titles(&site.feed("tags/oeffentliche-verwaltung/rss.xml")).len(),
        1
    );
    assert_eq!(titles(&site.feed("tags/strasse/feed.json")).len(), 1);
    assert_eq!(
        titles(&site.feed("categories/tests-pruefungen/atom.xml")).len(),
        1
    );
    let mut tags: Vec<String> = std::fs::read_dir(site.path("feeds/tags"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    tags.sort();
    assert_eq!(
        tags,
        [
            "digitalisierung",
            "oeffentliche-verwaltung",
            "strasse",
            "technik"
        ]
    );
}

#[test]
fn python_feedparser_reads_every_nasty_feed_without_bozo() {
    let site = nasty_site();
    site.build();
    assert_feedparser_clean(&site.path("feeds"));
}

#[test]
fn check_exits_1_and_lists_problems_and_warnings() {
    let site = nasty_site();
    let out = site.herold(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("content/bad-date.md:3: "), "{err}");
    assert!(err.contains("content/nested/tief/drinnen/verschachtelt.md:1: warning: the id comes from the file name; add `slug = \"verschachtelt\"`"), "{err}");
}
