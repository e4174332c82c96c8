//! A real browser: headless Chromium, driven over WebDriver by chromedriver, subscribes
//! through the form at phone width and confirms through the link in the mail. Screenshots
//! go to the test output directory (`target/tmp/`).

use base64::Engine;
use serde_json::{Value, json};

use crate::helpers::*;

struct Browser {
    driver: std::process::Child,
    addr: String,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start(width: u32) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromedriver is installed (Debian chromium-driver, see .ci/run)");
        let addr = format!("127.0.0.1:{port}");
        eventually("chromedriver", || {
            std::net::TcpStream::connect(&addr).ok()?;
            (http_request(&addr, "GET", "/status", &[], b"").status == 200).then_some(())
        });
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", format!("--window-size={width},900"),
                     format!("--user-data-dir={}", profile.path().display()), "--lang=de-DE"]
        }}}});
        let mut b = Browser {
            driver,
            addr,
            session: String::new(),
            _profile: profile,
        };
        let v = b.call("POST", "/session", caps);
        b.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        b
    }

    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let body = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        let r = http_request(
            &self.addr,
            method,
            path,
            &[("Content-Type", "application/json")],
            &body,
        );
        let v: Value = serde_json::from_slice(&r.body)
            .unwrap_or_else(|_| panic!("{method} {path}: {}", r.text()));
        assert_eq!(r.status, 200, "{method} {path}: {v}");
        v["value"].clone()
    }

    fn session(&self, method: &str, path: &str, body: Value) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    fn go(&self, url: &str) {
        self.session("POST", "/url", json!({ "url": url }));
    }

    fn find(&self, css: &str) -> String {
        let v = self.session(
            "POST",
            "/element",
            json!({"using": "css selector", "value": css}),
        );
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(|v| v.as_str())
            .unwrap()
            .to_string()
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.session(
            "POST",
            &format!("/element/{e}/value"),
            json!({ "text": text }),
        );
    }

    fn click(&self, css: &str) {
        let e = self.find(css);
        self.session("POST", &format!("/element/{e}/click"), json!({}));
    }

    fn source(&self) -> String {
        self.session("GET", "/source", Value::Null)
            .as_str()
            .unwrap()
            .to_string()
    }

    fn run(&self, script: &str) -> Value {
        self.session(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
    }

    fn screenshot(&self, name: &str) -> std::path::PathBuf {
        let png = self.session("GET", "/screenshot", Value::Null);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "a PNG");
        let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = http_request(
                &self.addr,
                "DELETE",
                &format!("/session/{}", self.session),
                &[],
                b"",
            );
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[test]
fn a_browser_subscribes_through_the_form_and_confirms_from_the_mail() {
    let sink = SmtpSink::start();
    let site = site_with_mail(&sink);
    let d = site.start();
    let browser = Browser::start(375);
    browser.go(&format!("http://{}/", d.addr));
    assert_eq!(browser.run("return document.documentElement.lang"), "de");
    // Every form control has a label, and the page fits a phone screen.
    let unlabelled = browser.run(
        "return [...document.querySelectorAll('input')].filter(i => !document.querySelector('label[for=\"' + i.id + '\"]')).length",
    );
    assert_eq!(unlabelled, 0);
    assert_eq!(
        browser.run("return document.documentElement.scrollWidth <= window.innerWidth"),
        true
    );
    browser.screenshot("subscribe-form-375.png");

    browser.type_into("#email", "browser@example.org");
    browser.click("input[value=\"OZG\"]");
    browser.click("button[type=submit]");
    eventually("the check-your-inbox page", || {
        browser
            .source()
            .contains("Bitte prüfen Sie Ihr Postfach")
            .then_some(())
    });
    browser.screenshot("subscribe-check-inbox-375.png");

    let mail = sink.next();
    assert_eq!(mail.to, ["browser@example.org"]);
    browser.go(&mail.link("http://"));
    assert!(browser.source().contains("Anmeldung bestätigen"));
    assert_eq!(
        subscribers(&site)[0].status,
        herold::store::Status::Pending,
        "opening the link changes nothing"
    );
    browser.click("button[type=submit]");
    eventually("the confirmed page", || {
        browser
            .source()
            .contains("Anmeldung bestätigt")
            .then_some(())
    });
    let shot = browser.screenshot("subscribe-confirmed-375.png");
    assert!(std::fs::metadata(shot).unwrap().len() > 1000);
    let s = &subscribers(&site)[0];
    assert_eq!(
        (s.status, s.topics.clone()),
        (herold::store::Status::Active, vec!["OZG".to_string()])
    );
}

/// axe-core's browser build: `HEROLD_AXE_JS`, or where `.ci/run` installs it
/// (`npm install --prefix target/axe axe-core`).
fn axe_source() -> String {
    let path = std::env::var_os("HEROLD_AXE_JS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target/axe/node_modules/axe-core/axe.min.js")
        });
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "axe-core is needed at {} ({e}); run: npm install --prefix target/axe axe-core@4.14.1",
            path.display()
        )
    })
}

impl Browser {
    /// Runs axe-core (WCAG 2.0 and 2.1, A and AA) on the current page; gives the violations.
    fn axe(&self, source: &str) -> Vec<String> {
        self.session(
            "POST",
            "/execute/sync",
            json!({"script": format!("{source}\nreturn true;"), "args": []}),
        );
        let v = self.session(
            "POST",
            "/execute/async",
            json!({"script": "const done = arguments[arguments.length - 1];
                axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})
                  .then(r => done(r.violations.map(v => v.id + ': ' + v.nodes.map(n => n.target.join(' ')).join(', '))))
                  .catch(e => done(['axe failed: ' + e]));", "args": []}),
        );
        v.as_array()
            .unwrap_or_else(|| panic!("axe gave {v}"))
            .iter()
            .map(|x| x.as_str().unwrap_or_default().to_string())
            .collect()
    }
}

#[test]
fn pages_have_no_accessibility_violations_at_phone_and_desktop_width() {
    // Two items a page, two pages newest first, then the month pages.
    let site = crate::pages::own_site_with(
        &crate::pages::OWN_PAGES.replace("per_page = 3\n", "per_page = 2\nmax_pages = 2\n"),
    );
    let config = std::fs::read_to_string(site.path("config.toml")).unwrap();
    std::fs::write(
        site.path("config.toml"),
        format!("{config}\n[[digest]]\nname = \"woechentlich\"\ntitle = \"Wochenüberblick\"\nschedule = \"0 8 * * 1\"\nmax_age = \"3650d\"\n"),
    )
    .unwrap();
    // A long word and a wide table must not make a phone scroll sideways.
    site.item(
        "2026-04-20-lang.md",
        "Registermodernisierungsgesetzesänderungsverordnung",
        "2026-04-20T09:00:00+02:00",
        "tags = [\"OZG\"]",
        "Donaudampfschifffahrtsgesellschaftskapitänsmützenabzeichenverordnungsentwurf.\n\n| Land | Stand | Bemerkung |\n|---|---|---|\n| Baden-Württemberg | umgesetzt | Registermodernisierungsgesetzesänderung |\n\n```\nein sehr langer Codeblock ohne Umbruch, der weit über die Breite eines Telefons hinausgeht, und noch weiter\n```\n",
    );
    subscriber(&site, "leser@example.org", &[], &["woechentlich"]);
    site.build();
    let (code, text) = send(&site, "woechentlich");
    assert_eq!(code, Some(0), "{text}");
    let d = site.start();
    d.wait_log("pages updated");
    let run = std::fs::read_dir(site.path("public/digests/woechentlich"))
        .unwrap()
        .flatten()
        .find(|e| e.path().is_dir())
        .expect("the archived run")
        .file_name()
        .to_string_lossy()
        .into_owned();
    let axe = axe_source();
    let base = format!("http://{}/aktuelles", d.addr);
    let pages = [
        ("index", format!("{base}/")),
        ("index-2", format!("{base}/page/2/")),
        ("month", format!("{base}/2026/01/")),
        ("item", format!("{base}/2026/01/20/ozg/")),
        ("long-item", format!("{base}/2026/04/20/lang/")),
        ("tag", format!("{base}/tags/ozg/")),
        ("category", format!("{base}/categories/meldung/")),
        ("archive", format!("{base}/digests/woechentlich/")),
        ("run", format!("{base}/digests/woechentlich/{run}/")),
    ];
    for width in [375, 1280] {
        let browser = Browser::start(width);
        // The check itself finds faults: a page without a language and an image without text.
        browser.go("data:text/html,<title>x</title><img src=x.png>");
        let faults = browser.axe(&axe);
        assert!(
            faults.iter().any(|f| f.starts_with("html-has-lang"))
                && faults.iter().any(|f| f.starts_with("image-alt")),
            "{faults:?}"
        );
        for (name, url) in &pages {
            browser.go(url);
            assert_eq!(browser.run("return document.documentElement.lang"), "de");
            assert_eq!(
                browser.run("return document.querySelectorAll('h1').length"),
                1
            );
            let violations = browser.axe(&axe);
            assert!(
                violations.is_empty(),
                "{name} at {width} px: {violations:#?}"
            );
            assert_eq!(
                browser.run("return document.documentElement.scrollWidth <= window.innerWidth"),
                true,
                "{name} scrolls sideways at {width} px"
            );
            // Nothing is loaded from anywhere: no fonts, scripts or styles from another host.
            assert_eq!(
                browser.run("return performance.getEntriesByType('resource').filter(e => !e.name.startsWith(location.origin)).length"),
                0,
                "{name} loads from another host"
            );
            browser.screenshot(&format!("page-{name}-{width}.png"));
        }
    }
}
