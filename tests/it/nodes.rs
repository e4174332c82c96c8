//! herold on PostgreSQL: the whole subscription and digest flow with real processes,
//! `db migrate` from SQLite, and several daemons on one database sharing a run while the
//! lease holder is killed and frozen.

use std::collections::HashMap;
use std::time::Duration;

use herold::store::testpg;

use crate::helpers::*;

/// A site on a fresh PostgreSQL database, with mail to `sink`, the hourly digest, `n`
/// subscribers and the scheduler's start two days back (so the last fire time is missed and
/// caught up at once).
fn pg_site(sink: &SmtpSink, n: usize, rate: u32) -> (Site, String) {
    let url = testpg::database();
    let site = site_with_mail(sink);
    let config = std::fs::read_to_string(site.path("config.toml")).unwrap();
    let config = config
        .replace(
            "schedule = \"0 8 * * 1\"",
            "schedule = \"@hourly\"\ncatch_up = \"2h\"",
        )
        .replace(
            "[mail]\n",
            &format!("[mail]\nconcurrency = 4\nrate_per_second = {rate}\n"),
        );
    std::fs::write(
        site.path("config.toml"),
        format!("{config}\n[database]\nurl = \"{url}\"\nlease = \"3s\"\n"),
    )
    .unwrap();
    std::fs::remove_dir_all(site.path("content")).unwrap();
    site.item("a.md", "Meldung A", &days_ago(1), "", "x");
    let mut store = herold::store::Store::open_postgres(&url, None).unwrap();
    let rows: Vec<_> = (0..n)
        .map(|i| {
            active_row(
                &format!("r{i:05}@example.org"),
                vec![],
                vec!["woechentlich".into()],
                None,
            )
        })
        .collect();
    for chunk in rows.chunks(2000) {
        store.import_many(chunk, 1).unwrap();
    }
    scheduler_began(&mut store, "woechentlich", 2);
    (site, url)
}

#[test]
fn subscriptions_and_digests_work_the_same_on_postgresql() {
    let sink = SmtpSink::start();
    let (site, url) = pg_site(&sink, 0, 1000);
    let running = site.start();
    assert!(
        running
            .get("/healthz", &[])
            .text()
            .contains("schedule: this node"),
        "one node holds the lease"
    );
    let r = running.post_form(
        "/subscribe",
        &[("email", "neu@example.org"), ("digests", "woechentlich")],
    );
    assert_eq!(r.status, 200);
    let confirm = sink.received.recv_timeout(Duration::from_secs(10)).unwrap();
    let link = confirm.link("http");
    let r = running.post_form(&running.path_of(&link), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let list = site.herold(&["subscribers", "list"]);
    assert_eq!(
        String::from_utf8_lossy(&list.stdout),
        "neu@example.org\tactive\t\twoechentlich\n"
    );
    drop(running);
    // A digest from the command line, on the same database.
    site.item("b.md", "Meldung B", &days_ago(0), "", "y");
    let (code, out) = send(&site, "woechentlich");
    assert_eq!(code, Some(0), "{out}");
    let digest = sink.received.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(digest.to, ["neu@example.org"]);
    // Its unsubscribe link erases the address; the consent log keeps only hashes.
    let running = site.start();
    let unsub = digest.link_with("/unsubscribe/");
    let r = running.post_form(&running.path_of(&unsub), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(testpg::psql(&url, "SELECT COUNT(*) FROM subscribers"), "0");
    let events = testpg::psql(
        &url,
        "SELECT string_agg(event, ',' ORDER BY id) FROM consent_log",
    );
    assert_eq!(events, "request,confirm,unsubscribe");
    assert_eq!(
        testpg::psql(
            &url,
            "SELECT COUNT(*) FROM consent_log WHERE address_hash LIKE '%@%'"
        ),
        "0"
    );
    // The erased row's old version leaves the table file within a lease tick or two.
    eventually("the tables to be compacted", || {
        (testpg::psql(&url, "SELECT COUNT(*) FROM meta WHERE key = 'erased'") == "0").then_some(())
    });
}

#[test]
fn a_sqlite_database_moves_to_postgresql_and_its_links_keep_working() {
    let sink = SmtpSink::start();
    let site = digest_site(&sink);
    subscriber(&site, "anna@example.org", &[], &["woechentlich"]);
    subscriber(&site, "bernd@example.org", &["FIM"], &["woechentlich"]);
    let (code, out) = send(&site, "woechentlich");
    assert_eq!(code, Some(0), "{out}");
    let mails: Vec<_> = (0..2)
        .map(|_| sink.received.recv_timeout(Duration::from_secs(10)).unwrap())
        .collect();
    let before =
        String::from_utf8_lossy(&site.herold(&["subscribers", "list"]).stdout).into_owned();

    let url = testpg::database();
    let out = site.herold(&["db", "migrate", "--to", &url]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let counts = String::from_utf8_lossy(&out.stdout);
    assert!(
        counts.contains("subscribers\t2") && counts.contains("deliveries\t2"),
        "{counts}"
    );
    // A second time: the target is not empty.
    assert_eq!(
        site.herold(&["db", "migrate", "--to", &url]).status.code(),
        Some(1)
    );

    let config = std::fs::read_to_string(site.path("config.toml")).unwrap();
    std::fs::write(
        site.path("config.toml"),
        format!("{config}\n[database]\nurl = \"{url}\"\n"),
    )
    .unwrap();
    std::fs::remove_dir_all(site.path("data")).unwrap();
    let after = String::from_utf8_lossy(&site.herold(&["subscribers", "list"]).stdout).into_owned();
    assert_eq!(after, before);
    // Nothing new to send: the runs came along.
    let (_, out) = send(&site, "woechentlich");
    assert!(
        out.contains("no new run") || out.contains("fewer than min_items"),
        "{out}"
    );
    // A link mailed before the move still unsubscribes (the secret came along).
    let running = site.start();
    let anna = mails
        .iter()
        .find(|m| m.to[0] == "anna@example.org")
        .unwrap();
    let unsub = anna.link_with("/unsubscribe/");
    let r = running.post_form(&running.path_of(&unsub), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(testpg::psql(&url, "SELECT COUNT(*) FROM subscribers"), "1");
}

/// Counts received mails per recipient for `wait`, however many arrive.
fn pause(sink: &SmtpSink, counts: &mut HashMap<String, usize>, wait: Duration) {
    let deadline = std::time::Instant::now() + wait;
    while std::time::Instant::now() < deadline {
        if let Ok(m) = sink.received.recv_timeout(Duration::from_millis(50)) {
            *counts.entry(m.to[0].clone()).or_default() += 1;
        }
    }
}

/// Counts received mails per recipient until `expected` distinct recipients have one or
/// `wait` passes.
fn collect(sink: &SmtpSink, counts: &mut HashMap<String, usize>, expected: usize, wait: Duration) {
    let deadline = std::time::Instant::now() + wait;
    while counts.len() < expected && std::time::Instant::now() < deadline {
        if let Ok(m) = sink.received.recv_timeout(Duration::from_millis(50)) {
            *counts.entry(m.to[0].clone()).or_default() += 1;
        }
    }
}

fn holder(nodes: &[Option<Running>]) -> Option<usize> {
    nodes.iter().position(|n| {
        n.as_ref().is_some_and(|n| {
            n.get("/healthz", &[])
                .text()
                .contains("schedule: this node")
        })
    })
}

/// Two daemons on one PostgreSQL share a run of 3,000 mails. The lease holder is killed
/// (`kill -9`) twice and frozen past its lease once; every time the other node takes over.
/// In the end every recipient has its mail, duplicates stay within one claimed batch (50)
/// per dead or frozen node, one run was planned, and the lease's fence only went up.
#[test]
fn two_nodes_share_a_run_while_the_lease_holder_dies() {
    const N: usize = 3000;
    let sink = SmtpSink::start();
    let (site, url) = pg_site(&sink, N, 120);
    let mut nodes: Vec<Option<Running>> = vec![Some(site.start()), Some(site.start())];
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut events = 0;
    let mut fences = Vec::new();
    let mut mid_run = 0;
    for round in 0..3 {
        pause(&sink, &mut counts, Duration::from_millis(1200));
        let h = eventually("a lease holder", || holder(&nodes));

        fences.push(testpg::psql(
            &url,
            "SELECT fence FROM leases WHERE name = 'schedule'",
        ));
        let node = nodes[h].as_ref().unwrap();
        if round == 0 {
            // The other node names the holder.
            let mine = node.get("/healthz", &[]).text();
            let name = mine
                .split('(')
                .nth(1)
                .unwrap()
                .split(')')
                .next()
                .unwrap()
                .to_string();
            let other = nodes[1 - h].as_ref().unwrap();
            eventually("the other node to name the holder", || {
                other
                    .get("/healthz", &[])
                    .text()
                    .contains(&format!("schedule: {name} holds the lease"))
                    .then_some(())
            });
            let held = |n: &Running| {
                n.get("/metrics", &[])
                    .text()
                    .lines()
                    .find(|l| l.starts_with("herold_schedule_lease_held{"))
                    .map(|l| l.ends_with(" 1"))
            };
            assert_eq!((held(node), held(other)), (Some(true), Some(false)));
        }
        mid_run = counts.len();
        if round == 1 {
            // Frozen past its lease: the other node takes over; then it wakes up.
            node.signal("STOP");
            collect(&sink, &mut counts, N, Duration::from_secs(5));

            node.signal("CONT");
        } else {
            node.signal("KILL");
            nodes[h] = None;
            pause(&sink, &mut counts, Duration::from_millis(300));
            nodes[h] = Some(site.start());
        }
        events += 1;
    }
    collect(&sink, &mut counts, N, Duration::from_secs(60));
    let sent: usize = counts.values().sum();
    let duplicates = sent - counts.len();
    assert_eq!(counts.len(), N, "nobody lost ({sent} mails)");
    assert!(
        duplicates <= events * 50,
        "{duplicates} duplicates after {events} deaths and freezes"
    );
    assert_eq!(
        testpg::psql(&url, "SELECT COUNT(*) FROM digest_runs"),
        "1",
        "one run planned"
    );
    assert_eq!(
        testpg::psql(
            &url,
            "SELECT COUNT(*) FROM deliveries WHERE status <> 'sent'"
        ),
        "0"
    );
    let fences: Vec<i64> = fences.iter().map(|f| f.parse().unwrap()).collect();

    assert!(fences.windows(2).all(|w| w[0] < w[1]), "{fences:?}");
    assert!(
        mid_run < N,
        "the run was still going when the last node died ({mid_run} of {N})"
    );
    eventually("the run to be marked finished", || {
        (testpg::psql(
            &url,
            "SELECT COUNT(*) FROM digest_runs WHERE finished_at IS NULL",
        ) == "0")
            .then_some(())
    });
    eprintln!(
        "{N} recipients, {sent} mails, {duplicates} duplicates, {events} events, fences {fences:?}"
    );
}

/// `sslmode=require`: the connection is TLS, and the server's certificate is checked
/// against the trusted roots (here the test's CA, given as `SSL_CERT_FILE`).
#[test]
fn postgresql_over_tls_checks_the_server() {
    let (url, ca) = testpg::tls_database();
    let site = Site::new();
    let config = std::fs::read_to_string(site.path("config.toml")).unwrap();
    std::fs::write(
        site.path("config.toml"),
        format!("{config}\n[database]\nurl = \"{url}\"\n"),
    )
    .unwrap();
    let refused = site.herold(&["subscribers", "list"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("cannot connect to the database"),
        "{refused:?}"
    );
    let ok = site.herold_with(
        &["subscribers", "list"],
        &[("SSL_CERT_FILE", ca.as_os_str())],
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let plain = url
        .replace("?sslmode=require", "")
        .replace("@localhost:", "@127.0.0.1:");
    assert_eq!(
        testpg::psql(&plain, "SELECT MAX(version) FROM herold_schema"),
        "1",
        "migrated over TLS"
    );
    // The daemon's connection is encrypted.
    let running = site.start_with(&[("SSL_CERT_FILE", ca.to_str().unwrap())]);
    let encrypted = testpg::psql(
        &plain,
        "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'herold' AND a.datname = current_database()",
    );
    drop(running);
    assert_eq!(encrypted, "t");
}
