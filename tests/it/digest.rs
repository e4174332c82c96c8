//! Digests: who gets which items, never twice, never skipped; the mail itself; DKIM.

use crate::helpers::*;

/// An RFC 3339 time `days` before now.
fn days_ago(days: i64) -> String {
    (chrono::Utc::now() - chrono::TimeDelta::days(days))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn subscriber(site: &Site, email: &str, topics: &[&str], digests: &[&str]) {
    let mut store = herold::store::Store::open(&site.path("data/herold.sqlite3")).unwrap();
    let t: Vec<String> = topics.iter().map(|s| s.to_string()).collect();
    let d: Vec<String> = digests.iter().map(|s| s.to_string()).collect();
    store
        .import(
            &herold::email::Email::parse(email).unwrap(),
            herold::store::Status::Active,
            &t,
            &d,
            Some(1),
            "test",
            "1",
            1,
        )
        .unwrap();
}

fn send(site: &Site, name: &str) -> (Option<i32>, String) {
    let out = site.herold(&["digest", "send", name]);
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn drain(sink: &SmtpSink, n: usize) -> Vec<Received> {
    let mut v: Vec<Received> = (0..n).map(|_| sink.next()).collect();
    sink.assert_none();
    v.sort_by(|a, b| a.to.cmp(&b.to));
    v
}

fn titles_in(mail: &Received) -> Vec<String> {
    let text = mail.part("text/plain");
    let mut out: Vec<String> = text
        .split("----------------------------------------------------------------------")
        .skip(1)
        .filter_map(|block| block.trim().lines().next().map(str::to_string))
        .filter(|l| !l.is_empty() && !l.starts_with("Sie erhalten"))
        .collect();
    out.sort();
    out
}

/// A site with mail to `sink` and fresh items: OZG and FIM news of the last days.
fn digest_site(sink: &SmtpSink) -> Site {
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

#[test]
fn each_subscriber_gets_their_topics_once_and_late_files_once() {
    let sink = SmtpSink::start();
    let site = digest_site(&sink);
    subscriber(&site, "alle@example.org", &[], &["woechentlich"]);
    subscriber(&site, "ozg@example.org", &["OZG"], &["woechentlich"]);
    subscriber(&site, "recht@example.org", &["Recht"], &["woechentlich"]);
    subscriber(&site, "taeglich@example.org", &[], &["taeglich"]);

    let (code, out) = send(&site, "woechentlich");
    assert_eq!(code, Some(0), "{out}");
    let mails = drain(&sink, 2);
    assert_eq!(mails[0].to, ["alle@example.org"]);
    assert_eq!(titles_in(&mails[0]), ["FIM-Neuigkeit", "OZG-Neuigkeit"]);
    assert_eq!(mails[1].to, ["ozg@example.org"]);
    assert_eq!(titles_in(&mails[1]), ["OZG-Neuigkeit"]);

    // Nothing twice: a second send has nothing new.
    let (code, out) = send(&site, "woechentlich");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("no new run"), "{out}");
    sink.assert_none();

    // A file added late with an older date goes out once; an old import never.
    site.item(
        "spaet.md",
        "Späte Meldung",
        &days_ago(4),
        "tags = [\"OZG\"]",
        "Nachgereicht.",
    );
    site.item(
        "archiv.md",
        "Archivmeldung",
        "2019-05-01",
        "tags = [\"OZG\"]",
        "Importiert.",
    );
    send(&site, "woechentlich");
    let mails = drain(&sink, 2);
    assert_eq!(titles_in(&mails[0]), ["Späte Meldung"]);
    assert_eq!(titles_in(&mails[1]), ["Späte Meldung"]);
    send(&site, "woechentlich");
    sink.assert_none();

    // The other digest has its own window.
    send(&site, "taeglich");
    let mails = drain(&sink, 1);
    assert_eq!(mails[0].to, ["taeglich@example.org"]);
    assert_eq!(titles_in(&mails[0]).len(), 3);
}

#[test]
fn below_min_items_nothing_is_sent_and_the_window_stays() {
    let sink = SmtpSink::start();
    let site = digest_site(&sink);
    let config = std::fs::read_to_string(site.path("config.toml")).unwrap();
    std::fs::write(
        site.path("config.toml"),
        config.replace(
            "schedule = \"0 8 * * 1\"",
            "schedule = \"0 8 * * 1\"\nmin_items = 3",
        ),
    )
    .unwrap();
    subscriber(&site, "a@example.org", &[], &["woechentlich"]);
    let (code, out) = send(&site, "woechentlich");
    assert_eq!(code, Some(0));
    assert!(out.contains("fewer than min_items = 3"), "{out}");
    sink.assert_none();
    site.item("drei.md", "Dritte Meldung", &days_ago(0), "", "x");
    send(&site, "woechentlich");
    assert_eq!(titles_in(&drain(&sink, 1)[0]).len(), 3);
}

#[test]
fn preview_and_dry_run_send_nothing() {
    let sink = SmtpSink::start();
    let site = digest_site(&sink);
    subscriber(&site, "a@example.org", &["FIM"], &["woechentlich"]);
    let out = site.herold(&["digest", "send", "woechentlich", "--dry-run"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("dry run"));
    let out = site.herold(&[
        "digest",
        "preview",
        "woechentlich",
        "--to",
        "a@example.org",
        "--out",
        "vorschau.eml",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    sink.assert_none();
    let eml = Received {
        from: String::new(),
        to: vec![],
        data: std::fs::read(site.path("vorschau.eml")).unwrap(),
    };
    assert_eq!(titles_in(&eml), ["FIM-Neuigkeit"]);
    let list = String::from_utf8(site.herold(&["digest", "list"]).stdout).unwrap();
    assert!(
        list.contains("schedule: 0 8 * * 1 (At 08:00, on Monday.)"),
        "{list}"
    );
    assert!(list.contains("now: 2 item(s) for 1 recipient(s)"), "{list}");
    // After the dry run and preview a real send still has everything.
    send(&site, "woechentlich");
    assert_eq!(titles_in(&drain(&sink, 1)[0]), ["FIM-Neuigkeit"]);
}

#[test]
fn the_mail_has_list_headers_both_parts_and_working_links() {
    let sink = SmtpSink::start();
    let site = digest_site(&sink);
    let config = std::fs::read_to_string(site.path("config.toml")).unwrap();
    std::fs::write(
        site.path("config.toml"),
        config.replace(
            "transport = \"smtp\"",
            "transport = \"smtp\"\nunsubscribe_mailto = \"abmelden@fitko.de\"",
        ),
    )
    .unwrap();
    subscriber(&site, "leser@example.org", &[], &["woechentlich"]);
    send(&site, "woechentlich");
    let mail = drain(&sink, 1).remove(0);
    use mailparse::MailHeaderMap;
    let parsed = mail.parsed();
    let h = |n: &str| parsed.headers.get_first_value(n).unwrap_or_default();
    assert!(
        mail.subject().starts_with("Wochenüberblick – "),
        "{}",
        mail.subject()
    );
    assert!(
        h("List-Unsubscribe").starts_with("<http://127.0.0.1:"),
        "{}",
        h("List-Unsubscribe")
    );
    assert!(h("List-Unsubscribe").ends_with(", <mailto:abmelden@fitko.de?subject=unsubscribe>"));
    assert_eq!(h("List-Unsubscribe-Post"), "List-Unsubscribe=One-Click");
    assert_eq!(h("List-Id"), "Wochenüberblick <woechentlich.www.fitko.de>");
    assert!(
        h("Message-ID").starts_with("<digest.1.") && h("Message-ID").ends_with("@www.fitko.de>"),
        "{}",
        h("Message-ID")
    );
    assert_eq!(parsed.ctype.mimetype, "multipart/alternative");
    let text = mail.part("text/plain");
    assert!(text.lines().all(|l| l.chars().count() <= 78), "{text}");
    assert!(!text.contains('<'), "no HTML left in the text part");
    let html = mail.part("text/html");
    assert!(
        html.contains("<html lang=\"de\">") && html.contains("<h2"),
        "{html}"
    );
    assert!(
        !html.contains("<img") || html.contains("alt="),
        "images have alt texts"
    );
    assert!(
        html.contains("https://www.fitko.de/aktuelles/fim"),
        "links go straight to the items"
    );

    // One click in the mail client ends the subscription.
    let d = site.start();
    let url = h("List-Unsubscribe");
    let path = d.path_of(url.trim_start_matches('<').split('>').next().unwrap());
    let r = http_request(
        &d.addr,
        "POST",
        &path,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"List-Unsubscribe=One-Click",
    );
    assert_eq!(r.status, 200);
    assert!(subscribers(&site).is_empty());
}

#[test]
fn temporary_failures_stay_pending_and_the_next_send_finishes_them() {
    // The first DATA gets 451, the second 550, the rest 250.
    let sink = SmtpSink::with_answers(|n| match n {
        0 => "451 4.3.0 try again later".into(),
        1 => "550 5.1.1 no such user".into(),
        _ => "250 OK".into(),
    });
    let site = digest_site(&sink);
    for n in 0..3 {
        subscriber(&site, &format!("s{n}@example.org"), &[], &["woechentlich"]);
    }
    let (code, out) = send(&site, "woechentlich");
    assert_eq!(code, Some(1), "temporary failures left: exit 1: {out}");
    assert!(out.contains("1 sent, 1 failed, 1 deferred"), "{out}");
    drain(&sink, 1);
    let (code, out) = send(&site, "woechentlich");
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("an unfinished run was finished: 1 sent"),
        "{out}"
    );
    assert_eq!(drain(&sink, 1)[0].to, ["s0@example.org"]);
    let (_, out) = send(&site, "woechentlich");
    assert!(out.contains("no new run"), "{out}");
    sink.assert_none();
}
