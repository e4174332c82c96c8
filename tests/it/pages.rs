//! The news on the web (SPEC 10) and archived feeds (SPEC 11): pages built and served,
//! every link resolving, drafts and scheduled items kept out, deleted files' pages gone,
//! the digest archive without personal data, and the RFC 5005 chain walked to its end.

use std::collections::{BTreeSet, HashMap};

use crate::helpers::*;

/// A site whose items link to herold's own pages (no `item_url`, no `link`).
pub const OWN_PAGES: &str = r#"[site]
title = "FITKO – Aktuelles"
description = "Neuigkeiten der Föderalen IT-Kooperation"
base_url = "https://www.fitko.de"
author = "FITKO"
privacy_url = "https://www.fitko.de/datenschutz"
imprint_url = "https://www.fitko.de/impressum"
accessibility_url = "https://www.fitko.de/barrierefreiheit"

[pages]
per_page = 3
"#;

pub fn own_site() -> Site {
    own_site_with(OWN_PAGES)
}

/// The items of [`own_site`] under another configuration.
pub fn own_site_with(config: &str) -> Site {
    let site = Site::with_config(config);
    site.item(
        "2026-01-20-ozg.md",
        "OZG-Änderungsgesetz: „Once-Only“ kommt",
        "2026-01-20T09:00:00+01:00",
        "tags = [\"OZG\", \"Registermodernisierung\"]\ncategory = \"Pressemitteilung\"\nsummary = \"Bund und Länder einigen sich.\"",
        "Der Bund und die Länder haben sich geeinigt.\n\n## Was sich ändert\n\nVieles.",
    );
    site.item(
        "2026-02-03-fim.md",
        "FIM-Leistungsbeschreibungen für Bauanträge",
        "2026-02-03T10:00:00+01:00",
        "tags = [\"FIM\"]\ncategory = \"Meldung\"",
        "Die Leistungsbeschreibungen sind da.",
    );
    site.item(
        "2026-03-03-stack.md",
        "Deutschland-Stack: Konsultation",
        "2026-03-03T12:00:00+01:00",
        "tags = [\"Deutschland-Stack\", \"OZG\"]",
        "Die Konsultation beginnt.",
    );
    site.item(
        "2026-04-01-it-planungsrat.md",
        "IT-Planungsrat tagt",
        "2026-04-01T12:00:00+02:00",
        "category = \"Meldung\"",
        "Der IT-Planungsrat tagt.",
    );
    site.item(
        "entwurf.md",
        "Geheimer Entwurf",
        "2026-04-02T12:00:00+02:00",
        "draft = true\ntags = [\"OZG\"]",
        "Noch nicht.",
    );
    site.item(
        "zukunft.md",
        "Künftige Meldung",
        "2099-01-01T12:00:00+01:00",
        "tags = [\"OZG\"]",
        "Später.",
    );
    site
}

/// Every `href="…"` of an HTML page.
fn hrefs(html: &str) -> Vec<String> {
    html.split("href=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .map(|s| s.replace("&amp;", "&"))
        .collect()
}

/// Follows every link below the pages from the index; gives each URL path and its body.
fn crawl(r: &Running, base: &str) -> HashMap<String, String> {
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut others: BTreeSet<String> = BTreeSet::new();
    let mut todo = vec![format!("{base}/aktuelles/")];
    while let Some(url) = todo.pop() {
        let path = r.path_of(&url);
        if seen.contains_key(&path) {
            continue;
        }
        let resp = r.get(&path, &[]);
        assert_eq!(resp.status, 200, "{url} (linked from a page)");
        let body = resp.text();
        for h in hrefs(&body) {
            if h.starts_with(&format!("{base}/aktuelles/")) && h.ends_with('/') {
                todo.push(h);
            } else if h.starts_with(base) {
                // The stylesheet, the subscription page and the feeds: answered, not crawled.
                others.insert(h);
            } else if !h.starts_with('#') {
                assert!(
                    h.starts_with("https://www.fitko.de/"),
                    "a link to another host on {url}: {h}"
                );
            }
        }
        seen.insert(path, body);
    }
    for url in others {
        assert_eq!(r.get(&r.path_of(&url), &[]).status, 200, "{url}");
    }
    seen
}

#[test]
fn every_page_kind_is_served_and_every_link_resolves() {
    let site = own_site();
    let r = site.start();
    let base = format!("http://{}", r.addr);
    r.wait_log("pages updated");
    let pages = crawl(&r, &base);
    let index = &pages["/aktuelles/"];
    // Four published items, three a page: the index has a second page.
    assert!(
        pages.contains_key("/aktuelles/page/2/"),
        "{:?}",
        pages.keys()
    );
    for p in [
        "/aktuelles/2026/01/20/ozg/",
        "/aktuelles/2026/02/03/fim/",
        "/aktuelles/tags/ozg/",
        "/aktuelles/tags/registermodernisierung/",
        "/aktuelles/categories/pressemitteilung/",
        "/aktuelles/categories/meldung/",
    ] {
        assert!(pages.contains_key(p), "{p} not reached: {:?}", pages.keys());
    }
    // Newest first, with date, lead, category and tags.
    let pos = |s: &str| {
        index
            .find(s)
            .unwrap_or_else(|| panic!("{s} not on the index"))
    };
    assert!(pos("IT-Planungsrat tagt") < pos("Deutschland-Stack"));
    assert!(index.contains("<time datetime=\"2026-04-01T12:00:00+02:00\">1. April 2026</time>"));
    // The item page: one h1, date, bold lead, body, author, category, tags, feeds.
    let item = &pages["/aktuelles/2026/01/20/ozg/"];
    assert_eq!(item.matches("<h1").count(), 1, "{item}");
    assert!(item.contains("<h1>OZG-Änderungsgesetz: „Once-Only“ kommt</h1>"));
    assert!(item.contains("<p class=\"lead\">Bund und Länder einigen sich.</p>"));
    assert!(
        item.contains("<h2 id=\"was-sich-aendert\">") || item.contains("<h2>Was sich ändert</h2>"),
        "{item}"
    );
    assert!(item.contains("von FITKO"));
    assert!(
        item.contains("Stichwörter: <a href=\"") && item.contains(">Registermodernisierung</a>")
    );
    assert!(item.contains("<html lang=\"de\">"));
    assert!(item.contains("class=\"skip\" href=\"#inhalt\""));
    assert!(item.contains("<main id=\"inhalt\">"));
    // Autodiscovery: the pages name their feeds; the tag page names the tag's feeds.
    assert!(item.contains(&format!(
        "<link rel=\"alternate\" type=\"application/atom+xml\" title=\"FITKO – Aktuelles (Atom)\" href=\"{base}/feeds/atom.xml\">"
    )));
    let tag = &pages["/aktuelles/tags/ozg/"];
    assert!(tag.contains(&format!("href=\"{base}/feeds/tags/ozg/rss.xml\"")));
    assert!(tag.contains("<h1>Stichwort: OZG</h1>"));
    // Neither a draft nor a scheduled item anywhere.
    for (path, body) in &pages {
        assert!(!body.contains("Geheimer Entwurf"), "draft on {path}");
        assert!(
            !body.contains("Künftige Meldung"),
            "scheduled item on {path}"
        );
    }
    // The sitemap lists exactly the pages reached (besides the digest archive's).
    let sitemap = r.get("/aktuelles/sitemap.xml", &[]);
    assert_eq!(sitemap.status, 200);
    assert_eq!(
        sitemap.header("content-type"),
        Some("application/xml; charset=utf-8")
    );
    let listed: BTreeSet<String> = sitemap
        .text()
        .split("<loc>")
        .skip(1)
        .map(|s| r.path_of(s.split("</loc>").next().unwrap()))
        .collect();
    let reached: BTreeSet<String> = pages.keys().cloned().collect();
    assert_eq!(listed, reached);

    // Feeds: each item link and each feed's HTML link is a page that answers 200.
    for feed in ["rss.xml", "atom.xml", "feed.json", "tags/ozg/atom.xml"] {
        let f = feed_rs::parser::parse(&r.get(&format!("/feeds/{feed}"), &[]).body[..]).unwrap();
        let html_link = f
            .links
            .iter()
            .find(|l| l.rel.as_deref() != Some("self") && l.rel.as_deref() != Some("hub"))
            .map(|l| l.href.clone())
            .unwrap_or_else(|| panic!("{feed} has no HTML link"));
        assert!(
            pages.contains_key(&r.path_of(&html_link)),
            "{feed}: {html_link}"
        );
        for e in &f.entries {
            let link = &e.links[0].href;
            assert!(
                link.starts_with(&format!("{base}/aktuelles/")),
                "{feed}: {link}"
            );
            assert!(pages.contains_key(&r.path_of(link)), "{feed}: {link}");
        }
    }
    let tag_feed =
        feed_rs::parser::parse(&r.get("/feeds/tags/ozg/atom.xml", &[]).body[..]).unwrap();
    assert!(
        tag_feed
            .links
            .iter()
            .any(|l| l.href == format!("{base}/aktuelles/tags/ozg/"))
    );

    // The subscription page links the news and the feeds.
    let form = r.get("/", &[]).text();
    assert!(
        form.contains(&format!("href=\"{base}/aktuelles/\"")),
        "{form}"
    );
    assert!(form.contains("/feeds/"), "{form}");

    // Validators, compression, and nothing but pages.
    let first = r.get("/aktuelles/2026/01/20/ozg/", &[("Accept-Encoding", "br")]);
    assert_eq!(first.header("content-encoding"), Some("br"));
    assert_eq!(
        first.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let etag = first.header("etag").unwrap().to_string();
    let again = r.get("/aktuelles/2026/01/20/ozg/", &[("If-None-Match", &etag)]);
    assert_eq!(again.status, 304);
    let moved = r.get("/aktuelles/tags/ozg", &[]);
    assert_eq!(moved.status, 301);
    assert_eq!(moved.header("location"), Some("/aktuelles/tags/ozg/"));
    for bad in [
        "/aktuelles/.herold-pages",
        "/aktuelles/../config.toml",
        "/aktuelles/%2e%2e/config.toml",
        "/aktuelles/tags/nicht-da/",
        "/aktuelles/index.html",
    ] {
        assert_eq!(r.get(bad, &[]).status, 404, "{bad}");
    }
}

#[test]
fn a_list_longer_than_its_pages_goes_on_month_by_month() {
    // Four items (January to April), three a page, one page newest first: the index links
    // the month of the first item it does not show, and the months link each other.
    let site = own_site_with(&OWN_PAGES.replace("per_page = 3\n", "per_page = 3\nmax_pages = 1\n"));
    let r = site.start();
    let base = format!("http://{}", r.addr);
    r.wait_log("pages updated");
    let pages = crawl(&r, &base);
    assert!(
        !pages.contains_key("/aktuelles/page/2/"),
        "{:?}",
        pages.keys()
    );
    let index = &pages["/aktuelles/"];
    assert!(
        index.contains(&format!("href=\"{base}/aktuelles/2026/01/\" rel=\"next\"")),
        "{index}"
    );
    let january = &pages["/aktuelles/2026/01/"];
    assert!(
        january.contains("<h1>FITKO – Aktuelles <span class=\"meta\">(Januar 2026)</span></h1>"),
        "{january}"
    );
    assert!(january.contains("OZG-Änderungsgesetz"));
    assert!(
        !january.contains("rel=\"next\""),
        "nothing is older than January"
    );
    assert!(january.contains(&format!("href=\"{base}/aktuelles/2026/02/\" rel=\"prev\"")));
    // Every month is reached, each with its own item, and the newest leads to the index.
    for (month, title) in [
        ("02", "FIM-Leistungsbeschreibungen"),
        ("03", "Deutschland-Stack"),
        ("04", "IT-Planungsrat tagt"),
    ] {
        let page = &pages[&format!("/aktuelles/2026/{month}/")];
        assert!(page.contains(title), "{month}: {page}");
    }
    assert!(
        pages["/aktuelles/2026/04/"].contains(&format!("href=\"{base}/aktuelles/\" rel=\"prev\""))
    );
    // The sitemap lists the month pages too.
    let sitemap = r.get("/aktuelles/sitemap.xml", &[]).text();
    assert!(
        sitemap.contains(&format!("<loc>{base}/aktuelles/2026/03/</loc>")),
        "{sitemap}"
    );
    // The OZG tag's two items fit on its one page: it has no month pages.
    assert!(
        !pages
            .keys()
            .any(|p| p.starts_with("/aktuelles/tags/ozg/2026/"))
    );
}

#[test]
fn scheduled_items_appear_when_due_and_deleted_ones_disappear() {
    let site = own_site();
    let due = chrono::Utc::now() + chrono::TimeDelta::seconds(3);
    let soon = due.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    site.item(
        "bald.md",
        "Bald fällig",
        &soon,
        "tags = [\"OZG\"]",
        "Gleich.",
    );
    let r = site.start();
    r.wait_log("pages updated");
    // The page's date is the day in the site's time zone.
    let day = due
        .with_timezone(&chrono_tz::Europe::Berlin)
        .format("%Y/%m/%d")
        .to_string();
    let page = format!("/aktuelles/{day}/bald/");
    assert_eq!(r.get(&page, &[]).status, 404, "not before its time");
    assert!(
        !r.get("/aktuelles/sitemap.xml", &[])
            .text()
            .contains("/bald/")
    );
    eventually("the scheduled item's page", || {
        (r.get(&page, &[]).status == 200).then_some(())
    });
    // The pages of one turn are written side by side: the item's page can be there a
    // moment before the lists that show it.
    for (list, text) in [
        ("/aktuelles/", "Bald fällig"),
        ("/aktuelles/tags/ozg/", "Bald fällig"),
        ("/aktuelles/sitemap.xml", "/bald/"),
    ] {
        eventually(&format!("{list} to show the scheduled item"), || {
            r.get(list, &[]).text().contains(text).then_some(())
        });
    }

    // Deleted: its page is gone, and so is the tag page only it had.
    std::fs::remove_file(site.path("content/2026-02-03-fim.md")).unwrap();
    // Stale pages go one after the other: each is waited for.
    for gone in ["/aktuelles/2026/02/03/fim/", "/aktuelles/tags/fim/"] {
        eventually(&format!("{gone} to go"), || {
            (r.get(gone, &[]).status == 404).then_some(())
        });
    }
    eventually("the emptied directories to go", || {
        (!site.path("public/2026/02/03/fim").exists() && !site.path("public/tags/fim").exists())
            .then_some(())
    });
    assert!(
        !r.get("/aktuelles/", &[])
            .text()
            .contains("FIM-Leistungsbeschreibungen")
    );
}

#[test]
fn a_page_the_daemon_added_is_removed_after_a_kill_and_restart() {
    let site = own_site();
    let r = site.start();
    r.wait_log("pages updated");
    site.item(
        "2026-05-01-neu.md",
        "Neue Meldung",
        "2026-05-01T10:00:00+02:00",
        "tags = [\"Neu\"]",
        "Neu.",
    );
    eventually("the new item's page", || {
        (r.get("/aktuelles/2026/05/01/neu/", &[]).status == 200).then_some(())
    });
    // Pages that only came are appended to the manifest, not written whole.
    let manifest = site.path("public/.herold-pages");
    eventually("the manifest to list the new pages", || {
        let m = std::fs::read_to_string(&manifest).ok()?;
        (m.contains("2026/05/01/neu/index.html\t") && m.contains("tags/neu/index.html\t"))
            .then_some(())
    });
    // Killed; the file goes while no daemon runs; the next daemon removes its pages.
    drop(r);
    std::fs::remove_file(site.path("content/2026-05-01-neu.md")).unwrap();
    let r = site.start();
    r.wait_log("pages updated");
    assert!(!site.path("public/2026/05/01/neu").exists());
    assert!(!site.path("public/tags/neu").exists());
    assert_eq!(r.get("/aktuelles/2026/05/01/neu/", &[]).status, 404);
    assert!(site.path("public/2026/01/20/ozg/index.html").exists());
}

#[test]
fn an_edit_rewrites_only_the_pages_that_show_it() {
    let site = own_site();
    site.build();
    let before = snapshot(&site.path("public"));
    std::thread::sleep(std::time::Duration::from_millis(20));
    // A second build changes nothing.
    site.build();
    assert_eq!(snapshot(&site.path("public")), before);
    // The FIM item's body changes: its page only (the index shows its lead, not its body;
    // it has a summary-less lead, so the first paragraph is kept the same).
    site.item(
        "2026-02-03-fim.md",
        "FIM-Leistungsbeschreibungen für Bauanträge",
        "2026-02-03T10:00:00+01:00",
        "tags = [\"FIM\"]\ncategory = \"Meldung\"",
        "Die Leistungsbeschreibungen sind da.\n\nEin neuer zweiter Absatz.",
    );
    site.build();
    let after = snapshot(&site.path("public"));
    let changed: Vec<&String> = after
        .iter()
        .filter(|(p, v)| before.get(*p) != Some(v))
        .map(|(p, _)| p)
        .collect();
    assert_eq!(changed, vec!["2026/02/03/fim/index.html"], "{changed:?}");
}

/// Every file below `dir` (the manifest aside) with its bytes and mtime.
fn snapshot(dir: &std::path::Path) -> HashMap<String, (Vec<u8>, std::time::SystemTime)> {
    let mut out = HashMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                if rel == ".herold-pages" {
                    continue;
                }
                out.insert(
                    rel,
                    (
                        std::fs::read(&p).unwrap(),
                        e.metadata().unwrap().modified().unwrap(),
                    ),
                );
            }
        }
    }
    out
}

#[test]
fn the_daemon_rewrites_only_the_pages_of_a_changed_item() {
    let site = own_site();
    let r = site.start();
    r.wait_log("pages updated");
    let before = snapshot(&site.path("public"));
    std::thread::sleep(std::time::Duration::from_millis(20));
    site.item(
        "2026-02-03-fim.md",
        "FIM-Leistungsbeschreibungen für Bauanträge",
        "2026-02-03T10:00:00+01:00",
        "tags = [\"FIM\"]\ncategory = \"Meldung\"",
        "Die Leistungsbeschreibungen sind da.\n\nNeu.",
    );
    eventually("the item page to change", || {
        let now = std::fs::read(site.path("public/2026/02/03/fim/index.html")).ok()?;
        (now != before["2026/02/03/fim/index.html"].0).then_some(())
    });
    r.wait_log("rendered=");
    let after = snapshot(&site.path("public"));
    let changed: BTreeSet<&String> = after
        .iter()
        .filter(|(p, v)| before.get(*p) != Some(v))
        .map(|(p, _)| p)
        .collect();
    assert_eq!(
        changed,
        ["2026/02/03/fim/index.html".to_string()].iter().collect(),
        "{}",
        r.log()
    );
}

#[test]
fn two_items_on_one_page_url_are_an_error_naming_both_files() {
    let site = own_site();
    site.item(
        "a.md",
        "Eins",
        "2026-05-05T10:00:00+02:00",
        "slug = \"gleich\"\nid = \"urn:uuid:4a1c7b5e-0000-4000-8000-000000000001\"",
        "Eins.",
    );
    site.item(
        "b.md",
        "Zwei",
        "2026-05-05T18:00:00+02:00",
        "slug = \"gleich\"\nid = \"urn:uuid:4a1c7b5e-0000-4000-8000-000000000002\"",
        "Zwei.",
    );
    let out = site.herold(&["check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let line = err
        .lines()
        .find(|l| l.contains("same URL"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(line.contains("b.md") && line.contains("a.md"), "{line}");
    // The build names it too, and the first file keeps the page.
    let log = site.build();
    assert!(log.contains("same URL"), "{log}");
    let page = std::fs::read_to_string(site.path("public/2026/05/05/gleich/index.html")).unwrap();
    assert!(page.contains("<h1>Eins</h1>"));
}

#[test]
fn pages_can_be_switched_off() {
    let site = Site::with_config(&format!("{OWN_PAGES}enabled = false\n"));
    site.item("a.md", "Eins", "2026-05-05", "", "Eins.");
    site.build();
    assert!(!site.path("public").exists());
    let f = site.feed("atom.xml");
    assert_eq!(f.entries[0].links[0].href, "https://www.fitko.de/a");
}

/// A site of `n` items, one every seven hours from 2024 on, with `feeds.limit = 50` and
/// archive documents of 100.
fn archive_site(n: usize) -> Site {
    let site = Site::with_config(
        "[site]\ntitle = \"FITKO – Aktuelles\"\nbase_url = \"https://www.fitko.de\"\n[server]\npublic_url = \"https://news.example.org\"\n[pages]\nenabled = false\n",
    );
    for i in 0..n {
        add_numbered(&site, i);
    }
    site
}

fn add_numbered(site: &Site, i: usize) {
    let d = chrono::NaiveDate::from_ymd_opt(2024, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        + chrono::TimeDelta::hours(7 * i as i64);
    site.item(
        &format!("m{i:04}.md"),
        &format!("Meldung {i} über „Länder“"),
        &format!("{}+01:00", d.format("%Y-%m-%dT%H:%M:%S")),
        "tags = [\"OZG\"]",
        &format!("Bund und Länder, „Nummer“ {i}."),
    );
}

/// Walks `prev-archive` from the current feed; gives every entry id in order and the
/// archive files visited.
fn walk_chain(site: &Site, current: &str, rel: &str) -> (Vec<String>, Vec<String>) {
    let mut ids = Vec::new();
    let mut files = Vec::new();
    let mut next = Some(current.to_string());
    while let Some(file) = next.take() {
        let bytes = site.feed_bytes(&file);
        let text = String::from_utf8(bytes.clone()).unwrap();
        let f = feed_rs::parser::parse(&bytes[..]).unwrap();
        ids.extend(f.entries.iter().map(|e| e.id.clone()));
        if file != current {
            assert!(text.contains("<fh:archive/>"), "{file}");
            assert!(
                text.contains(&format!(
                    "href=\"https://news.example.org/feeds/{current}\" rel=\"current\""
                )),
                "{file}"
            );
            files.push(file.clone());
        } else {
            assert!(!text.contains("fh:archive"));
        }
        next = text
            .split(&format!("rel=\"{rel}\""))
            .next()
            .and_then(|head| head.rsplit("href=\"").next())
            .filter(|_| text.contains(&format!("rel=\"{rel}\"")))
            .map(|h| {
                h.split('"')
                    .next()
                    .unwrap()
                    .trim_start_matches("https://news.example.org/feeds/")
                    .to_string()
            });
        assert!(files.len() < 100, "a loop in the chain");
    }
    (ids, files)
}

#[test]
fn rfc5005_chain_reaches_every_item_once_and_archives_never_change() {
    let site = archive_site(260);
    site.build();
    for current in ["atom.xml", "rss.xml"] {
        let (ids, files) = walk_chain(&site, current, "prev-archive");
        assert_eq!(files.len(), 3, "{files:?}");
        let distinct: BTreeSet<&String> = ids.iter().collect();
        assert_eq!(ids.len(), 260, "{current}");
        assert_eq!(distinct.len(), 260, "{current}: an item twice");
    }
    assert_feedparser_clean(&site.path("feeds"));
    let before = snapshot(&site.path("feeds/archive"));
    let (_, old_chain) = walk_chain(&site, "atom.xml", "prev-archive");

    // A new item: the current feed and at most the newest archive change.
    std::thread::sleep(std::time::Duration::from_millis(20));
    add_numbered(&site, 260);
    site.build();
    let after = snapshot(&site.path("feeds/archive"));
    let (ids, new_chain) = walk_chain(&site, "atom.xml", "prev-archive");
    assert_eq!(ids.len(), 261);
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), 261);
    // The older documents are the same files with the same bytes and times.
    assert_eq!(new_chain[1..], old_chain[1..]);
    for f in &old_chain[1..] {
        let name = f.trim_start_matches("archive/");
        assert_eq!(before.get(name), after.get(name), "{name} changed");
    }
    assert_ne!(
        new_chain[0], old_chain[0],
        "the newest archive has a new name"
    );
    // Served with a long cache life; the replaced document is gone.
    let r = site.start();
    let resp = r.get(&format!("/feeds/{}", new_chain[0]), &[]);
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(r.get(&format!("/feeds/{}", old_chain[0]), &[]).status, 404);
    assert_feedparser_clean(&site.path("feeds"));
}

#[test]
fn a_digest_links_its_archived_run_which_holds_no_personal_data() {
    let sink = SmtpSink::start();
    let site = digest_site(&sink);
    // Own pages, not the CMS of the base configuration.
    let config = std::fs::read_to_string(site.path("config.toml"))
        .unwrap()
        .replace("link = \"https://www.fitko.de/aktuelles\"\n", "")
        .replace("item_url = \"https://www.fitko.de/aktuelles/{slug}\"\n", "");
    std::fs::write(site.path("config.toml"), config).unwrap();
    subscriber(&site, "leser@example.org", &["FIM"], &["woechentlich"]);
    site.build();
    let (code, text) = send(&site, "woechentlich");
    assert_eq!(code, Some(0), "{text}");
    let mail = sink.next();
    let text = mail.part("text/plain");
    let html = mail.part("text/html");
    assert!(text.contains("Im Browser lesen:"), "{text}");
    assert!(html.contains(">Im Browser lesen</a>"), "{html}");
    let link = mail.link("http://127.0.0.1:8080/aktuelles/digests/woechentlich/");
    let token = mail
        .link("http://127.0.0.1:8080/unsubscribe/")
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();

    let r = site.start();
    // Every link of the mail answers: the archived run, the items' pages, the subscription.
    for url in text
        .split_whitespace()
        .filter(|w| w.starts_with("http://127.0.0.1:8080/"))
    {
        assert_eq!(r.get(&r.path_of(url), &[]).status, 200, "{url} in the mail");
    }
    assert!(
        text.contains("http://127.0.0.1:8080/aktuelles/")
            && text.matches("/aktuelles/20").count() >= 1,
        "the mail links the items' pages: {text}"
    );
    let page = r.get(&r.path_of(&link), &[]);
    assert_eq!(page.status, 200, "{link}");
    let body = page.text();
    // Every item of the run, not only the reader's topic.
    assert!(
        body.contains("FIM-Neuigkeit") && body.contains("OZG-Neuigkeit"),
        "{body}"
    );
    assert!(!body.contains("leser@example.org"));
    assert!(!body.contains(&token));
    assert!(!body.contains("/unsubscribe/") && !body.contains("/preferences/"));
    assert!(
        body.contains(&format!("href=\"http://{}/\"", r.addr)),
        "a link to subscribe: {body}"
    );
    // The archive lists the run; the sitemap lists both.
    let archive = r.get("/aktuelles/digests/woechentlich/", &[]).text();
    assert!(archive.contains(&r.path_of(&link)), "{archive}");
    eventually("the sitemap to list the run", || {
        r.get("/aktuelles/sitemap.xml", &[])
            .text()
            .contains(&r.path_of(&link))
            .then_some(())
    });
    // A digest with archive = false is not archived and its mail has no such link.
    let config = std::fs::read_to_string(site.path("config.toml"))
        .unwrap()
        .replace(
            "title = \"Tagesmeldungen\"\n",
            "title = \"Tagesmeldungen\"\narchive = false\n",
        );
    std::fs::write(site.path("config.toml"), config).unwrap();
    subscriber(&site, "zweite@example.org", &[], &["taeglich"]);
    drop(r);
    let (code, text) = send(&site, "taeglich");
    assert_eq!(code, Some(0), "{text}");
    let mail = sink.next();
    assert!(!mail.part("text/plain").contains("Im Browser lesen"));
    let runs = std::fs::read_dir(site.path("public/digests/taeglich"))
        .map(|d| d.flatten().filter(|e| e.path().is_dir()).count())
        .unwrap_or(0);
    assert_eq!(runs, 0, "a run of an unarchived digest has a page");
}

#[test]
fn noindex_asks_search_engines_to_stay_away_and_english_sites_get_english_pages() {
    let site = Site::with_config(&format!(
        "{}noindex = true\n",
        OWN_PAGES.replace("[site]\n", "[site]\nlanguage = \"en\"\n")
    ));
    site.item("a.md", "One", "2026-05-05", "tags = [\"OZG\"]", "One.");
    site.build();
    let index = std::fs::read_to_string(site.path("public/index.html")).unwrap();
    assert!(index.contains("<meta name=\"robots\" content=\"noindex\">"));
    assert!(index.contains("<html lang=\"en\">"));
    assert!(index.contains("5 May 2026"), "{index}");
    let tag = std::fs::read_to_string(site.path("public/tags/ozg/index.html")).unwrap();
    assert!(tag.contains("<h1>Tag: OZG</h1>"), "{tag}");
    let plain = own_site();
    plain.build();
    let index = std::fs::read_to_string(plain.path("public/index.html")).unwrap();
    assert!(!index.contains("robots"));
}
