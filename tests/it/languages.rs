//! Languages per subscriber (SPEC 13): the form, mails, pages and digests in each
//! subscriber's language, from one run; a site with one language offers no choice.

use crate::helpers::*;

/// A site with German and English, mail to `sink`, and two fresh items.
fn bilingual_site(sink: &SmtpSink) -> Site {
    let site = site_with_mail(sink);
    let config = std::fs::read_to_string(site.path("config.toml")).unwrap();
    std::fs::write(
        site.path("config.toml"),
        config.replace("[site]\n", "[site]\nlanguages = [\"de\", \"en\"]\n"),
    )
    .unwrap();
    std::fs::remove_dir_all(site.path("content")).unwrap();
    site.item(
        "ozg.md",
        "OZG-Neuigkeit",
        &days_ago(2),
        "tags = [\"OZG\"]",
        "Zur OZG.",
    );
    site
}

fn json_post(d: &Running, body: &str) -> HttpResponse {
    http_request(
        &d.addr,
        "POST",
        "/subscribe",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
}

/// The first URL in the mail's text that contains `part`.
fn url_with(mail: &Received, part: &str) -> String {
    let text = mail.part("text/plain");
    text.split_whitespace()
        .find(|w| w.starts_with("http") && w.contains(part))
        .unwrap_or_else(|| panic!("no {part} link in {text}"))
        .to_string()
}

fn header(mail: &Received, name: &str) -> String {
    use mailparse::MailHeaderMap;
    mail.parsed()
        .headers
        .get_first_value(name)
        .unwrap_or_default()
}

fn send_digest(site: &Site) {
    let out = site.herold(&["digest", "send", "woechentlich"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn english_and_german_subscribers_get_their_language_from_one_run() {
    let sink = SmtpSink::start();
    let site = bilingual_site(&sink);
    let d = site.start();

    // The form: German by default with a choice of language, English with ?lang=en.
    let de = d.get("/", &[]).text();
    assert!(de.contains("<html lang=\"de\">"), "{de}");
    assert!(de.contains("name=\"language\" value=\"en\""), "{de}");
    assert!(
        de.contains("name=\"language\" value=\"de\" checked"),
        "{de}"
    );
    assert!(
        de.contains("hreflang=\"en\"") && de.contains("?lang=en\""),
        "{de}"
    );
    let en = d.get("/?lang=en", &[]).text();
    assert!(en.contains("<html lang=\"en\">"), "{en}");
    assert!(en.contains("<h1>Subscribe to the newsletter</h1>"), "{en}");
    assert!(
        en.contains("name=\"language\" value=\"en\" checked"),
        "{en}"
    );
    assert!(
        en.contains("By subscribing you agree"),
        "the consent text in English"
    );
    assert!(
        d.get("/?lang=xx", &[])
            .text()
            .contains("<html lang=\"de\">")
    );

    // Anna subscribes in English by the form, Bernd in German by JSON.
    let r = d.post_form(
        "/subscribe",
        &[("email", "anna@example.org"), ("language", "en")],
    );
    assert_eq!(r.status, 200);
    assert!(
        r.text().contains("<h1>Please check your inbox</h1>"),
        "{}",
        r.text()
    );
    let mail = sink.next();
    assert_eq!(
        mail.subject(),
        "Please confirm your subscription – FITKO – Aktuelles"
    );
    assert!(mail.part("text/html").contains("<html lang=\"en\">"));
    assert!(mail.part("text/plain").starts_with("Hello,"));
    // The Date header carries the site's offset (Europe/Berlin), not +0000.
    let offset = chrono::Utc::now()
        .with_timezone(&chrono_tz::Europe::Berlin)
        .format("%z")
        .to_string();
    let date = header(&mail, "Date");
    assert!(date.ends_with(&offset), "{date}");
    let confirm = d.path_of(&mail.link("http://"));
    let page = d.get(&confirm, &[]).text();
    assert!(page.contains("<html lang=\"en\">"), "{page}");
    assert!(page.contains("Confirm subscription</button>"), "{page}");
    let r = d.post_form(&confirm, &[]);
    assert!(
        r.text().contains("<h1>Subscription confirmed</h1>"),
        "{}",
        r.text()
    );

    let r = json_post(&d, r#"{"email": "bernd@example.org", "language": "de"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let mail = sink.next();
    assert_eq!(
        mail.subject(),
        "Bitte bestätigen Sie Ihre Anmeldung – FITKO – Aktuelles"
    );
    let r = d.post_form(&d.path_of(&mail.link("http://")), &[]);
    assert!(r.text().contains("<h1>Anmeldung bestätigt</h1>"));

    let s = subscribers(&site);
    let lang = |email: &str| {
        s.iter()
            .find(|s| s.email.as_str() == email)
            .unwrap()
            .language
            .clone()
    };
    assert_eq!(lang("anna@example.org").as_deref(), Some("en"));
    assert_eq!(lang("bernd@example.org").as_deref(), Some("de"));

    // One run: each in their language, dates written the language's way.
    send_digest(&site);
    let mut mails = [sink.next(), sink.next()];
    mails.sort_by(|a, b| a.to.cmp(&b.to));
    let (anna, bernd) = (&mails[0], &mails[1]);
    let (a_html, b_html) = (anna.part("text/html"), bernd.part("text/html"));
    assert!(
        a_html.contains("<html lang=\"en\">") && a_html.contains("Read more"),
        "{a_html}"
    );
    assert!(anna.part("text/plain").contains("One new item since"));
    assert!(
        b_html.contains("<html lang=\"de\">") && b_html.contains("Weiterlesen"),
        "{b_html}"
    );
    assert!(bernd.part("text/plain").contains("Eine neue Meldung seit"));
    // The date of the subject is the site's (Berlin), which may be a day after UTC's.
    let month_en = chrono::Utc::now()
        .with_timezone(&chrono_tz::Europe::Berlin)
        .format("%B")
        .to_string();
    assert!(anna.subject().contains(&month_en), "{}", anna.subject());
    assert!(!bernd.subject().contains(" 20") || bernd.subject().contains(". "));

    // The preferences page in English; switching to German changes the next digest.
    let prefs = d.path_of(&url_with(anna, "/preferences/"));
    let page = d.get(&prefs, &[]).text();
    assert!(page.contains("<h1>Your settings</h1>"), "{page}");
    assert!(
        page.contains("name=\"language\" value=\"en\" checked"),
        "{page}"
    );
    let r = d.post_form(&prefs, &[("language", "de"), ("digests", "woechentlich")]);
    assert!(
        r.text().contains("<h1>Einstellungen gespeichert</h1>"),
        "{}",
        r.text()
    );
    let unsubscribe = d.path_of(&url_with(anna, "/unsubscribe/"));
    let page = d.get(&unsubscribe, &[]).text();
    assert!(page.contains("<html lang=\"de\">"), "{page}");

    site.item(
        "fim.md",
        "FIM-Neuigkeit",
        &days_ago(0),
        "tags = [\"FIM\"]",
        "Zu FIM.",
    );
    send_digest(&site);
    let mut mails = [sink.next(), sink.next()];
    mails.sort_by(|a, b| a.to.cmp(&b.to));
    assert_eq!(mails[0].to, ["anna@example.org"]);
    assert!(mails[0].part("text/html").contains("Weiterlesen"));

    // The consent log records the language of the text shown.
    let out = site.herold(&["subscribers", "export", "bernd@example.org"]);
    let export: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(export["language"], "de");
    assert_eq!(export["consent_log"][0]["language"], "de");
}

#[test]
fn malformed_and_foreign_requests_are_refused() {
    let sink = SmtpSink::start();
    let site = bilingual_site(&sink);
    let d = site.start();
    for body in [r#"["a@example.org"]"#, r#""a@example.org""#, "42", "null"] {
        let r = json_post(&d, body);
        assert_eq!(r.status, 400, "{body}: {}", r.text());
    }
    let r = json_post(&d, r#"{"email": "a@example.org", "language": "fr"}"#);
    assert_eq!(r.status, 422, "{}", r.text());
    sink.assert_none();
}

#[test]
fn a_site_with_one_language_offers_no_choice() {
    let sink = SmtpSink::start();
    let site = site_with_mail(&sink);
    let d = site.start();
    let html = d.get("/", &[]).text();
    assert!(html.contains("<html lang=\"de\">"));
    assert!(!html.contains("name=\"language\""), "{html}");
    assert!(!html.contains("?lang="), "{html}");
    assert!(
        d.get("/?lang=en", &[])
            .text()
            .contains("<html lang=\"de\">")
    );
}

#[test]
fn the_command_line_and_csv_set_the_language() {
    let sink = SmtpSink::start();
    let site = bilingual_site(&sink);
    let add = |lang: &str| {
        site.herold(&[
            "subscribers",
            "add",
            "c@example.org",
            "--consented-at",
            "2026-01-01",
            "--source",
            "Messe",
            "--language",
            lang,
        ])
    };
    let bad = add("fr");
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("not one of site.languages (de, en)"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    assert!(add("EN").status.success());
    // A preview in either language, of the same items.
    for (lang, words) in [("en", "Read more"), ("de", "Weiterlesen")] {
        let out = site.herold(&["digest", "preview", "woechentlich", "--language", lang]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mail = mailparse::parse_mail(&out.stdout).unwrap();
        let html = mail.subparts[1].get_body().unwrap();
        assert!(html.contains(&format!("<html lang=\"{lang}\">")), "{html}");
        assert!(html.contains(words), "{html}");
    }
    let out = site.herold(&["digest", "preview", "woechentlich", "--language", "fr"]);
    assert!(!out.status.success());
    std::fs::write(
        site.path("liste.csv"),
        "\u{feff}email,topics,status,digests,language\r\n\"d@example.org\",OZG,active,,de\r\ne@example.org,,active,,fr\r\nf@example.org,\"OZG;FIM\",pending,,en\r\n",
    )
    .unwrap();
    let out = site.herold(&[
        "subscribers",
        "import",
        site.path("liste.csv").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("liste.csv:3: language `fr`"), "{err}");
    let list = site.herold(&["subscribers", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let langs: Vec<(String, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["email"].as_str().unwrap().to_string(),
                s["language"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect();
    assert_eq!(
        langs,
        [
            ("c@example.org".to_string(), "en".to_string()),
            ("d@example.org".to_string(), "de".to_string()),
            ("f@example.org".to_string(), "en".to_string()),
        ]
    );
}
