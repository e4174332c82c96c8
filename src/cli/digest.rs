//! `herold digest list|preview|send`.

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{TimeZone, Utc};
use clap::Subcommand;

use crate::config::Config;
use crate::digest::run::{self, Sender};
use crate::email::Email;

#[derive(Debug, Subcommand)]
pub enum DigestCommand {
    /// Each digest: its schedule in words, the next run, and what it would send now.
    List,
    /// Render the next digest as an .eml file without sending anything.
    Preview {
        name: String,
        /// As this subscriber would get it (their topics and links).
        #[arg(long)]
        to: Option<String>,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// In this language (one of site.languages; default: the subscriber's, else the
        /// site's).
        #[arg(long)]
        language: Option<String>,
    },
    /// Run a digest now, as the schedule would (an unfinished run is finished first).
    Send {
        name: String,
        /// Show what would be sent; record and send nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

pub fn run(config: &Config, command: &DigestCommand) -> anyhow::Result<ExitCode> {
    let corpus = super::read_corpus(config)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // The mail transport lives inside the runtime from start to end.
    runtime.block_on(async {
        let subs = crate::subscriptions::Subscriptions::open(config)?;
        let credentials = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
        let mut sender = Sender::new(config, &subs, crate::mail::dkim_signer(config, credentials.as_deref())?);
        sender.progress = super::progress_bar(0, "{msg} {bar:40} {pos}/{len} mails, {per_sec}, {eta} left");
        let now = crate::clock::unix_seconds() as i64;
        match command {
            DigestCommand::List => list(config, &sender, &corpus, now),
            DigestCommand::Send { name, dry_run } => {
                let digest = run::find(config, name)?;
                let _lock = crate::lock::acquire_digest(&config.database, name)?;
                // SIGTERM or Ctrl-C: no new mail is started; those in flight finish and are
                // recorded; the rest stays pending for the next send.
                let stop = sender.stop.clone();
                tokio::spawn(async move {
                    use tokio::signal::unix::{SignalKind, signal};
                    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else { return };
                    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
                    tracing::info!("stopping: the mails in flight finish, the rest stays for the next send");
                    stop.store(true, std::sync::atomic::Ordering::SeqCst);
                });
                let r = sender.send(digest, &corpus, now, *dry_run).await?;
                if let Some(p) = &sender.progress {
                    p.finish_and_clear();
                }
                let stopped = sender.stop.load(std::sync::atomic::Ordering::SeqCst);
                if let Some(why) = &r.nothing {
                    if r.sent + r.failed + r.skipped > 0 {
                        println!("{name}: an unfinished run was finished: {} sent, {} failed, {} skipped", r.sent, r.failed, r.skipped);
                    }
                    println!("{name}: no new run ({why}); {} item(s), {} recipient(s)", r.items, r.recipients);
                } else {
                    println!(
                        "{name}: run {} with {} item(s): {} sent, {} failed, {} deferred, {} skipped",
                        r.run_id.unwrap_or_default(),
                        r.items,
                        r.sent,
                        r.failed,
                        r.deferred,
                        r.skipped
                    );
                }
                if stopped {
                    println!("{name}: stopped by a signal; the next send finishes the run");
                    return Ok(ExitCode::SUCCESS);
                }
                Ok(if r.deferred > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
            }
            DigestCommand::Preview {
                name,
                to,
                out,
                language,
            } => {
                let digest = run::find(config, name)?;
                let (plan, _) = sender.plan_now(digest, &corpus, now, false)?;
                let subscriber = match to {
                    Some(e) => {
                        let email = Email::parse(e).map_err(|err| anyhow::anyhow!("`{e}`: {err}"))?;
                        let found = sender.store(|s| s.by_email(&email))?;
                        found.ok_or_else(|| anyhow::anyhow!("`{e}` is not a subscriber"))?
                    }
                    None => sample_subscriber(digest),
                };
                let mut subscriber = subscriber;
                if let Some(l) = super::subscribers::check_language(config, language.as_deref())? {
                    subscriber.language = Some(l);
                }
                let mut items: Vec<_> = crate::digest::select::for_subscriber(&plan.items.iter().collect::<Vec<_>>(), &subscriber.topics)
                    .into_iter()
                    .cloned()
                    .collect();
                if items.is_empty() {
                    eprintln!("no new items for this digest now; the preview shows the newest published items instead");
                    let start = crate::feed::published_from(&corpus.items, crate::clock::now_in(config.site.timezone));
                    items = corpus.items[start..].iter().take(5).cloned().collect();
                }
                let refs: Vec<_> = items.iter().collect();
                let since = Utc.timestamp_opt(plan.window_start, 0).single().unwrap_or_default();
                let now_utc = Utc.timestamp_opt(now, 0).single().unwrap_or_default();
                let message = sender.compose(digest, 0, &subscriber, &refs, &Default::default(), since, now_utc)?;
                let bytes = message.bytes;
                match out {
                    Some(path) => {
                        crate::output::write_atomic(path, &bytes)?;
                        eprintln!("wrote {}", path.display());
                    }
                    None => std::io::Write::write_all(&mut std::io::stdout(), &bytes)?,
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

fn sample_subscriber(digest: &crate::config::Digest) -> crate::store::Subscriber {
    crate::store::Subscriber {
        id: 0,
        email: Email::parse("vorschau@example.org").expect("a valid address"),
        status: crate::store::Status::Active,
        topics: Vec::new(),
        digests: vec![digest.name.clone()],
        created_at: 0,
        confirmed_at: None,
        consent_version: String::new(),
        source: "preview".into(),
        client_address: None,
        suspended: None,
        language: None,
    }
}

fn list(
    config: &Config,
    sender: &Sender,
    corpus: &crate::content::Corpus,
    now: i64,
) -> anyhow::Result<ExitCode> {
    let now_utc = Utc.timestamp_opt(now, 0).single().unwrap_or_default();
    for d in &config.digest {
        let schedule = run::schedule(config, d)?;
        let (plan, last) = sender.plan_now(d, corpus, now, false)?;
        let next = schedule
            .next_after(now_utc)
            .map(|t| schedule.local(t))
            .unwrap_or_else(|| "never".into());
        println!("{} ({})", d.name, d.title.as_deref().unwrap_or(&d.name));
        println!(
            "  schedule: {} ({}), time zone {}",
            schedule.line,
            schedule.describe(),
            schedule.tz
        );
        println!("  next run: {next}");
        match &last {
            Some(r) => println!(
                "  last run: {}",
                schedule.local(
                    Utc.timestamp_opt(r.started_at, 0)
                        .single()
                        .unwrap_or_default()
                )
            ),
            None => println!("  last run: none yet"),
        }
        let verdict = if plan.below_minimum {
            format!(
                " (below min_items = {}: nothing would be sent)",
                d.min_items
            )
        } else {
            String::new()
        };
        println!(
            "  now: {} item(s) for {} recipient(s){verdict}",
            plan.items.len(),
            plan.recipients.len()
        );
        for i in &plan.items {
            println!("    - {} ({})", i.title, i.date.format("%Y-%m-%d"));
        }
    }
    Ok(ExitCode::SUCCESS)
}
