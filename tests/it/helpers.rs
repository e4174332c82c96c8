//! A tiny vocabulary for tests: a site in a temporary directory, the real binary, and
//! feeds read back with `feed-rs`.

use std::path::{Path, PathBuf};
use std::process::Output;

pub const BASE_CONFIG: &str = r#"[site]
title = "FITKO – Aktuelles"
description = "Neuigkeiten der Föderalen IT-Kooperation"
base_url = "https://www.fitko.de"
link = "https://www.fitko.de/aktuelles"
item_url = "https://www.fitko.de/aktuelles/{slug}"
author = "FITKO"

[feeds]
base_url = "https://www.fitko.de/feeds"
"#;

/// A site in a temporary directory: `config.toml`, `content/`, `feeds/`.
pub struct Site {
    pub dir: tempfile::TempDir,
}

impl Site {
    pub fn new() -> Site {
        Site::with_config(BASE_CONFIG)
    }

    pub fn with_config(config: &str) -> Site {
        let site = Site {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::write(site.path("config.toml"), config).unwrap();
        std::fs::create_dir_all(site.path("content")).unwrap();
        site
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes `content/{rel}`.
    pub fn write(&self, rel: &str, text: impl AsRef<[u8]>) {
        let p = self.path("content").join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// Writes a TOML item with the given extra front matter lines.
    pub fn item(&self, rel: &str, title: &str, date: &str, extra: &str, body: &str) {
        self.write(
            rel,
            format!("+++\ntitle = {title:?}\ndate = {date}\n{extra}\n+++\n{body}\n"),
        );
    }

    /// Runs the real binary in the site's directory.
    pub fn herold(&self, args: &[&str]) -> Output {
        self.herold_with(args, &[])
    }

    /// Runs the real binary in the site's directory with more environment variables.
    pub fn herold_with(&self, args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_herold"))
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .output()
            .unwrap()
    }

    /// `herold build`, which must succeed; gives stderr.
    pub fn build(&self) -> String {
        let out = self.herold(&["build"]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "build failed: {err}");
        err
    }

    pub fn feed_bytes(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.path("feeds").join(rel)).unwrap_or_else(|e| panic!("feeds/{rel}: {e}"))
    }

    /// Reads `feeds/{rel}` back with feed-rs.
    pub fn feed(&self, rel: &str) -> feed_rs::model::Feed {
        feed_rs::parser::parse(&self.feed_bytes(rel)[..])
            .unwrap_or_else(|e| panic!("feeds/{rel} does not parse: {e}"))
    }

    /// Every file below `feeds/` with its bytes and mtime.
    pub fn snapshot_feeds(&self) -> Vec<(PathBuf, Vec<u8>, std::time::SystemTime)> {
        let mut out = Vec::new();
        walk(&self.path("feeds"), &mut out);
        out.sort();
        out
    }
}

fn walk(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>, std::time::SystemTime)>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push((
                p.clone(),
                std::fs::read(&p).unwrap(),
                e.metadata().unwrap().modified().unwrap(),
            ));
        }
    }
}

pub fn titles(feed: &feed_rs::model::Feed) -> Vec<String> {
    feed.entries
        .iter()
        .map(|e| {
            e.title
                .as_ref()
                .map(|t| t.content.clone())
                .unwrap_or_default()
        })
        .collect()
}

pub fn ids(feed: &feed_rs::model::Feed) -> Vec<String> {
    feed.entries.iter().map(|e| e.id.clone()).collect()
}

pub const FORMATS: [&str; 3] = ["rss.xml", "atom.xml", "feed.json"];

/// Runs Python feedparser over every XML feed below `dir` and asserts `bozo == 0`
/// (feedparser 6.0 does not read JSON Feed; feed-rs checks those).
pub fn assert_feedparser_clean(dir: &Path) {
    let script = r#"
import sys, os, feedparser
bad = []
for d, _, files in os.walk(sys.argv[1]):
    for f in files:
        if f.endswith('.xml'):
            p = os.path.join(d, f)
            r = feedparser.parse(open(p, 'rb').read())
            if r.bozo or not r.entries and 'tags' in p:
                bad.append('%s: %r' % (p, r.get('bozo_exception')))
print('\n'.join(bad))
sys.exit(1 if bad else 0)
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(dir)
        .output()
        .expect("python3 with feedparser is installed (see .ci/run)");
    assert!(
        out.status.success(),
        "feedparser: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A `herold run` child process on port 0, with its log lines collected.
pub struct Running {
    child: std::process::Child,
    pub addr: String,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Site {
    /// Starts the daemon and waits until it listens.
    pub fn start(&self) -> Running {
        self.start_with(&[])
    }

    pub fn start_with(&self, env: &[(&str, &str)]) -> Running {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_herold"))
            .args(["run"])
            .current_dir(self.dir.path())
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .env("HEROLD_SERVER_LISTEN", "127.0.0.1:0")
            .envs(env.iter().copied())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                sink.lock().unwrap().push(line);
            }
        });
        let mut running = Running {
            child,
            addr: String::new(),
            log,
        };
        let line = running.wait_log("listening on http://");
        running.addr = line
            .split("listening on http://")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string();
        running
    }
}

/// Waits (up to 15 s) until `check` holds; panics with `what` otherwise.
pub fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

impl Running {
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits for a log line containing `needle` and gives it.
    pub fn wait_log(&self, needle: &str) -> String {
        eventually(&format!("log line {needle:?}"), || {
            self.log
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
                .cloned()
        })
    }

    /// How many log lines contain `needle`.
    pub fn count_log(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    pub fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits for the process to end and gives its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        eventually("the daemon to exit", || self.child.try_wait().unwrap()).code()
    }

    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
        http_request(&self.addr, "GET", path, headers, b"")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response read off the wire.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A minimal HTTP/1.1 client over a plain socket, so tests can send exactly the bytes they
/// mean (paths with `..`, odd headers) and see exactly what comes back.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    // A server may answer (413, 414) and close before it has read everything; what it
    // answered is what counts, so write errors are not test failures.
    let _ = s.write_all(req.as_bytes()).and_then(|()| s.write_all(body));
    // Read the head, then exactly the body its headers announce: some servers keep the
    // connection open despite `Connection: close`.
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    let split = loop {
        if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed before the response head");
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let mut body = raw[split + 4..].to_vec();
    let chunked = header("transfer-encoding").is_some_and(|v| v.contains("chunked"));
    if method == "HEAD" || status == 304 || status == 204 {
        body.clear();
    } else if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        while body.len() < len {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "connection closed before the body ended");
            body.extend_from_slice(&buf[..n]);
        }
        body.truncate(len);
    } else if chunked {
        while !body.windows(5).any(|w| w == b"0\r\n\r\n") {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            body.extend_from_slice(&buf[..n]);
        }
        body = dechunk(&body);
    } else {
        s.read_to_end(&mut body).unwrap();
    }
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&data[..end])
                .split(';')
                .next()
                .unwrap()
                .trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[end + 2..end + 2 + size]);
        data = &data[end + 2 + size + 2..];
    }
}

/// One message as the test SMTP server received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    pub data: Vec<u8>,
}

impl Received {
    /// The parsed message.
    pub fn parsed(&self) -> mailparse::ParsedMail<'_> {
        mailparse::parse_mail(&self.data).expect("valid MIME")
    }

    pub fn subject(&self) -> String {
        use mailparse::MailHeaderMap;
        self.parsed()
            .headers
            .get_first_value("Subject")
            .unwrap_or_default()
    }

    /// The decoded body of the first part with this content type.
    pub fn part(&self, mime: &str) -> String {
        fn find(m: &mailparse::ParsedMail, mime: &str) -> Option<String> {
            if m.ctype.mimetype == mime {
                return m.get_body().ok();
            }
            m.subparts.iter().find_map(|p| find(p, mime))
        }
        find(&self.parsed(), mime).unwrap_or_else(|| panic!("no {mime} part"))
    }

    /// The first link in the plain-text part that contains `needle`.
    pub fn link_with(&self, needle: &str) -> String {
        self.part("text/plain")
            .split_whitespace()
            .find(|w| w.contains(needle))
            .unwrap_or_else(|| panic!("no link with {needle}"))
            .to_string()
    }

    /// The first link in the plain-text part that starts with `prefix`.
    pub fn link(&self, prefix: &str) -> String {
        let text = self.part("text/plain");
        let start = text
            .find(prefix)
            .unwrap_or_else(|| panic!("no {prefix} link in {text}"));
        text[start..].split_whitespace().next().unwrap().to_string()
    }
}

/// An SMTP server on 127.0.0.1, port 0, speaking real SMTP to herold's client. `answers`
/// decides the reply to each DATA (e.g. "250 OK", "451 try later", "550 no such user").
pub struct SmtpSink {
    pub port: u16,
    pub received: std::sync::mpsc::Receiver<Received>,
}

impl SmtpSink {
    pub fn start() -> SmtpSink {
        SmtpSink::with_answers(|_, _| "250 2.0.0 OK".to_string())
    }

    /// `answer(n, recipients)` is the reply to the `n`-th DATA.
    pub fn with_answers(
        answer: impl Fn(usize, &[String]) -> String + Send + Sync + 'static,
    ) -> SmtpSink {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = std::sync::mpsc::channel();
        let answer = std::sync::Arc::new(answer);
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (tx, answer, count) = (tx.clone(), answer.clone(), count.clone());
                std::thread::spawn(move || {
                    let mut out = stream.try_clone().unwrap();
                    let mut reader = BufReader::new(stream);
                    let _ = out.write_all(b"220 sink.test ESMTP\r\n");
                    let (mut from, mut to) = (String::new(), Vec::new());
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let upper = line.to_ascii_uppercase();
                        let reply = if upper.starts_with("EHLO") {
                            "250-sink.test\r\n250-8BITMIME\r\n250 SMTPUTF8".to_string()
                        } else if upper.starts_with("HELO")
                            || upper.starts_with("RSET")
                            || upper.starts_with("NOOP")
                        {
                            "250 OK".to_string()
                        } else if upper.starts_with("MAIL FROM:") {
                            from = line[10..].trim().to_string();
                            to.clear();
                            "250 OK".to_string()
                        } else if upper.starts_with("RCPT TO:") {
                            to.push(line[8..].trim().trim_matches(['<', '>']).to_string());
                            "250 OK".to_string()
                        } else if upper.starts_with("DATA") {
                            let _ = out.write_all(b"354 go ahead\r\n");
                            let mut data = Vec::new();
                            loop {
                                let mut l = String::new();
                                if reader.read_line(&mut l).unwrap_or(0) == 0 {
                                    return;
                                }
                                if l == ".\r\n" {
                                    break;
                                }
                                let l = l
                                    .strip_prefix('.')
                                    .filter(|_| l.starts_with(".."))
                                    .unwrap_or(&l);
                                data.extend_from_slice(l.as_bytes());
                            }
                            let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            let reply = answer(n, &to);
                            if reply == "HANGUP" {
                                // The server goes away after the message, before answering.
                                return;
                            }
                            if reply.starts_with('2') {
                                let _ = tx.send(Received {
                                    from: from.clone(),
                                    to: to.clone(),
                                    data,
                                });
                            }
                            reply
                        } else if upper.starts_with("QUIT") {
                            let _ = out.write_all(b"221 bye\r\n");
                            return;
                        } else {
                            "502 not implemented".to_string()
                        };
                        let _ = out.write_all(format!("{reply}\r\n").as_bytes());
                    }
                });
            }
        });
        SmtpSink { port, received: rx }
    }

    /// Waits for the next message (up to 10 s).
    pub fn next(&self) -> Received {
        self.received
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("a mail")
    }

    /// Asserts that no message arrives within a short while.
    pub fn assert_none(&self) {
        if let Ok(m) = self
            .received
            .recv_timeout(std::time::Duration::from_millis(400))
        {
            panic!("unexpected mail to {:?}", m.to);
        }
    }
}

/// A site whose mail goes to `sink`, with two digests.
pub fn site_with_mail(sink: &SmtpSink) -> Site {
    let site = Site::with_config(&format!(
        "{BASE_CONFIG}
[mail]
from = \"FITKO Aktuelles <aktuelles@fitko.de>\"
transport = \"smtp\"
[mail.smtp]
host = \"127.0.0.1\"
port = {}
tls = \"none\"
timeout = \"5s\"

[[digest]]
name = \"woechentlich\"
title = \"Wochenüberblick\"
schedule = \"0 8 * * 1\"

[[digest]]
name = \"taeglich\"
title = \"Tagesmeldungen\"
schedule = \"@daily\"
",
        sink.port
    ));
    site.item(
        "ozg.md",
        "OZG",
        "2026-01-10",
        "tags = [\"OZG\", \"FIT-Connect\"]",
        "Text",
    );
    site.item("fim.md", "FIM", "2026-01-11", "tags = [\"FIM\"]", "Text");
    site
}

pub fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish().into_bytes()
}

impl Running {
    pub fn post_form(&self, path: &str, pairs: &[(&str, &str)]) -> HttpResponse {
        http_request(
            &self.addr,
            "POST",
            path,
            &[("Content-Type", "application/x-www-form-urlencoded")],
            &form(pairs),
        )
    }

    /// The path (and query) of a full URL, to request it from this server.
    pub fn path_of(&self, url: &str) -> String {
        let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
        after_scheme
            .find('/')
            .map(|i| after_scheme[i..].to_string())
            .unwrap_or_else(|| "/".into())
    }
}

/// The subscribers in the site's database.
pub fn subscribers(site: &Site) -> Vec<herold::store::Subscriber> {
    herold::store::Store::open(&site.path("data/herold.sqlite3"))
        .unwrap()
        .list()
        .unwrap()
}

/// An RFC 3339 time `days` before now, so that tests hold whenever they run.
pub fn days_ago(days: i64) -> String {
    (chrono::Utc::now() - chrono::TimeDelta::days(days))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// An import row for an active subscriber (consent given at 1 s past the epoch).
pub fn active_row(
    email: &str,
    topics: Vec<String>,
    digests: Vec<String>,
    language: Option<&str>,
) -> herold::store::ImportRow {
    herold::store::ImportRow {
        email: herold::email::Email::parse(email).unwrap(),
        source: "test".into(),
        action: herold::store::ImportAction::Subscribe {
            status: herold::store::Status::Active,
            choice: herold::store::Choice {
                topics,
                digests,
                language: language.map(str::to_string),
            },
            consented_at: Some(1),
            consent_version: "1".into(),
        },
    }
}

/// Adds an active subscriber of `digests` with `topics` straight to the database.
pub fn subscriber(site: &Site, email: &str, topics: &[&str], digests: &[&str]) {
    let mut store = herold::store::Store::open(&site.path("data/herold.sqlite3")).unwrap();
    let t: Vec<String> = topics.iter().map(|s| s.to_string()).collect();
    let d: Vec<String> = digests.iter().map(|s| s.to_string()).collect();
    store.import(&active_row(email, t, d, None), 1).unwrap();
}

/// Records that the scheduler of `digest` began `days` ago, so that a fire time since then
/// counts as missed when a daemon starts.
pub fn scheduler_began(store: &mut herold::store::Store, digest: &str, days: i64) {
    let since = (chrono::Utc::now() - chrono::TimeDelta::days(days))
        .timestamp()
        .to_string();
    store
        .meta_or_insert(&format!("scheduler_since:{digest}"), &since)
        .unwrap();
}

/// A site with mail to `sink` and fresh items: OZG and FIM news of the last days.
pub fn digest_site(sink: &SmtpSink) -> Site {
    let site = site_with_mail(sink);
    std::fs::remove_dir_all(site.path("content")).unwrap();
    site.item(
        "ozg.md",
        "OZG-Neuigkeit",
        &days_ago(2),
        "tags = [\"OZG\"]",
        "Zur OZG.",
    );
    site.item(
        "fim.md",
        "FIM-Neuigkeit",
        &days_ago(1),
        "tags = [\"FIM\"]\nsummary = \"Kurz zu FIM.\"",
        "Zu FIM.",
    );
    site
}

/// Runs `herold digest send NAME`; gives its exit code and what it printed.
pub fn send(site: &Site, name: &str) -> (Option<i32>, String) {
    let out = site.herold(&["digest", "send", name]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("digest send {name}: {text}");
    (out.status.code(), text)
}
