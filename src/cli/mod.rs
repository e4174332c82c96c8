//! The command line: arguments, dispatch, and the mapping of outcomes to exit codes
//! (0 success, 1 problems found or work failed, 2 bad usage or configuration).

pub mod bounce;
mod digest;
mod subscribers;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError};
use crate::content::{Corpus, Problem, Severity, SiteContext, scan};
use crate::logging::{self, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "herold",
    version,
    about = "Publishes news items as RSS, Atom and JSON Feed, and mails digest newsletters",
    long_about = "herold reads Markdown news items from a content directory and writes RSS 2.0, \
                  Atom 1.0 and JSON Feed 1.1 files: one feed for the site, one per tag and one \
                  per category.\n\nExit codes: 0 success, 1 problems found or work failed, \
                  2 bad usage or configuration."
)]
pub struct Cli {
    /// The configuration file; relative paths in it are relative to its directory.
    #[arg(
        long,
        global = true,
        default_value = "config.toml",
        env = "HEROLD_CONFIG"
    )]
    pub config: PathBuf,
    /// More log output (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Less log output (-q warnings only, -qq errors only).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "verbose")]
    pub quiet: u8,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: watch the content, rebuild the feeds, serve HTTP. SIGHUP reloads the
    /// configuration, SIGTERM stops.
    Run,
    /// Build all feeds once, report every skipped item, and exit.
    Build {
        /// Write nothing and exit 1 if any item has a problem.
        #[arg(long)]
        strict: bool,
    },
    /// Validate the configuration and every content file; exit 1 on any error.
    Check {
        /// Exit 1 on warnings too.
        #[arg(long)]
        deny_warnings: bool,
    },
    /// Turn the items of an existing RSS, Atom or JSON feed into content files, keeping their
    /// ids; never overwrites a file, and skips items whose id the content already has.
    Import {
        /// An http(s) URL or a file.
        source: String,
        /// Show what would be written, write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Digests: list the schedules, preview or send one.
    Digest {
        #[command(subcommand)]
        command: digest::DigestCommand,
    },
    /// Manage subscribers (works while the daemon runs).
    Subscribers {
        #[command(subcommand)]
        command: subscribers::SubscribersCommand,
    },
    /// The database: `db migrate --to URL` copies the SQLite database into an empty
    /// PostgreSQL one.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Record a bounce or complaint: one message from FILE or standard input (for an MTA's
    /// pipe transport), or one poll of the bounce mailbox with --imap. Prints its class:
    /// hard, soft, complaint, ignored, unmatched or forged. Exit 75 means "try again later".
    Bounce {
        /// The envelope recipient the message was delivered to (Postfix: ${original_recipient}).
        #[arg(long, conflicts_with = "imap")]
        recipient: Option<String>,
        /// Poll [bounce.imap] once instead of reading one message.
        #[arg(long)]
        imap: bool,
        /// The message; standard input when absent or `-`.
        #[arg(conflicts_with = "imap")]
        file: Option<std::path::PathBuf>,
    },
    /// Write a new item file with its front matter filled in, and print its path.
    New {
        /// The title of the item.
        title: String,
        /// Date and time (2026-03-01 or 2026-03-01T09:30); default now. A future date schedules the item.
        #[arg(long)]
        date: Option<String>,
        /// Tags (repeat the option for several).
        #[arg(long = "tag")]
        tags: Vec<String>,
        #[arg(long)]
        category: Option<String>,
        /// Mark the item as a draft (never published until the line is removed).
        #[arg(long)]
        draft: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Copy the SQLite database of the configuration into an empty PostgreSQL database
    /// (refused while a digest run is unfinished; the counts are compared), then set
    /// database.url in the configuration.
    Migrate {
        /// postgres://user@host:5432/dbname (password: database.password_file, the
        /// credential db-password or PGPASSWORD).
        #[arg(long)]
        to: String,
    },
}

/// Runs the command line and gives the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format, cli.verbose as i8 - cli.quiet as i8);
    match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            if let Some(ce) = e.downcast_ref::<ConfigError>() {
                tracing::error!("configuration: {ce}");
                return ExitCode::from(2);
            }
            tracing::error!("{e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        // A bounce from a pipe is never lost: a configuration being edited is a reason to
        // try again later, not to send the bounce back.
        Err(e) if matches!(cli.command, Command::Bounce { imap: false, .. }) => {
            tracing::error!(
                "configuration: {e}; the message is left to the mail server to deliver again"
            );
            return Ok(ExitCode::from(bounce::TEMPFAIL));
        }
        Err(e) => return Err(e.into()),
    };
    match &cli.command {
        Command::Bounce {
            recipient,
            imap,
            file,
        } => {
            if *imap {
                bounce::run_imap(&config)
            } else {
                Ok(bounce::run(&config, recipient.as_deref(), file.as_deref()))
            }
        }
        Command::Run => run_daemon(cli, config),
        Command::Import { source, dry_run } => import(&config, source, *dry_run),
        Command::Subscribers { command } => subscribers::run(&config, command),
        Command::Db {
            command: DbCommand::Migrate { to },
        } => migrate_database(&config, to),
        Command::Digest { command } => digest::run(&config, command),
        Command::Build { strict } => build(cli, &config, *strict),
        Command::Check { deny_warnings } => check(cli, &config, *deny_warnings),
        Command::New {
            title,
            date,
            tags,
            category,
            draft,
        } => new_item(
            &config,
            title,
            date.as_deref(),
            tags,
            category.as_deref(),
            *draft,
        ),
    }
}

fn migrate_database(config: &Config, to: &str) -> anyhow::Result<ExitCode> {
    if config.database.url.is_some() {
        tracing::error!(
            "the configuration already uses PostgreSQL (database.url); db migrate copies the SQLite database at database.path"
        );
        return Ok(ExitCode::from(2));
    }
    if !config.database.path.exists() {
        tracing::error!(path = %config.database.path.display(), "there is no SQLite database to copy");
        return Ok(ExitCode::from(2));
    }
    // Nothing may change the SQLite file while it is copied: a running daemon refuses it.
    let _lock = match crate::lock::acquire(&config.database) {
        Ok(lock) => lock,
        Err(e) => {
            tracing::error!("{e:#}: stop herold before migrating");
            return Ok(ExitCode::from(1));
        }
    };
    let target_config = crate::config::Database {
        url: Some(to.to_string()),
        ..config.database.clone()
    };
    let source = crate::store::Store::open(&config.database.path)?;
    let mut target = crate::store::Store::open_postgres(to, target_config.password()?)?;
    // A generated secret beside the SQLite file goes along; a configured one stays where it is.
    let generated = config.database.path.with_file_name("secret");
    let secret = if config.server.secret_file.is_none() && generated.exists() {
        Some(std::fs::read_to_string(&generated)?)
    } else {
        None
    };
    let counts = match source.copy_to(&mut target, secret.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("migration refused: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    for (table, n) in &counts {
        println!("{table}\t{n}");
    }
    tracing::info!(
        to = %target_config.display(),
        "the database was copied and the counts agree; now set database.url in the configuration and restart herold"
    );
    Ok(ExitCode::SUCCESS)
}

fn run_daemon(cli: &Cli, config: Config) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("herold")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(crate::daemon::run(cli.config.clone(), config))?;
    Ok(ExitCode::SUCCESS)
}

fn import(config: &Config, source: &str, dry_run: bool) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let bytes = runtime.block_on(crate::import::fetch(source))?;
    let report = crate::import::import(config, &bytes, dry_run)?;
    for path in &report.written {
        println!("{}", path.display());
    }
    for why in &report.skipped {
        tracing::warn!("skipped {why}");
    }
    if report.ids_rewritten > 0 {
        tracing::warn!(
            items = report.ids_rewritten,
            "ids that were not URIs became tag: URIs; readers of the old RSS feed may see these items once more"
        );
    }
    tracing::info!(
        source,
        written = report.written.len(),
        already_present = report.present,
        skipped = report.skipped.len(),
        dry_run,
        "import finished"
    );
    Ok(ExitCode::SUCCESS)
}

/// The wall clock in the site's time zone. The one place commands read it.
pub fn now(config: &Config) -> chrono::DateTime<chrono::FixedOffset> {
    crate::clock::now_in(config.site.timezone)
}

fn build(cli: &Cli, config: &Config, strict: bool) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    // The scan cache is written beside the feeds; the build ends when it is there too.
    let (corpus, cache_written) = read_corpus_with(config, scan_cache_path(config).as_deref())?;
    let scanned = started.elapsed();
    report(cli, &corpus.problems, false);
    let errors = corpus.errors();
    if strict && errors > 0 {
        tracing::error!(
            skipped = errors,
            "build --strict: {errors} item file(s) have problems; nothing written"
        );
        return Ok(ExitCode::from(1));
    }
    let meta = crate::feed::FeedMeta::from_config(config);
    let mut cache = crate::build::HtmlCache::default();
    // Archive documents and item pages show the same bodies: up to 64 MB of them are
    // rendered once for both.
    let shared = crate::build::SharedBodies::new(if config.pages.enabled { 64 << 20 } else { 0 });
    let mut rendered = crate::build::prepare(&corpus.items, now(config), &meta, &mut cache);
    rendered.share_bodies(&shared);
    let prepared = started.elapsed();
    report(cli, &rendered.warnings, false);
    let stats = crate::build::write_feeds(&config.feeds.dir, &rendered)
        .with_context(|| format!("cannot write the feeds in {}", config.feeds.dir.display()))?;
    let feeds_written = started.elapsed();
    // The feeds go to disk while the pages are rendered; the build ends when both are there.
    let feeds_dir = config.feeds.dir.clone();
    let flush = std::thread::spawn(move || crate::output::sync_fs(&feeds_dir));
    let pages = write_pages(cli, config, &corpus, &shared)?;
    flush
        .join()
        .expect("the flush thread panicked")
        .with_context(|| format!("cannot flush the feeds in {}", config.feeds.dir.display()))?;
    let flushed = started.elapsed();
    record_seen(config, &corpus)?;
    tracing::debug!(
        scan_ms = scanned.as_millis() as u64,
        prepare_ms = (prepared - scanned).as_millis() as u64,
        feeds_ms = (feeds_written - prepared).as_millis() as u64,
        pages_and_flush_ms = (flushed - feeds_written).as_millis() as u64,
        record_ms = (started.elapsed() - flushed).as_millis() as u64,
        "build phases"
    );
    tracing::info!(
        dir = %config.feeds.dir.display(),
        items = rendered.published,
        scheduled = rendered.scheduled,
        drafts = corpus.drafts,
        skipped = errors,
        feeds = rendered.feeds(),
        files_changed = stats.changed.len(),
        files_unchanged = stats.unchanged,
        files_removed = stats.removed.len(),
        pages = pages.as_ref().map_or(0, |p| p.changed + p.unchanged),
        pages_changed = pages.as_ref().map_or(0, |p| p.changed),
        pages_removed = pages.as_ref().map_or(0, |p| p.removed),
        ms = started.elapsed().as_millis() as u64,
        "build finished"
    );
    // The process ends here: the operating system takes the memory back at once, instead
    // of every item, body and feed plan being freed one by one (at 50,000 items, a
    // noticeable part of a build).
    std::mem::forget(rendered);
    std::mem::forget(cache);
    std::mem::forget(corpus);
    drop(cache_written);
    Ok(ExitCode::SUCCESS)
}

/// Writes every page of `corpus` into `pages.dir` (nothing when pages are disabled).
pub fn write_pages(
    cli: &Cli,
    config: &Config,
    corpus: &Corpus,
    shared: &crate::build::SharedBodies,
) -> anyhow::Result<Option<crate::pages::PageStats>> {
    if !config.pages.enabled {
        return Ok(None);
    }
    let templates = crate::templates::Templates::for_config(config)?;
    let meta = crate::pages::PageMeta::from_config(config);
    let archives = if meta.archived_digests.is_empty()
        || (config.database.url.is_none() && !config.database.path.exists())
    {
        Vec::new()
    } else {
        let store = crate::store::Store::connect(config)?;
        crate::pages::load_archives(&store, &meta)?
    };
    let cache = crate::pages::EntryCache::default();
    let mut plan = crate::pages::plan(
        &corpus.items,
        None,
        now(config),
        &meta,
        templates.default_language(),
        &archives,
        &cache,
    );
    plan.share_bodies(shared);
    let problems: Vec<Problem> = plan
        .problems
        .iter()
        .map(|p| {
            let mut p = p.clone();
            p.path = scan::display_path(&config.content.dir, &p.path);
            p
        })
        .collect();
    report(cli, &problems, false);
    let mut known = crate::pages::read_manifest(&config.pages.dir);
    let stats = crate::pages::write_pages(&config.pages.dir, &plan, &mut known, true, true)
        .with_context(|| format!("cannot write the pages in {}", config.pages.dir.display()))?;
    Ok(Some(stats))
}

fn check(cli: &Cli, config: &Config, deny_warnings: bool) -> anyhow::Result<ExitCode> {
    let templates_ok = match crate::templates::Templates::for_config(config) {
        Ok(_) => true,
        Err(e) => {
            eprintln!("{e:#}");
            false
        }
    };
    // `check` reads every file itself and writes nothing (it runs in editors' pipelines).
    let (mut corpus, _) = read_corpus_with(config, None)?;
    for item in &corpus.items {
        if item.id_from_file_name {
            corpus.problems.push(Problem::warning(
                &scan::display_path(&config.content.dir, &item.path),
                1,
                format!("the id comes from the file name; add `slug = \"{}\"` so that renaming the file keeps the id", item.slug),
            ));
        }
    }
    let meta = crate::feed::FeedMeta::from_config(config);
    let (_, mut warnings) = crate::feed::plan(&corpus.items, now(config), &meta);
    if config.pages.enabled {
        warnings.extend(crate::pages::url_clashes(&corpus.items, now(config)));
    }
    corpus.problems.extend(warnings.into_iter().map(|mut w| {
        w.path = scan::display_path(&config.content.dir, &w.path);
        w
    }));
    corpus
        .problems
        .sort_by(|a, b| a.path.cmp(&b.path).then(a.line.cmp(&b.line)));
    report(cli, &corpus.problems, true);
    let errors = corpus.errors();
    let warnings = corpus.problems.len() - errors;
    tracing::info!(
        items = corpus.items.len(),
        drafts = corpus.drafts,
        errors,
        warnings,
        "check finished"
    );
    Ok(
        if errors > 0 || !templates_ok || (deny_warnings && warnings > 0) {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        },
    )
}

/// Records in the database when each item was first seen (digests count an item as
/// published at the later of its date and its first sight).
pub fn record_seen(config: &Config, corpus: &Corpus) -> anyhow::Result<()> {
    let now = crate::clock::unix_seconds() as i64;
    let ids = crate::digest::select::relevant_ids(&config.digest, &corpus.items, now);
    if ids.is_empty() {
        return Ok(());
    }
    crate::store::Store::connect(config)?.note_seen(&ids, now)?;
    Ok(())
}

/// Where the scan cache lives: beside the SQLite database (none on PostgreSQL, where
/// nodes share no directory).
pub fn scan_cache_path(config: &Config) -> Option<std::path::PathBuf> {
    if config.database.url.is_some() {
        return None;
    }
    Some(config.database.path.with_file_name("scan.cache"))
}

/// Scans the content directory, with a progress bar on a terminal.
pub fn read_corpus(config: &Config) -> anyhow::Result<Corpus> {
    read_corpus_with(config, scan_cache_path(config).as_deref()).map(|(corpus, _)| corpus)
}

/// [`read_corpus`] with the scan cache at `cache`, or none; the cache may still be being
/// written while the caller goes on, until the [`scan::PendingSave`] is dropped.
fn read_corpus_with(
    config: &Config,
    cache: Option<&Path>,
) -> anyhow::Result<(Corpus, scan::PendingSave)> {
    let site = SiteContext::from_config(config);
    let bar = TerminalProgress::new();
    let scanned =
        scan::scan_cached(&config.content.dir, &site, &bar, cache).with_context(|| {
            format!(
                "cannot read the content directory {}",
                config.content.dir.display()
            )
        })?;
    bar.finish();
    Ok(scanned)
}

/// Prints problems: as `PATH:LINE: reason` lines in text mode (for editors and quickfix
/// lists), as log events with fields in JSON mode.
fn report(cli: &Cli, problems: &[Problem], with_warnings: bool) {
    for p in problems
        .iter()
        .filter(|p| with_warnings || p.severity == Severity::Error)
    {
        match cli.log_format {
            LogFormat::Text => eprintln!("{p}"),
            LogFormat::Json => {
                tracing::warn!(file = %p.path, line = p.line, severity = ?p.severity, "{}", p.message)
            }
        }
    }
}

/// A progress bar of `len` steps on a terminal (`template` as indicatif writes it); `None`
/// otherwise, where plain log lines say the same.
pub fn progress_bar(len: u64, template: &str) -> Option<indicatif::ProgressBar> {
    std::io::stderr().is_terminal().then(|| {
        indicatif::ProgressBar::new(len)
            .with_style(indicatif::ProgressStyle::with_template(template).expect("valid template"))
    })
}

/// A progress bar on a terminal for scans of many files; nothing otherwise.
#[derive(Default)]
struct TerminalProgress(std::sync::OnceLock<indicatif::ProgressBar>);

impl TerminalProgress {
    const THRESHOLD: usize = 1000;

    fn new() -> Self {
        Self::default()
    }

    fn finish(&self) {
        if let Some(b) = self.0.get() {
            b.finish_and_clear();
        }
    }
}

impl scan::Progress for TerminalProgress {
    fn start(&self, files: usize) {
        if files >= Self::THRESHOLD
            && let Some(bar) = progress_bar(files as u64, "{msg} {bar:40} {pos}/{len} files")
        {
            bar.set_message("reading");
            let _ = self.0.set(bar);
        }
    }

    fn file_done(&self) {
        if let Some(b) = self.0.get() {
            b.inc(1);
        }
    }
}

fn new_item(
    config: &Config,
    title: &str,
    date: Option<&str>,
    tags: &[String],
    category: Option<&str>,
    draft: bool,
) -> anyhow::Result<ExitCode> {
    let title = crate::content::text::one_line(title);
    let slug = crate::content::slug::slugify(&title);
    anyhow::ensure!(
        !slug.is_empty(),
        "the title needs letters or digits to make a file name from"
    );
    let date = match date {
        Some(d) => {
            crate::content::item::parse_date(d, config.site.timezone).map_err(anyhow::Error::msg)?
        }
        None => {
            let n = now(config);
            chrono::DurationRound::duration_trunc(n, chrono::TimeDelta::minutes(1)).unwrap_or(n)
        }
    };
    let path = config
        .content
        .dir
        .join(format!("{}-{slug}.md", date.format("%Y-%m-%d")));
    let text = new_item_text(&title, &slug, &date, tags, category, draft);
    write_new(&path, &text)?;
    println!("{}", path.display());
    Ok(ExitCode::SUCCESS)
}

/// The text of a new item file: TOML front matter with `slug` (so renaming keeps the id).
pub fn new_item_text(
    title: &str,
    slug: &str,
    date: &chrono::DateTime<chrono::FixedOffset>,
    tags: &[String],
    category: Option<&str>,
    draft: bool,
) -> String {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let mut t = format!(
        "+++\ntitle = {}\ndate = {}\nslug = {}\n",
        q(title),
        date.to_rfc3339(),
        q(slug)
    );
    let tags: Vec<String> = tags.iter().map(|t| q(t)).collect();
    t.push_str(&format!("tags = [{}]\n", tags.join(", ")));
    match category {
        Some(c) => t.push_str(&format!("category = {}\n", q(c))),
        None => t.push_str("# category = \"Pressemitteilung\"\n"),
    }
    t.push_str("# summary = \"Ein Satz, der die Meldung zusammenfasst.\"\n");
    if draft {
        t.push_str("draft = true\n");
    }
    t.push_str("+++\n\nDer erste Absatz ist der Vorspann der Meldung.\n");
    t
}

/// Creates `path` with `text`, refusing to overwrite anything.
fn write_new(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
