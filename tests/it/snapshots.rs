//! Snapshots of the three formats for a small fixed site, rendered through the library
//! with a fixed clock. A change in any byte shows up here for review.

use herold::build::{HtmlCache, prepare};
use herold::config::Config;
use herold::content::{SiteContext, scan};
use herold::feed::FeedMeta;

/// The two items of the fixed site, written into `dir/content`.
fn fixture_items(dir: &std::path::Path) {
    let content = dir.join("content");
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
}

fn rendered() -> Vec<(String, String)> {
    let dir = tempfile::tempdir().unwrap();
    fixture_items(dir.path());
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

/// The pages of the same site with a digest run in the archive, through the library with a
/// fixed clock: one page of each kind.
fn pages() -> Vec<(String, String)> {
    let dir = tempfile::tempdir().unwrap();
    fixture_items(dir.path());
    let config = Config::parse(
        "[site]\ntitle = \"FITKO – Aktuelles\"\ndescription = \"Neuigkeiten der Föderalen IT-Kooperation\"\nbase_url = \"https://www.fitko.de\"\nauthor = \"FITKO\"\nprivacy_url = \"https://www.fitko.de/datenschutz\"\n[server]\npublic_url = \"https://aktuelles.fitko.de\"\n[[digest]]\nname = \"woechentlich\"\ntitle = \"Wochenüberblick\"\nschedule = \"0 8 * * 1\"\n",
        "config.toml",
        &[],
        dir.path(),
    )
    .unwrap();
    let corpus = scan::scan(&config.content.dir, &SiteContext::from_config(&config), &()).unwrap();
    let now = chrono::DateTime::parse_from_rfc3339("2026-11-23T12:00:00+01:00").unwrap();
    let templates = herold::templates::Templates::for_config(&config).unwrap();
    let meta = herold::pages::PageMeta::from_config(&config);
    let archives = vec![herold::pages::DigestArchive {
        name: "woechentlich".into(),
        runs: vec![herold::pages::ArchivedRun {
            id: 7,
            started_at: 1_780_293_600,
            items: corpus.items.iter().map(|i| i.id.clone()).collect(),
        }],
    }];
    let cache = herold::pages::EntryCache::default();
    let plan = herold::pages::plan(
        &corpus.items,
        None,
        now,
        &meta,
        templates.default_language(),
        &archives,
        &cache,
    );
    (0..plan.len())
        .map(|i| {
            (
                plan.path(i),
                String::from_utf8(plan.render(i).unwrap()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn one_page_of_each_kind() {
    let pages = pages();
    let page = |p: &str| {
        pages
            .iter()
            .find(|(path, _)| path == p)
            .unwrap_or_else(|| {
                panic!(
                    "no {p} in {:?}",
                    pages.iter().map(|(p, _)| p).collect::<Vec<_>>()
                )
            })
            .1
            .clone()
    };
    insta::assert_snapshot!("page_index", page("index.html"));
    insta::assert_snapshot!("page_item", page("2026/06/01/fit-connect/index.html"));
    insta::assert_snapshot!("page_tag", page("tags/ozg/index.html"));
    insta::assert_snapshot!(
        "page_category",
        page("categories/it-planungsrat/index.html")
    );
    insta::assert_snapshot!(
        "page_digest_archive",
        page("digests/woechentlich/index.html")
    );
    insta::assert_snapshot!("page_digest_run", page("digests/woechentlich/7/index.html"));
    insta::assert_snapshot!("page_sitemap", page("sitemap.xml"));
}
