//! `herold subscribers …`: manage subscribers from the command line, beside a running daemon.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use chrono::TimeZone;
use clap::Subcommand;

use crate::config::Config;
use crate::email::Email;
use crate::store::{
    Choice, ImportAction, ImportRow, Imported, Requested, Status, Store, Subscriber,
};

/// Rows imported in one transaction: one sync to disk per batch instead of per row (a
/// batch holds the write lock for about a fifth of a second; the daemon waits that long).
const IMPORT_BATCH: usize = 10_000;

#[derive(Debug, Subcommand)]
pub enum SubscribersCommand {
    /// Add an address. Without --consented-at it is pending and gets a confirmation mail
    /// (double opt-in); with it, it is active and the consent is logged as imported.
    Add {
        email: String,
        /// A topic (tag); repeat for several. None: every topic.
        #[arg(long = "topic")]
        topics: Vec<String>,
        /// A digest by name; repeat for several. None: the first [[digest]].
        #[arg(long = "digest")]
        digests: Vec<String>,
        /// When the person consented (2026-03-01 or RFC 3339), with --source.
        #[arg(long, requires = "source")]
        consented_at: Option<String>,
        /// Where the consent was given (a form, a list, an event).
        #[arg(long)]
        source: Option<String>,
        /// The language of the subscriber's mails and pages (one of site.languages).
        #[arg(long)]
        language: Option<String>,
    },
    /// Unsubscribe an address from everything and erase it; only a keyed hash stays to block
    /// re-imports.
    Remove { email: String },
    /// One line per pending or active subscriber: email, status, topics, digests (tab-separated;
    /// a suspended one has a fifth column: since when and why).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Import a CSV file with the header `email,topics,status,digests[,consented_at,source,language]`.
    Import { csv: std::path::PathBuf },
    /// Everything stored about an address, as JSON (DSGVO Art. 15).
    Export { email: String },
    /// Lift the suspension of an address (after bounces): it gets digests again, and its
    /// bounce count starts from zero.
    Reactivate { email: String },
}

pub fn run(config: &Config, command: &SubscribersCommand) -> anyhow::Result<ExitCode> {
    let now = crate::clock::unix_seconds() as i64;
    match command {
        SubscribersCommand::List { json } => {
            let store = Store::connect(config)?;
            let list = store.list()?;
            if *json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &list.iter().map(export_subscriber).collect::<Vec<_>>()
                    )?
                );
            } else {
                for s in &list {
                    let status = match (s.status, &s.suspended) {
                        (_, Some(_)) => "suspended",
                        (Status::Active, None) => "active",
                        (Status::Pending, None) => "pending",
                    };
                    // A suspended address has a fifth column: since when and why.
                    let why = s
                        .suspended
                        .as_ref()
                        .map(|x| format!("\t{} {}", rfc3339(x.at), x.reason))
                        .unwrap_or_default();
                    println!(
                        "{}\t{status}\t{}\t{}{why}",
                        s.email,
                        s.topics.join(";"),
                        s.digests.join(";")
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        SubscribersCommand::Reactivate { email } => {
            let email = parse_email(email)?;
            let mut store = Store::connect(config)?;
            let Some(s) = store.by_email(&email)? else {
                eprintln!("no subscriber has this address");
                return Ok(ExitCode::from(1));
            };
            if s.suspended.is_none() {
                eprintln!("this address is not suspended");
                return Ok(ExitCode::SUCCESS);
            }
            store.reactivate(s.id, now)?;
            tracing::info!(subscriber = s.id, "suspension lifted");
            Ok(ExitCode::SUCCESS)
        }
        SubscribersCommand::Remove { email } => {
            let email = parse_email(email)?;
            let mut store = Store::connect(config)?;
            let had = store.by_email(&email)?.is_some();
            store.block(&email, "command line", now)?;
            tracing::info!(erased = had, "address removed and blocked");
            Ok(ExitCode::SUCCESS)
        }
        SubscribersCommand::Export { email } => {
            let email = parse_email(email)?;
            let store = Store::connect(config)?;
            let subscriber = store.by_email(&email)?;
            let log = store.consent_log(&email)?;
            if subscriber.is_none() && log.is_empty() {
                eprintln!("no data is stored about this address");
                return Ok(ExitCode::from(1));
            }
            let mut out = match &subscriber {
                Some(s) => export_subscriber(s),
                None => {
                    serde_json::json!({ "email": email, "status": if store.is_blocked(&email)? { "unsubscribed" } else { "none" } })
                }
            };
            out["consent_log"] = serde_json::Value::Array(
                log.iter()
                    .map(|e| {
                        serde_json::json!({ "event": e.event, "at": rfc3339(e.at), "consent_version": e.consent_version,
                            "language": e.language, "source": e.source, "client_address": e.client_address })
                    })
                    .collect(),
            );
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(ExitCode::SUCCESS)
        }
        SubscribersCommand::Add {
            email,
            topics,
            digests,
            consented_at,
            source,
            language,
        } => {
            let email = parse_email(email)?;
            let choice = Choice {
                topics: topics.clone(),
                digests: check_digests(config, digests)?,
                language: check_language(config, language.as_deref())?,
            };
            let version = config.privacy.consent_text_version.clone();
            match consented_at {
                Some(at) => {
                    let at = crate::content::item::parse_date(at, config.site.timezone)
                        .map_err(anyhow::Error::msg)?
                        .timestamp();
                    let mut store = Store::connect(config)?;
                    let row = ImportRow {
                        email,
                        source: source.as_deref().unwrap_or("command line").to_string(),
                        action: ImportAction::Subscribe {
                            status: Status::Active,
                            choice,
                            consented_at: Some(at),
                            consent_version: version,
                        },
                    };
                    match store.import(&row, now)? {
                        Imported::Blocked => {
                            eprintln!(
                                "this address unsubscribed earlier and is blocked; it can subscribe again itself"
                            );
                            Ok(ExitCode::from(1))
                        }
                        _ => Ok(ExitCode::SUCCESS),
                    }
                }
                None => add_pending(config, &email, &choice, &version, now),
            }
        }
        SubscribersCommand::Import { csv } => import_csv(config, csv, now),
    }
}

/// A pending subscription with a confirmation mail sent now.
fn add_pending(
    config: &Config,
    email: &Email,
    choice: &Choice,
    version: &str,
    now: i64,
) -> anyhow::Result<ExitCode> {
    // The mail transport (and its connection pool) lives inside the runtime, start to end.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let subs = crate::subscriptions::Subscriptions::open(config)?;
        let outcome = subs
            .lock_store()
            .request(email, choice, version, None, now)?;
        let (s, kind): (Subscriber, _) = match outcome {
            Requested::Confirm(s) => (s, crate::subscriptions::MailKind::Confirm),
            Requested::AlreadyActive(s) => (s, crate::subscriptions::MailKind::Notice),
            Requested::Quiet => {
                eprintln!("this address got enough mails today; try again tomorrow");
                return Ok(ExitCode::from(1));
            }
        };
        crate::subscriptions::send_mail(config, &subs, &s, kind).await?;
        tracing::info!(subscriber = s.id, "confirmation mail sent");
        Ok(ExitCode::SUCCESS)
    })
}

fn parse_email(s: &str) -> anyhow::Result<Email> {
    Email::parse(s).map_err(|e| anyhow::anyhow!("`{s}`: {e}"))
}

fn check_digests(config: &Config, digests: &[String]) -> anyhow::Result<Vec<String>> {
    for d in digests {
        anyhow::ensure!(
            config.digest.iter().any(|x| &x.name == d),
            "there is no [[digest]] named `{d}`"
        );
    }
    let mut out = digests.to_vec();
    if out.is_empty() {
        out.extend(config.digest.first().map(|d| d.name.clone()));
    }
    Ok(out)
}

/// The language as configured (`site.languages`), or an error that lists them.
pub(super) fn check_language(
    config: &Config,
    language: Option<&str>,
) -> anyhow::Result<Option<String>> {
    let Some(l) = language.map(str::trim).filter(|l| !l.is_empty()) else {
        return Ok(None);
    };
    let languages = config.site.languages();
    languages
        .iter()
        .find(|c| c.eq_ignore_ascii_case(l))
        .map(|c| Some(c.to_string()))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "language `{l}` is not one of site.languages ({})",
                languages.join(", ")
            )
        })
}

fn rfc3339(t: i64) -> String {
    chrono::Utc
        .timestamp_opt(t, 0)
        .single()
        .map(|d| d.to_rfc3339())
        .unwrap_or_default()
}

fn export_subscriber(s: &Subscriber) -> serde_json::Value {
    serde_json::json!({
        "email": s.email,
        "status": s.status,
        "topics": s.topics,
        "digests": s.digests,
        "subscribed_at": rfc3339(s.created_at),
        "confirmed_at": s.confirmed_at.map(rfc3339),
        "consent_version": s.consent_version,
        "source": s.source,
        "client_address": s.client_address,
        "language": s.language,
        "suspended": s.suspended.as_ref().map(|x| serde_json::json!({ "at": rfc3339(x.at), "reason": x.reason })),
    })
}

/// Imports the rows of a CSV file (RFC 4180: quotes, line breaks in quotes, a BOM, CRLF),
/// in batches of [`IMPORT_BATCH`] rows a transaction. Every bad row is reported as
/// `FILE:LINE: reason` and skipped; exit 1 if there was one.
fn import_csv(config: &Config, path: &Path, now: i64) -> anyhow::Result<ExitCode> {
    let shown = path.display();
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    // Without the BOM: csv would strip it, but count its offsets and lines off by one.
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    // Line numbers from byte offsets: csv counts a CRLF file's lines differently.
    let line_starts: Vec<u64> = std::iter::once(0).chain(memchr_lines(bytes)).collect();
    // csv may place a record at the line break before it (the `\n` of a CRLF).
    let line_of = |byte: u64| {
        let skip = bytes
            .iter()
            .skip(byte as usize)
            .take_while(|b| matches!(b, b'\r' | b'\n'))
            .count() as u64;
        line_starts.partition_point(|&s| s <= byte + skip) as u64
    };
    let size = bytes.len() as u64;
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(bytes);
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| anyhow::anyhow!("{shown}:{}: {}", csv_line(&e, &line_of), csv_reason(&e)))?
        .iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    let col = |name: &str| header.iter().position(|h| h == name);
    let (Some(c_email), Some(c_topics), Some(c_status), Some(c_digests)) =
        (col("email"), col("topics"), col("status"), col("digests"))
    else {
        anyhow::bail!(
            "{shown}:1: the header must be email,topics,status,digests (optional: consented_at,source,language)"
        );
    };
    let (c_at, c_source, c_language) = (col("consented_at"), col("source"), col("language"));
    let default_source = format!(
        "import {}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    );
    let mut store = Store::connect(config)?;
    store.cache_for_bulk(64);
    let version = config.privacy.consent_text_version.clone();
    let progress = super::progress_bar(size, "{msg} {bar:40} {bytes}/{total_bytes}, {eta} left");
    let (mut counts, mut problems) = (std::collections::BTreeMap::<&str, usize>::new(), 0);
    let mut batch = Vec::with_capacity(IMPORT_BATCH);
    let mut flush = |batch: &mut Vec<ImportRow>,
                     counts: &mut std::collections::BTreeMap<&str, usize>|
     -> anyhow::Result<()> {
        for outcome in store.import_many(batch, now)? {
            *counts
                .entry(match outcome {
                    Imported::Added => "added",
                    Imported::Updated => "updated",
                    Imported::Blocked => "blocked",
                    Imported::Unsubscribed => "unsubscribed",
                })
                .or_default() += 1;
        }
        batch.clear();
        Ok(())
    };
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                problems += 1;
                eprintln!("{shown}:{}: {}", csv_line(&e, &line_of), csv_reason(&e));
                if e.is_io_error() {
                    break;
                }
                continue;
            }
        }
        let line = line_of(record.position().map(|p| p.byte()).unwrap_or(0));
        if record.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        match import_row(
            config,
            &record,
            [c_email, c_topics, c_status, c_digests],
            [c_at, c_source, c_language],
            &default_source,
            &version,
        ) {
            Ok(row) => batch.push(row),
            Err(e) => {
                problems += 1;
                eprintln!("{shown}:{line}: {e:#}");
            }
        }
        if batch.len() >= IMPORT_BATCH {
            flush(&mut batch, &mut counts)?;
            if let Some(p) = &progress {
                p.set_position(record.position().map(|p| p.byte()).unwrap_or(0));
            }
        }
    }
    flush(&mut batch, &mut counts)?;
    if let Some(p) = progress {
        p.finish_and_clear();
    }
    let get = |k: &str| counts.get(k).copied().unwrap_or(0);
    tracing::info!(
        added = get("added"),
        updated = get("updated"),
        unsubscribed = get("unsubscribed"),
        skipped_blocked = get("blocked"),
        problems,
        "import finished"
    );
    Ok(if problems > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// One CSV record as an import row, validated as `subscribers add` validates.
fn import_row(
    config: &Config,
    record: &csv::StringRecord,
    [c_email, c_topics, c_status, c_digests]: [usize; 4],
    [c_at, c_source, c_language]: [Option<usize>; 3],
    default_source: &str,
    version: &str,
) -> anyhow::Result<ImportRow> {
    let field = |i: Option<usize>| i.and_then(|i| record.get(i)).map(str::trim).unwrap_or("");
    let list = |s: &str| {
        s.split(';')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect::<Vec<_>>()
    };
    let email = Email::parse(field(Some(c_email))).map_err(|e| anyhow::anyhow!("{e}"))?;
    let source = match field(c_source) {
        "" => default_source.to_string(),
        s => s.to_string(),
    };
    let status = match field(Some(c_status)) {
        "active" => Status::Active,
        "pending" => Status::Pending,
        "unsubscribed" => {
            return Ok(ImportRow {
                email,
                source,
                action: ImportAction::Block,
            });
        }
        other => anyhow::bail!("status `{other}` is not active, pending or unsubscribed"),
    };
    let choice = Choice {
        topics: list(field(Some(c_topics))),
        digests: check_digests(config, &list(field(Some(c_digests))))?,
        language: check_language(config, Some(field(c_language)))?,
    };
    let consented_at = match (status, field(c_at)) {
        (Status::Pending, _) | (_, "") => None,
        (_, s) => Some(
            crate::content::item::parse_date(s, config.site.timezone)
                .map_err(anyhow::Error::msg)?
                .timestamp(),
        ),
    };
    Ok(ImportRow {
        email,
        source,
        action: ImportAction::Subscribe {
            status,
            choice,
            consented_at,
            consent_version: version.to_string(),
        },
    })
}

fn csv_line(e: &csv::Error, line_of: &dyn Fn(u64) -> u64) -> u64 {
    e.position().map(|p| line_of(p.byte())).unwrap_or(1)
}

/// The byte offsets where lines after the first start.
fn memchr_lines(bytes: &[u8]) -> impl Iterator<Item = u64> + '_ {
    bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .map(|(i, _)| i as u64 + 1)
}

fn csv_reason(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "not UTF-8 text".into(),
        csv::ErrorKind::Io(io) => io.to_string(),
        _ => e.to_string(),
    }
}
