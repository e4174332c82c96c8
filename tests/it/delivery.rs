//! Crash-safe delivery: SIGTERM and SIGKILL in the middle of a run, and the daemon's
//! scheduler catching up a fire time missed while it was down.

use std::collections::HashMap;
use std::time::Duration;

use crate::helpers::*;

/// A site with `n` active subscribers of `woechentlich` (or of the hourly digest), fresh
/// items, and the scheduler's start two days back (so a missed fire time counts).
fn busy_site(sink: &SmtpSink, n: usize, schedule: &str, catch_up: &str) -> Site {
    let site = site_with_mail(sink);
    let config = std::fs::read_to_string(site.path("config.toml")).unwrap();
    let config = config
        .replace(
            "schedule = \"0 8 * * 1\"",
            &format!("schedule = \"{schedule}\"\ncatch_up = \"{catch_up}\""),
        )
        .replace(
            "[mail]\n",
            "[mail]\nconcurrency = 4\nrate_per_second = 1000\n",
        );
    std::fs::write(site.path("config.toml"), config).unwrap();
    std::fs::remove_dir_all(site.path("content")).unwrap();
    site.item("a.md", "Meldung A", &days_ago(1), "", "x");
    let mut store = herold::store::Store::open(&site.path("data/herold.sqlite3")).unwrap();
    for i in 0..n {
        let row = active_row(
            &format!("r{i:04}@example.org"),
            vec![],
            vec!["woechentlich".into()],
            None,
        );
        store.import(&row, 1).unwrap();
    }
    scheduler_began(&mut store, "woechentlich", 2);
    site
}

/// Counts received mails per recipient until `expected` distinct recipients have one.
fn collect(sink: &SmtpSink, counts: &mut HashMap<String, usize>, expected: usize, wait: Duration) {
    let deadline = std::time::Instant::now() + wait;
    while counts.len() < expected && std::time::Instant::now() < deadline {
        if let Ok(m) = sink.received.recv_timeout(Duration::from_millis(100)) {
            *counts.entry(m.to[0].clone()).or_default() += 1;
        }
    }
}

fn slow_sink(ms: u64) -> SmtpSink {
    SmtpSink::with_answers(move |_, _| {
        std::thread::sleep(Duration::from_millis(ms));
        "250 OK".into()
    })
}

#[test]
fn the_daemon_catches_up_a_missed_fire_time_once_at_start() {
    let sink = SmtpSink::start();
    let site = busy_site(&sink, 3, "@hourly", "2h");
    let d = site.start();
    d.wait_log("running a missed fire time now");
    let mut counts = HashMap::new();
    collect(&sink, &mut counts, 3, Duration::from_secs(15));
    assert_eq!(counts.len(), 3);
    d.wait_log("digest deliveries");
    sink.assert_none();
    eventually("the metrics", || {
        d.get("/metrics", &[])
            .text()
            .contains("herold_digest_mails_total{result=\"sent\"} 3")
            .then_some(())
    });
    drop(d);
    // A restart within the same hour has nothing to catch up.
    let d = site.start();
    d.wait_log("digest scheduled");
    assert!(
        !d.log().contains("running a missed fire time"),
        "{}",
        d.log()
    );
    sink.assert_none();
}

#[test]
fn a_fire_time_older_than_catch_up_is_not_sent_late() {
    let sink = SmtpSink::start();
    // The last midnight is after the scheduler began, and more than a second ago.
    let site = busy_site(&sink, 2, "@daily", "1s");
    let d = site.start();
    d.wait_log("not sent late");
    sink.assert_none();
}

#[test]
fn sigterm_mid_run_sends_nothing_twice_and_the_next_start_finishes() {
    let sink = slow_sink(25);
    let site = busy_site(&sink, 120, "@hourly", "2h");
    let mut d = site.start();
    let mut counts = HashMap::new();
    collect(&sink, &mut counts, 20, Duration::from_secs(20));
    d.signal("TERM");
    assert_eq!(d.wait_exit(), Some(0));
    assert!(
        d.log().contains("waiting for the digest mails in flight"),
        "{}",
        d.log()
    );
    // Whatever the server accepted before the exit is counted; nothing is in flight now.
    collect(&sink, &mut counts, 120, Duration::from_millis(300));
    let before = counts.len();
    assert!(before < 120, "the run was stopped part way ({before})");
    let _d = site.start();
    collect(&sink, &mut counts, 120, Duration::from_secs(30));
    assert_eq!(counts.len(), 120, "nobody skipped");
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "after SIGTERM nothing is sent twice: {twice:?}"
    );
}

#[test]
fn sigkill_at_random_moments_loses_nobody_and_duplicates_only_mails_in_flight() {
    let n = 200;
    let sink = slow_sink(30);
    let site = busy_site(&sink, n, "0 8 * * 1", "12h");
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut kills = 0;
    // Kill `digest send` a few times at varying moments, then let one finish.
    for delay_ms in [150u64, 400, 90, 700] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_herold"))
            .args(["-q", "digest", "send", "woechentlich"])
            .current_dir(site.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        }
        child.wait().unwrap();
        collect(&sink, &mut counts, n, Duration::from_millis(200));
    }
    let out = site.herold(&["digest", "send", "woechentlich"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    collect(&sink, &mut counts, n, Duration::from_secs(30));
    assert_eq!(counts.len(), n, "0 lost");
    let duplicates: usize = counts.values().map(|c| c - 1).sum();
    // At most the mails in flight at each kill: one per connection.
    assert!(
        duplicates <= kills * 4,
        "{duplicates} duplicates after {kills} kills"
    );
    assert!(kills >= 2, "the run was killed mid-way ({kills} kills)");
    let again = site.herold(&["digest", "send", "woechentlich"]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("no new run"));
}
