//! Benchmark of digest delivery: 100,000 subscribers sent over SMTP to postfix's `smtp-sink`
//! with 4 connections, without DKIM and with RSA and Ed25519 DKIM; beside it, postfix's
//! `smtp-source` sending the same number of messages of the same size to the same sink.
//!
//! The same send without DKIM then runs on PostgreSQL (a throw-away server started by the
//! benchmark) with one node, and with two nodes sharing the run by claiming deliveries.
//!
//! Needs Debian's `postfix` (for `smtp-sink` and `smtp-source`), `postgresql`, `openssl` and
//! GNU `time`. `cargo bench --bench delivery` prints the figures; `HEROLD_BENCH_SUBSCRIBERS`
//! changes the count.

#[path = "corpus/mod.rs"]
mod corpus;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

fn subscribers() -> usize {
    std::env::var("HEROLD_BENCH_SUBSCRIBERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A site with `n` active subscribers of the digest `bench` and twelve fresh items whose
/// leads are dense German (umlauts, „quotes“, dashes in every sentence): a digest of about
/// 24 KB, as FITKO's weekly one.
fn site(dir: &Path, port: u16, dkim: Option<&str>, n: usize, postgres: Option<&str>) {
    std::fs::create_dir_all(dir.join("content")).unwrap();
    let yesterday = (herold::clock::now_utc() - chrono::TimeDelta::days(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut rng = corpus::Rng(0x1234_5678_9abc_def1);
    for i in 0..12 {
        let lead = corpus::german_paragraph(&mut rng, 420);
        let more = corpus::german_paragraph(&mut rng, 1500);
        std::fs::write(
            dir.join(format!("content/m{i}.md")),
            format!("+++\ntitle = \"Meldung {i}: „Registermodernisierung“ – Länder und Kommunen ziehen Bilanz\"\ndate = {yesterday}\nslug = \"m{i}\"\ntags = [\"OZG\"]\ncategory = \"Pressemitteilung\"\n+++\n{lead}\n\n{more}\n\nMehr: [Details](/details-{i})\n"),
        )
        .unwrap();
    }
    let dkim_section = match dkim {
        Some(kind) => {
            let key = dir.join("dkim.pem");
            let args: &[&str] = if kind == "rsa" {
                &[
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                ]
            } else {
                &["genpkey", "-algorithm", "ED25519"]
            };
            assert!(
                Command::new("openssl")
                    .args(args)
                    .arg("-out")
                    .arg(&key)
                    .status()
                    .unwrap()
                    .success()
            );
            format!(
                "[mail.dkim]\ndomain = \"fitko.de\"\nselector = \"herold\"\nprivate_key_file = \"{}\"\n",
                key.display()
            )
        }
        None => String::new(),
    };
    std::fs::write(
        dir.join("config.toml"),
        format!(
            "[site]\ntitle = \"FITKO – Aktuelles\"\nbase_url = \"https://www.fitko.de\"\nlink = \"https://www.fitko.de/aktuelles\"\n\
             [server]\npublic_url = \"https://aktuelles.fitko.de\"\n\
             [mail]\nfrom = \"FITKO Aktuelles <aktuelles@fitko.de>\"\ntransport = \"smtp\"\nconcurrency = 4\nrate_per_second = 1000000\n\
             [mail.smtp]\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\n{dkim_section}\
             [[digest]]\nname = \"bench\"\ntitle = \"Wochenüberblick\"\nschedule = \"@daily\"\n"
        ),
    )
    .unwrap();
    if let Some(url) = postgres {
        let config = std::fs::read_to_string(dir.join("config.toml")).unwrap();
        std::fs::write(
            dir.join("config.toml"),
            format!("{config}[database]\nurl = \"{url}\"\n"),
        )
        .unwrap();
        drop(herold::store::Store::open_postgres(url, None).unwrap());
        herold::store::testpg::psql(
            url,
            &format!(
                "INSERT INTO subscribers (email, address_hash, status, topics, digests, created_at, confirmed_at, consent_version, source)
                 SELECT 'leser' || lpad(i::text, 6, '0') || '@example.org', 'h' || i, 'active', '[]', '[\"bench\"]', 1, 1, '1', 'bench'
                 FROM generate_series(0, {}) AS i",
                n - 1
            ),
        );
        return;
    }
    let db = dir.join("data/herold.sqlite3");
    drop(herold::store::Store::open(&db).unwrap());
    let mut conn = rusqlite::Connection::open(&db).unwrap();
    let tx = conn.transaction().unwrap();
    {
        let mut st = tx
            .prepare(
                "INSERT INTO subscribers (email, address_hash, status, topics, digests, created_at, confirmed_at, consent_version, source)
                 VALUES (?1, ?2, 'active', '[]', '[\"bench\"]', 1, 1, '1', 'bench')",
            )
            .unwrap();
        for i in 0..n {
            st.execute(rusqlite::params![
                format!("leser{i:06}@example.org"),
                format!("h{i}")
            ])
            .unwrap();
        }
    }
    tx.commit().unwrap();
}

/// Runs a command under GNU time; gives (seconds, peak KB, stdout with the CPU seconds).
fn timed(cmd: &mut Command) -> (f64, u64, String) {
    let report = tempfile::NamedTempFile::new().unwrap();
    let start = Instant::now();
    let out = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M %U %S")
        .arg("-o")
        .arg(report.path())
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .current_dir(cmd.get_current_dir().unwrap_or(Path::new(".")))
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let secs = start.elapsed().as_secs_f64();
    let report = std::fs::read_to_string(report.path()).unwrap();
    let fields: Vec<&str> = report
        .trim()
        .lines()
        .last()
        .unwrap_or("0 0 0")
        .split_whitespace()
        .collect();
    let kb = fields.first().and_then(|v| v.parse().ok()).unwrap_or(0);
    let cpu: f64 = fields
        .iter()
        .skip(1)
        .filter_map(|v| v.parse::<f64>().ok())
        .sum();
    (
        secs,
        kb,
        format!(
            "{} (CPU {cpu:.1} s)",
            String::from_utf8_lossy(&out.stdout).trim()
        ),
    )
}

fn sink(port: u16) -> std::process::Child {
    let child = Command::new("smtp-sink")
        .args(["-u", "nobody", "-c", &format!("127.0.0.1:{port}"), "256"])
        .stdout(Stdio::null())
        .spawn()
        .expect("smtp-sink from Debian's postfix package");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child
}

fn main() {
    let n = subscribers();
    // `HEROLD_BIN` measures another build (an older commit, say) on the same content.
    let herold_bin =
        std::env::var("HEROLD_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_herold").to_string());
    let herold = herold_bin.as_str();
    let mut size = 0;
    for variant in [None, Some("rsa"), Some("ed25519")] {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        site(dir.path(), port, variant, n, None);
        if size == 0 {
            let out = Command::new(herold)
                .args(["-q", "digest", "preview", "bench"])
                .current_dir(dir.path())
                .output()
                .unwrap();
            size = out.stdout.len();
        }
        let mut s = sink(port);
        let (secs, kb, out) = timed(
            Command::new(herold)
                .args(["-q", "digest", "send", "bench"])
                .current_dir(dir.path()),
        );
        let _ = s.kill();
        let _ = s.wait();
        println!(
            "herold, DKIM {:8}: {n} messages of ~{} KB in {secs:.2} s = {:.0} messages/s, peak {} MB  [{}]",
            variant.unwrap_or("none"),
            size / 1024,
            n as f64 / secs,
            kb / 1024,
            out.trim()
        );
    }
    // PostgreSQL, no DKIM: one node, then two nodes started together on the same run.
    for nodes in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let url = herold::store::testpg::database();
        site(dir.path(), port, None, n, Some(&url));
        let mut s = sink(port);
        let start = Instant::now();
        let children: Vec<_> = (0..nodes)
            .map(|_| {
                let report = tempfile::NamedTempFile::new().unwrap();
                let child = Command::new("/usr/bin/time")
                    .arg("-f")
                    .arg("%M %U %S")
                    .arg("-o")
                    .arg(report.path())
                    .args([herold, "-q", "digest", "send", "bench"])
                    .current_dir(dir.path())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                // The second node joins once the first has planned the run.
                while herold::store::testpg::psql(&url, "SELECT COUNT(*) FROM digest_runs") == "0" {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                (child, report)
            })
            .collect();
        let mut cpu = 0.0;
        let mut peak = 0;
        for (mut child, report) in children {
            child.wait().unwrap();
            let r = std::fs::read_to_string(report.path()).unwrap();
            let f: Vec<f64> = r
                .trim()
                .lines()
                .last()
                .unwrap_or("0 0 0")
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
            peak = peak.max(f.first().copied().unwrap_or(0.0) as u64);
            cpu += f.iter().skip(1).sum::<f64>();
        }
        let secs = start.elapsed().as_secs_f64();
        let _ = s.kill();
        let _ = s.wait();
        let sent = herold::store::testpg::psql(
            &url,
            "SELECT COUNT(*) FROM deliveries WHERE status = 'sent'",
        );
        println!(
            "herold on PostgreSQL, {nodes} node(s), DKIM none: {sent} of {n} sent in {secs:.2} s = {:.0} messages/s, peak {} MB per node (CPU {cpu:.1} s, herold only)",
            n as f64 / secs,
            peak / 1024
        );
    }
    let port = free_port();
    let mut s = sink(port);
    let (secs, kb, _) = timed(Command::new("smtp-source").args([
        "-s",
        "4",
        "-m",
        &n.to_string(),
        "-l",
        &size.to_string(),
        "-f",
        "aktuelles@fitko.de",
        "-t",
        "leser@example.org",
        &format!("127.0.0.1:{port}"),
    ]));
    let _ = s.kill();
    let _ = s.wait();
    println!(
        "smtp-source, 4 sessions: {n} messages of {} KB in {secs:.2} s = {:.0} messages/s, peak {} MB",
        size / 1024,
        n as f64 / secs,
        kb / 1024
    );
}
