//! `herold build` on fixture sites, read back with feed-rs.

use crate::helpers::*;

fn three_items(site: &Site) {
    site.item(
        "2026-01-10-ozg.md",
        "OZG-Meldung",
        "2026-01-10T09:00:00+01:00",
        "tags = [\"OZG\", \"Öffentliche Verwaltung\"]\ncategory = \"Pressemitteilung\"",
        "Erster Absatz zur OZG.\n\n[Mehr](mehr.html)",
    );
    site.item(
        "2026-02-10-fit.md",
        "FIT-Connect-Meldung",
        "2026-02-10",
        "slug = \"fit\"\ntags = [\"FIT-Connect\", \"öffentliche verwaltung\"]",
        "Zu FIT-Connect.",
    );
    site.item(
        "alt/2025-07-01-sommer.md",
        "Sommermeldung",
        "2025-07-01T12:00:00Z",
        "tags = [\"OZG\"]\nauthor = \"Pressestelle\"",
        "Sommer.",
    );
}

#[test]
fn all_formats_carry_the_items_newest_first() {
    let site = Site::new();
    three_items(&site);
    site.build();
    for f in FORMATS {
        let feed = site.feed(f);
        assert_eq!(
            titles(&feed),
            ["FIT-Connect-Meldung", "OZG-Meldung", "Sommermeldung"],
            "{f}"
        );
        assert_eq!(
            ids(&feed),
            [
                "tag:www.fitko.de,2026-02-10:fit",
                "tag:www.fitko.de,2026-01-10:ozg",
                "tag:www.fitko.de,2025-07-01:sommer",
            ],
            "{f}"
        );
        let first = &feed.entries[1];
        assert_eq!(
            first.links[0].href, "https://www.fitko.de/aktuelles/ozg",
            "{f}"
        );
        assert_eq!(
            first.published.unwrap().to_rfc3339(),
            "2026-01-10T08:00:00+00:00",
            "{f}"
        );
        let body = first
            .content
            .as_ref()
            .and_then(|c| c.body.clone())
            .unwrap_or_default();
        assert!(
            body.contains("href=\"https://www.fitko.de/aktuelles/mehr.html\""),
            "{f}: {body}"
        );
        let terms: Vec<String> = first.categories.iter().map(|c| c.term.clone()).collect();
        assert_eq!(
            terms,
            ["Pressemitteilung", "OZG", "Öffentliche Verwaltung"],
            "{f}"
        );
        // The summer item: UTC noon is 14:00 in Berlin summer time.
        assert_eq!(
            feed.entries[2].published.unwrap().to_rfc3339(),
            "2025-07-01T12:00:00+00:00"
        );
        assert_eq!(
            feed.entries[2].authors[0].name.as_deref(),
            Some("Pressestelle"),
            "{f}"
        );
    }
    let rss = String::from_utf8(site.feed_bytes("rss.xml")).unwrap();
    assert!(
        rss.contains("<pubDate>Tue, 01 Jul 2025 14:00:00 +0200</pubDate>"),
        "{rss}"
    );
    assert!(rss.contains("<lastBuildDate>Tue, 10 Feb 2026 00:00:00 +0100</lastBuildDate>"));
    assert!(rss.contains("<dc:creator>Pressestelle</dc:creator>"));
    assert!(rss.contains("<atom:link href=\"https://www.fitko.de/feeds/rss.xml\" rel=\"self\""));
    let atom = String::from_utf8(site.feed_bytes("atom.xml")).unwrap();
    // Atom `updated` carries a sub-second tiebreak fixed by the item's id.
    assert!(atom.contains("<updated>2026-02-10T00:00:00."), "{atom}");
    assert!(atom.contains("xml:lang=\"de\""));
}

#[test]
fn tag_and_category_feeds_use_transliterated_slugs() {
    let site = Site::new();
    three_items(&site);
    site.build();
    // Two spellings of one tag are one feed.
    let feed = site.feed("tags/oeffentliche-verwaltung/atom.xml");
    assert_eq!(titles(&feed), ["FIT-Connect-Meldung", "OZG-Meldung"]);
    assert_eq!(
        feed.title.unwrap().content,
        "FITKO – Aktuelles – Öffentliche Verwaltung"
    );
    assert_eq!(
        feed.id,
        "https://www.fitko.de/feeds/tags/oeffentliche-verwaltung/atom.xml"
    );
    assert_eq!(
        titles(&site.feed("tags/ozg/rss.xml")),
        ["OZG-Meldung", "Sommermeldung"]
    );
    assert_eq!(
        titles(&site.feed("tags/fit-connect/feed.json")),
        ["FIT-Connect-Meldung"]
    );
    assert_eq!(
        titles(&site.feed("categories/pressemitteilung/rss.xml")),
        ["OZG-Meldung"]
    );
    assert_feedparser_clean(&site.path("feeds"));
}

#[test]
fn limit_drafts_and_scheduled_items() {
    let site = Site::with_config(&format!("{BASE_CONFIG}limit = 3\n"));
    for day in 1..=5 {
        site.item(
            &format!("n{day}.md"),
            &format!("Meldung {day}"),
            &format!("2026-03-0{day}"),
            "",
            "Text",
        );
    }
    site.item("entwurf.md", "Entwurf", "2026-03-09", "draft = true", "x");
    site.item("zukunft.md", "Zukunft", "2999-01-01", "", "x");
    let log = site.build();
    assert!(
        log.contains("scheduled=1") && log.contains("drafts=1"),
        "{log}"
    );
    for f in FORMATS {
        assert_eq!(
            titles(&site.feed(f)),
            ["Meldung 5", "Meldung 4", "Meldung 3"],
            "{f}"
        );
    }
}

#[test]
fn second_build_changes_no_byte_and_no_mtime() {
    let site = Site::new();
    three_items(&site);
    site.build();
    let first = site.snapshot_feeds();
    // Site, three tags and one category, three formats each.
    assert_eq!(first.len(), 5 * 3);
    std::thread::sleep(std::time::Duration::from_millis(30));
    let log = site.build();
    assert!(log.contains("files_changed=0"), "{log}");
    assert_eq!(site.snapshot_feeds(), first);
}

#[test]
fn a_title_edit_keeps_the_id_and_changes_updated_only() {
    let site = Site::new();
    three_items(&site);
    site.build();
    let before = ids(&site.feed("atom.xml"));
    site.item(
        "2026-01-10-ozg.md",
        "OZG-Meldung (korrigiert)",
        "2026-01-10T09:00:00+01:00",
        "updated = 2026-01-11T10:00:00+01:00\ntags = [\"OZG\"]",
        "Neu.",
    );
    site.build();
    let feed = site.feed("atom.xml");
    assert_eq!(ids(&feed), before);
    assert_eq!(titles(&feed)[1], "OZG-Meldung (korrigiert)");
    let updated = feed.entries[1].updated.unwrap();
    assert_eq!(
        chrono::SubsecRound::trunc_subsecs(updated, 0).to_rfc3339(),
        "2026-01-11T09:00:00+00:00"
    );
}

#[test]
fn a_tag_that_disappears_loses_its_feed_files() {
    let site = Site::new();
    three_items(&site);
    site.build();
    assert!(site.path("feeds/tags/fit-connect/rss.xml").exists());
    std::fs::write(
        site.path("feeds/tags/fit-connect/notes.txt"),
        "operator's file",
    )
    .unwrap();
    site.item(
        "2026-02-10-fit.md",
        "FIT-Connect-Meldung",
        "2026-02-10",
        "slug = \"fit\"",
        "Ohne Stichwort.",
    );
    site.build();
    for f in FORMATS {
        assert!(!site.path("feeds/tags/fit-connect").join(f).exists(), "{f}");
    }
    assert!(
        site.path("feeds/tags/fit-connect/notes.txt").exists(),
        "other files are never touched"
    );
}

#[test]
fn strict_build_writes_nothing_when_an_item_is_broken() {
    let site = Site::new();
    three_items(&site);
    site.write("kaputt.md", "+++\ntitle = \"x\"\n");
    let out = site.herold(&["build", "--strict"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("kaputt.md:1: "));
    assert!(!site.path("feeds/rss.xml").exists());
    // Without --strict the good items are published and the bad one reported.
    let log = site.build();
    assert!(
        log.contains("content/kaputt.md:1: the front matter opened here is never closed"),
        "{log}"
    );
    assert_eq!(site.feed("rss.xml").entries.len(), 3);
}

#[test]
fn a_one_megabyte_body_is_published_whole() {
    let site = Site::new();
    let paragraph = "Die Registermodernisierung verbindet Register über das NOOTS. ".repeat(16);
    let body: String = (0..1100)
        .map(|i| format!("Absatz {i}: {paragraph}\n\n"))
        .collect();
    assert!(body.len() > 1_000_000);
    site.item("gross.md", "Sehr lang", "2026-01-01", "", &body);
    site.build();
    let feed = site.feed("feed.json");
    let html = feed.entries[0]
        .content
        .as_ref()
        .unwrap()
        .body
        .clone()
        .unwrap();
    assert!(html.contains("Absatz 1099:"));
    assert!(html.len() > 1_000_000);
}

#[test]
fn formats_and_per_tag_switches_are_honoured() {
    let site = Site::with_config(&format!(
        "{BASE_CONFIG}formats = [\"atom\"]\nper_tag = false\n"
    ));
    three_items(&site);
    site.build();
    assert!(site.path("feeds/atom.xml").exists());
    assert!(!site.path("feeds/rss.xml").exists());
    assert!(!site.path("feeds/tags").exists());
    assert!(
        site.path("feeds/categories/pressemitteilung/atom.xml")
            .exists()
    );
}

#[test]
fn items_of_the_same_day_get_distinct_stable_atom_updated_values() {
    let site = Site::new();
    for n in 0..5 {
        site.item(
            &format!("tag{n}.md"),
            &format!("Meldung {n}"),
            "2026-05-04",
            "",
            "Text",
        );
    }
    site.build();
    let updated = |site: &Site| -> Vec<String> {
        let mut v: Vec<String> = site
            .feed("atom.xml")
            .entries
            .iter()
            .map(|e| e.updated.unwrap().to_rfc3339())
            .collect();
        v.sort();
        v
    };
    let first = updated(&site);
    let mut distinct = first.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), 5, "{first:?}");
    assert!(
        first.iter().all(|u| u.starts_with("2026-05-03T22:00:00.")),
        "{first:?}"
    );
    // A new neighbour changes no existing entry's value.
    site.item("neu.md", "Neu", "2026-05-04", "", "Text");
    site.build();
    let second = updated(&site);
    assert!(
        first.iter().all(|u| second.contains(u)),
        "{first:?} vs {second:?}"
    );
    // RSS and JSON Feed keep the time as written.
    let json = String::from_utf8(site.feed_bytes("feed.json")).unwrap();
    assert!(
        json.contains("\"date_modified\": \"2026-05-04T00:00:00+02:00\""),
        "{json}"
    );
}

#[test]
fn the_scan_cache_serves_unchanged_files_and_never_a_changed_one() {
    let site = Site::new();
    site.item("a.md", "Alpha", "2026-01-01", "", "Erster „Text“.");
    site.item(
        "b.md",
        "Beta",
        "2026-01-02",
        "tags = [\"OZG\"]",
        "Zweiter Text.",
    );
    let scan = |site: &Site| {
        let out = site.herold(&["-v", "build"]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
        let line = err
            .lines()
            .find(|l| l.contains(" scan "))
            .unwrap_or_else(|| panic!("no scan line: {err}"))
            .to_string();
        let field = |name: &str| -> usize {
            line.split(&format!("{name}="))
                .nth(1)
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} in {line}"))
        };
        (field("cached"), field("read"))
    };
    // `check` reads every file and writes nothing.
    assert!(site.herold(&["check"]).status.success());
    assert!(!site.path("data/scan.cache").exists());
    // Sets a content file's modification time (its change time becomes now).
    let touch = |name: &str, seconds_from_now: i64| {
        let t = if seconds_from_now >= 0 {
            std::time::SystemTime::now() + std::time::Duration::from_secs(seconds_from_now as u64)
        } else {
            std::time::SystemTime::now()
                - std::time::Duration::from_secs((-seconds_from_now) as u64)
        };
        std::fs::File::options()
            .write(true)
            .open(site.path("content").join(name))
            .unwrap()
            .set_modified(t)
            .unwrap();
    };
    // Files changed less than two seconds before a scan are never cached: their stamps
    // could stay the same through another change within the same clock tick. A time in
    // the future never settles.
    touch("a.md", 3600);
    touch("b.md", 3600);
    assert_eq!(scan(&site), (0, 2));
    assert_eq!(scan(&site), (0, 2), "fresh files are not cached");
    // Settled: modified long ago, and the change time (now) two seconds old.
    touch("a.md", -3600);
    touch("b.md", -3600);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert_eq!(scan(&site), (0, 2));
    assert_eq!(scan(&site), (2, 0));
    let before = site.feed_bytes("rss.xml");

    // An edit that keeps the size: read again.
    site.item("a.md", "Alphb", "2026-01-01", "", "Erster „Text“.");
    touch("a.md", 3600);
    assert_eq!(scan(&site), (1, 1));
    assert_eq!(titles(&site.feed("rss.xml")), ["Beta", "Alphb"]);

    // Replaced by another file with the same bytes and times: another inode, read again.
    let b = site.path("content/b.md");
    let times = std::fs::metadata(&b).unwrap().modified().unwrap();
    let copy = site.path("content/.b.md.new");
    std::fs::copy(&b, &copy).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&copy)
        .unwrap()
        .set_modified(times)
        .unwrap();
    std::fs::rename(&copy, &b).unwrap();
    assert_eq!(
        scan(&site),
        (0, 2),
        "the replaced file and the fresh edit are read"
    );

    // A cache of garbage or of other settings is ignored, and the output is the same.
    touch("a.md", -3600);
    touch("b.md", -3600);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert_eq!(scan(&site), (0, 2));
    assert_eq!(scan(&site), (2, 0));
    std::fs::write(site.path("data/scan.cache"), b"herold-scan\0garbage").unwrap();
    assert_eq!(scan(&site), (0, 2));
    assert_eq!(scan(&site), (2, 0));
    let config = std::fs::read_to_string(site.path("config.toml")).unwrap();
    std::fs::write(
        site.path("config.toml"),
        config.replace("author = \"FITKO\"", "author = \"Redaktion\""),
    )
    .unwrap();
    assert_eq!(
        scan(&site),
        (0, 2),
        "another default author makes other items"
    );
    assert!(
        site.feed("atom.xml")
            .entries
            .iter()
            .all(|e| format!("{:?}", e.authors).contains("\"Redaktion\""))
    );
    std::fs::write(site.path("config.toml"), config).unwrap();
    scan(&site);
    let after = site.feed_bytes("rss.xml");
    assert_ne!(before, after, "the edited title");
    assert_eq!(
        String::from_utf8(after).unwrap().replace("Alphb", "Alpha"),
        String::from_utf8(before).unwrap()
    );

    // A broken file is never cached: every build reports it.
    site.write("kaputt.md", "+++\ntitle = \"x\"\n+++\n");
    touch("kaputt.md", -3600);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    for _ in 0..2 {
        let out = site.herold(&["build"]);
        assert!(String::from_utf8_lossy(&out.stderr).contains("kaputt.md:1"));
    }
}
