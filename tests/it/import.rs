//! `herold import`: round trips through herold's own feeds, over HTTP and from files.

use crate::helpers::*;

fn source_site() -> Site {
    let site = Site::new();
    site.item("2026-01-10-ozg.md", "OZG & <Änderungsgesetz>", "2026-01-10T09:00:00+01:00", "slug = \"ozg\"\ntags = [\"OZG\", \"Kommunen\"]\nauthor = \"Pressestelle\"\nsummary = \"Kurz & knapp.\"\nimage = \"/bilder/ozg.png\"", "Erster Absatz.\n\nZweiter Absatz mit [Link](/x) und\n\n```\nCode\n\nmit Leerzeile\n```");
    site.item(
        "2026-02-01-fit.md",
        "FIT-Connect",
        "2026-02-01",
        "slug = \"fit\"\nupdated = 2026-02-03T12:00:00+01:00",
        "Nur ein Absatz.",
    );
    site.build();
    site
}

#[test]
fn importing_herolds_own_feeds_keeps_ids_titles_dates_and_tags() {
    let source = source_site();
    let original = source.feed("atom.xml");
    for format in FORMATS {
        let target = Site::new();
        let file = source.path("feeds").join(format);
        let out = target.herold(&["import", file.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{format}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).lines().count(),
            2,
            "{format}"
        );
        target.build();
        let check = target.herold(&["check", "--deny-warnings"]);
        assert!(
            check.status.success(),
            "{format}: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let copy = target.feed("atom.xml");
        assert_eq!(ids(&copy), ids(&original), "{format}");
        assert_eq!(titles(&copy), titles(&original), "{format}");
        for (a, b) in copy.entries.iter().zip(&original.entries) {
            assert_eq!(a.published, b.published, "{format}");
            let terms = |e: &feed_rs::model::Entry| {
                e.categories
                    .iter()
                    .map(|c| c.term.clone())
                    .collect::<Vec<_>>()
            };
            assert_eq!(terms(a), terms(b), "{format}");
        }
        let body = copy.entries[1]
            .content
            .as_ref()
            .unwrap()
            .body
            .clone()
            .unwrap();
        assert!(
            body.contains("Zweiter Absatz mit <a href=\"https://www.fitko.de/x\""),
            "{format}: {body}"
        );
        assert!(
            !body.contains("&lt;p&gt;"),
            "{format}: HTML stays HTML: {body}"
        );

        // A second import of the same feed adds nothing.
        let again = target.herold(&["import", file.to_str().unwrap()]);
        assert!(again.status.success());
        assert!(
            again.stdout.is_empty(),
            "{format}: {}",
            String::from_utf8_lossy(&again.stdout)
        );
        assert!(
            String::from_utf8_lossy(&again.stderr).contains("already_present=2"),
            "{format}"
        );
    }
}

#[test]
fn import_over_http_with_a_non_uri_guid() {
    use std::io::{Read, Write};
    let rss = r#"<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Alt</title><link>https://alt.example.org/</link><description>d</description>
<item><title>Mit Nummer</title><link>https://alt.example.org/news/nummer-1.html</link><guid isPermaLink="false">12345</guid>
<pubDate>Tue, 08 Sep 2020 10:00:00 +0200</pubDate><description>&lt;p&gt;Hallo &amp;amp; willkommen&lt;/p&gt;</description></item>
<item><title>Ohne Datum</title><guid>https://alt.example.org/x</guid></item>
</channel></rss>"#;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/feed.rss", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 2048];
        let _ = s.read(&mut buf);
        let _ = s.write_all(format!("HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{rss}", rss.len()).as_bytes());
    });
    let site = Site::new();
    let out = site.herold(&["import", &url]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("skipped `Ohne Datum`"), "{err}");
    assert!(
        err.contains("readers of the old RSS feed may see these items once more"),
        "{err}"
    );
    let path = String::from_utf8(out.stdout).unwrap();
    assert!(
        path.trim().ends_with("content/2020-09-08-nummer-1.md"),
        "{path}"
    );
    let text = std::fs::read_to_string(path.trim()).unwrap();
    assert!(
        text.contains("id = \"tag:alt.example.org,2020-09-08:12345\""),
        "{text}"
    );
    site.build();
    let feed = site.feed("rss.xml");
    assert_eq!(titles(&feed), ["Mit Nummer"]);
}

#[test]
fn import_refuses_what_is_not_a_feed() {
    let site = Site::new();
    site.write("../kein-feed.txt", "Hallo");
    let out = site.herold(&["import", site.path("kein-feed.txt").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an RSS, Atom or JSON feed"));
    let missing = site.herold(&["import", "/nonexistent/feed.xml"]);
    assert_eq!(missing.status.code(), Some(1));
}
