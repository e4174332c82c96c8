//! Digests: who gets which items, never twice, never skipped; the mail itself; DKIM.

use crate::helpers::*;

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
fn temporary_failures_are_retried_then_left_for_the_next_send() {
    use std::sync::atomic::{AtomicBool, Ordering};
    // s0 gets 451 until `open`; s1 gets 550; s2 gets one 451, then 250.
    let open = std::sync::Arc::new(AtomicBool::new(false));
    let s2_failed = std::sync::Arc::new(AtomicBool::new(false));
    let (o, f) = (open.clone(), s2_failed.clone());
    let sink = SmtpSink::with_answers(move |_, to| match to.first().map(String::as_str) {
        Some("s0@example.org") if !o.load(Ordering::SeqCst) => "451 4.3.0 try again later".into(),
        Some("s1@example.org") => "550 5.1.1 no such user".into(),
        Some("s2@example.org") if !f.swap(true, Ordering::SeqCst) => "451 4.7.1 greylisted".into(),
        _ => "250 OK".into(),
    });
    let site = digest_site(&sink);
    for n in 0..3 {
        subscriber(&site, &format!("s{n}@example.org"), &[], &["woechentlich"]);
    }
    let (code, out) = send(&site, "woechentlich");
    assert_eq!(code, Some(1), "temporary failures left: exit 1: {out}");
    assert!(out.contains("1 sent, 1 failed, 1 deferred"), "{out}");
    assert!(out.contains("retried=4"), "s0 three times, s2 once: {out}");
    assert_eq!(drain(&sink, 1)[0].to, ["s2@example.org"]);
    open.store(true, Ordering::SeqCst);
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

/// Makes a key with openssl; gives (private key PEM path, DNS record `p=` value).
fn dkim_key(site: &Site, kind: &str) -> (std::path::PathBuf, String) {
    let key = site.path(&format!("dkim-{kind}.pem"));
    let keygen: &[&str] = if kind == "rsa" {
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
    let ok = std::process::Command::new("openssl")
        .args(keygen)
        .arg("-out")
        .arg(&key)
        .status()
        .expect("openssl is installed");
    assert!(ok.success());
    let der = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(&key)
        .output()
        .unwrap()
        .stdout;
    use base64::Engine;
    // RSA: the SubjectPublicKeyInfo; Ed25519 (RFC 8463): the raw 32-byte key.
    let public = if kind == "rsa" {
        der
    } else {
        der[der.len() - 32..].to_vec()
    };
    (
        key,
        base64::engine::general_purpose::STANDARD.encode(public),
    )
}

/// Verifies a message with Python's dkimpy, the public key given through `dnsfunc`.
fn dkimpy_verifies(message: &[u8], record: &str) -> Result<(), String> {
    let script = r#"
import sys, dkim
record = sys.argv[1].encode()
msg = sys.stdin.buffer.read()
ok = dkim.verify(msg, dnsfunc=lambda name, timeout=5: record)
sys.exit(0 if ok else 1)
"#;
    use std::io::Write;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script, record])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with dkimpy (see .ci/run)");
    child.stdin.take().unwrap().write_all(message).unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn dkim_signatures_verify_with_an_independent_implementation() {
    for kind in ["rsa", "ed25519"] {
        let sink = SmtpSink::start();
        let site = digest_site(&sink);
        let (key, public) = dkim_key(&site, kind);
        let config = std::fs::read_to_string(site.path("config.toml")).unwrap();
        let dkim = format!(
            "[mail.dkim]\ndomain = \"fitko.de\"\nselector = \"herold\"\nprivate_key_file = \"{}\"\n\n[[digest]]",
            key.display()
        );
        std::fs::write(
            site.path("config.toml"),
            config.replacen("[[digest]]", &dkim, 1),
        )
        .unwrap();
        subscriber(&site, "leser@example.org", &[], &["woechentlich"]);
        let (code, out) = send(&site, "woechentlich");
        assert_eq!(code, Some(0), "{kind}: {out}");
        let mail = drain(&sink, 1).remove(0);
        let raw = String::from_utf8_lossy(&mail.data);
        let sig = raw
            .lines()
            .find(|l| l.starts_with("DKIM-Signature:"))
            .unwrap_or_else(|| panic!("{kind}: no signature"));
        assert!(
            sig.contains(&format!(
                "a={}-sha256",
                if kind == "rsa" { "rsa" } else { "ed25519" }
            )),
            "{sig}"
        );
        let k = if kind == "rsa" { "rsa" } else { "ed25519" };
        let record = format!("v=DKIM1; k={k}; p={public}");
        dkimpy_verifies(&mail.data, &record)
            .unwrap_or_else(|e| panic!("{kind}: dkimpy says no: {e}\n{raw}"));
        // The signature covers the one-click headers (RFC 8058): altering one breaks it.
        let tampered = raw.replace(
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
            "List-Unsubscribe-Post: List-Unsubscribe=Two-Clicks",
        );
        assert!(
            dkimpy_verifies(tampered.as_bytes(), &record).is_err(),
            "{kind}"
        );
    }
}

mod rendering {
    use herold::config::Config;
    use herold::digest::mail::{ItemView, RecipientLinks, render};
    use herold::templates::Templates;

    fn config(lang: &str) -> Config {
        Config::parse(
            &format!(
                "[site]\ntitle = \"FITKO – Aktuelles\"\nbase_url = \"https://www.fitko.de\"\nlink = \"https://www.fitko.de/aktuelles\"\nlanguage = \"{lang}\"\nprivacy_url = \"https://www.fitko.de/datenschutz\"\nimprint_url = \"https://www.fitko.de/impressum\"\n[[digest]]\nname = \"woechentlich\"\ntitle = \"Wochenüberblick\"\nschedule = \"0 8 * * 1\"\n"
            ),
            "config.toml",
            &[],
            std::path::Path::new("/nonexistent"),
        )
        .unwrap()
    }

    fn item(n: usize, summary: &str) -> ItemView {
        let title = format!("Meldung {n}: Registermodernisierung & OZG – „Once-Only“ kommt voran");
        ItemView {
            title_wrapped: herold::templates::wrap(&title, 72),
            title,
            link: format!("https://www.fitko.de/aktuelles/meldung-{n}"),
            date: "20. November 2026".into(),
            category: Some("Pressemitteilung".into()),
            summary_wrapped: herold::templates::wrap(summary, 72),
            summary: summary.into(),
            image: (n == 1).then(|| "https://www.fitko.de/bilder/ozg.png".into()),
        }
    }

    fn rendered(lang: &str, items: &[ItemView]) -> herold::digest::mail::Rendered {
        let c = config(lang);
        let t = Templates::load(std::path::Path::new("/nonexistent"), &c.site, "1").unwrap();
        let links = RecipientLinks {
            unsubscribe_url: "https://www.fitko.de/unsubscribe/TOKEN".into(),
            preferences_url: "https://www.fitko.de/preferences/TOKEN".into(),
        };
        let at = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .unwrap()
                .with_timezone(&chrono::Utc)
        };
        render(
            &c,
            t.default_language(),
            &c.digest[0],
            items,
            at("2026-11-16T07:00:00Z"),
            &links,
            Some("https://www.fitko.de/aktuelles/digests/woechentlich/7/"),
            at("2026-11-23T07:00:00Z"),
        )
        .unwrap()
    }

    #[test]
    fn snapshots_in_german_and_english() {
        let items = [
            item(1, "Bund und Länder haben den ersten Meilenstein erreicht."),
            item(2, "Kurz."),
        ];
        for lang in ["de", "en"] {
            let r = rendered(lang, &items);
            insta::assert_snapshot!(
                format!("digest_text_{lang}"),
                format!("Subject: {}\n\n{}", r.subject, r.text)
            );
            insta::assert_snapshot!(format!("digest_html_{lang}"), r.html);
        }
    }

    #[test]
    fn three_hundred_long_items_stay_under_100_kb_with_a_link_to_the_rest() {
        let long =
            "Die Föderale IT-Kooperation berichtet ausführlich über den Stand der Umsetzung. "
                .repeat(8);
        let items: Vec<ItemView> = (0..300).map(|n| item(n, &long)).collect();
        let r = rendered("de", &items);
        assert!(
            r.html.len() <= herold::digest::mail::MAX_HTML_BYTES,
            "{} bytes",
            r.html.len()
        );
        assert!(r.omitted > 0 && r.shown + r.omitted == 300);
        assert!(r.shown > 50, "as many items as fit: {}", r.shown);
        assert!(
            r.html
                .contains(&format!("{} weitere Meldungen finden Sie unter", r.omitted))
        );
        assert!(
            r.html.contains("https://www.fitko.de/unsubscribe/TOKEN"),
            "the footer survives the cut"
        );
        assert!(
            r.text.contains("https://www.fitko.de/aktuelles\n")
                || r.text.contains("https://www.fitko.de/aktuelles")
        );
    }
}

#[test]
fn a_server_that_hangs_up_mid_data_gets_the_mail_again_once() {
    // The first DATA: the server reads the message and hangs up without answering.
    let sink = SmtpSink::with_answers(|n, _| {
        if n == 0 {
            "HANGUP".into()
        } else {
            "250 OK".into()
        }
    });
    let site = digest_site(&sink);
    subscriber(&site, "a@example.org", &[], &["woechentlich"]);
    subscriber(&site, "b@example.org", &[], &["woechentlich"]);
    let (code, out) = send(&site, "woechentlich");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("2 sent, 0 failed, 0 deferred"), "{out}");
    let mails = drain(&sink, 2);
    assert_eq!(
        (mails[0].to.clone(), mails[1].to.clone()),
        (
            vec!["a@example.org".to_string()],
            vec!["b@example.org".to_string()]
        )
    );
}

#[test]
fn repeated_permanent_failures_suspend_the_address() {
    // A policy refusal (5.7.x) is no proof that the address is gone: three in a row are.
    let sink = SmtpSink::with_answers(|_, to| {
        if to.first().is_some_and(|t| t == "weg@example.org") {
            "554 5.7.1 message refused by policy".into()
        } else {
            "250 OK".into()
        }
    });
    let site = digest_site(&sink);
    subscriber(&site, "weg@example.org", &[], &["woechentlich"]);
    subscriber(&site, "da@example.org", &[], &["woechentlich"]);
    for n in 0..3 {
        site.item(
            &format!("neu{n}.md"),
            &format!("Neu {n}"),
            &days_ago(0),
            "",
            "x",
        );
        let (code, out) = send(&site, "woechentlich");
        assert_eq!(code, Some(0), "{out}");
        assert!(out.contains("1 sent, 1 failed"), "run {n}: {out}");
        assert_eq!(drain(&sink, 1)[0].to, ["da@example.org"]);
    }
    let weg = subscribers(&site)
        .into_iter()
        .find(|s| s.email.as_str() == "weg@example.org")
        .unwrap();
    assert_eq!(
        weg.suspended.unwrap().reason,
        "3 permanent SMTP failures in a row"
    );
    // The fourth run no longer tries the address.
    site.item("neu3.md", "Neu 3", &days_ago(0), "", "x");
    let (_, out) = send(&site, "woechentlich");
    assert!(out.contains("1 sent, 0 failed"), "{out}");
    assert_eq!(drain(&sink, 1)[0].to, ["da@example.org"]);
}

#[test]
fn a_relay_refusing_an_unknown_user_is_a_hard_bounce() {
    let sink = SmtpSink::with_answers(|_, to| {
        if to.first().is_some_and(|t| t == "weg@example.org") {
            "550 5.1.1 <weg@example.org>: Recipient address rejected: User unknown".into()
        } else {
            "250 OK".into()
        }
    });
    let site = digest_site(&sink);
    subscriber(&site, "weg@example.org", &[], &["woechentlich"]);
    subscriber(&site, "da@example.org", &[], &["woechentlich"]);
    let (code, out) = send(&site, "woechentlich");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("1 sent, 1 failed"), "{out}");
    assert!(
        !out.contains("weg@example.org"),
        "no address in the log: {out}"
    );
    drain(&sink, 1);
    let weg = subscribers(&site)
        .into_iter()
        .find(|s| s.email.as_str() == "weg@example.org")
        .unwrap();
    assert_eq!(weg.suspended.unwrap().reason, "hard bounce 5.1.1");
    site.item("neu.md", "Neu", &days_ago(0), "", "x");
    let (_, out) = send(&site, "woechentlich");
    assert!(out.contains("1 sent, 0 failed"), "{out}");
}
