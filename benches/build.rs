//! Benchmark of the full build job on a generated corpus of 10,000 realistic items
//! (2–4 KB each, 45 tags, 8 categories): scan, render all three formats for the site,
//! every tag and every category, and write.
//!
//! `cargo bench --bench build` prints the figures. The corpus is kept in
//! `target/bench-corpus/` (with `config.toml`), so the release binary can be measured on it
//! too, e.g. for peak memory: `/usr/bin/time -v target/release/herold --config
//! target/bench-corpus/config.toml build`. With `--hugo DIR` it also writes the same items as
//! a Hugo site for comparison.

use std::path::PathBuf;
use std::time::{Duration, Instant};

mod corpus;

use corpus::{generate, write_hugo_pages_site, write_hugo_site};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let items = generate();
    if let Some(i) = args.iter().position(|a| a == "--hugo-pages") {
        let dir = PathBuf::from(&args[i + 1]);
        write_hugo_pages_site(&dir, &items);
        println!(
            "wrote a full Hugo site (pages, terms, RSS) with {} items to {}",
            items.len(),
            dir.display()
        );
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--hugo") {
        let dir = PathBuf::from(&args[i + 1]);
        write_hugo_site(&dir, &items);
        println!(
            "wrote a Hugo site with {} items to {}",
            items.len(),
            dir.display()
        );
        return;
    }
    let dir = corpus::herold_corpus();
    let bytes: usize = items.iter().map(|g| g.body.len()).sum();
    println!(
        "corpus: {} items, {:.1} MB of Markdown, in {}",
        items.len(),
        bytes as f64 / 1e6,
        dir.display()
    );

    let config = herold::config::Config::load(&dir.join("config.toml")).unwrap();
    let site = herold::content::SiteContext::from_config(&config);
    let meta = herold::feed::FeedMeta::from_config(&config);
    let now = chrono::DateTime::parse_from_rfc3339("2026-11-23T12:00:00+01:00").unwrap();

    let mut full = Vec::new();
    let mut scans = Vec::new();
    let mut unchanged = Vec::new();
    let mut renders = Vec::new();
    let mut writes = Vec::new();
    let mut files = 0;
    for _ in 0..10 {
        let _ = std::fs::remove_dir_all(&config.feeds.dir);
        let t = Instant::now();
        let corpus = herold::content::scan::scan(&config.content.dir, &site, &()).unwrap();
        scans.push(t.elapsed());
        let t_render = Instant::now();
        let rendered = herold::build::prepare(
            &corpus.items,
            now,
            &meta,
            &mut herold::build::HtmlCache::default(),
        );
        renders.push(t_render.elapsed());
        let t_write = Instant::now();
        let stats = herold::build::write_feeds(&config.feeds.dir, &rendered).unwrap();
        writes.push(t_write.elapsed());
        full.push(t.elapsed());
        files = stats.changed.len();
        assert_eq!(corpus.items.len(), corpus::items());

        let t = Instant::now();
        let corpus = herold::content::scan::scan(&config.content.dir, &site, &()).unwrap();
        let rendered = herold::build::prepare(
            &corpus.items,
            now,
            &meta,
            &mut herold::build::HtmlCache::default(),
        );
        let stats = herold::build::write_feeds(&config.feeds.dir, &rendered).unwrap();
        unchanged.push(t.elapsed());
        assert!(stats.changed.is_empty());
    }
    println!(
        "full build into an empty feeds dir ({files} files): median {:?}",
        median(full)
    );
    println!(
        "  of which scan (read + parse 10,000 files): median {:?}",
        median(scans)
    );
    println!(
        "  of which prepare (plan, render the bodies of the items in some feed): median {:?}",
        median(renders)
    );
    println!(
        "  of which render and write the files (atomic, fsync): median {:?}",
        median(writes)
    );
    println!(
        "rebuild with nothing changed (no file written): median {:?}",
        median(unchanged)
    );
    // What the daemon decides on every change, in process: plan the feeds over every item,
    // and fingerprint each file.
    let corpus = herold::content::scan::scan(&config.content.dir, &site, &()).unwrap();
    let mut cache = herold::build::HtmlCache::default();
    let _ = herold::build::prepare(&corpus.items, now, &meta, &mut cache);
    let (mut plans, mut prepares, mut prints) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..20 {
        let t = Instant::now();
        let _ = herold::feed::plan(&corpus.items, now, &meta);
        plans.push(t.elapsed());
        let t = Instant::now();
        let build = herold::build::prepare(&corpus.items, now, &meta, &mut cache);
        prepares.push(t.elapsed());
        let t = Instant::now();
        let _: Vec<u64> = (0..build.len()).map(|i| build.fingerprint(i)).collect();
        prints.push(t.elapsed());
    }
    println!(
        "plan alone: median {:?}; prepare with a warm body cache: median {:?}; fingerprints: median {:?}",
        median(plans),
        median(prepares),
        median(prints)
    );
    let mut state =
        herold::daemon::content::ContentState::new(config.content.dir.clone(), site.clone());
    state.refresh().unwrap();
    let mut idle = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        assert!(state.refresh().unwrap().is_empty());
        idle.push(t.elapsed());
    }
    println!(
        "daemon full refresh that finds nothing changed: median {:?}",
        median(idle)
    );
    let mut light = Vec::new();
    for k in 0..20 {
        let t = Instant::now();
        assert!(state.refresh_light(k % 10, 10).unwrap().is_empty());
        light.push(t.elapsed());
    }
    println!(
        "daemon idle poll with a watcher (directories + a tenth of the files): median {:?}",
        median(light)
    );
    let mut listing = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let mut n = 0;
        herold::content::scan::walk(&config.content.dir, &mut |_, _| n += 1, &mut |_| {}).unwrap();
        listing.push(t.elapsed());
    }
    println!(
        "  of which the directory walk alone: median {:?}",
        median(listing)
    );
}
