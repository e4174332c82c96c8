//! Snapshots of the three formats for a small fixed site, rendered through the library
//! with a fixed clock. A change in any byte shows up here for review.

use herold::build::{HtmlCache, prepare};
use herold::config::Config;
use herold::content::{SiteContext, scan};
use herold::feed::FeedMeta;

fn rendered() -> Vec<(String, String)> {
    let dir = tempfile::tempdir().unwrap();
    let content = dir.path().join("content");
    std::fs::create_dir_all(&content).unwrap();
    std::fs::write(
        content.join("2020-09-08-auftakt-kommunalgremium.md"),
        "+++\ntitle = \"Auftakt für Kommunalgremium\"\ndate = 2020-09-08\nslug = \"auftakt-kommunalgremium\"\nauthor = \"co\"\ncategory = \"IT-Planungsrat\"\ntags = [\"OZG\"]\nsummary = \"Das neue Kommunalgremium des IT-Planungsrats unter dem Vorsitz der FITKO hat zum ersten Mal getagt.\"\n+++\nDas neue Kommunalgremium des IT-Planungsrats & mehr: [IT-Planungsrat](/it-planungsrat)\n",
    )
    .unwrap();
    std::fs::write(
        content.join("2026-06-01-fit-connect.md"),
        "---\ntitle: \"FIT-Connect & <Zustelldienst>\"\ndate: 2026-06-01T09:30:00+02:00\nupdated: 2026-06-02T08:00:00+02:00\nslug: fit-connect\nimage: bilder/fit.png\ntags: [FIT-Connect, OZG]\n---\nText mit ]]> und einer Tabelle:\n\n| a | b |\n|---|---|\n| 1 | 2 |\n",
    )
    .unwrap();
    let config = Config::parse(
        "[site]\ntitle = \"FITKO – Aktuelles\"\ndescription = \"Neuigkeiten der Föderalen IT-Kooperation\"\nbase_url = \"https://www.fitko.de\"\nlink = \"https://www.fitko.de/aktuelles\"\nitem_url = \"https://www.fitko.de/aktuelles/{slug}\"\nauthor = \"FITKO\"\n[feeds]\nbase_url = \"https://www.fitko.de/feeds\"\nwebsub_hubs = [\"https://hub.example.org/\"]\n",
        "config.toml",
        &[],
        dir.path(),
    )
    .unwrap();
    let corpus = scan::scan(&config.content.dir, &SiteContext::from_config(&config), &()).unwrap();
    assert!(corpus.problems.is_empty(), "{:?}", corpus.problems);
    let now = chrono::DateTime::parse_from_rfc3339("2026-11-23T12:00:00+01:00").unwrap();
    let meta = FeedMeta::from_config(&config);
    let build = prepare(&corpus.items, now, &meta, &mut HtmlCache::default());
    build
        .files()
        .into_iter()
        .map(|(p, b)| (p, String::from_utf8(b).unwrap()))
        .collect()
}

fn file(name: &str) -> String {
    rendered()
        .into_iter()
        .find(|(p, _)| p == name)
        .unwrap_or_else(|| panic!("{name} not rendered"))
        .1
}

#[test]
fn rss() {
    insta::assert_snapshot!(file("rss.xml"));
}

#[test]
fn atom() {
    insta::assert_snapshot!(file("atom.xml"));
}

#[test]
fn json_feed() {
    insta::assert_snapshot!(file("feed.json"));
}

#[test]
fn tag_feed_names_itself() {
    insta::assert_snapshot!(file("tags/fit-connect/atom.xml"));
}

#[test]
fn rendering_is_deterministic() {
    assert_eq!(rendered(), rendered());
}
