//! Templates for pages and mails (minijinja), German by default, English when
//! `site.language` is English. Files in `templates/` beside the configuration override the
//! copies built into the binary, so an installed binary works without them. Every template is
//! parsed at load: an error names the file and line.

use std::path::Path;

use anyhow::Context;
use serde::Serialize;

/// The templates herold uses, by language, with their built-in text.
const BUILT_IN: &[(&str, &str)] = &[
    (
        "de/layout.html",
        include_str!("../templates/de/layout.html"),
    ),
    (
        "de/choices.html",
        include_str!("../templates/de/choices.html"),
    ),
    (
        "de/subscribe.html",
        include_str!("../templates/de/subscribe.html"),
    ),
    (
        "de/message.html",
        include_str!("../templates/de/message.html"),
    ),
    (
        "de/preferences.html",
        include_str!("../templates/de/preferences.html"),
    ),
    (
        "de/mail/confirm.txt",
        include_str!("../templates/de/mail/confirm.txt"),
    ),
    (
        "de/mail/confirm.html",
        include_str!("../templates/de/mail/confirm.html"),
    ),
    (
        "de/mail/notice.txt",
        include_str!("../templates/de/mail/notice.txt"),
    ),
    (
        "de/mail/notice.html",
        include_str!("../templates/de/mail/notice.html"),
    ),
    (
        "de/mail/digest.txt",
        include_str!("../templates/de/mail/digest.txt"),
    ),
    (
        "de/mail/digest.html",
        include_str!("../templates/de/mail/digest.html"),
    ),
    (
        "en/layout.html",
        include_str!("../templates/en/layout.html"),
    ),
    (
        "en/choices.html",
        include_str!("../templates/en/choices.html"),
    ),
    (
        "en/subscribe.html",
        include_str!("../templates/en/subscribe.html"),
    ),
    (
        "en/message.html",
        include_str!("../templates/en/message.html"),
    ),
    (
        "en/preferences.html",
        include_str!("../templates/en/preferences.html"),
    ),
    (
        "en/mail/confirm.txt",
        include_str!("../templates/en/mail/confirm.txt"),
    ),
    (
        "en/mail/confirm.html",
        include_str!("../templates/en/mail/confirm.html"),
    ),
    (
        "en/mail/notice.txt",
        include_str!("../templates/en/mail/notice.txt"),
    ),
    (
        "en/mail/notice.html",
        include_str!("../templates/en/mail/notice.html"),
    ),
    (
        "en/mail/digest.txt",
        include_str!("../templates/en/mail/digest.txt"),
    ),
    (
        "en/mail/digest.html",
        include_str!("../templates/en/mail/digest.html"),
    ),
];

const BUILT_IN_CONSENT: &str = include_str!("../templates/consent/1.md");

pub struct Templates {
    env: minijinja::Environment<'static>,
    /// `de` or `en`.
    pub lang: &'static str,
    /// The consent text shown on the form, as HTML.
    pub consent_html: String,
    pub consent_version: String,
}

impl Templates {
    /// Loads the templates of the site's language from `dir` (usually `templates/` beside the
    /// configuration), falling back to the built-in ones.
    pub fn load(dir: &Path, language: &str, consent_version: &str) -> anyhow::Result<Templates> {
        let lang = if language.to_ascii_lowercase().starts_with("en") {
            "en"
        } else {
            "de"
        };
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        for (path, built_in) in BUILT_IN.iter().filter(|(p, _)| p.starts_with(lang)) {
            let file = dir.join(path);
            let source = match std::fs::read_to_string(&file) {
                Ok(s) => s,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => built_in.to_string(),
                Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
            };
            let name = &path[3..];
            env.add_template_owned(name.to_string(), source)
                .map_err(|e| {
                    anyhow::anyhow!(
                        "{}:{}: {}",
                        file.display(),
                        e.line().unwrap_or(1),
                        e.detail().unwrap_or("invalid template")
                    )
                })?;
        }
        let consent_file = dir.join("consent").join(format!("{consent_version}.md"));
        let consent = match std::fs::read_to_string(&consent_file) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && consent_version == "1" => {
                BUILT_IN_CONSENT.to_string()
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "privacy.consent_text_version = \"{consent_version}\" needs the text in {}",
                        consent_file.display()
                    )
                });
            }
        };
        let base = url::Url::parse("https://localhost/").expect("a valid URL");
        let consent_html = crate::content::markdown::render_html(&consent, &base);
        Ok(Templates {
            env,
            lang,
            consent_html,
            consent_version: consent_version.to_string(),
        })
    }

    /// Renders a template (`subscribe.html`, `mail/confirm.txt`, …) with `context`.
    pub fn render(&self, name: &str, context: impl Serialize) -> anyhow::Result<String> {
        let t = self
            .env
            .get_template(name)
            .with_context(|| format!("no template {name}"))?;
        t.render(minijinja::value::Serde(context))
            .map_err(|e| anyhow::anyhow!("template {name}: {e:#}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_languages_render_every_page_kind() {
        for lang in ["de", "en"] {
            let dir = tempfile::tempdir().unwrap();
            let t = Templates::load(dir.path(), lang, "1").unwrap();
            assert_eq!(t.lang, lang);
            for kind in [
                "check_inbox",
                "confirm",
                "confirmed",
                "unsubscribed",
                "invalid_link",
                "too_many",
                "error",
            ] {
                let html = t
                    .render(
                        "message.html",
                        minijinja::context! { lang, kind, site_title => "FITKO", action => "/x", expiry_hours => 72,
                            privacy_url => "https://x/p", imprint_url => "", accessibility_url => "" },
                    )
                    .unwrap();
                assert!(html.contains(&format!("<html lang=\"{lang}\">")), "{html}");
                assert!(html.contains("<h1>"), "{kind}");
            }
        }
    }

    #[test]
    fn a_broken_override_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("de")).unwrap();
        std::fs::write(dir.path().join("de/message.html"), "ok\n{% if %}\n").unwrap();
        let err = Templates::load(dir.path(), "de", "1")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("de/message.html:2:"), "{err}");
        let missing = Templates::load(dir.path(), "en", "7")
            .err()
            .unwrap()
            .to_string();
        assert!(missing.contains("consent/7.md"), "{missing}");
    }
}
