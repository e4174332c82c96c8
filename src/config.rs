//! The configuration: `config.toml` parsed into types, with environment overrides.
//!
//! [`Config::parse`] does all the work on a string and is pure; [`Config::load`] only reads
//! the file and the process environment. Every value is validated here, at the edge, so the
//! rest of herold never re-checks a URL, a duration or a time zone.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use url::Url;

/// An error in the configuration, located in the file (or naming the environment variable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// `config.toml:12` or `HEROLD_SERVER_LISTEN`.
    pub location: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// The whole configuration, every section typed. Paths are absolute once loaded.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub site: Site,
    #[serde(default)]
    pub content: ContentSection,
    #[serde(default)]
    pub feeds: Feeds,
    #[serde(default)]
    pub server: Server,
    #[serde(default)]
    pub pages: Pages,
    #[serde(default)]
    pub database: Database,
    #[serde(default)]
    pub mail: Mail,
    #[serde(default)]
    pub privacy: Privacy,
    #[serde(default)]
    pub digest: Vec<Digest>,
    #[serde(default)]
    pub bounce: Bounce,
    /// The directory of the config file; relative paths were resolved against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(deserialize_with = "de_url")]
    pub base_url: Url,
    /// The news page; default `base_url`.
    #[serde(default, deserialize_with = "de_opt_url")]
    pub link: Option<Url>,
    /// Template of an item's link: `{slug}`, `{year}`, `{month}`, `{day}`; default `{link}/{slug}`.
    #[serde(default)]
    pub item_url: Option<String>,
    #[serde(default = "default_language")]
    pub language: String,
    /// The languages subscribers may choose (section 13); default `[language]`.
    #[serde(default)]
    pub languages: Vec<String>,
    #[serde(default = "default_timezone", deserialize_with = "de_tz")]
    pub timezone: chrono_tz::Tz,
    /// Default author of items; default: the site title.
    #[serde(default)]
    pub author: Option<String>,
    #[serde(default, deserialize_with = "de_opt_url")]
    pub privacy_url: Option<Url>,
    #[serde(default, deserialize_with = "de_opt_url")]
    pub imprint_url: Option<Url>,
    #[serde(default, deserialize_with = "de_opt_url")]
    pub accessibility_url: Option<Url>,
}

impl Site {
    /// The languages subscribers may choose: `languages`, or just `language`.
    pub fn languages(&self) -> Vec<&str> {
        if self.languages.is_empty() {
            vec![self.language.as_str()]
        } else {
            self.languages.iter().map(String::as_str).collect()
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContentSection {
    pub dir: PathBuf,
    #[serde(deserialize_with = "de_duration")]
    pub poll_interval: Duration,
}

impl Default for ContentSection {
    fn default() -> Self {
        ContentSection {
            dir: "content".into(),
            poll_interval: Duration::from_secs(30),
        }
    }
}

/// The feed formats herold writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Rss,
    Atom,
    Json,
}

impl Format {
    pub const ALL: [Format; 3] = [Format::Rss, Format::Atom, Format::Json];

    /// The file name of this format inside a feed directory.
    pub fn file_name(self) -> &'static str {
        match self {
            Format::Rss => "rss.xml",
            Format::Atom => "atom.xml",
            Format::Json => "feed.json",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Rss => "application/rss+xml",
            Format::Atom => "application/atom+xml",
            Format::Json => "application/feed+json",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Feeds {
    pub dir: PathBuf,
    /// Public URL of `dir`; default `{server.public_url}/feeds`.
    #[serde(deserialize_with = "de_opt_url")]
    pub base_url: Option<Url>,
    pub limit: usize,
    pub formats: Vec<Format>,
    pub per_tag: bool,
    pub per_category: bool,
    #[serde(deserialize_with = "de_urls")]
    pub websub_hubs: Vec<Url>,
    /// RFC 5005 archives of the site feed (section 11).
    pub archive: bool,
    /// Items per archive document.
    pub archive_size: usize,
}

impl Default for Feeds {
    fn default() -> Self {
        Feeds {
            dir: "feeds".into(),
            base_url: None,
            limit: 50,
            formats: Format::ALL.to_vec(),
            per_tag: true,
            per_category: true,
            websub_hubs: Vec::new(),
            archive: true,
            archive_size: 100,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    #[serde(deserialize_with = "de_socket")]
    pub listen: SocketAddr,
    /// Where subscribers reach the pages; may carry a path prefix. Default `http://{listen}`.
    #[serde(deserialize_with = "de_opt_url")]
    pub public_url: Option<Url>,
    #[serde(deserialize_with = "de_cidrs")]
    pub trusted_proxies: Vec<Cidr>,
    pub secret_file: Option<PathBuf>,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            trusted_proxies: Vec::new(),
            secret_file: None,
        }
    }
}

/// `[pages]`: the news as HTML pages (section 10).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pages {
    pub enabled: bool,
    pub dir: PathBuf,
    /// The URL path below `server.public_url`, without slashes at either end.
    pub path: String,
    pub per_page: usize,
    /// Newest-first pages of a list (the index, a tag, a category) at most; a longer list
    /// goes on by month (the index) or by year (a tag, a category), so that a new item
    /// does not move every page.
    pub max_pages: usize,
    pub noindex: bool,
}

impl Default for Pages {
    fn default() -> Self {
        Pages {
            enabled: true,
            dir: "public".into(),
            path: "aktuelles".into(),
            per_page: 20,
            max_pages: 10,
            noindex: false,
        }
    }
}

/// URL paths of the server that `pages.path` may not take.
const RESERVED_PATHS: &[&str] = &[
    "feeds",
    "subscribe",
    "confirm",
    "unsubscribe",
    "preferences",
    "healthz",
    "metrics",
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Database {
    /// The SQLite file (the default engine).
    pub path: PathBuf,
    /// PostgreSQL instead: `postgres://user@host:port/dbname` (SPEC 14).
    pub url: Option<String>,
    pub password_file: Option<PathBuf>,
    /// How long the schedule lease lasts without renewal (PostgreSQL, several nodes).
    #[serde(deserialize_with = "de_duration")]
    pub lease: Duration,
}

impl Default for Database {
    fn default() -> Self {
        Database {
            path: "data/herold.sqlite3".into(),
            url: None,
            password_file: None,
            lease: Duration::from_secs(30),
        }
    }
}

impl Database {
    /// PostgreSQL's password: `password_file`, the credential `db-password`, or
    /// `PGPASSWORD`; `None` when there is none (trust or peer authentication).
    pub fn password(&self) -> anyhow::Result<Option<String>> {
        let read = |p: &Path| {
            std::fs::read_to_string(p)
                .map(|s| Some(s.trim_end_matches(['\r', '\n']).to_string()))
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))
        };
        if let Some(f) = &self.password_file {
            return read(f);
        }
        if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
            let c = PathBuf::from(dir).join("db-password");
            if c.exists() {
                return read(&c);
            }
        }
        Ok(std::env::var("PGPASSWORD").ok())
    }

    /// Where the database is, for messages (never the password).
    pub fn display(&self) -> String {
        match &self.url {
            Some(u) => match url::Url::parse(u) {
                Ok(mut parsed) => {
                    let _ = parsed.set_password(None);
                    parsed.to_string()
                }
                Err(_) => "database.url".into(),
            },
            None => self.path.display().to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    File,
    Smtp,
    Sendmail,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mail {
    /// `"FITKO Aktuelles <aktuelles@example.org>"`.
    pub from: Option<String>,
    pub reply_to: Option<String>,
    pub return_path: Option<String>,
    pub unsubscribe_mailto: Option<String>,
    pub transport: Transport,
    pub outbox: PathBuf,
    pub concurrency: usize,
    pub rate_per_second: f64,
    pub smtp: Option<Smtp>,
    pub dkim: Option<Dkim>,
}

impl Default for Mail {
    fn default() -> Self {
        Mail {
            from: None,
            reply_to: None,
            return_path: None,
            unsubscribe_mailto: None,
            transport: Transport::File,
            outbox: "outbox".into(),
            concurrency: 4,
            rate_per_second: 50.0,
            smtp: None,
            dkim: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tls {
    Starttls,
    Tls,
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Smtp {
    pub host: String,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default = "default_tls")]
    pub tls: Tls,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default = "default_smtp_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dkim {
    pub domain: String,
    pub selector: String,
    #[serde(default)]
    pub private_key_file: Option<PathBuf>,
}

/// `[bounce]`: when bounces suspend an address, where unmatched messages are kept, and the
/// bounce mailbox over IMAP (SPEC 12).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Bounce {
    pub hard_limit: u32,
    pub soft_limit: u32,
    #[serde(deserialize_with = "de_duration")]
    pub soft_window: Duration,
    /// Default: `bounces/` beside the database.
    pub unmatched_dir: Option<PathBuf>,
    #[serde(deserialize_with = "de_duration")]
    pub keep: Duration,
    pub imap: Option<Imap>,
}

impl Default for Bounce {
    fn default() -> Self {
        Bounce {
            hard_limit: 1,
            soft_limit: 3,
            soft_window: Duration::from_secs(30 * 24 * 3600),
            unmatched_dir: None,
            keep: Duration::from_secs(14 * 24 * 3600),
            imap: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Imap {
    pub host: String,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default = "default_imap_tls")]
    pub tls: Tls,
    pub username: String,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default = "default_mailbox")]
    pub mailbox: String,
    #[serde(default = "default_processed_mailbox")]
    pub processed_mailbox: String,
    #[serde(default = "default_imap_poll", deserialize_with = "de_duration")]
    pub poll_interval: Duration,
}

fn default_imap_tls() -> Tls {
    Tls::Tls
}

fn default_mailbox() -> String {
    "INBOX".into()
}

fn default_processed_mailbox() -> String {
    "herold-processed".into()
}

fn default_imap_poll() -> Duration {
    Duration::from_secs(300)
}

impl Imap {
    /// The port: as configured, else 993 for TLS and 143 otherwise.
    pub fn port(&self) -> u16 {
        self.port
            .unwrap_or(if self.tls == Tls::Tls { 993 } else { 143 })
    }
}

impl Bounce {
    /// Where unmatched messages are kept: `unmatched_dir`, else `bounces/` beside the
    /// database.
    pub fn unmatched_dir(&self, database: &Path) -> PathBuf {
        self.unmatched_dir
            .clone()
            .unwrap_or_else(|| database.parent().unwrap_or(Path::new(".")).join("bounces"))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Privacy {
    pub record_client_address: bool,
    #[serde(deserialize_with = "de_duration")]
    pub pending_expiry: Duration,
    pub consent_text_version: String,
    #[serde(deserialize_with = "de_duration")]
    pub log_retention: Duration,
}

impl Default for Privacy {
    fn default() -> Self {
        Privacy {
            record_client_address: false,
            pending_expiry: Duration::from_secs(72 * 3600),
            consent_text_version: "1".into(),
            log_retention: Duration::from_secs(3 * YEAR),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Digest {
    pub name: String,
    #[serde(default)]
    pub title: Option<String>,
    /// Standard 5-field crontab line, or `@daily`, `@weekly`, ….
    pub schedule: String,
    #[serde(default, deserialize_with = "de_opt_tz")]
    pub timezone: Option<chrono_tz::Tz>,
    #[serde(default)]
    pub subject: Option<String>,
    /// Topics (tags) offered; empty means every tag.
    #[serde(default)]
    pub topics: Vec<String>,
    #[serde(default = "default_min_items")]
    pub min_items: usize,
    #[serde(default = "default_max_age", deserialize_with = "de_duration")]
    pub max_age: Duration,
    #[serde(default = "default_catch_up", deserialize_with = "de_duration")]
    pub catch_up: Duration,
    /// Whether finished runs are published in the digest archive (section 10).
    #[serde(default = "default_true")]
    pub archive: bool,
}

fn default_true() -> bool {
    true
}

/// An IPv4 or IPv6 network in CIDR notation, as in `server.trusted_proxies`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: std::net::IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: std::net::IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not an IP address or CIDR"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}`: prefix length must be 0 to {max}"))?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            other => other,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

const YEAR: u64 = 365 * 24 * 3600;

impl Config {
    /// Reads the file at `path` and applies `HEROLD_*` variables from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            location: path.display().to_string(),
            message: format!("cannot read the configuration: {e}"),
        })?;
        let env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with("HEROLD_"))
            .collect();
        let base_dir = path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            })
            .unwrap_or(Path::new("."));
        let base_dir = std::path::absolute(base_dir).unwrap_or_else(|_| base_dir.to_path_buf());
        Config::parse(&text, &path.display().to_string(), &env, &base_dir)
    }

    /// Parses `text` (named `file` in errors), applies `env` overrides
    /// (`HEROLD_SECTION_KEY=value`), resolves relative paths against `base_dir`, and validates.
    pub fn parse(
        text: &str,
        file: &str,
        env: &[(String, String)],
        base_dir: &Path,
    ) -> Result<Config, ConfigError> {
        // The first pass reads the file alone, so that every error names its line.
        let mut config: Config = toml::from_str(text).map_err(|e| toml_error(file, text, &e))?;
        let overrides = env_overrides(env)?;
        if !overrides.is_empty() {
            let table: toml::Table = text
                .parse()
                .map_err(|e: toml::de::Error| toml_error(file, text, &e))?;
            config = apply_overrides(&table, &overrides)?;
        }
        config.base_dir = base_dir.to_path_buf();
        config.resolve_paths();
        config.validate(file, text)?;
        Ok(config)
    }

    fn resolve_paths(&mut self) {
        let base = self.base_dir.clone();
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        abs(&mut self.content.dir);
        abs(&mut self.feeds.dir);
        abs(&mut self.pages.dir);
        abs(&mut self.database.path);
        abs(&mut self.mail.outbox);
        if let Some(p) = self.server.secret_file.as_mut() {
            abs(p);
        }
        if let Some(p) = self.bounce.unmatched_dir.as_mut() {
            abs(p);
        }
        if let Some(p) = self.database.password_file.as_mut() {
            abs(p);
        }
        if let Some(p) = self
            .bounce
            .imap
            .as_mut()
            .and_then(|i| i.password_file.as_mut())
        {
            abs(p);
        }
        if let Some(p) = self
            .mail
            .smtp
            .as_mut()
            .and_then(|s| s.password_file.as_mut())
        {
            abs(p);
        }
        if let Some(p) = self
            .mail
            .dkim
            .as_mut()
            .and_then(|d| d.private_key_file.as_mut())
        {
            abs(p);
        }
    }

    fn validate(&self, file: &str, text: &str) -> Result<(), ConfigError> {
        let err = |key: &str, message: String| ConfigError {
            location: format!("{file}:{}", key_line(text, key).unwrap_or(1)),
            message,
        };
        if self.site.title.trim().is_empty() {
            return Err(err("title", "site.title must not be empty".into()));
        }
        if self.site.base_url.host_str().is_none() {
            return Err(err("base_url", "site.base_url must have a host".into()));
        }
        for l in std::iter::once(&self.site.language).chain(&self.site.languages) {
            let valid = !l.is_empty()
                && l.len() <= 35
                && l.split('-').all(|p| {
                    !p.is_empty() && p.len() <= 8 && p.chars().all(|c| c.is_ascii_alphanumeric())
                });
            if !valid {
                return Err(err(
                    if l == &self.site.language {
                        "language"
                    } else {
                        "languages"
                    },
                    format!("`{l}` is not a language tag (like `de` or `en-GB`)"),
                ));
            }
        }
        if !self.site.languages.is_empty() && !self.site.languages.contains(&self.site.language) {
            return Err(err(
                "languages",
                format!(
                    "site.languages must include site.language (`{}`)",
                    self.site.language
                ),
            ));
        }
        if let Some(t) = &self.site.item_url {
            if !t.contains("{slug}") {
                return Err(err("item_url", "site.item_url must contain {slug}".into()));
            }
            let probe = t
                .replace("{slug}", "x")
                .replace("{year}", "2000")
                .replace("{month}", "01")
                .replace("{day}", "01");
            if Url::parse(&probe).is_err() {
                return Err(err(
                    "item_url",
                    format!("site.item_url `{t}` is not an absolute URL template"),
                ));
            }
        }
        if self.feeds.archive_size == 0 {
            return Err(err(
                "archive_size",
                "feeds.archive_size must be at least 1".into(),
            ));
        }
        if self.pages.per_page == 0 {
            return Err(err("per_page", "pages.per_page must be at least 1".into()));
        }
        if self.pages.max_pages == 0 {
            return Err(err(
                "max_pages",
                "pages.max_pages must be at least 1".into(),
            ));
        }
        let path_ok = !self.pages.path.is_empty()
            && self.pages.path.split('/').all(|seg| {
                !seg.is_empty()
                    && seg != "."
                    && seg != ".."
                    && seg
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
            });
        if !path_ok {
            return Err(err(
                "path",
                format!(
                    "pages.path `{}` must be a URL path like `aktuelles` (letters, digits, - _ . ~, segments separated by /, no / at either end)",
                    self.pages.path
                ),
            ));
        }
        let first = self.pages.path.split('/').next().unwrap_or_default();
        if RESERVED_PATHS.contains(&first) {
            return Err(err(
                "path",
                format!(
                    "pages.path `{}` is taken by herold's own URLs",
                    self.pages.path
                ),
            ));
        }
        if self.feeds.limit == 0 {
            return Err(err("limit", "feeds.limit must be at least 1".into()));
        }
        if self.feeds.formats.is_empty() {
            return Err(err(
                "formats",
                "feeds.formats must name at least one format".into(),
            ));
        }
        if self.mail.concurrency == 0 {
            return Err(err(
                "concurrency",
                "mail.concurrency must be at least 1".into(),
            ));
        }
        if !(self.mail.rate_per_second > 0.0 && self.mail.rate_per_second.is_finite()) {
            return Err(err(
                "rate_per_second",
                "mail.rate_per_second must be positive".into(),
            ));
        }
        if let Some(u) = &self.database.url {
            let ok = (u.starts_with("postgres://") || u.starts_with("postgresql://"))
                && u.parse::<tokio_postgres::Config>().is_ok();
            if !ok {
                return Err(err(
                    "url",
                    "database.url must look like postgres://user@host:5432/herold".into(),
                ));
            }
            // Secrets never live in the file (an URL from the environment may carry one).
            let in_file = text
                .parse::<toml::Table>()
                .ok()
                .and_then(|t| t.get("database")?.get("url")?.as_str().map(str::to_string));
            let with_password = |u: &str| {
                u.parse::<tokio_postgres::Config>()
                    .is_ok_and(|c| c.get_password().is_some())
            };
            if in_file.as_deref().is_some_and(with_password) {
                return Err(err(
                    "url",
                    "database.url must not hold the password: use database.password_file, the credential db-password or PGPASSWORD".into(),
                ));
            }
        }
        if self.database.lease < Duration::from_secs(3) {
            return Err(err("lease", "database.lease must be at least 3s".into()));
        }
        if let Some(r) = &self.mail.return_path {
            crate::email::ReturnPath::parse(r)
                .map_err(|e| err("return_path", format!("mail.return_path {e}")))?;
        }
        if self.bounce.hard_limit == 0 || self.bounce.soft_limit == 0 {
            return Err(err(
                if self.bounce.hard_limit == 0 {
                    "hard_limit"
                } else {
                    "soft_limit"
                },
                "bounce.hard_limit and bounce.soft_limit must be at least 1".into(),
            ));
        }
        if let Some(imap) = &self.bounce.imap {
            let loopback = imap.host == "localhost"
                || imap
                    .host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if imap.tls == Tls::None && !loopback {
                return Err(err(
                    "tls",
                    format!(
                        "bounce.imap.tls = \"none\" sends the password in clear text: only allowed to a loopback host, not `{}`",
                        imap.host
                    ),
                ));
            }
            if imap.mailbox == imap.processed_mailbox {
                return Err(err(
                    "processed_mailbox",
                    "bounce.imap.processed_mailbox must differ from bounce.imap.mailbox".into(),
                ));
            }
        }
        if self.mail.transport == Transport::Smtp && self.mail.smtp.is_none() {
            return Err(err(
                "transport",
                "mail.transport = \"smtp\" needs a [mail.smtp] section".into(),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for d in &self.digest {
            let tz = d.timezone.unwrap_or(self.site.timezone);
            if let Err(e) = crate::schedule::Schedule::parse(&d.schedule, tz) {
                return Err(err("schedule", format!("[[digest]] `{}`: {e}", d.name)));
            }
            if d.name.is_empty()
                || !d
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(err(
                    "name",
                    format!(
                        "digest name `{}` may only use letters, digits, - and _",
                        d.name
                    ),
                ));
            }
            if !names.insert(d.name.as_str()) {
                return Err(err(
                    "name",
                    format!("two [[digest]] sections are named `{}`", d.name),
                ));
            }
        }
        Ok(())
    }

    /// The public URL of the HTTP server, without a trailing slash.
    pub fn public_url(&self) -> String {
        match &self.server.public_url {
            Some(u) => u.as_str().trim_end_matches('/').to_string(),
            None => format!("http://{}", self.server.listen),
        }
    }

    /// The public URL of `feeds.dir`, without a trailing slash.
    pub fn feeds_base_url(&self) -> String {
        match &self.feeds.base_url {
            Some(u) => u.as_str().trim_end_matches('/').to_string(),
            None => format!("{}/feeds", self.public_url()),
        }
    }

    /// The news page: `site.link`; else herold's index page when pages are enabled and
    /// items link to them; else `site.base_url`.
    pub fn site_link(&self) -> Url {
        if let Some(link) = &self.site.link {
            return link.clone();
        }
        if self.own_pages()
            && let Ok(u) = Url::parse(&format!("{}/", self.pages_url()))
        {
            return u;
        }
        self.site.base_url.clone()
    }

    /// Whether items link to herold's own pages (pages enabled, no `site.item_url`).
    pub fn own_pages(&self) -> bool {
        self.pages.enabled && self.site.item_url.is_none()
    }

    /// The public URL of the pages, without a trailing slash: `{public_url}/{pages.path}`.
    pub fn pages_url(&self) -> String {
        format!("{}/{}", self.public_url(), self.pages.path)
    }

    pub fn site_author(&self) -> &str {
        self.site.author.as_deref().unwrap_or(&self.site.title)
    }

    /// The item link template with `{link}` already filled in.
    pub fn item_url_template(&self) -> String {
        match &self.site.item_url {
            Some(t) => t.clone(),
            None if self.pages.enabled => {
                format!("{}/{{year}}/{{month}}/{{day}}/{{slug}}/", self.pages_url())
            }
            None => format!(
                "{}/{{slug}}",
                self.site_link().as_str().trim_end_matches('/')
            ),
        }
    }
}

/// Parses `"5s"`, `"10m"`, `"48h"`, `"7d"`, `"2w"`, `"3y"`, `"1h30m"`, `"250ms"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!("`{s}` is not a duration (write e.g. \"30s\", \"10m\", \"48h\", \"7d\", \"3y\")")
    };
    let s_trim = s.trim();
    if s_trim.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut rest = s_trim;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = rest[..unit_len].trim();
        rest = &rest[unit_len..];
        let millis: u64 = match unit {
            "ms" => 1,
            "s" => 1000,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "y" => YEAR * 1000,
            _ => return Err(bad()),
        };
        total = n
            .checked_mul(millis)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    Ok(Duration::from_millis(total))
}

fn default_language() -> String {
    "de".into()
}
fn default_timezone() -> chrono_tz::Tz {
    chrono_tz::Europe::Berlin
}
fn default_tls() -> Tls {
    Tls::Starttls
}
fn default_smtp_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_min_items() -> usize {
    1
}
fn default_max_age() -> Duration {
    Duration::from_secs(7 * 86400)
}
fn default_catch_up() -> Duration {
    Duration::from_secs(12 * 3600)
}

fn de_url<'de, D: Deserializer<'de>>(d: D) -> Result<Url, D::Error> {
    let s = String::deserialize(d)?;
    parse_http_url(&s).map_err(serde::de::Error::custom)
}

fn de_opt_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Url>, D::Error> {
    de_url(d).map(Some)
}

fn de_urls<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Url>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    v.iter()
        .map(|s| parse_http_url(s).map_err(serde::de::Error::custom))
        .collect()
}

fn parse_http_url(s: &str) -> Result<Url, String> {
    let u = Url::parse(s.trim()).map_err(|e| format!("`{s}` is not a URL: {e}"))?;
    if u.scheme() != "http" && u.scheme() != "https" {
        return Err(format!("`{s}` must be an http or https URL"));
    }
    Ok(u)
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

fn de_tz<'de, D: Deserializer<'de>>(d: D) -> Result<chrono_tz::Tz, D::Error> {
    let s = String::deserialize(d)?;
    s.parse::<chrono_tz::Tz>().map_err(|_| {
        serde::de::Error::custom(format!(
            "`{s}` is not an IANA time zone such as \"Europe/Berlin\""
        ))
    })
}

fn de_opt_tz<'de, D: Deserializer<'de>>(d: D) -> Result<Option<chrono_tz::Tz>, D::Error> {
    de_tz(d).map(Some)
}

fn de_socket<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "`{s}` is not an address with port such as \"127.0.0.1:8080\""
        ))
    })
}

fn de_cidrs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Cidr>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    v.iter()
        .map(|s| Cidr::parse(s).map_err(serde::de::Error::custom))
        .collect()
}

fn toml_error(file: &str, text: &str, e: &toml::de::Error) -> ConfigError {
    let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(1);
    ConfigError {
        location: format!("{file}:{line}"),
        message: e.message().trim().to_string(),
    }
}

/// The 1-based line of byte offset `pos` in `text`.
pub fn line_of(text: &str, pos: usize) -> usize {
    let pos = pos.min(text.len());
    text.as_bytes()[..pos]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The 1-based line where `key` is set, in TOML (`key =`) or YAML (`key:`) text, for errors
/// found after parsing.
pub fn key_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            l.trim_start().strip_prefix(key).is_some_and(|r| {
                let r = r.trim_start();
                r.starts_with('=') || r.starts_with(':')
            })
        })
        .map(|i| i + 1)
}

/// The sections an environment variable may address, longest first so that
/// `HEROLD_MAIL_SMTP_HOST` is `[mail.smtp] host`, not `[mail] smtp_host`.
const ENV_SECTIONS: [(&str, &[&str]); 12] = [
    ("BOUNCE_IMAP_", &["bounce", "imap"]),
    ("MAIL_SMTP_", &["mail", "smtp"]),
    ("MAIL_DKIM_", &["mail", "dkim"]),
    ("DATABASE_", &["database"]),
    ("PRIVACY_", &["privacy"]),
    ("CONTENT_", &["content"]),
    ("SERVER_", &["server"]),
    ("FEEDS_", &["feeds"]),
    ("SITE_", &["site"]),
    ("MAIL_", &["mail"]),
    ("BOUNCE_", &["bounce"]),
    ("PAGES_", &["pages"]),
];

struct Override {
    var: String,
    path: &'static [&'static str],
    key: String,
    value: String,
}

fn env_overrides(env: &[(String, String)]) -> Result<Vec<Override>, ConfigError> {
    let mut out = Vec::new();
    let mut sorted: Vec<&(String, String)> = env.iter().collect();
    sorted.sort();
    for (var, value) in sorted {
        let Some(rest) = var.strip_prefix("HEROLD_") else {
            continue;
        };
        // HEROLD_SECRET and the like are not configuration keys.
        let Some((prefix, path)) = ENV_SECTIONS.iter().find(|(p, _)| rest.starts_with(p)) else {
            continue;
        };
        let key = rest[prefix.len()..].to_ascii_lowercase();
        if key.is_empty() {
            return Err(ConfigError {
                location: var.clone(),
                message: "names a section but no key".into(),
            });
        }
        out.push(Override {
            var: var.clone(),
            path,
            key,
            value: value.clone(),
        });
    }
    Ok(out)
}

fn apply_overrides(table: &toml::Table, overrides: &[Override]) -> Result<Config, ConfigError> {
    let mut as_text = vec![false; overrides.len()];
    loop {
        let mut table = table.clone();
        for (o, text) in overrides.iter().zip(&as_text) {
            let mut t: &mut toml::Table = &mut table;
            for section in o.path {
                let entry = t
                    .entry(section.to_string())
                    .or_insert_with(|| toml::Value::Table(Default::default()));
                t = entry.as_table_mut().ok_or_else(|| ConfigError {
                    location: o.var.clone(),
                    message: format!("[{section}] is not a table in the file"),
                })?;
            }
            let value = if *text {
                toml::Value::String(o.value.clone())
            } else {
                env_value(&o.value)
            };
            t.insert(o.key.clone(), value);
        }
        let err = match toml::Value::Table(table).try_into::<Config>() {
            Ok(c) => return Ok(c),
            Err(e) => e,
        };
        // A value such as "2026" or "true" meant as text: the error quotes it; retry it as text.
        let message = err.message().trim().to_string();
        let retry = overrides.iter().zip(as_text.iter_mut()).find(|(o, text)| {
            !**text
                && !matches!(env_value(&o.value), toml::Value::String(_))
                && message.contains(&format!("`{}`", o.value))
        });
        match retry {
            Some((_, text)) => *text = true,
            None => {
                let field = message
                    .split('`')
                    .nth(1)
                    .unwrap_or_default()
                    .to_ascii_uppercase();
                let culprit = overrides
                    .iter()
                    .find(|o| !field.is_empty() && o.var.ends_with(&field));
                let location = match culprit {
                    Some(o) => o.var.clone(),
                    None => overrides
                        .iter()
                        .map(|o| o.var.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                };
                return Err(ConfigError { location, message });
            }
        }
    }
}

/// An environment value is read as a TOML number, boolean or array when it is one, else as text.
fn env_value(raw: &str) -> toml::Value {
    let parsed: Result<BTreeMap<String, toml::Value>, _> = toml::from_str(&format!("v = {raw}"));
    match parsed.ok().and_then(|mut m| m.remove("v")) {
        Some(
            v @ (toml::Value::Integer(_)
            | toml::Value::Float(_)
            | toml::Value::Boolean(_)
            | toml::Value::Array(_)),
        ) => v,
        _ => toml::Value::String(raw.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str =
        "[site]\ntitle = \"FITKO – Aktuelles\"\nbase_url = \"https://www.fitko.de\"\n";

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        Config::parse(text, "config.toml", &env, Path::new("/srv/herold"))
    }

    #[test]
    fn minimal_config_gets_defaults_and_absolute_paths() {
        let c = parse(MINIMAL, &[]).unwrap();
        assert_eq!(c.feeds.limit, 50);
        assert_eq!(c.content.dir, Path::new("/srv/herold/content"));
        assert_eq!(
            c.database.path,
            Path::new("/srv/herold/data/herold.sqlite3")
        );
        assert_eq!(c.public_url(), "http://127.0.0.1:8080");
        assert_eq!(c.feeds_base_url(), "http://127.0.0.1:8080/feeds");
        // Items link to herold's own pages, and the news page is their index.
        assert_eq!(
            c.item_url_template(),
            "http://127.0.0.1:8080/aktuelles/{year}/{month}/{day}/{slug}/"
        );
        assert_eq!(c.site_link().as_str(), "http://127.0.0.1:8080/aktuelles/");
        assert_eq!(c.pages.dir, Path::new("/srv/herold/public"));
        assert_eq!(c.site.timezone, chrono_tz::Europe::Berlin);
    }

    #[test]
    fn pages_disabled_or_a_cms_keeps_the_old_links() {
        let c = parse(&format!("{MINIMAL}\n[pages]\nenabled = false\n"), &[]).unwrap();
        assert_eq!(c.item_url_template(), "https://www.fitko.de/{slug}");
        assert_eq!(c.site_link().as_str(), "https://www.fitko.de/");
        let e = parse(&format!("{MINIMAL}\n[pages]\npath = \"feeds\"\n"), &[]).unwrap_err();
        assert!(e.message.contains("taken"), "{e}");
        for bad in ["", "/aktuelles", "a//b", "../x", "a b"] {
            let e = parse(&format!("{MINIMAL}\n[pages]\npath = \"{bad}\"\n"), &[]).unwrap_err();
            assert_eq!(e.location, "config.toml:6", "{bad}: {e}");
        }
        let c = parse(
            &format!("{MINIMAL}\n[pages]\npath = \"news/aktuell\"\n"),
            &[],
        )
        .unwrap();
        assert_eq!(c.pages_url(), "http://127.0.0.1:8080/news/aktuell");
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let e = parse(&format!("{MINIMAL}\n[feeds]\nlimt = 3\n"), &[]).unwrap_err();
        assert_eq!(e.location, "config.toml:6");
        assert!(e.message.contains("limt"), "{e}");
    }

    #[test]
    fn bad_duration_names_line() {
        let e = parse(
            &format!("{MINIMAL}[content]\npoll_interval = \"5 parsecs\"\n"),
            &[],
        )
        .unwrap_err();
        assert_eq!(e.location, "config.toml:5");
        assert!(e.message.contains("not a duration"), "{e}");
    }

    #[test]
    fn env_overrides_typed_and_text() {
        let c = parse(
            MINIMAL,
            &[
                ("HEROLD_SERVER_LISTEN", "0.0.0.0:9000"),
                ("HEROLD_FEEDS_LIMIT", "7"),
                ("HEROLD_SITE_TITLE", "2026"),
                ("HEROLD_MAIL_SMTP_HOST", "mail.example.org"),
                ("HEROLD_SECRET", "not a config key"),
            ],
        )
        .unwrap();
        assert_eq!(c.server.listen.port(), 9000);
        assert_eq!(c.feeds.limit, 7);
        assert_eq!(c.site.title, "2026");
        assert_eq!(c.mail.smtp.unwrap().host, "mail.example.org");
    }

    #[test]
    fn env_override_with_unknown_key_names_variable() {
        let e = parse(MINIMAL, &[("HEROLD_FEEDS_LIMT", "7")]).unwrap_err();
        assert_eq!(e.location, "HEROLD_FEEDS_LIMT");
        assert!(e.message.contains("limt"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("3y"), Ok(Duration::from_secs(3 * YEAR)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["", "5", "s", "5 parsecs", "-5s", "99999999999999999999y"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cidrs() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("::1").unwrap().contains("::1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
    }

    #[test]
    fn bad_values_are_errors() {
        for (snippet, needle) in [
            ("[site]\ntitle = \"x\"\nbase_url = \"ftp://x\"\n", "http"),
            (
                "[site]\ntitle = \"x\"\nbase_url = \"https://x\"\ntimezone = \"Mars/Olympus\"\n",
                "time zone",
            ),
            (
                "[site]\ntitle = \"x\"\nbase_url = \"https://x\"\nitem_url = \"https://x/news\"\n",
                "{slug}",
            ),
            (
                "[site]\ntitle = \"x\"\nbase_url = \"https://x\"\n[mail]\ntransport = \"pigeon\"\n",
                "pigeon",
            ),
        ] {
            let e = parse(snippet, &[]).unwrap_err();
            assert!(e.to_string().contains(needle), "{e}");
        }
    }
}
