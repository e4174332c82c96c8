//! Templates for pages and mails (minijinja) and the words they show, one catalog per
//! language (`templates/i18n/{lang}.toml`). Each page and mail is one template that calls
//! `t("key", name=value)`; adding a language is adding a catalog.
//!
//! Files in `templates/` beside the configuration override the copies built into the
//! binary, so an installed binary works without them: `templates/{name}` for every
//! language, `templates/{lang}/{name}` for one language only, `templates/i18n/{lang}.toml`
//! for words (keys it leaves out keep their built-in value). Every template and catalog is
//! parsed at load: an error names the file and line.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Datelike, TimeZone};
use minijinja::value::{Kwargs, Value};
use serde::Serialize;

use crate::config::Site;

/// The templates herold uses, with their built-in text.
const BUILT_IN: &[(&str, &str)] = &[
    ("layout.html", include_str!("../templates/layout.html")),
    ("style.css", include_str!("../templates/style.css")),
    ("choices.html", include_str!("../templates/choices.html")),
    (
        "subscribe.html",
        include_str!("../templates/subscribe.html"),
    ),
    ("message.html", include_str!("../templates/message.html")),
    (
        "preferences.html",
        include_str!("../templates/preferences.html"),
    ),
    (
        "pages/list.html",
        include_str!("../templates/pages/list.html"),
    ),
    (
        "pages/item.html",
        include_str!("../templates/pages/item.html"),
    ),
    (
        "pages/entry.html",
        include_str!("../templates/pages/entry.html"),
    ),
    (
        "pages/feeds.html",
        include_str!("../templates/pages/feeds.html"),
    ),
    (
        "pages/digests.html",
        include_str!("../templates/pages/digests.html"),
    ),
    (
        "pages/run.html",
        include_str!("../templates/pages/run.html"),
    ),
    (
        "mail/layout.html",
        include_str!("../templates/mail/layout.html"),
    ),
    (
        "mail/confirm.txt",
        include_str!("../templates/mail/confirm.txt"),
    ),
    (
        "mail/confirm.html",
        include_str!("../templates/mail/confirm.html"),
    ),
    (
        "mail/notice.txt",
        include_str!("../templates/mail/notice.txt"),
    ),
    (
        "mail/notice.html",
        include_str!("../templates/mail/notice.html"),
    ),
    (
        "mail/digest.txt",
        include_str!("../templates/mail/digest.txt"),
    ),
    (
        "mail/digest.html",
        include_str!("../templates/mail/digest.html"),
    ),
];

/// The catalogs built into the binary. The first is the reference: every catalog has its keys.
const BUILT_IN_CATALOGS: &[(&str, &str)] = &[
    ("de", include_str!("../templates/i18n/de.toml")),
    ("en", include_str!("../templates/i18n/en.toml")),
];

/// Consent texts of version `1` built into the binary.
const BUILT_IN_CONSENT: &[(&str, &str)] = &[
    ("de", include_str!("../templates/consent/1.de.md")),
    ("en", include_str!("../templates/consent/1.en.md")),
];

/// minijinja's formatter, except that HTML escaping leaves `/` alone (URLs stay readable
/// in the source of pages and mails; `/` needs no escaping in text or quoted attributes).
fn html_formatter(
    out: &mut minijinja::Output,
    state: &mut minijinja::State,
    value: &Value,
) -> Result<(), minijinja::Error> {
    if !matches!(state.auto_escape(), minijinja::AutoEscape::Html)
        || value.is_safe()
        || value.is_undefined()
        || value.is_none()
    {
        return minijinja::escape_formatter(out, state, value);
    }
    let write = |out: &mut minijinja::Output, s: &str| {
        out.write_str(s).map_err(|_| {
            minijinja::Error::new(
                minijinja::ErrorKind::WriteFailure,
                "cannot write the output",
            )
        })
    };
    let owned;
    let s = match value.as_str() {
        Some(s) => s,
        None => {
            owned = value.to_string();
            &owned
        }
    };
    // Most values need no escaping: written as they are, in one piece.
    let mut rest = s;
    while let Some(p) = rest.find(['&', '<', '>', '"', '\'']) {
        write(out, &rest[..p])?;
        write(
            out,
            match rest.as_bytes()[p] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#x27;",
            },
        )?;
        rest = &rest[p + 1..];
    }
    write(out, rest)
}

/// Plain-text lines of mails are wrapped at this width.
pub const TEXT_WIDTH: usize = 72;

/// The words of one language.
#[derive(Debug, Clone)]
pub struct Catalog {
    words: HashMap<String, Entry>,
}

#[derive(Debug, Clone)]
enum Entry {
    Text(String),
    List(Vec<String>),
}

impl Catalog {
    /// Parses a catalog: nested tables of strings (and lists of strings), keys joined by `.`.
    pub fn parse(source: &str, file: &Path) -> anyhow::Result<Catalog> {
        let table: toml::Table = toml::from_str(source).map_err(|e| {
            let line = e
                .span()
                .map(|s| source[..s.start].matches('\n').count() + 1)
                .unwrap_or(1);
            anyhow::anyhow!("{}:{line}: {}", file.display(), e.message())
        })?;
        let mut words = HashMap::new();
        flatten("", &table, &mut words).map_err(|key| {
            anyhow::anyhow!(
                "{}:{}: `{key}` must be text or a list of texts",
                file.display(),
                key_line(source, &key)
            )
        })?;
        Ok(Catalog { words })
    }

    /// The text of `key`, or `None`.
    pub fn text(&self, key: &str) -> Option<&str> {
        match self.words.get(key) {
            Some(Entry::Text(s)) => Some(s),
            _ => None,
        }
    }

    fn keys(&self) -> BTreeSet<&str> {
        self.words.keys().map(String::as_str).collect()
    }
}

fn flatten(
    prefix: &str,
    table: &toml::Table,
    out: &mut HashMap<String, Entry>,
) -> Result<(), String> {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::String(s) => {
                out.insert(key, Entry::Text(s.clone()));
            }
            toml::Value::Array(a) => {
                let list = a
                    .iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| key.clone())?;
                out.insert(key, Entry::List(list));
            }
            toml::Value::Table(t) => flatten(&key, t, out)?,
            _ => return Err(key),
        }
    }
    Ok(())
}

/// The line of a catalog where `key`'s last part is set (for error messages).
fn key_line(source: &str, key: &str) -> usize {
    crate::config::key_line(source, key.rsplit('.').next().unwrap_or(key)).unwrap_or(1)
}

/// Fills `{name}` placeholders from the keyword arguments.
fn fill(text: &str, kwargs: &Kwargs) -> String {
    if !text.contains('{') {
        return text.to_string();
    }
    let mut out = text.to_string();
    for name in kwargs.args() {
        if let Ok(v) = kwargs.peek::<Value>(name) {
            out = out.replace(&format!("{{{name}}}"), &v.to_string());
        }
    }
    out
}

/// One language: its catalog, its templates and its consent text.
pub struct Language {
    /// As written in `site.languages` (`de`, `en`, `fr`, …).
    pub code: String,
    /// The language's own name (`Deutsch`, `English`).
    pub name: String,
    /// The consent text shown on the form, as HTML.
    pub consent_html: String,
    catalog: Arc<Catalog>,
    env: minijinja::Environment<'static>,
    /// Changes whenever a template or word of the language changes (pages record it, so
    /// that new templates rewrite every page and nothing else does).
    pub fingerprint: u64,
}

impl Language {
    /// Renders a template (`subscribe.html`, `mail/confirm.txt`, …) with `context`.
    pub fn render(&self, name: &str, context: impl Serialize) -> anyhow::Result<String> {
        let t = self
            .env
            .get_template(name)
            .with_context(|| format!("no template {name}"))?;
        t.render(minijinja::value::Serde(context))
            .map_err(|e| anyhow::anyhow!("template {name} ({}): {e:#}", self.code))
    }

    /// The text of `key` with `{name}` placeholders filled from `args`.
    pub fn t(&self, key: &str, args: &[(&str, &str)]) -> String {
        let mut s = self.catalog.text(key).unwrap_or(key).to_string();
        for (name, value) in args {
            s = s.replace(&format!("{{{name}}}"), value);
        }
        s
    }

    /// A date as the language writes it: `30. November 2026`, `30 November 2026`.
    pub fn long_date<T: TimeZone>(&self, d: &DateTime<T>) -> String {
        long_date(&self.catalog, d)
    }

    /// The name of `d`'s month ("Januar").
    pub fn month_name<T: TimeZone>(&self, d: &DateTime<T>) -> String {
        month_name(&self.catalog, d)
    }
}

fn month_name<T: TimeZone>(catalog: &Catalog, d: &DateTime<T>) -> String {
    match catalog.words.get("date.months") {
        Some(Entry::List(m)) if m.len() == 12 => m[d.month0() as usize].clone(),
        _ => d.month().to_string(),
    }
}

fn long_date<T: TimeZone>(catalog: &Catalog, d: &DateTime<T>) -> String {
    let month = month_name(catalog, d);
    catalog
        .text("date.format")
        .unwrap_or("{year}-{month_number}-{day}")
        .replace("{day}", &d.day().to_string())
        .replace("{month_number}", &format!("{:02}", d.month()))
        .replace("{month}", &month)
        .replace("{year}", &d.year().to_string())
}

/// A language as forms list it.
#[derive(Debug, Clone, Serialize)]
pub struct LanguageChoice {
    pub code: String,
    pub name: String,
}

/// The templates of every language of the site.
pub struct Templates {
    languages: Vec<Language>,
    /// Index of `site.language` in `languages`.
    default: usize,
    pub consent_version: String,
}

impl Templates {
    /// Loads the templates and catalogs of `site.languages` from `dir` (usually
    /// `templates/` beside the configuration), falling back to the built-in ones.
    pub fn load(dir: &Path, site: &Site, consent_version: &str) -> anyhow::Result<Templates> {
        let reference = Catalog::parse(BUILT_IN_CATALOGS[0].1, Path::new("i18n/de.toml"))
            .expect("the built-in catalog parses");
        let mut languages = Vec::new();
        for code in site.languages() {
            let catalog = Arc::new(load_catalog(dir, code, &reference)?);
            let name = catalog.text("language.name").unwrap_or(code).to_string();
            let consent_html = load_consent(dir, code, consent_version, code == site.language)?;
            let (env, sources) = environment(dir, code, catalog.clone())?;
            let fingerprint = {
                let mut words: Vec<String> = catalog
                    .words
                    .iter()
                    .map(|(k, v)| format!("{k}={v:?}"))
                    .collect();
                words.sort();
                crate::content::item::stable_hash(format!("{sources}\0{words:?}").as_bytes())
            };
            languages.push(Language {
                code: code.to_string(),
                name,
                consent_html,
                catalog,
                env,
                fingerprint,
            });
        }
        let default = languages
            .iter()
            .position(|l| l.code == site.language)
            .unwrap_or(0);
        Ok(Templates {
            languages,
            default,
            consent_version: consent_version.to_string(),
        })
    }

    /// The templates of a configuration: `templates/` beside it, `site.languages`,
    /// `privacy.consent_text_version`.
    pub fn for_config(config: &crate::config::Config) -> anyhow::Result<Templates> {
        Templates::load(
            &config.base_dir.join("templates"),
            &config.site,
            &config.privacy.consent_text_version,
        )
    }

    /// The language `code` when the site has it, else the site's language.
    pub fn get(&self, code: Option<&str>) -> &Language {
        code.and_then(|c| self.find(c))
            .unwrap_or(&self.languages[self.default])
    }

    /// The site's language (`site.language`).
    pub fn default_language(&self) -> &Language {
        &self.languages[self.default]
    }

    /// The language `code` (case-insensitive) when the site has it.
    pub fn find(&self, code: &str) -> Option<&Language> {
        self.languages
            .iter()
            .find(|l| l.code.eq_ignore_ascii_case(code))
    }

    /// Every language of the site, for a choice on a form.
    pub fn choices(&self) -> Vec<LanguageChoice> {
        self.languages
            .iter()
            .map(|l| LanguageChoice {
                code: l.code.clone(),
                name: l.name.clone(),
            })
            .collect()
    }
}

/// The catalog of `code`: the file `i18n/{code}.toml` over the built-in catalog of the
/// language (by its primary subtag); a language without a built-in catalog needs every key.
fn load_catalog(dir: &Path, code: &str, reference: &Catalog) -> anyhow::Result<Catalog> {
    let primary = primary_subtag(code).to_ascii_lowercase();
    let built_in = BUILT_IN_CATALOGS
        .iter()
        .find(|(c, _)| c.eq_ignore_ascii_case(code) || *c == primary)
        .map(|(c, s)| {
            Catalog::parse(s, &PathBuf::from(format!("i18n/{c}.toml")))
                .expect("a built-in catalog parses")
        });
    let file = dir.join("i18n").join(format!("{code}.toml"));
    let own = match std::fs::read_to_string(&file) {
        Ok(s) => Some((Catalog::parse(&s, &file)?, s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
    };
    let mut catalog = match (built_in, &own) {
        (Some(b), _) => b,
        (None, Some(_)) => Catalog {
            words: HashMap::new(),
        },
        (None, None) => anyhow::bail!(
            "site.languages: no catalog for `{code}`: add {} (a copy of the German one, translated)",
            file.display()
        ),
    };
    if let Some((own, source)) = own {
        let known = reference.keys();
        if let Some(unknown) = own.keys().into_iter().find(|k| !known.contains(k)) {
            anyhow::bail!(
                "{}:{}: unknown key `{unknown}`",
                file.display(),
                key_line(&source, unknown)
            );
        }
        catalog.words.extend(own.words);
    }
    let have = catalog.keys();
    if let Some(missing) = reference.keys().into_iter().find(|k| !have.contains(k)) {
        anyhow::bail!("{}: missing key `{missing}`", file.display());
    }
    Ok(catalog)
}

/// `de` of `de-AT`: the language without its region or script.
fn primary_subtag(code: &str) -> &str {
    code.split(['-', '_']).next().unwrap_or(code)
}

/// The consent text of `version` in `code`: `consent/{version}.{code}.md`, for the site's
/// language also `consent/{version}.md`, else the built-in text of version 1.
fn load_consent(
    dir: &Path,
    code: &str,
    version: &str,
    site_language: bool,
) -> anyhow::Result<String> {
    let mut candidates = vec![dir.join("consent").join(format!("{version}.{code}.md"))];
    if site_language {
        candidates.push(dir.join("consent").join(format!("{version}.md")));
    }
    let mut text = None;
    for file in &candidates {
        match std::fs::read_to_string(file) {
            Ok(s) => {
                text = Some(s);
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
        }
    }
    let primary = primary_subtag(code);
    let text = match text {
        Some(t) => t,
        None if version == "1" => BUILT_IN_CONSENT
            .iter()
            .find(|(c, _)| c.eq_ignore_ascii_case(primary))
            .map(|(_, t)| t.to_string())
            .with_context(|| {
                format!(
                    "the consent text in `{code}` is missing: add {}",
                    candidates[0].display()
                )
            })?,
        None => anyhow::bail!(
            "privacy.consent_text_version = \"{version}\" needs the text in {}",
            candidates[0].display()
        ),
    };
    let base = url::Url::parse("https://localhost/").expect("a valid URL");
    Ok(crate::content::markdown::render_html(&text, &base))
}

/// One environment per language: its templates (language overrides first), `t`, `wrap`.
fn environment(
    dir: &Path,
    code: &str,
    catalog: Arc<Catalog>,
) -> anyhow::Result<(minijinja::Environment<'static>, String)> {
    let mut env = minijinja::Environment::new();
    let mut sources = String::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    for (name, built_in) in BUILT_IN {
        let mut source = None;
        for file in [dir.join(code).join(name), dir.join(name)] {
            match std::fs::read_to_string(&file) {
                Ok(s) => {
                    source = Some((s, file));
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot read {}", file.display()));
                }
            }
        }
        let (source, file) = source.unwrap_or_else(|| (built_in.to_string(), PathBuf::from(name)));
        sources.push_str(name);
        sources.push('\0');
        sources.push_str(&source);
        sources.push('\0');
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
    env.set_formatter(html_formatter);
    env.add_global("lang", code.to_string());
    env.add_function(
        "t",
        move |key: &str, kwargs: Kwargs| -> Result<Value, minijinja::Error> {
            let plural = kwargs
                .peek::<Option<i64>>("count")
                .ok()
                .flatten()
                .map(|n| if n == 1 { "one" } else { "other" });
            let entry = catalog
                .words
                .get(key)
                .or_else(|| plural.and_then(|p| catalog.words.get(&format!("{key}.{p}"))));
            match entry {
                Some(Entry::Text(s)) => Ok(Value::from(fill(s, &kwargs))),
                Some(Entry::List(l)) => Ok(Value::from(
                    l.iter().map(|s| fill(s, &kwargs)).collect::<Vec<_>>(),
                )),
                None => Err(minijinja::Error::new(
                    minijinja::ErrorKind::UndefinedError,
                    format!("no text `{key}` in the catalog"),
                )),
            }
        },
    );
    env.add_filter("wrap", |s: &str| wrap(s, TEXT_WIDTH));
    Ok((env, sources))
}

/// Wraps text at `width` columns (counted in characters), breaking at spaces; a word longer
/// than the width (a URL) stands on its own line.
pub fn wrap(text: &str, width: usize) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / width);
    let mut col = 0;
    for word in text.split_whitespace() {
        let len = word.chars().count();
        if col > 0 && col + 1 + len > width {
            out.push('\n');
            col = 0;
        } else if col > 0 {
            out.push(' ');
            col += 1;
        }
        out.push_str(word);
        col += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(languages: &[&str]) -> Site {
        let langs: Vec<String> = languages.iter().map(|l| format!("\"{l}\"")).collect();
        crate::config::Config::parse(
            &format!(
                "[site]\ntitle = \"t\"\nbase_url = \"https://x.de\"\nlanguage = \"{}\"\nlanguages = [{}]\n",
                languages[0],
                langs.join(", ")
            ),
            "c",
            &[],
            Path::new("/"),
        )
        .unwrap()
        .site
    }

    #[test]
    fn every_language_renders_every_page_kind() {
        let dir = tempfile::tempdir().unwrap();
        let t = Templates::load(dir.path(), &site(&["de", "en"]), "1").unwrap();
        for (lang, title) in [("de", "Link ungültig"), ("en", "Invalid link")] {
            let l = t.get(Some(lang));
            assert_eq!(l.code, lang);
            for kind in [
                "check_inbox",
                "confirm",
                "confirmed",
                "already_confirmed",
                "unsubscribe",
                "unsubscribed",
                "saved",
                "invalid_link",
                "too_many",
                "bad_request",
                "not_found",
                "error",
            ] {
                let html = l
                    .render(
                        "message.html",
                        minijinja::context! { kind, site_title => "FITKO", action => "/x", expiry_hours => 72,
                            privacy_url => "https://x/p", imprint_url => "", accessibility_url => "",
                            languages => minijinja::value::Value::from(minijinja::value::Serde(t.choices())), switch_url => "" },
                    )
                    .unwrap();
                assert!(html.contains(&format!("<html lang=\"{lang}\">")), "{html}");
                assert_eq!(html.matches("<h1>").count(), 1, "{kind}");
                if kind == "invalid_link" {
                    assert!(html.contains(title), "{html}");
                }
            }
        }
        let mail = t
            .get(Some("en"))
            .render(
                "mail/confirm.html",
                minijinja::context! { site_title => "FITKO", confirm_url => "https://x/c", expiry_hours => 72,
                    privacy_url => "https://x/p", imprint_url => "" },
            )
            .unwrap();
        assert!(
            mail.contains("<title>Please confirm your subscription</title>"),
            "{mail}"
        );
        assert!(
            mail.contains("<h1>Please confirm your subscription</h1>"),
            "{mail}"
        );
        assert!(
            mail.contains("class=\"button\" href=\"https://x/c\">Confirm subscription</a>"),
            "{mail}"
        );
        let d = chrono::DateTime::parse_from_rfc3339("2026-03-05T10:00:00+01:00").unwrap();
        assert_eq!(t.get(Some("de")).long_date(&d), "5. März 2026");
        assert_eq!(t.get(Some("en")).long_date(&d), "5 March 2026");
        assert_eq!(t.get(Some("fr")).code, "de");
    }

    #[test]
    fn a_language_is_a_catalog_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("i18n")).unwrap();
        std::fs::create_dir_all(dir.path().join("consent")).unwrap();
        // French without a catalog is an error that says what to add.
        let err = Templates::load(dir.path(), &site(&["de", "fr"]), "1")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("i18n/fr.toml"), "{err}");
        // The German catalog, translated in part: a missing key is named.
        let de = BUILT_IN_CATALOGS[0].1;
        let fr = de.replace("Link ungültig", "Lien invalide").replace(
            "months = [\"Januar\", \"Februar\", \"März\"",
            "months = [\"janvier\", \"février\", \"mars\"",
        );
        let partial: String = fr
            .lines()
            .filter(|l| !l.starts_with("reason"))
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(dir.path().join("i18n/fr.toml"), &partial).unwrap();
        let err = Templates::load(dir.path(), &site(&["de", "fr"]), "1")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("missing key `mail.digest.reason`"), "{err}");
        std::fs::write(dir.path().join("i18n/fr.toml"), &fr).unwrap();
        let err = Templates::load(dir.path(), &site(&["de", "fr"]), "1")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("consent/1.fr.md"), "{err}");
        std::fs::write(dir.path().join("consent/1.fr.md"), "Consentement.").unwrap();
        let t = Templates::load(dir.path(), &site(&["de", "fr"]), "1").unwrap();
        let fr = t.get(Some("fr"));
        let html = fr
            .render(
                "message.html",
                minijinja::context! { kind => "invalid_link", site_title => "FITKO", action => "", expiry_hours => 72,
                    privacy_url => "", imprint_url => "", accessibility_url => "", languages => minijinja::value::Value::from(minijinja::value::Serde(t.choices())), switch_url => "/" },
            )
            .unwrap();
        assert!(html.contains("<html lang=\"fr\">"), "{html}");
        assert!(html.contains("Lien invalide"), "{html}");
        assert!(fr.consent_html.contains("Consentement"));
        let d = chrono::DateTime::parse_from_rfc3339("2026-03-05T10:00:00+01:00").unwrap();
        assert_eq!(fr.long_date(&d), "5. mars 2026");
    }

    #[test]
    fn broken_overrides_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("de")).unwrap();
        std::fs::write(dir.path().join("de/message.html"), "ok\n{% if %}\n").unwrap();
        let err = Templates::load(dir.path(), &site(&["de"]), "1")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("de/message.html:2:"), "{err}");
        // English is untouched by a German override.
        assert!(Templates::load(dir.path(), &site(&["en"]), "1").is_ok());
        let missing = Templates::load(dir.path(), &site(&["en"]), "7")
            .err()
            .unwrap()
            .to_string();
        assert!(missing.contains("consent/7.en.md"), "{missing}");
        std::fs::create_dir_all(dir.path().join("i18n")).unwrap();
        std::fs::write(
            dir.path().join("i18n/en.toml"),
            "[layout]\nprivacy = \"Data protection\"\nimprnt = \"x\"\n",
        )
        .unwrap();
        let err = Templates::load(dir.path(), &site(&["en"]), "1")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("i18n/en.toml:3: unknown key `layout.imprnt`"),
            "{err}"
        );
    }

    #[test]
    fn an_override_for_every_language_and_words_over_the_built_in_ones() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("i18n")).unwrap();
        std::fs::write(
            dir.path().join("i18n/en.toml"),
            "[message.saved]\ntitle = \"All saved\"\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("layout.html"),
            "<html lang=\"{{ lang }}\">{% block main %}{% endblock %}</html>",
        )
        .unwrap();
        let t = Templates::load(dir.path(), &site(&["de", "en"]), "1").unwrap();
        let ctx = minijinja::context! { kind => "saved", expiry_hours => 1 };
        let en = t.get(Some("en")).render("message.html", &ctx).unwrap();
        assert!(en.starts_with("<html lang=\"en\">"), "{en}");
        assert!(en.contains("<h1>All saved</h1>"), "{en}");
        let de = t.get(Some("de")).render("message.html", &ctx).unwrap();
        assert!(de.contains("Einstellungen gespeichert"), "{de}");
    }

    #[test]
    fn wrapping() {
        let w = wrap(
            &"Die Registermodernisierung verbindet Register. ".repeat(10),
            72,
        );
        assert!(w.lines().all(|l| l.chars().count() <= 72), "{w}");
        assert_eq!(wrap("a  b\n c", 72), "a b c");
    }
}
