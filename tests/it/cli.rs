//! The command line: exit codes, configuration errors, `new`.

use crate::helpers::*;

#[test]
fn bad_configuration_exits_2_and_names_file_and_line() {
    let site = Site::with_config(&format!("{BASE_CONFIG}limt = 5\n"));
    let out = site.herold(&["build"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("config.toml:11: unknown field `limt`"),
        "{err}"
    );
}

#[test]
fn environment_overrides_the_file() {
    let site = Site::new();
    site.item("a.md", "A", "2026-01-01", "", "x");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_herold"))
        .args(["build"])
        .current_dir(site.dir.path())
        .env("HEROLD_FEEDS_DIR", "public")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(site.path("public/rss.xml").exists());
}

#[test]
fn missing_config_and_bad_usage_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_herold"))
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    assert_eq!(run(&["build"]).status.code(), Some(2));
    assert_eq!(run(&["frobnicate"]).status.code(), Some(2));
    let help = run(&["--help"]);
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("Exit codes"));
}

#[test]
fn new_writes_an_item_with_slug_that_builds_and_never_overwrites() {
    let site = Site::new();
    let out = site.herold(&[
        "new",
        "Neue Förderrunde für Kommunen",
        "--date",
        "2026-04-01T10:00",
        "--tag",
        "Kommunen",
        "--category",
        "Pressemitteilung",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = String::from_utf8(out.stdout).unwrap();
    assert!(
        path.trim()
            .ends_with("content/2026-04-01-neue-foerderrunde-fuer-kommunen.md"),
        "{path}"
    );
    let text = std::fs::read_to_string(path.trim()).unwrap();
    assert!(
        text.contains("slug = \"neue-foerderrunde-fuer-kommunen\""),
        "{text}"
    );
    assert!(text.contains("date = 2026-04-01T10:00:00+02:00"), "{text}");
    site.build();
    let feed = site.feed("atom.xml");
    assert_eq!(titles(&feed), ["Neue Förderrunde für Kommunen"]);
    assert_eq!(
        feed.entries[0].id,
        "tag:www.fitko.de,2026-04-01:neue-foerderrunde-fuer-kommunen"
    );
    let check = site.herold(&["check", "--deny-warnings"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let again = site.herold(&[
        "new",
        "Neue Förderrunde für Kommunen",
        "--date",
        "2026-04-01T10:00",
    ]);
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(std::fs::read_to_string(path.trim()).unwrap(), text);
}

#[test]
fn json_logs_are_one_object_per_line() {
    let site = Site::new();
    site.write("kaputt.md", "no front matter");
    site.item("a.md", "A", "2026-01-01", "", "x");
    let out = site.herold(&["--log-format", "json", "build"]);
    assert!(out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert!(
        lines.iter().any(
            |v| v["file"].as_str().is_some_and(|f| f.ends_with("kaputt.md")) && v["line"] == 1
        )
    );
    assert!(
        lines
            .iter()
            .any(|v| v["message"] == "build finished" && v["items"] == 1)
    );
}

#[test]
fn check_reports_a_broken_template_with_file_and_line() {
    let site = Site::new();
    site.item("a.md", "A", "2026-01-01", "slug = \"a\"", "x");
    std::fs::create_dir_all(site.path("templates/de")).unwrap();
    std::fs::write(
        site.path("templates/de/subscribe.html"),
        "{% extends \"layout.html\" %}\n{% block main %}\n{{ email \n{% endblock %}\n",
    )
    .unwrap();
    let out = site.herold(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("templates/de/subscribe.html:"), "{err}");
}
