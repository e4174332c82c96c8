//! Bounces and complaints: `herold bounce` on the collected formats with real return-path
//! tokens, matching without tokens, forged tokens, unmatched messages, a locked database;
//! then a real Postfix that bounces to herold through its pipe transport, and a real
//! Dovecot whose mailbox herold polls over IMAP.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use super::helpers::*;

const RETURN_PATH: &str = "bounce+{token}@fitko.de";

fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/bounces")
        .join(name);
    String::from_utf8(std::fs::read(p).unwrap()).unwrap()
}

/// A digest site with VERP; `subscribers` get one digest; gives each address's envelope
/// sender and Message-ID.
fn sent_site(sink: &SmtpSink, addresses: &[&str]) -> (Site, HashMap<String, (String, String)>) {
    let site = digest_site(sink);
    let config = std::fs::read_to_string(site.path("config.toml")).unwrap();
    std::fs::write(
        site.path("config.toml"),
        config.replacen(
            "[mail]\n",
            &format!("[mail]\nreturn_path = \"{RETURN_PATH}\"\n"),
            1,
        ),
    )
    .unwrap();
    for a in addresses {
        subscriber(&site, a, &[], &["woechentlich"]);
    }
    let (code, out) = send(&site, "woechentlich");
    assert_eq!(code, Some(0), "{out}");
    let mut by_address = HashMap::new();
    for _ in addresses {
        let m = sink
            .received
            .recv_timeout(std::time::Duration::from_secs(10))
            .unwrap();
        let id = {
            use mailparse::MailHeaderMap;
            m.parsed().headers.get_first_value("Message-ID").unwrap()
        };
        let from = m.from.trim_start_matches('<');
        let from = from.split('>').next().unwrap().to_string();
        let to = m.to[0]
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_string();
        by_address.insert(to, (from, id));
    }
    (site, by_address)
}

/// Runs `herold bounce [args]` with `message` on standard input: exit code, stdout, stderr.
fn bounce(site: &Site, args: &[&str], message: &[u8]) -> (Option<i32>, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_herold"))
        .arg("bounce")
        .args(args)
        .current_dir(site.dir.path())
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(message).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A collected bounce about `address`, returned to `return_path`, naming `message_id`.
fn about(name: &str, address: &str, return_path: &str, message_id: &str) -> Vec<u8> {
    fixture(name)
        .replace("bounce+TOKEN@fitko.example", return_path)
        .replace("anna@example.org", address)
        .replace("<digest.7.42@fitko.example>", message_id)
        .into_bytes()
}

fn list(site: &Site) -> String {
    let out = site.herold(&["subscribers", "list"]);
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn line_of(list: &str, address: &str) -> Option<String> {
    list.lines()
        .find(|l| l.starts_with(&format!("{address}\t")))
        .map(str::to_string)
}

#[test]
fn bounces_suspend_complaints_unsubscribe_forgeries_change_nothing() {
    let sink = SmtpSink::start();
    let people = [
        "anna@example.org",
        "bernd@example.org",
        "clara@example.org",
        "dora@example.org",
    ];
    let (site, sent) = sent_site(&sink, &people);
    let (anna_rp, _) = &sent["anna@example.org"];
    let (bernd_rp, bernd_id) = &sent["bernd@example.org"];
    let (clara_rp, _) = &sent["clara@example.org"];
    let (_, dora_id) = &sent["dora@example.org"];
    assert!(anna_rp.starts_with("bounce+") && anna_rp.ends_with("@fitko.de"));
    assert_ne!(anna_rp, bernd_rp, "each mail has its own return path");

    // Postfix's DSN to anna's return path: hard, suspended with the reason.
    let (code, class, log) = bounce(
        &site,
        &["--recipient", anna_rp],
        &about(
            "postfix-unknown-user.hard.eml",
            "anna@example.org",
            anna_rp,
            "<x@y>",
        ),
    );
    assert_eq!((code, class.as_str()), (Some(0), "hard"), "{log}");
    assert!(
        !log.contains("anna@example.org"),
        "no address in the log: {log}"
    );
    let l = line_of(&list(&site), "anna@example.org").unwrap();
    assert!(
        l.contains("\tsuspended\t") && l.ends_with("hard bounce 5.1.1"),
        "{l}"
    );

    // Without any token: the returned Message-ID and Final-Recipient (Gmail's 5.7.1: soft).
    let (code, class, log) = bounce(
        &site,
        &[],
        &about(
            "gmail-policy.soft.eml",
            "bernd@example.org",
            "x@y.example",
            bernd_id,
        ),
    );
    assert_eq!((code, class.as_str()), (Some(0), "soft"), "{log}");
    // Bernd's Message-ID with another recipient: matches nobody.
    let (_, class, _) = bounce(
        &site,
        &[],
        &about(
            "gmail-policy.soft.eml",
            "mallory@example.org",
            "x@y.example",
            bernd_id,
        ),
    );
    assert_eq!(class, "unmatched");

    // A forged token (a changed letter) changes nothing.
    let mut forged = bernd_rp.clone().into_bytes();
    forged[10] = if forged[10] == b'a' { b'b' } else { b'a' };
    let forged = String::from_utf8(forged).unwrap();
    let (code, class, _) = bounce(
        &site,
        &["--recipient", &forged],
        &about(
            "postfix-unknown-user.hard.eml",
            "bernd@example.org",
            &forged,
            "<x@y>",
        ),
    );
    assert_eq!((code, class.as_str()), (Some(0), "forged"));
    assert!(
        line_of(&list(&site), "bernd@example.org")
            .unwrap()
            .contains("\tactive\t")
    );

    // A complaint through a feedback loop: erased, blocked, logged as `complaint`.
    let (code, class, log) = bounce(
        &site,
        &[],
        &about(
            "arf-abuse.complaint.eml",
            "clara@example.org",
            clara_rp,
            "<x@y>",
        ),
    );
    assert_eq!((code, class.as_str()), (Some(0), "complaint"), "{log}");
    assert!(line_of(&list(&site), "clara@example.org").is_none());
    let export = site.herold(&["subscribers", "export", "clara@example.org"]);
    let export = String::from_utf8_lossy(&export.stdout);
    assert!(
        export.contains("\"complaint\"") && export.contains("unsubscribed"),
        "{export}"
    );

    // An auto-reply is ignored, whoever it is from.
    let (_, class, _) = bounce(
        &site,
        &["--recipient", &sent["dora@example.org"].0],
        &about(
            "autoreply-abwesenheit-de.ignored.eml",
            "dora@example.org",
            "x@y",
            dora_id,
        ),
    );
    assert_eq!(class, "ignored");

    // A message nobody can match is kept (0600) for the operator, and changes nothing.
    let (code, class, _) = bounce(&site, &[], fixture("human-reply.none.eml").as_bytes());
    assert_eq!((code, class.as_str()), (Some(0), "unmatched"));
    let kept: Vec<_> = std::fs::read_dir(site.path("data/bounces"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(kept.len(), 2, "{kept:?}");
    for k in &kept {
        assert_eq!(
            std::fs::metadata(k).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    // Unreadable bytes, from a file: unmatched too.
    std::fs::write(site.path("junk.bin"), [0u8, 159, 146, 150, 255]).unwrap();
    let out = site.herold(&["bounce", "junk.bin"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "unmatched");
    // A file that is not there is bad usage.
    assert_eq!(
        site.herold(&["bounce", "nowhere.eml"]).status.code(),
        Some(2)
    );

    // Reactivation lifts anna's suspension.
    let out = site.herold(&["subscribers", "reactivate", "anna@example.org"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let l = line_of(&list(&site), "anna@example.org").unwrap();
    assert_eq!(l, "anna@example.org\tactive\t\twoechentlich");

    // /metrics counts by class (from the database, whichever process handled them).
    let running = site.start();
    let metrics = running.get("/metrics", &[]).text();
    for (class, n) in [
        ("hard", 1),
        ("soft", 1),
        ("complaint", 1),
        ("forged", 1),
        ("unmatched", 3),
        ("ignored", 1),
    ] {
        assert!(
            metrics.contains(&format!("herold_bounces_total{{class=\"{class}\"}} {n}")),
            "{class}: {metrics}"
        );
    }
    assert!(
        metrics.contains("herold_subscribers_suspended 0"),
        "{metrics}"
    );
}

#[test]
fn a_locked_database_means_try_again_later_and_nothing_is_lost() {
    let sink = SmtpSink::start();
    let (site, sent) = sent_site(&sink, &["erik@example.org"]);
    let (rp, _) = &sent["erik@example.org"];
    let message = about(
        "exim-unknown-user.hard.eml",
        "erik@example.org",
        rp,
        "<x@y>",
    );
    // Another process holds the write lock.
    let mut locker = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys,time\nc=sqlite3.connect(sys.argv[1],isolation_level=None)\nc.execute('BEGIN EXCLUSIVE')\nprint('locked',flush=True)\ntime.sleep(120)",
        ])
        .arg(site.path("data/herold.sqlite3"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(locker.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "locked");
    let started = std::time::Instant::now();
    let (code, class, log) = bounce(&site, &["--recipient", rp], &message);
    let waited = started.elapsed();
    locker.kill().unwrap();
    locker.wait().unwrap();
    assert_eq!((code, class.as_str()), (Some(75), ""), "{log}");
    assert!(waited < std::time::Duration::from_secs(30), "{waited:?}");
    assert!(log.contains("deliver again"), "{log}");
    // The MTA delivers it again: now it counts.
    let (code, class, log) = bounce(&site, &["--recipient", rp], &message);
    assert_eq!((code, class.as_str()), (Some(0), "hard"), "{log}");
    // A broken configuration is a reason to try again too, not to lose the bounce.
    std::fs::write(site.path("config.toml"), "[site\n").unwrap();
    let (code, _, _) = bounce(&site, &["--recipient", rp], &message);
    assert_eq!(code, Some(75));
}

/// herold's digest goes through a real Postfix; the mail to an unknown local user comes back
/// as Postfix's own DSN, through its pipe transport into `herold bounce`; the address ends
/// suspended and gets no next digest, while the other subscriber gets both.
#[test]
fn a_real_postfix_bounce_suspends_the_address() {
    use super::mta::*;
    let sink = SmtpSink::start();
    let bin_dir = open_dir();
    let bin = herold_for_others(bin_dir.path());
    let site = digest_site(&sink);
    std::fs::set_permissions(site.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let config_path = site.path("config.toml");
    let postfix = Postfix::start(
        &format!(
            "bounces.herold.test herold:\nsink.herold.test smtp:[127.0.0.1]:{}\n",
            sink.port
        ),
        &format!(
            "flags=DRq user=nobody argv={} --config {} bounce --recipient ${{original_recipient}}",
            bin.display(),
            config_path.display()
        ),
    );
    let config = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(
        &config_path,
        config
            .replacen(
                "[mail]\n",
                "[mail]\nreturn_path = \"bounce+{token}@bounces.herold.test\"\n",
                1,
            )
            .replace(
                &format!("port = {}", sink.port),
                &format!("port = {}", postfix.port),
            ),
    )
    .unwrap();
    subscriber(&site, "gone@localhost.herold.test", &[], &["woechentlich"]);
    subscriber(&site, "anna@sink.herold.test", &[], &["woechentlich"]);
    // The pipe runs as nobody: the database and the secret must be its to write.
    std::fs::write(
        site.path("data/secret"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    chown(&site.path("data"), "nobody:nogroup");

    let (code, out) = send(&site, "woechentlich");
    assert_eq!(code, Some(0), "{out}");
    let anna = sink
        .received
        .recv_timeout(std::time::Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("anna's mail did not arrive: {}", postfix.log()));
    assert!(anna.from.contains("bounce+") && anna.from.contains("@bounces.herold.test"));
    let suspended = eventually("the bounce to suspend gone@", || {
        let l = line_of(&list(&site), "gone@localhost.herold.test")?;
        l.contains("\tsuspended\t").then_some(l)
    });
    assert!(suspended.ends_with("hard bounce 5.1.1"), "{suspended}");
    // Postfix logs the pipe's delivery when the pipe has exited, a moment after the
    // database took the bounce.
    eventually("postfix to log the delivery to herold", || {
        let log = postfix.log();
        (log.contains("relay=herold") && log.contains("status=sent")).then_some(())
    });

    // The next digest reaches anna only.
    site.item(
        "neu.md",
        "Neue Meldung",
        &days_ago(0),
        "tags = [\"OZG\"]",
        "Neu.",
    );
    let (code, out) = send(&site, "woechentlich");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("recipients=1"), "{out}");
    let again = sink
        .received
        .recv_timeout(std::time::Duration::from_secs(20))
        .unwrap();
    assert_eq!(again.to, anna.to);
    assert!(
        sink.received
            .recv_timeout(std::time::Duration::from_secs(1))
            .is_err()
    );
}

/// A site whose bounce mailbox is `dovecot`'s, with `tls = "none"` on loopback.
fn imap_site(
    sink: &SmtpSink,
    dovecot: &super::mta::Dovecot,
    people: &[&str],
) -> (Site, HashMap<String, (String, String)>) {
    let (site, sent) = sent_site(sink, people);
    std::fs::write(site.path("imap-password"), "geheim-123\n").unwrap();
    let config = std::fs::read_to_string(site.path("config.toml")).unwrap();
    std::fs::write(
        site.path("config.toml"),
        format!(
            "{config}
[bounce.imap]
host = \"127.0.0.1\"
port = {}
tls = \"none\"
username = \"bounces\"
password_file = \"imap-password\"
poll_interval = \"1s\"
",
            dovecot.port
        ),
    )
    .unwrap();
    (site, sent)
}

fn poll(site: &Site) -> Vec<String> {
    let out = site.herold(&["bounce", "--imap"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        !err.contains("@example.org"),
        "no address in the log: {err}"
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// `herold bounce --imap` against a real Dovecot: handled messages move to the processed
/// mailbox (made on first use), an unmatched one stays marked `\Seen`, nothing is deleted;
/// then the same without the server's MOVE (copy, then expunge), and the daemon's own poll.
#[test]
fn the_bounce_mailbox_over_imap() {
    use super::mta::Dovecot;
    for with_move in [true, false] {
        let dovecot = Dovecot::start(if with_move {
            ""
        } else {
            "imap_capability = IMAP4rev1 LITERAL+ SASL-IR LOGIN-REFERRALS ID ENABLE IDLE UIDPLUS"
        });
        let sink = SmtpSink::start();
        let (site, sent) = imap_site(
            &sink,
            &dovecot,
            &["anna@example.org", "bernd@example.org", "clara@example.org"],
        );
        let (anna_rp, _) = &sent["anna@example.org"];
        let (bernd_rp, _) = &sent["bernd@example.org"];
        let (clara_rp, clara_id) = &sent["clara@example.org"];
        dovecot.deliver(
            "INBOX",
            &about(
                "exchange-online-ndr.hard.eml",
                "anna@example.org",
                anna_rp,
                "<x@y>",
            ),
        );
        dovecot.deliver(
            "INBOX",
            &about(
                "arf-abuse.complaint.eml",
                "bernd@example.org",
                bernd_rp,
                "<x@y>",
            ),
        );
        dovecot.deliver(
            "INBOX",
            &about(
                "autoreply-outlook-en.ignored.eml",
                "clara@example.org",
                clara_rp,
                clara_id,
            ),
        );
        dovecot.deliver("INBOX", fixture("human-reply.none.eml").as_bytes());

        let mut classes = poll(&site);
        classes.sort();
        assert_eq!(
            classes,
            ["complaint", "hard", "ignored", "unmatched"],
            "move: {with_move}"
        );
        let inbox = dovecot.messages("INBOX");
        assert_eq!(inbox.len(), 1, "only the unmatched one stays");
        assert!(inbox[0].0.contains('S'), "marked seen: {:?}", inbox[0].0);
        assert!(String::from_utf8_lossy(&inbox[0].1).contains("sehr interessant"));
        let processed = dovecot.messages("herold-processed");
        assert_eq!(processed.len(), 3, "nothing deleted");
        let l = line_of(&list(&site), "anna@example.org").unwrap();
        assert!(l.ends_with("hard bounce 5.1.10"), "{l}");
        assert!(line_of(&list(&site), "bernd@example.org").is_none());
        assert!(
            !site.path("data/bounces").exists(),
            "the mailbox keeps the unmatched one"
        );

        // A second poll finds nothing new.
        assert!(poll(&site).is_empty());
        if !with_move {
            continue;
        }

        // The daemon polls on its own.
        let running = site.start();
        dovecot.deliver(
            "INBOX",
            &about(
                "gmail-policy.soft.eml",
                "clara@example.org",
                clara_rp,
                "<x@y>",
            ),
        );
        running.wait_log("bounce mailbox polled handled=1");
        assert_eq!(dovecot.messages("herold-processed").len(), 4);
        let metrics = running.get("/metrics", &[]).text();
        assert!(
            metrics.contains("herold_bounces_total{class=\"soft\"} 1"),
            "{metrics}"
        );
    }
}

#[test]
fn a_wrong_imap_password_is_an_error_and_changes_nothing() {
    use super::mta::Dovecot;
    let dovecot = Dovecot::start("");
    let sink = SmtpSink::start();
    let (site, sent) = imap_site(&sink, &dovecot, &["anna@example.org"]);
    let (anna_rp, _) = &sent["anna@example.org"];
    std::fs::write(site.path("imap-password"), "falsch\n").unwrap();
    dovecot.deliver(
        "INBOX",
        &about(
            "postfix-unknown-user.hard.eml",
            "anna@example.org",
            anna_rp,
            "<x@y>",
        ),
    );
    let out = site.herold(&["bounce", "--imap"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("IMAP login failed"), "{err}");
    assert_eq!(dovecot.messages("INBOX").len(), 1);
    assert!(
        line_of(&list(&site), "anna@example.org")
            .unwrap()
            .contains("\tactive\t")
    );
    // No IMAP server at all.
    let config = std::fs::read_to_string(site.path("config.toml")).unwrap();
    let port = super::mta::free_port();
    std::fs::write(
        site.path("config.toml"),
        config.replace(
            &format!("port = {}", dovecot.port),
            &format!("port = {port}"),
        ),
    )
    .unwrap();
    let out = site.herold(&["bounce", "--imap"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect to IMAP"));
}

/// IMAP over TLS and with STARTTLS, the server's certificate checked against the trusted
/// roots (here a CA made for the test, given as `SSL_CERT_FILE`).
#[test]
fn the_bounce_mailbox_over_tls_and_starttls() {
    use super::mta::Dovecot;
    let (dovecot, imaps, ca) = Dovecot::start_tls();
    let sink = SmtpSink::start();
    let (site, sent) = imap_site(&sink, &dovecot, &["anna@example.org"]);
    let (anna_rp, _) = &sent["anna@example.org"];
    let plain = std::fs::read_to_string(site.path("config.toml")).unwrap();
    let herold = |config: &str, ca: Option<&Path>| {
        std::fs::write(site.path("config.toml"), config).unwrap();
        let env: Vec<(&str, &std::ffi::OsStr)> = ca
            .map(|c| ("SSL_CERT_FILE", c.as_os_str()))
            .into_iter()
            .collect();
        site.herold_with(&["bounce", "--imap"], &env)
    };
    let tls = plain
        .replace("host = \"127.0.0.1\"", "host = \"localhost\"")
        .replace(
            &format!("port = {}", dovecot.port),
            &format!("port = {imaps}"),
        )
        .replace("tls = \"none\"", "tls = \"tls\"");
    let starttls = plain
        .replace("host = \"127.0.0.1\"", "host = \"localhost\"")
        .replace("tls = \"none\"", "tls = \"starttls\"");
    // An untrusted certificate is refused.
    let out = herold(&tls, None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("TLS"),
        "{out:?}"
    );
    for config in [&tls, &starttls] {
        dovecot.deliver(
            "INBOX",
            &about(
                "sendmail-user-unknown.hard.eml",
                "anna@example.org",
                anna_rp,
                "<x@y>",
            ),
        );
        let out = herold(config, Some(&ca));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hard");
    }
    assert_eq!(dovecot.messages("herold-processed").len(), 2);
    assert!(dovecot.messages("INBOX").is_empty());
}
