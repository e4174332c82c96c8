//! `herold run`: the real daemon on port 0 in a temporary directory, observed from outside.

use std::io::Read;

use crate::helpers::*;

fn feed_titles(site: &Site, file: &str) -> Vec<String> {
    std::fs::read(site.path("feeds").join(file))
        .ok()
        .and_then(|b| feed_rs::parser::parse(&b[..]).ok())
        .map(|f| titles(&f))
        .unwrap_or_default()
}

#[test]
fn new_edited_broken_and_deleted_files_show_in_every_feed() {
    let site = Site::new();
    site.item(
        "alt.md",
        "Alte Meldung",
        "2026-01-01",
        "slug = \"alt\"",
        "Text",
    );
    let d = site.start();
    assert_eq!(feed_titles(&site, "rss.xml"), ["Alte Meldung"]);

    site.item(
        "neu.md",
        "Neue Meldung",
        "2026-02-01",
        "slug = \"neu\"\ntags = [\"OZG\"]",
        "Neu.",
    );
    for f in FORMATS {
        eventually(&format!("the new item in {f}"), || {
            (feed_titles(&site, f) == ["Neue Meldung", "Alte Meldung"]).then_some(())
        });
    }
    assert_eq!(feed_titles(&site, "tags/ozg/atom.xml"), ["Neue Meldung"]);
    let id_before = ids(&site.feed("atom.xml"))[0].clone();

    site.item(
        "neu.md",
        "Neue Meldung (korrigiert)",
        "2026-02-01",
        "slug = \"neu\"\ntags = [\"OZG\"]",
        "Neu.",
    );
    eventually("the edit", || {
        (feed_titles(&site, "atom.xml")[0] == "Neue Meldung (korrigiert)").then_some(())
    });
    assert_eq!(
        ids(&site.feed("atom.xml"))[0],
        id_before,
        "an edit keeps the id"
    );

    site.write(
        "neu.md",
        "+++\ntitle = \"kaputt\"\ndate = \"gestern\"\n+++\n",
    );
    d.wait_log("stays published");
    assert!(
        d.log().contains("neu.md\" line=3") || d.log().contains("neu.md line=3"),
        "{}",
        d.log()
    );
    assert_eq!(
        feed_titles(&site, "atom.xml")[0],
        "Neue Meldung (korrigiert)"
    );

    // One of the tag's files is already gone (an operator tidied up): the others still go.
    std::fs::remove_file(site.path("feeds/tags/ozg/atom.xml")).unwrap();
    std::fs::remove_file(site.path("content/neu.md")).unwrap();
    eventually("the deletion", || {
        (feed_titles(&site, "rss.xml") == ["Alte Meldung"]).then_some(())
    });
    eventually("the tag feed and its directory to go", || {
        (!site.path("feeds/tags/ozg").exists()).then_some(())
    });
    assert!(!d.log().contains("cannot write the feeds"), "{}", d.log());
}

#[test]
fn editor_temp_files_are_ignored() {
    let site = Site::new();
    site.item("a.md", "A", "2026-01-01", "", "x");
    let d = site.start();
    let builds = d.count_log("feeds updated");
    for name in [".a.md.swp", "a.md~", "#a.md#", ".#a.md", "4913"] {
        site.write(name, "garbage");
    }
    // A real change afterwards proves the loop ran; the temp files produced no problems.
    site.item("b.md", "B", "2026-01-02", "", "x");
    eventually("b", || {
        (feed_titles(&site, "rss.xml").len() == 2).then_some(())
    });
    // The feed is on disk a moment before the change's log line.
    eventually("the change's log line", || {
        (d.count_log("feeds updated") > builds).then_some(())
    });
    assert!(!d.log().contains("WARN"), "{}", d.log());
}

#[test]
fn a_scheduled_item_appears_at_its_time_without_a_file_change() {
    let site = Site::new();
    site.item("jetzt.md", "Jetzt", "2026-01-01", "", "x");
    let due =
        chrono::SubsecRound::trunc_subsecs(chrono::Utc::now() + chrono::TimeDelta::seconds(2), 0);
    site.item(
        "spaeter.md",
        "Später",
        &due.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "",
        "x",
    );
    let d = site.start();
    assert_eq!(feed_titles(&site, "rss.xml"), ["Jetzt"]);
    d.wait_log("scheduled=1");
    eventually("the scheduled item", || {
        (feed_titles(&site, "rss.xml") == ["Später", "Jetzt"]).then_some(())
    });
    assert!(chrono::Utc::now() >= due, "published before its time");
    d.wait_log("scheduled=0");
}

#[test]
fn sighup_with_a_bad_config_keeps_serving_and_a_good_one_applies() {
    let site = Site::new();
    site.item("a.md", "A", "2026-01-01", "", "x");
    let mut d = site.start();
    let good = std::fs::read_to_string(site.path("config.toml")).unwrap();
    std::fs::write(site.path("config.toml"), format!("{good}bogus = 1\n")).unwrap();
    d.signal("HUP");
    d.wait_log("reload rejected");
    assert!(
        d.log().contains("config.toml:11: unknown field `bogus`"),
        "{}",
        d.log()
    );
    assert_eq!(d.get("/feeds/rss.xml", &[]).status, 200);

    std::fs::write(
        site.path("config.toml"),
        good.replace("FITKO – Aktuelles", "FITKO – Neuigkeiten"),
    )
    .unwrap();
    d.signal("HUP");
    d.wait_log("configuration reloaded");
    eventually("the new title", || {
        d.get("/feeds/atom.xml", &[])
            .text()
            .contains("<title>FITKO – Neuigkeiten</title>")
            .then_some(())
    });

    d.signal("TERM");
    assert_eq!(d.wait_exit(), Some(0));
    assert!(d.log().contains("stopped"));
}

#[test]
fn sigint_also_stops_cleanly() {
    let site = Site::new();
    let mut d = site.start();
    d.signal("INT");
    assert_eq!(d.wait_exit(), Some(0));
}

#[test]
fn conditional_get_compression_and_headers() {
    let site = Site::new();
    site.item(
        "a.md",
        "Ä & Ö",
        "2026-01-01",
        "tags = [\"OZG\"]",
        "Text mit Umlauten: äöüß",
    );
    let d = site.start();
    let plain = d.get("/feeds/rss.xml", &[]);
    assert_eq!(plain.status, 200);
    assert_eq!(
        plain.header("content-type"),
        Some("application/rss+xml; charset=utf-8")
    );
    assert_eq!(plain.body, site.feed_bytes("rss.xml"));
    assert_eq!(
        plain.header("link"),
        Some("<https://www.fitko.de/feeds/rss.xml>; rel=\"self\"")
    );
    let etag = plain.header("etag").unwrap().to_string();
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "strong etag: {etag}"
    );
    assert!(plain.header("last-modified").unwrap().ends_with(" GMT"));

    let again = d.get("/feeds/rss.xml", &[("If-None-Match", &etag)]);
    assert_eq!((again.status, again.body.len()), (304, 0));
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    let lm = plain.header("last-modified").unwrap().to_string();
    assert_eq!(
        d.get("/feeds/rss.xml", &[("If-Modified-Since", &lm)])
            .status,
        304
    );
    assert_eq!(
        d.get(
            "/feeds/rss.xml",
            &[("If-None-Match", "\"other\""), ("If-Modified-Since", &lm)]
        )
        .status,
        200
    );

    let gz = d.get("/feeds/rss.xml", &[("Accept-Encoding", "gzip")]);
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    assert_ne!(
        gz.header("etag"),
        Some(etag.as_str()),
        "each encoding has its own strong etag"
    );
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&gz.body[..])
        .read_to_end(&mut unzipped)
        .unwrap();
    assert_eq!(unzipped, plain.body);
    // A client that switches encodings still revalidates.
    assert_eq!(
        d.get(
            "/feeds/rss.xml",
            &[("Accept-Encoding", "gzip"), ("If-None-Match", &etag)]
        )
        .status,
        304
    );

    let br = d.get(
        "/feeds/tags/ozg/atom.xml",
        &[("Accept-Encoding", "gzip, br")],
    );
    assert_eq!(
        (br.status, br.header("content-encoding")),
        (200, Some("br"))
    );
    let mut unbr = Vec::new();
    brotli::Decompressor::new(&br.body[..], 4096)
        .read_to_end(&mut unbr)
        .unwrap();
    assert_eq!(unbr, site.feed_bytes("tags/ozg/atom.xml"));
    assert_eq!(
        br.header("content-type"),
        Some("application/atom+xml; charset=utf-8")
    );
    assert_eq!(
        d.get("/feeds/feed.json", &[]).header("content-type"),
        Some("application/feed+json; charset=utf-8")
    );

    let head = http_request(&d.addr, "HEAD", "/feeds/rss.xml", &[], b"");
    assert_eq!((head.status, head.body.len()), (200, 0));

    for bad in [
        "/feeds/../config.toml",
        "/feeds/%2e%2e/config.toml",
        "/feeds/tags/",
        "/feeds/",
        "/feeds/README.md",
        "/feeds/tags/ozg/",
        "/feeds/tags/../../config.toml",
        "/feeds/tags/ozg/rss.xml%00",
        "/config.toml",
        "/feeds/.rss.xml.1.tmp",
    ] {
        let r = d.get(bad, &[]);
        assert_eq!(r.status, 404, "{bad}");
        assert!(!r.text().contains("[site]"), "{bad} leaked the config");
    }
    assert_eq!(d.get("/healthz", &[]).status, 200);
    let metrics = d.get("/metrics", &[]).text();
    assert!(metrics.contains("herold_items 1\n"), "{metrics}");
    assert!(
        metrics.contains("herold_http_requests_total{route=\"/feeds/{*path}\",status=\"304\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("herold_http_requests_total{route=\"unmatched\",status=\"404\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("herold_builds_total 1\n"), "{metrics}");
}

#[test]
fn a_second_daemon_on_the_same_database_refuses_to_start() {
    let site = Site::new();
    let _first = site.start();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_herold"))
        .args(["run"])
        .current_dir(site.dir.path())
        .env("HEROLD_SERVER_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("another herold daemon is running"));
}

/// A WebSub hub on a plain socket: answers 503 to the first request, 204 to the rest, and
/// hands every request body to the test.
fn test_hub() -> (String, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hub", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            let status = if n == 0 {
                "503 Service Unavailable"
            } else {
                "204 No Content"
            };
            let _ = stream.write_all(
                format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            );
            let _ = tx.send(String::from_utf8_lossy(&body).into_owned());
        }
    });
    (url, rx)
}

#[test]
fn websub_hubs_are_linked_and_pinged_after_a_change_with_retry() {
    let (hub, pings) = test_hub();
    let site = Site::with_config(&format!("{BASE_CONFIG}websub_hubs = [\"{hub}\"]\n"));
    site.item("a.md", "A", "2026-01-01", "", "x");
    let d = site.start();
    assert!(
        String::from_utf8(site.feed_bytes("atom.xml"))
            .unwrap()
            .contains(&format!("<link href=\"{hub}\" rel=\"hub\"/>"))
    );
    assert!(
        d.get("/feeds/rss.xml", &[])
            .header("link")
            .unwrap()
            .contains(&format!("<{hub}>; rel=\"hub\""))
    );
    // The first build pings too (three files changed): drain those.
    let mut seen = Vec::new();
    while let Ok(p) = pings.recv_timeout(std::time::Duration::from_secs(5)) {
        seen.push(p);
        if seen.iter().filter(|p| p.contains("rss.xml")).count() >= 1 && seen.len() >= 4 {
            break;
        }
    }
    // One 503 was retried: three files, four requests.
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert!(
        seen.iter().all(
            |p| p.starts_with("hub.mode=publish&hub.url=https%3A%2F%2Fwww.fitko.de%2Ffeeds%2F")
        ),
        "{seen:?}"
    );

    site.item("b.md", "B", "2026-01-02", "tags = [\"OZG\"]", "x");
    let mut after = Vec::new();
    while after.len() < 6 {
        after.push(
            pings
                .recv_timeout(std::time::Duration::from_secs(10))
                .expect("a ping for each changed file"),
        );
    }
    after.sort();
    assert!(
        after.iter().any(|p| p.ends_with("tags%2Fozg%2Fatom.xml")),
        "{after:?}"
    );
    assert!(after.iter().any(|p| p.ends_with("%2Frss.xml")), "{after:?}");
    eventually("the ok counter", || {
        d.get("/metrics", &[])
            .text()
            .contains("herold_websub_pings_total{result=\"ok\"} 9")
            .then_some(())
    });
}
