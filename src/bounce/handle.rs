//! Which delivery a returned message is about, and what that changes: a bounce is
//! recorded (and may suspend the address), a complaint unsubscribes, a forged token changes
//! nothing, an unmatched message is kept for the operator to read.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::report::{self, Class, Report};
use crate::config::Config;
use crate::email::ReturnPath;
use crate::store::{BounceLimits, Bounced, Store};
use crate::token::{Keys, ReturnToken};

/// What matching needs from the configuration.
pub struct Matcher<'a> {
    pub return_path: Option<ReturnPath>,
    pub keys: &'a Keys,
    /// The host in herold's `Message-ID`s (`site.base_url`'s).
    pub host: String,
    pub limits: BounceLimits,
    pub unmatched_dir: PathBuf,
    pub keep: std::time::Duration,
}

impl<'a> Matcher<'a> {
    pub fn new(config: &Config, keys: &'a Keys) -> anyhow::Result<Matcher<'a>> {
        let return_path = match &config.mail.return_path {
            Some(r) => Some(ReturnPath::parse(r).map_err(|e| anyhow::anyhow!("{e}"))?),
            None => None,
        };
        Ok(Matcher {
            return_path,
            keys,
            host: config
                .site
                .base_url
                .host_str()
                .unwrap_or("localhost")
                .to_ascii_lowercase(),
            limits: BounceLimits::from(&config.bounce),
            unmatched_dir: config.bounce.unmatched_dir(&config.database.path),
            keep: config.bounce.keep,
        })
    }
}

/// What handling one message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    pub class: Class,
    pub status: Option<String>,
    /// The delivery it was matched to: (run, subscriber); run 0 is a mail outside a digest.
    pub delivery: Option<(i64, i64)>,
    /// Set when this message suspended the address, with the reason.
    pub suspended: Option<String>,
}

/// Why a message could not be handled now; the MTA (or the next poll) tries again.
#[derive(Debug, thiserror::Error)]
pub enum Retry {
    #[error("database: {0}")]
    Database(#[from] crate::store::Error),
    #[error("cannot keep the unmatched message in {dir}: {error}")]
    Keep { dir: String, error: std::io::Error },
}

/// Where a message should go when nothing matches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmatched {
    /// Keep a copy in `unmatched_dir` (a message from a pipe exists nowhere else).
    Keep,
    /// It stays in the IMAP mailbox: keep no copy.
    Leave,
}

/// Reads, matches and records one message. `recipient` is the envelope recipient the MTA
/// delivered it to, when known.
pub fn handle(
    raw: &[u8],
    recipient: Option<&str>,
    m: &Matcher<'_>,
    store: &mut Store,
    unmatched: Unmatched,
    now: i64,
) -> Result<Handled, Retry> {
    let report = report::read(raw);
    let mut handled = Handled {
        class: Class::Ignored,
        status: report.status.clone(),
        delivery: None,
        suspended: None,
    };
    if report.class == Some(Class::Ignored) {
        count_quietly(store, Class::Ignored);
        log(&handled, &report);
        return Ok(handled);
    }
    let delivery = match find_delivery(&report, recipient, m, store)? {
        Found::Forged => {
            handled.class = Class::Forged;
            count_quietly(store, Class::Forged);
            log(&handled, &report);
            return Ok(handled);
        }
        Found::Delivery(run, subscriber) => Some((run, subscriber)),
        Found::Nothing => None,
    };
    handled.delivery = delivery;
    let class = match (report.class, delivery) {
        (_, None) => {
            handled.class = Class::Unmatched;
            if unmatched == Unmatched::Keep {
                keep(&m.unmatched_dir, raw, now)?;
            }
            count_quietly(store, Class::Unmatched);
            log(&handled, &report);
            return Ok(handled);
        }
        // Something else came back to the return path (a person's answer): nothing to do.
        (None, Some(_)) | (Some(Class::Ignored), Some(_)) => {
            count_quietly(store, Class::Ignored);
            log(&handled, &report);
            return Ok(handled);
        }
        (Some(c), Some(_)) => c,
    };
    let (run, subscriber) = delivery.expect("matched above");
    handled.class = class;
    let outcome = match class {
        Class::Complaint => store.record_complaint(subscriber, "feedback report", now)?,
        Class::Hard | Class::Soft => store.record_bounce(
            subscriber,
            run,
            class == Class::Hard,
            report.status.as_deref(),
            m.limits,
            now,
        )?,
        _ => Bounced::Repeated,
    };
    match outcome {
        Bounced::Recorded { suspended } => {
            if let Some(reason) = &suspended {
                tracing::warn!(subscriber, reason = %reason, "address suspended");
            }
            handled.suspended = suspended;
        }
        Bounced::Unsubscribed => {
            tracing::warn!(
                subscriber,
                "complaint: the address was unsubscribed, erased and blocked"
            );
        }
        Bounced::Gone => tracing::info!(subscriber, "the subscriber no longer exists"),
        Bounced::Repeated => {}
    }
    log(&handled, &report);
    Ok(handled)
}

enum Found {
    Delivery(i64, i64),
    Forged,
    Nothing,
}

/// A return-path token first (signed: trusted as it is); without one, a returned
/// `Message-ID` of herold's whose subscriber has one of the addresses the report names.
fn find_delivery(
    report: &Report,
    recipient: Option<&str>,
    m: &Matcher<'_>,
    store: &Store,
) -> Result<Found, Retry> {
    if let Some(rp) = &m.return_path {
        let mut forged = false;
        let candidates = recipient
            .into_iter()
            .chain(report.return_paths.iter().map(String::as_str));
        for address in candidates {
            let Some(token) = rp.token_of(address) else {
                continue;
            };
            match m.keys.verify_return(token) {
                Some(ReturnToken::Valid { run, subscriber }) => {
                    return Ok(Found::Delivery(run, subscriber));
                }
                Some(ReturnToken::Forged) | None => forged = true,
            }
        }
        if forged {
            return Ok(Found::Forged);
        }
    }
    for (run, subscriber, host) in &report.message_ids {
        if *host != m.host {
            continue;
        }
        let Some(s) = store.get(*subscriber)? else {
            continue;
        };
        if report.recipients.iter().any(|r| r == s.email.as_str()) {
            return Ok(Found::Delivery(*run, *subscriber));
        }
    }
    Ok(Found::Nothing)
}

/// Counts a message that changed nothing; a busy database only loses the count.
fn count_quietly(store: &mut Store, class: Class) {
    if let Err(e) = store.count_bounce(class.as_str()) {
        tracing::debug!("bounce count: {e}");
    }
}

/// One line per message, without any address.
fn log(h: &Handled, r: &Report) {
    let (run, subscriber) = h.delivery.unwrap_or_default();
    tracing::info!(
        class = h.class.as_str(),
        status = h.status.as_deref().unwrap_or("-"),
        kind = r.kind,
        run,
        subscriber,
        "bounce handled"
    );
}

/// Keeps an unmatched message (mode 0600: it holds addresses), written atomically.
fn keep(dir: &Path, raw: &[u8], now: i64) -> Result<(), Retry> {
    let fail = |error: std::io::Error| Retry::Keep {
        dir: dir.display().to_string(),
        error,
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    let name = format!("{now}-{:016x}.eml", crate::content::item::stable_hash(raw));
    let path = dir.join(&name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = open_private(&tmp).map_err(fail)?;
    f.write_all(raw).map_err(fail)?;
    f.sync_all().map_err(fail)?;
    std::fs::rename(&tmp, &path).map_err(fail)
}

fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

/// Deletes kept messages older than `keep` at `now` (Unix seconds); gives how many.
pub fn purge_unmatched(dir: &Path, keep: std::time::Duration, now: u64) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let cutoff =
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(now.saturating_sub(keep.as_secs()));
    let mut n = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().ends_with(".eml") {
            continue;
        }
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t < cutoff);
        if old && std::fs::remove_file(e.path()).is_ok() {
            n += 1;
        }
    }
    n
}
