//! Subscriptions against the real daemon, a temporary SQLite file and a real SMTP
//! conversation with a test server.

use crate::helpers::*;

const CHECK_INBOX: &str = "<h1>Bitte prüfen Sie Ihr Postfach</h1>";

#[test]
fn double_opt_in_from_form_to_confirmed() {
    let sink = SmtpSink::start();
    let site = site_with_mail(&sink);
    let d = site.start();

    let page = d.get("/", &[]);
    assert_eq!(page.status, 200);
    let html = page.text();
    assert!(html.contains("<html lang=\"de\">"), "{html}");
    assert!(html.contains("<label for=\"email\">Ihre E-Mail-Adresse</label>"));
    assert!(
        html.contains("value=\"FIT-Connect\"") && html.contains("value=\"OZG\""),
        "topics from the content"
    );
    assert!(
        html.contains("Wochenüberblick") && html.contains("Tagesmeldungen"),
        "digests from the config"
    );
    assert!(html.contains("href=\"https://www.fitko.de") || !html.contains("Datenschutz"));
    assert_eq!(
        page.header("content-security-policy")
            .map(|v| v.contains("default-src 'none'")),
        Some(true)
    );

    let r = d.post_form(
        "/subscribe",
        &[
            ("email", " Anna.Beispiel@Example.org "),
            ("topics", "OZG"),
            ("topics", "Erfunden"),
            ("digests", "taeglich"),
        ],
    );
    assert_eq!(r.status, 200);
    assert!(r.text().contains(CHECK_INBOX), "{}", r.text());

    let mail = sink.next();
    assert_eq!(mail.to, ["anna.beispiel@example.org"]);
    assert!(
        mail.from.contains("<aktuelles@fitko.de>"),
        "envelope sender {}",
        mail.from
    );
    assert_eq!(
        mail.subject(),
        "Bitte bestätigen Sie Ihre Anmeldung – FITKO – Aktuelles"
    );
    let parsed = mail.parsed();
    assert_eq!(parsed.ctype.mimetype, "multipart/alternative");
    assert_eq!(parsed.subparts.len(), 2);
    assert!(mail.part("text/html").contains("<html lang=\"de\">"));
    assert!(
        mail.part("text/html").contains("style=\""),
        "CSS is inlined"
    );
    let raw = String::from_utf8_lossy(&mail.data);
    assert!(
        raw.contains("Content-Transfer-Encoding: quoted-printable")
            || raw.contains("Content-Transfer-Encoding: base64"),
        "{raw}"
    );
    assert!(raw.lines().all(|l| l.len() <= 998), "no overlong lines");
    let confirm = d.path_of(&mail.link("http://"));
    assert!(confirm.starts_with("/confirm/"), "{confirm}");

    let s = subscribers(&site);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].status, herold::store::Status::Pending);
    assert_eq!(s[0].topics, ["OZG"], "unknown topics are dropped");
    assert_eq!(s[0].digests, ["taeglich"]);

    // A GET (a mail gateway opening the link) changes nothing.
    let page = d.get(&confirm, &[]);
    assert_eq!(page.status, 200);
    assert!(
        page.text()
            .contains("<button type=\"submit\">Anmeldung bestätigen</button>")
    );
    assert_eq!(subscribers(&site)[0].status, herold::store::Status::Pending);

    let done = http_request(&d.addr, "POST", &confirm, &[], b"");
    assert_eq!(done.status, 200);
    assert!(done.text().contains("<h1>Anmeldung bestätigt</h1>"));
    assert_eq!(subscribers(&site)[0].status, herold::store::Status::Active);
    let again = http_request(&d.addr, "POST", &confirm, &[], b"");
    assert!(again.text().contains("Bereits bestätigt"));
    assert!(
        !d.log().contains("anna"),
        "no addresses in the log: {}",
        d.log()
    );
}

#[test]
fn new_pending_and_active_addresses_get_the_same_answer() {
    let sink = SmtpSink::start();
    let site = site_with_mail(&sink);
    let d = site.start();
    let first = d.post_form("/subscribe", &[("email", "b@example.org")]);
    let mail = sink.next();
    let pending = d.post_form("/subscribe", &[("email", "b@example.org")]);
    let second = sink.next();
    assert_eq!(
        mail.link("http://"),
        second.link("http://"),
        "a repeated request keeps the first link valid"
    );
    http_request(&d.addr, "POST", &d.path_of(&mail.link("http://")), &[], b"");
    let active = d.post_form("/subscribe", &[("email", "b@example.org")]);
    let notice = sink.next();
    assert_eq!(
        notice.subject(),
        "Sie sind bereits angemeldet – FITKO – Aktuelles"
    );
    assert!(notice.part("text/plain").contains("/unsubscribe/"));
    for r in [&pending, &active] {
        assert_eq!((r.status, &r.body), (first.status, &first.body));
    }
    // Per address, mails stop after three a day; the answer stays the same.
    let quiet = d.post_form("/subscribe", &[("email", "b@example.org")]);
    assert_eq!((quiet.status, &quiet.body), (first.status, &first.body));
    sink.assert_none();
}

#[test]
fn json_requests_work_and_wrong_types_are_refused() {
    let sink = SmtpSink::start();
    let site = site_with_mail(&sink);
    let d = site.start();
    let json = [("Content-Type", "application/json")];
    let ok = http_request(&d.addr, "POST", "/subscribe", &json, br#"{"email": "c@example.org", "topics": ["FIM"], "digests": ["woechentlich", "taeglich"]}"#);
    assert_eq!(ok.status, 200, "{}", ok.text());
    sink.next();
    let s = subscribers(&site);
    assert_eq!(
        (s[0].topics.clone(), s[0].digests.clone()),
        (
            vec!["FIM".to_string()],
            vec!["taeglich".to_string(), "woechentlich".to_string()]
        )
    );
    for body in [
        &br#"{"email": 5}"#[..],
        br#"{"email": "d@example.org", "topics": "FIM"}"#,
        br#"{"email": "d@example.org", "admin": true}"#,
        b"{",
        b"[]",
    ] {
        let r = http_request(&d.addr, "POST", "/subscribe", &json, body);
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(body));
    }
    let bad = http_request(
        &d.addr,
        "POST",
        "/subscribe",
        &json,
        br#"{"email": "kein-at-zeichen"}"#,
    );
    assert_eq!(bad.status, 422);
    sink.assert_none();
}

#[test]
fn hostile_requests_get_4xx_and_change_nothing() {
    let sink = SmtpSink::start();
    let site = site_with_mail(&sink);
    let d = site.start();
    let big = vec![b'a'; 2 * 1024 * 1024];
    let r = http_request(
        &d.addr,
        "POST",
        "/subscribe",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &big,
    );
    assert_eq!(r.status, 413);
    for email in [
        "a@example.org\r\nBcc: victim@example.org",
        "a@example.org\nSubject: x",
        "<script>@x.de",
        "",
        &"x".repeat(300),
    ] {
        let r = d.post_form("/subscribe", &[("email", email)]);
        assert_eq!(r.status, 422, "{email:?}");
        assert!(!r.text().contains("<script>@"), "input is escaped");
    }
    let r = http_request(
        &d.addr,
        "POST",
        "/subscribe",
        &[("Content-Type", "text/plain")],
        b"email=a@example.org",
    );
    assert_eq!(r.status, 400);
    let r = http_request(&d.addr, "PUT", "/subscribe", &[], b"");
    assert_eq!(r.status, 405);
    for path in [
        "/confirm/",
        "/confirm/x",
        "/confirm/%00",
        &format!("/confirm/{}", "A".repeat(5000)),
        "/unsubscribe/../../etc/passwd",
        "/preferences/AAAA",
    ] {
        for method in ["GET", "POST"] {
            let r = http_request(&d.addr, method, path, &[], b"");
            assert!(
                (400..500).contains(&r.status),
                "{method} {path}: {}",
                r.status
            );
        }
    }
    assert!(subscribers(&site).is_empty());
    sink.assert_none();
    assert!(
        !d.get("/metrics", &[]).text().contains("status=\"5"),
        "no 5xx"
    );
}

#[test]
fn forged_swapped_expired_and_other_purpose_tokens_are_refused() {
    use herold::token::{Keys, Purpose};
    let sink = SmtpSink::start();
    let site = site_with_mail(&sink);
    let d = site.start();
    d.post_form("/subscribe", &[("email", "e@example.org")]);
    let confirm = d.path_of(&sink.next().link("http://"));
    d.post_form("/subscribe", &[("email", "f@example.org")]);
    let other = d.path_of(&sink.next().link("http://"));
    let token = confirm.trim_start_matches("/confirm/").to_string();

    let secret = std::fs::read_to_string(site.path("data/secret")).unwrap();
    let keys = Keys::new(&[secret.trim().as_bytes().to_vec()]).unwrap();
    let subs = subscribers(&site);
    let e = subs
        .iter()
        .find(|s| s.email.as_str() == "e@example.org")
        .unwrap();
    let f = subs
        .iter()
        .find(|s| s.email.as_str() == "f@example.org")
        .unwrap();
    let expired = keys.sign(Purpose::Confirm, e.id, &e.email, 1);
    let swapped = keys.sign(Purpose::Confirm, f.id, &e.email, 0);
    let wrong_key = Keys::new(&[b"some-other-secret-0123456789".to_vec()])
        .unwrap()
        .sign(Purpose::Confirm, e.id, &e.email, 0);
    let mut flipped = token.clone().into_bytes();
    let last = flipped.len() - 2;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    for (what, path) in [
        ("expired", format!("/confirm/{expired}")),
        ("address swapped", format!("/confirm/{swapped}")),
        ("other secret", format!("/confirm/{wrong_key}")),
        ("flipped byte", format!("/confirm/{flipped}")),
        (
            "confirm token as unsubscribe",
            format!("/unsubscribe/{token}"),
        ),
        (
            "confirm token as preferences",
            format!("/preferences/{token}"),
        ),
    ] {
        for method in ["GET", "POST"] {
            let r = http_request(&d.addr, method, &path, &[], b"");
            assert_eq!(r.status, 404, "{what} {method}");
        }
    }
    assert!(
        subscribers(&site)
            .iter()
            .all(|s| s.status == herold::store::Status::Pending),
        "nothing changed"
    );
    assert_eq!(http_request(&d.addr, "POST", &other, &[], b"").status, 200);
}

#[test]
fn one_click_unsubscribe_and_preferences() {
    let sink = SmtpSink::start();
    let site = site_with_mail(&sink);
    let d = site.start();
    d.post_form("/subscribe", &[("email", "g@example.org")]);
    http_request(
        &d.addr,
        "POST",
        &d.path_of(&sink.next().link("http://")),
        &[],
        b"",
    );
    d.post_form("/subscribe", &[("email", "g@example.org")]);
    let notice = sink.next();
    let prefs = d.path_of(&notice.link("http://127.0.0.1"));
    let text = notice.part("text/plain");
    let unsub = d.path_of(
        text.split_whitespace()
            .find(|w| w.contains("/unsubscribe/"))
            .unwrap(),
    );
    assert!(prefs.starts_with("/preferences/"), "{prefs}");

    let page = d.get(&prefs, &[]);
    assert!(page.text().contains("g@example.org") && page.text().contains("value=\"FIM\""));
    let saved = d.post_form(
        &prefs,
        &[
            ("topics", "FIM"),
            ("digests", "taeglich"),
            ("digests", "woechentlich"),
        ],
    );
    assert!(saved.text().contains("Einstellungen gespeichert"));
    let s = &subscribers(&site)[0];
    assert_eq!(
        (s.topics.clone(), s.digests.len()),
        (vec!["FIM".to_string()], 2)
    );

    assert!(
        d.get(&unsub, &[])
            .text()
            .contains("<button type=\"submit\">Abmelden</button>")
    );
    assert_eq!(subscribers(&site).len(), 1, "GET changes nothing");
    let one_click = http_request(
        &d.addr,
        "POST",
        &unsub,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"List-Unsubscribe=One-Click",
    );
    assert_eq!(one_click.status, 200, "200, no redirect");
    assert!(one_click.text().contains("<h1>Abgemeldet</h1>"));
    assert!(subscribers(&site).is_empty());
    let store = herold::store::Store::open(&site.path("data/herold.sqlite3")).unwrap();
    assert!(
        store
            .is_blocked(&herold::email::Email::parse("g@example.org").unwrap())
            .unwrap()
    );
}

#[test]
fn the_subscribe_route_is_rate_limited_per_client() {
    let sink = SmtpSink::start();
    let site = site_with_mail(&sink);
    let d = site.start();
    let mut statuses = Vec::new();
    for n in 0..12 {
        statuses.push(
            d.post_form("/subscribe", &[("email", &format!("h{n}@example.org"))])
                .status,
        );
    }
    assert_eq!(statuses[..10], [200; 10]);
    assert_eq!(statuses[10..], [429, 429]);
    let limited = d.post_form("/subscribe", &[("email", "z@example.org")]);
    assert_eq!(limited.header("retry-after"), Some("600"));
}
