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
