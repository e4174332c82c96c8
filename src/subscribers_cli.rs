//! `herold subscribers …`: manage subscribers from the command line, beside a running daemon.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use chrono::TimeZone;
use clap::Subcommand;

use crate::config::Config;
use crate::email::Email;
use crate::store::{Imported, Requested, Status, Store, Subscriber};

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
    },
    /// Unsubscribe an address from everything and erase it; only a keyed hash stays to block
    /// re-imports.
    Remove { email: String },
    /// One line per pending or active subscriber: email, status, topics, digests (tab-separated).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Import a CSV file with the header `email,topics,status,digests[,consented_at,source]`.
    Import { csv: std::path::PathBuf },
    /// Everything stored about an address, as JSON (DSGVO Art. 15).
    Export { email: String },
}

pub fn run(config: &Config, command: &SubscribersCommand) -> anyhow::Result<ExitCode> {
    let now = crate::clock::unix_seconds() as i64;
    match command {
        SubscribersCommand::List { json } => {
            let store = Store::open(&config.database.path)?;
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
                    let status = match (s.status, s.suspended) {
                        (_, true) => "suspended",
                        (Status::Active, false) => "active",
                        (Status::Pending, false) => "pending",
                    };
                    println!(
                        "{}\t{status}\t{}\t{}",
                        s.email,
                        s.topics.join(";"),
                        s.digests.join(";")
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        SubscribersCommand::Remove { email } => {
            let email = parse_email(email)?;
            let mut store = Store::open(&config.database.path)?;
            let had = store.by_email(&email)?.is_some();
            store.block(&email, "command line", now)?;
            tracing::info!(erased = had, "address removed and blocked");
            Ok(ExitCode::SUCCESS)
        }
        SubscribersCommand::Export { email } => {
            let email = parse_email(email)?;
            let store = Store::open(&config.database.path)?;
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
                            "source": e.source, "client_address": e.client_address })
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
        } => {
            let email = parse_email(email)?;
            let digests = check_digests(config, digests)?;
            let version = config.privacy.consent_text_version.clone();
            match consented_at {
                Some(at) => {
                    let at = crate::content::item::parse_date(at, config.site.timezone)
                        .map_err(anyhow::Error::msg)?
                        .timestamp();
                    let mut store = Store::open(&config.database.path)?;
                    let source = source.as_deref().unwrap_or("command line");
                    match store.import(
                        &email,
                        Status::Active,
                        topics,
                        &digests,
                        Some(at),
                        source,
                        &version,
                        now,
                    )? {
                        Imported::Blocked => {
                            eprintln!(
                                "this address unsubscribed earlier and is blocked; it can subscribe again itself"
                            );
                            Ok(ExitCode::from(1))
                        }
                        _ => Ok(ExitCode::SUCCESS),
                    }
                }
                None => add_pending(config, &email, topics, &digests, &version, now),
            }
        }
        SubscribersCommand::Import { csv } => import_csv(config, csv, now),
    }
}

/// A pending subscription with a confirmation mail sent now.
fn add_pending(
    config: &Config,
    email: &Email,
    topics: &[String],
    digests: &[String],
    version: &str,
    now: i64,
) -> anyhow::Result<ExitCode> {
    // The mail transport (and its connection pool) lives inside the runtime, start to end.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let subs = crate::daemon::open_subscriptions(config)?;
        let outcome = subs
            .store
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .request(email, topics, digests, version, None, now)?;
        let (s, kind): (Subscriber, _) = match outcome {
            Requested::Confirm(s) => (s, crate::web::subscribe::MailKind::Confirm),
            Requested::AlreadyActive(s) => (s, crate::web::subscribe::MailKind::Notice),
            Requested::Quiet => {
                eprintln!("this address got enough mails today; try again tomorrow");
                return Ok(ExitCode::from(1));
            }
        };
        crate::web::subscribe::send_mail(config, &subs, &s, kind).await?;
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
        "suspended": s.suspended,
    })
}

/// Imports the rows of a CSV file. Every bad row is reported as `FILE:LINE: reason` and
/// skipped; exit 1 if there was one.
fn import_csv(config: &Config, path: &Path, now: i64) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let shown = path.display();
    let mut rows = parse_csv(&text).into_iter();
    let Some((_, header)) = rows.next() else {
        anyhow::bail!("{shown}:1: the file is empty");
    };
    let header: Vec<String> = header
        .iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    let col = |name: &str| header.iter().position(|h| h == name);
    let (Some(c_email), Some(c_topics), Some(c_status), Some(c_digests)) =
        (col("email"), col("topics"), col("status"), col("digests"))
    else {
        anyhow::bail!(
            "{shown}:1: the header must be email,topics,status,digests (optional: consented_at,source)"
        );
    };
    let (c_at, c_source) = (col("consented_at"), col("source"));
    let mut store = Store::open(&config.database.path)?;
    let version = config.privacy.consent_text_version.clone();
    let (mut counts, mut problems) = (std::collections::BTreeMap::<&str, usize>::new(), 0);
    for (line, row) in rows {
        let field = |i: Option<usize>| i.and_then(|i| row.get(i)).map(|s| s.trim()).unwrap_or("");
        let list = |s: &str| {
            s.split(';')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(String::from)
                .collect::<Vec<_>>()
        };
        let result = (|| -> anyhow::Result<&'static str> {
            let email = Email::parse(field(Some(c_email))).map_err(|e| anyhow::anyhow!("{e}"))?;
            let digests = check_digests(config, &list(field(Some(c_digests))))?;
            let topics = list(field(Some(c_topics)));
            let source = match field(c_source) {
                "" => format!(
                    "import {}",
                    path.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                ),
                s => s.to_string(),
            };
            let at = match field(c_at) {
                "" => None,
                s => Some(
                    crate::content::item::parse_date(s, config.site.timezone)
                        .map_err(anyhow::Error::msg)?
                        .timestamp(),
                ),
            };
            let outcome = match field(Some(c_status)) {
                "active" => store.import(
                    &email,
                    Status::Active,
                    &topics,
                    &digests,
                    at,
                    &source,
                    &version,
                    now,
                )?,
                "pending" => store.import(
                    &email,
                    Status::Pending,
                    &topics,
                    &digests,
                    None,
                    &source,
                    &version,
                    now,
                )?,
                "unsubscribed" => store.block(&email, &source, now)?,
                other => anyhow::bail!("status `{other}` is not active, pending or unsubscribed"),
            };
            Ok(match outcome {
                Imported::Added => "added",
                Imported::Updated => "updated",
                Imported::Blocked => "blocked",
                Imported::Unsubscribed => "unsubscribed",
            })
        })();
        match result {
            Ok(what) => *counts.entry(what).or_default() += 1,
            Err(e) => {
                problems += 1;
                eprintln!("{shown}:{line}: {e:#}");
            }
        }
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

/// RFC 4180 CSV: fields separated by commas, optionally in double quotes (`""` for a quote,
/// line breaks allowed inside). Gives each record with the line it starts on. Empty lines
/// are skipped.
pub fn parse_csv(text: &str) -> Vec<(usize, Vec<String>)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut rows = Vec::new();
    let (mut row, mut field) = (Vec::new(), String::new());
    let (mut line, mut start_line, mut quoted, mut any) = (1, 1, false, false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                '\n' => {
                    line += 1;
                    field.push('\n');
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' => {
                quoted = true;
                any = true;
            }
            ',' => {
                row.push(std::mem::take(&mut field));
                any = true;
            }
            '\r' => {}
            '\n' => {
                if any || !field.is_empty() {
                    row.push(std::mem::take(&mut field));
                    rows.push((start_line, std::mem::take(&mut row)));
                }
                any = false;
                line += 1;
                start_line = line;
            }
            _ => {
                field.push(c);
                any = true;
            }
        }
    }
    if any || !field.is_empty() {
        row.push(field);
        rows.push((start_line, row));
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::parse_csv;

    #[test]
    fn csv_with_quotes_and_lines() {
        let rows = parse_csv(
            "email,topics\r\n\"a@x.de\",\"OZG;\"\"FIM\"\"\"\n\nb@x.de,\"zwei\nzeilen\"\nc@x.de,",
        );
        assert_eq!(rows[0], (1, vec!["email".into(), "topics".into()]));
        assert_eq!(rows[1], (2, vec!["a@x.de".into(), "OZG;\"FIM\"".into()]));
        assert_eq!(rows[2], (4, vec!["b@x.de".into(), "zwei\nzeilen".into()]));
        assert_eq!(rows[3], (6, vec!["c@x.de".into(), "".into()]));
    }
}
