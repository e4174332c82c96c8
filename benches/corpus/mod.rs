//! The generated benchmark corpus: 10,000 realistic items (2–4 KB of German Markdown, 45
//! tags, 8 categories), the same every time, as a herold site or a Hugo site.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Items in the corpus: 10,000, or `HEROLD_BENCH_ITEMS`.
pub fn items() -> usize {
    std::env::var("HEROLD_BENCH_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

const TAGS: [&str; 45] = [
    "OZG",
    "FIT-Connect",
    "Registermodernisierung",
    "NOOTS",
    "IT-Planungsrat",
    "Kommunalgremium",
    "Digitalstrategie",
    "Föderale Zusammenarbeit",
    "Öffentliche Verwaltung",
    "FIM",
    "XÖV",
    "Standardisierung",
    "Barrierefreiheit",
    "Onlinedienste",
    "Once-Only",
    "Deutschland-Stack",
    "Open Source",
    "Cloud",
    "Informationssicherheit",
    "Datenschutz",
    "Digitalisierungsbudget",
    "EfA",
    "Portalverbund",
    "BundID",
    "Nutzerkonto",
    "E-Rechnung",
    "Künstliche Intelligenz",
    "Souveränität",
    "Architektur",
    "Schnittstellen",
    "Kommunen",
    "Länder",
    "Bund",
    "EU",
    "SDG",
    "Gremien",
    "Veranstaltung",
    "Stellenangebot",
    "Jahresbericht",
    "Pressemitteilung",
    "Förderung",
    "Interoperabilität",
    "Register",
    "Fachverfahren",
    "Straße & Verkehr",
];

const CATEGORIES: [&str; 8] = [
    "Pressemitteilung",
    "IT-Planungsrat",
    "Produkte",
    "OZG",
    "Registermodernisierung",
    "Föderale IT-Architektur",
    "Veranstaltungen",
    "Stellenangebote",
];

const WORDS: [&str; 40] = [
    "Verwaltung",
    "Digitalisierung",
    "Bund",
    "Länder",
    "Kommunen",
    "Onlinedienst",
    "Antrag",
    "Bescheid",
    "Register",
    "Schnittstelle",
    "Standard",
    "Beschluss",
    "Sitzung",
    "Gremium",
    "Umsetzung",
    "Fortschritt",
    "Bürgerinnen",
    "Bürger",
    "Unternehmen",
    "Nachweis",
    "Daten",
    "sicher",
    "gemeinsam",
    "föderal",
    "digital",
    "die",
    "der",
    "und",
    "mit",
    "für",
    "über",
    "zur",
    "werden",
    "wurde",
    "hat",
    "ist",
    "neue",
    "alle",
    "FITKO",
    "Plattform",
];

/// Long compound nouns, as German administrative news uses them.
const COMPOUNDS: [&str; 16] = [
    "Registermodernisierungsgesetz",
    "Onlinezugangsgesetz",
    "Verwaltungsdigitalisierung",
    "Bürgerinnen- und Bürgerservice",
    "Föderalismuskommission",
    "Datenschutz-Folgenabschätzung",
    "Interoperabilitätsstandards",
    "Länderübergreifende Zusammenarbeit",
    "Nutzerfreundlichkeit",
    "Änderungsstaatsvertrag",
    "Öffentlichkeitsbeteiligung",
    "Digitalisierungsbudget",
    "Fachverfahrenshersteller",
    "Wirtschaftlichkeitsbetrachtung",
    "Zuständigkeitsfinder",
    "Geschäftsstellenleitung",
];

/// One sentence of dense German: umlauts, „typographic quotes“, a dash, long compounds.
pub fn german_sentence(rng: &mut Rng) -> String {
    let w = |rng: &mut Rng| WORDS[rng.below(WORDS.len())];
    let c = |rng: &mut Rng| COMPOUNDS[rng.below(COMPOUNDS.len())];
    match rng.below(4) {
        0 => format!(
            "Die {} der „{}“ wurde {} mit {} {} abgestimmt – ein Schritt für Bürgerinnen und Bürger.",
            c(rng),
            c(rng),
            w(rng),
            w(rng),
            c(rng)
        ),
        1 => format!(
            "Laut Geschäftsstelle würden {} und {} „{} {}“ künftig gemeinsam über {} entscheiden.",
            w(rng),
            w(rng),
            w(rng),
            c(rng),
            c(rng)
        ),
        2 => format!(
            "„Wir müssen die {} für {} spürbar verbessern“, betonte die Vorsitzende – auch im Hinblick auf {}.",
            c(rng),
            w(rng),
            c(rng)
        ),
        _ => format!(
            "Für {} heißt das: {} {} größere Verlässlichkeit, schnellere Verfahren und {} über „{}“.",
            c(rng),
            w(rng),
            w(rng),
            w(rng),
            c(rng)
        ),
    }
}

/// A paragraph of about `chars` bytes of dense German.
pub fn german_paragraph(rng: &mut Rng, chars: usize) -> String {
    let mut p = String::with_capacity(chars + 200);
    while p.len() < chars {
        if !p.is_empty() {
            p.push(' ');
        }
        p.push_str(&german_sentence(rng));
    }
    p
}

/// A small deterministic generator (xorshift), so every run builds the same corpus.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

pub struct Generated {
    pub title: String,
    pub date: String,
    pub slug: String,
    pub tags: Vec<&'static str>,
    pub category: &'static str,
    pub body: String,
}

pub fn generate() -> Vec<Generated> {
    let mut rng = Rng(0x5eed_f17c_0de0_2026);
    (0..items())
        .map(|i| {
            // One item every ~19 hours back from November 2026.
            let minutes = i as i64 * 1140 + rng.below(600) as i64;
            let date = chrono::DateTime::parse_from_rfc3339("2026-11-20T12:00:00+01:00").unwrap()
                - chrono::TimeDelta::minutes(minutes);
            let date = date.with_timezone(&chrono_tz::Europe::Berlin);
            let words = |rng: &mut Rng, n: usize| -> String {
                (0..n)
                    .map(|_| WORDS[rng.below(WORDS.len())])
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let title = format!("{} {}", words(&mut rng, 6), i);
            let target = 2000 + rng.below(2000);
            let mut body = String::with_capacity(target + 200);
            let mut p = 0;
            while body.len() < target {
                p += 1;
                if p % 4 == 0 {
                    body.push_str(&format!("## {}\n\n", words(&mut rng, 4)));
                }
                body.push_str(&german_paragraph(&mut rng, 280));
                body.push_str(&format!(
                    ". Mehr unter [Details](/aktuelles/details-{i}-{p}) und **{}**.\n\n",
                    words(&mut rng, 2)
                ));
            }
            let mut tags: Vec<&str> = (0..2 + rng.below(3))
                .map(|_| TAGS[rng.below(TAGS.len())])
                .collect();
            tags.sort();
            tags.dedup();
            Generated {
                title,
                date: date.to_rfc3339(),
                slug: format!("meldung-{i}"),
                tags,
                category: CATEGORIES[rng.below(CATEGORIES.len())],
                body,
            }
        })
        .collect()
}

fn quote(s: &str) -> String {
    format!("{s:?}")
}

/// Writes the corpus and a config for herold into `dir` (once).
pub fn write_herold_corpus(dir: &Path, items: &[Generated]) {
    if dir.join("config.toml").exists() {
        return;
    }
    let content = dir.join("content");
    for (i, g) in items.iter().enumerate() {
        let year_dir = content.join(&g.date[..4]);
        std::fs::create_dir_all(&year_dir).unwrap();
        let tags: Vec<String> = g.tags.iter().map(|t| quote(t)).collect();
        let text = format!(
            "+++\ntitle = {}\ndate = {}\nslug = {}\ncategory = {}\ntags = [{}]\n+++\n{}",
            quote(&g.title),
            g.date,
            quote(&g.slug),
            quote(g.category),
            tags.join(", "),
            g.body
        );
        std::fs::write(year_dir.join(format!("{}-{}.md", &g.date[..10], i)), text).unwrap();
    }
    std::fs::write(
        dir.join("config.toml"),
        "[site]\ntitle = \"FITKO – Aktuelles\"\nbase_url = \"https://www.fitko.de\"\nlink = \"https://www.fitko.de/aktuelles\"\n\
         item_url = \"https://www.fitko.de/aktuelles/{slug}\"\n[feeds]\nbase_url = \"https://www.fitko.de/feeds\"\n",
    )
    .unwrap();
}

/// Writes the same items as a Hugo site that builds only RSS for home and taxonomy terms.
pub fn write_hugo_site(dir: &Path, items: &[Generated]) {
    let content = dir.join("content/aktuelles");
    std::fs::create_dir_all(&content).unwrap();
    for (i, g) in items.iter().enumerate() {
        let tags: Vec<String> = g.tags.iter().map(|t| quote(t)).collect();
        let text = format!(
            "+++\ntitle = {}\ndate = {}\nslug = {}\ncategories = [{}]\ntags = [{}]\n+++\n{}",
            quote(&g.title),
            g.date,
            quote(&g.slug),
            quote(g.category),
            tags.join(", "),
            g.body
        );
        std::fs::write(content.join(format!("{i}.md")), text).unwrap();
    }
    std::fs::write(dir.join("hugo.toml"), HUGO_CONFIG).unwrap();
}

/// The same items as a full Hugo site: a page per item, paginated home and term pages,
/// RSS for home and terms, and a sitemap, with minimal layouts (what herold's pages show:
/// title, date, lead, body, category and tags).
pub fn write_hugo_pages_site(dir: &Path, items: &[Generated]) {
    write_hugo_site(dir, items);
    std::fs::write(dir.join("hugo.toml"), HUGO_PAGES_CONFIG).unwrap();
    let layouts = dir.join("layouts/_default");
    std::fs::create_dir_all(&layouts).unwrap();
    for (name, text) in HUGO_LAYOUTS {
        std::fs::write(layouts.join(name), text).unwrap();
    }
}

const HUGO_PAGES_CONFIG: &str = r#"baseURL = "https://www.fitko.de/"
languageCode = "de"
title = "FITKO – Aktuelles"
disableKinds = ["robotsTXT", "404"]
paginate = 20
[outputs]
home = ["HTML", "RSS"]
page = ["HTML"]
section = ["HTML"]
taxonomy = ["HTML"]
term = ["HTML", "RSS"]
[services.rss]
limit = 50
"#;

const HUGO_LAYOUTS: [(&str, &str); 3] = [
    (
        "baseof.html",
        r##"<!doctype html>
<html lang="de"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ .Title }} – {{ site.Title }}</title>
{{ range .AlternativeOutputFormats }}<link rel="{{ .Rel }}" type="{{ .MediaType.Type }}" href="{{ .Permalink }}">{{ end }}
<style>body { font-family: system-ui, sans-serif; max-width: 40rem; margin: 0 auto; }</style></head>
<body><a href="#inhalt">Zum Inhalt springen</a><header><p><a href="{{ site.Home.Permalink }}">{{ site.Title }}</a></p></header>
<main id="inhalt">{{ block "main" . }}{{ end }}</main>
<footer><a href="https://www.fitko.de/datenschutz">Datenschutz</a></footer></body></html>
"##,
    ),
    (
        "single.html",
        r##"{{ define "main" }}<article><h1>{{ .Title }}</h1>
<p><time datetime="{{ .Date.Format "2006-01-02T15:04:05-07:00" }}">{{ .Date.Format "2. January 2006" }}</time>{{ with .Params.categories }} · {{ range . }}<a href="{{ "categories/" | relURL }}{{ . | urlize }}/">{{ . }}</a>{{ end }}{{ end }}</p>
<div>{{ .Content }}</div>
{{ with .Params.tags }}<p>Stichwörter: {{ range $i, $t := . }}{{ if $i }}, {{ end }}<a href="{{ "tags/" | relURL }}{{ $t | urlize }}/">{{ $t }}</a>{{ end }}</p>{{ end }}
</article>{{ end }}
"##,
    ),
    (
        "list.html",
        r##"{{ define "main" }}<h1>{{ .Title }}</h1>
<ul>{{ range .Paginator.Pages }}<li><article><h2><a href="{{ .RelPermalink }}">{{ .Title }}</a></h2>
<p><time datetime="{{ .Date.Format "2006-01-02T15:04:05-07:00" }}">{{ .Date.Format "2. January 2006" }}</time></p>
<p>{{ .Summary | plainify }}</p>
{{ with .Params.tags }}<p>Stichwörter: {{ range $i, $t := . }}{{ if $i }}, {{ end }}<a href="{{ "tags/" | relURL }}{{ $t | urlize }}/">{{ $t }}</a>{{ end }}</p>{{ end }}
</article></li>{{ end }}</ul>
{{ with .Paginator }}{{ if .HasPrev }}<a href="{{ .Prev.URL }}">Neuere Meldungen</a>{{ end }} {{ if .HasNext }}<a href="{{ .Next.URL }}">Ältere Meldungen</a>{{ end }}{{ end }}
{{ end }}
"##,
    ),
];

/// Hugo builds RSS for the home page and every taxonomy term, and no HTML: pages are listed
/// but never rendered.
const HUGO_CONFIG: &str = r#"baseURL = "https://www.fitko.de/"
languageCode = "de"
title = "FITKO – Aktuelles"
disableKinds = ["section", "sitemap", "robotsTXT", "404"]
[outputs]
home = ["RSS"]
page = []
taxonomy = ["RSS"]
term = ["RSS"]
[services.rss]
limit = 50
[[cascade]]
[cascade._build]
render = "never"
list = "always"
[cascade._target]
kind = "page"
"#;

/// The corpus directory (with `config.toml`), generated on first use.
pub fn herold_corpus() -> PathBuf {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("target/bench-corpus-{}", items()));
    write_herold_corpus(&dir, &generate());
    dir
}
