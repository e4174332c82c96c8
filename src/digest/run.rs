//! A digest run: decide its items and recipients, record them, then deliver. The decision
//! is fixed in the database before the first mail goes out, so a second `send` (or a
//! restart) finishes the same run and never starts over.

use std::collections::HashMap;
use std::sync::Arc;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use chrono::{DateTime, TimeZone, Utc};

use super::mail::{self, ItemView, RecipientLinks};
use super::select;
use crate::config::{Config, Digest};
use crate::content::{Corpus, Item};
use crate::mail::Outgoing;
use crate::mail::dkim::Signer;
use crate::mail::mime::{Personal, Prepared};
use crate::schedule::Schedule;
use crate::store::{Run, Subscriber};
use crate::subscriptions::{Subscriptions, links};

/// The digest named `name`, or an error listing the names there are.
pub fn find<'a>(config: &'a Config, name: &str) -> anyhow::Result<&'a Digest> {
    config
        .digest
        .iter()
        .find(|d| d.name == name)
        .ok_or_else(|| {
            let names: Vec<&str> = config.digest.iter().map(|d| d.name.as_str()).collect();
            anyhow::anyhow!(
                "there is no [[digest]] named `{name}` (there are: {})",
                names.join(", ")
            )
        })
}

pub fn schedule(config: &Config, d: &Digest) -> anyhow::Result<Schedule> {
    Schedule::parse(&d.schedule, d.timezone.unwrap_or(config.site.timezone))
        .map_err(anyhow::Error::msg)
}

/// What a run would contain at `now`.
pub struct Plan {
    pub window_start: i64,
    pub items: Vec<Arc<Item>>,
    /// Active subscribers of this digest with at least one item: their id, and their items
    /// as positions in `items`.
    pub recipients: Vec<(i64, Vec<usize>)>,
    /// Fewer items than `min_items`: nothing is sent and the window does not advance.
    pub below_minimum: bool,
}

/// Decides a run of `digest` at `now`. Pure: every input is passed in. `already_sent` are
/// the items of the runs that started at or after the last finished run (see
/// [`select::run_items`]).
#[allow(clippy::too_many_arguments)]
pub fn plan(
    digest: &Digest,
    schedule: &Schedule,
    corpus: &Corpus,
    seen: &HashMap<String, i64>,
    recipients: &[(i64, Vec<String>)],
    last_finished: Option<&Run>,
    already_sent: &[String],
    now: i64,
) -> Plan {
    let now_utc = Utc.timestamp_opt(now, 0).single().unwrap_or_default();
    let window_start = match last_finished {
        Some(run) => run.started_at,
        // The first run covers the time since the schedule's previous fire time.
        None => schedule
            .last_at_or_before(now_utc - chrono::TimeDelta::seconds(1))
            .map_or(now - 7 * 86_400, |t| t.timestamp()),
    };
    let run: Vec<&Arc<Item>> = select::run_items(
        &corpus.items,
        seen,
        window_start,
        now,
        digest.max_age.as_secs() as i64,
        &digest.topics,
        already_sent,
    );
    // Tags by slug, once per item, not once per recipient.
    let slugs: Vec<Vec<String>> = run
        .iter()
        .map(|i| {
            i.tags
                .iter()
                .map(|t| crate::content::slug::slugify(t))
                .collect()
        })
        .collect();
    let all: Vec<usize> = (0..run.len()).collect();
    let recipients = recipients
        .iter()
        .filter_map(|(id, topics)| {
            let mine: Vec<usize> = if topics.is_empty() {
                all.clone()
            } else {
                let wanted: Vec<String> = topics
                    .iter()
                    .map(|t| crate::content::slug::slugify(t))
                    .collect();
                all.iter()
                    .copied()
                    .filter(|&i| slugs[i].iter().any(|s| wanted.contains(s)))
                    .collect()
            };
            (!mine.is_empty()).then_some((*id, mine))
        })
        .collect();
    Plan {
        window_start,
        below_minimum: run.len() < digest.min_items.max(1),
        items: run.into_iter().cloned().collect(),
        recipients,
    }
}

/// What a `send` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub run_id: Option<i64>,
    pub items: usize,
    pub recipients: usize,
    pub sent: usize,
    pub failed: usize,
    /// Temporary failures left pending for a later send.
    pub deferred: usize,
    pub skipped: usize,
    /// Set when nothing was started (the reason).
    pub nothing: Option<String>,
}

/// Everything a sender needs besides the corpus.
pub struct Sender<'a> {
    pub config: &'a Config,
    pub subs: &'a Subscriptions,
    pub dkim: Option<Arc<Signer>>,
    /// Set (by SIGTERM) to start no new mail.
    pub stop: Arc<AtomicBool>,
    /// How often a temporary failure is retried within a run, and the first wait.
    pub retries: u32,
    pub first_backoff: std::time::Duration,
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    pub progress: Option<indicatif::ProgressBar>,
    /// On PostgreSQL: this node's name, under which it claims deliveries in small batches
    /// (several nodes deliver one run); `None` on SQLite, where one process sends a run.
    pub node: Option<String>,
    /// The schedule lease (holder, fence) a daemon plans its runs under (PostgreSQL).
    pub fence: Option<(String, i64)>,
    /// Set when another node took over a claim of this one: it stops.
    lost_claim: AtomicBool,
    /// PostgreSQL: connections of their own for the workers' outcome records, so that
    /// records of several connections are in flight together instead of queueing on one.
    recorders: std::sync::OnceLock<Vec<std::sync::Mutex<crate::store::Store>>>,
    /// Bodies by (language, item ids): rendered and encoded once per item set and language,
    /// with markers for the recipient's links.
    rendered: std::sync::Mutex<HashMap<BodyKey, Arc<Prepared>>>,
}

/// The threads that sign: one per core, not one per signature, and at a lower priority
/// than the thread that talks SMTP, which then always gets a core when the server answers
/// (with dozens of equal signing threads it waited its turn, and the cores idled while
/// it did).
fn signing_pool() -> &'static rayon::ThreadPool {
    static POOL: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
            .thread_name(|i| format!("herold-sign-{i}"))
            .start_handler(|_| {
                // SAFETY: plain system calls on the calling thread; failure only leaves the
                // priority as it was.
                unsafe {
                    let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                    libc::setpriority(libc::PRIO_PROCESS, tid, 5);
                }
            })
            .build()
            .expect("the signing threads start")
    })
}

/// How many mails each worker composes (and signs) ahead of the one it sends.
const COMPOSE_AHEAD: usize = 6;

/// How many pending deliveries are read at a time.
const DELIVERY_PAGE: usize = 1000;

/// The most deliveries a node claims at a time (PostgreSQL): what may go twice when it dies.
const CLAIM_BATCH: usize = 50;

/// What every delivery of one `deliver` call shares.
struct Context<'a> {
    digest: &'a Digest,
    run: &'a Run,
    by_id: &'a HashMap<&'a str, &'a Arc<Item>>,
    renditions: &'a HashMap<String, crate::content::Rendition>,
    since: DateTime<Utc>,
    run_time: DateTime<Utc>,
    counts: &'a Counts,
    now: i64,
    /// The subscribers of the deliveries read so far, fetched a page at a time.
    subscribers: std::sync::Mutex<HashMap<i64, Subscriber>>,
}

/// Where the next page of pending deliveries starts.
struct Source {
    after: i64,
    done: bool,
}

/// A mail being composed: its bytes ready, or being signed on the blocking pool.
struct Composing {
    subscriber_id: i64,
    envelope: lettre::address::Envelope,
    bytes: Bytes,
}

enum Bytes {
    Ready(Vec<u8>),
    Signing(tokio::sync::oneshot::Receiver<Vec<u8>>),
}

impl Composing {
    async fn message(self) -> anyhow::Result<Outgoing> {
        let bytes = match self.bytes {
            Bytes::Ready(b) => b,
            Bytes::Signing(h) => h
                .await
                .map_err(|_| anyhow::anyhow!("the signing thread stopped"))?,
        };
        Ok(Outgoing {
            envelope: self.envelope,
            bytes,
        })
    }
}

/// A recipient's own header values and links, owned (to move onto a signing thread).
struct OwnFields {
    to: String,
    message_id: String,
    list_unsubscribe: String,
    /// In the order of `mail::SLOT_MARKERS`: unsubscribe, preferences.
    slots: [String; 2],
}

impl OwnFields {
    fn assemble(&self, prepared: &Prepared, signer: Option<&Signer>, time: i64) -> Vec<u8> {
        let slots = [self.slots[0].as_str(), self.slots[1].as_str()];
        prepared.assemble(
            &Personal {
                to: &self.to,
                message_id: &self.message_id,
                list_unsubscribe: &self.list_unsubscribe,
                slots: &slots,
            },
            signer,
            time,
        )
    }

    fn envelope(
        &self,
        subs: &Subscriptions,
        run: i64,
        subscriber: i64,
    ) -> anyhow::Result<lettre::address::Envelope> {
        subs.mailer.envelope(&subs.keys, run, subscriber, &self.to)
    }
}

/// A rendered body's key: the run, the language and the ids of its items.
type BodyKey = (i64, String, Vec<String>);

impl<'a> Sender<'a> {
    pub fn new(
        config: &'a Config,
        subs: &'a Subscriptions,
        dkim: Option<Arc<Signer>>,
    ) -> Sender<'a> {
        Sender {
            config,
            subs,
            dkim,
            stop: Arc::new(AtomicBool::new(false)),
            retries: 3,
            first_backoff: std::time::Duration::from_millis(500),
            metrics: None,
            progress: None,
            node: config
                .database
                .url
                .is_some()
                .then(|| crate::store::node_id().to_string()),
            fence: None,
            lost_claim: AtomicBool::new(false),
            recorders: std::sync::OnceLock::new(),
            rendered: std::sync::Mutex::new(HashMap::new()),
        }
    }
}

#[derive(Default)]
struct Counts {
    sent: AtomicUsize,
    failed: AtomicUsize,
    deferred: AtomicUsize,
    skipped: AtomicUsize,
    retried: AtomicUsize,
}

/// Spaces mails evenly at `per_second` over all workers.
struct Pacer {
    next: tokio::sync::Mutex<tokio::time::Instant>,
    interval: std::time::Duration,
}

impl Pacer {
    fn new(per_second: f64) -> Pacer {
        Pacer {
            next: tokio::sync::Mutex::new(tokio::time::Instant::now()),
            interval: std::time::Duration::from_secs_f64(1.0 / per_second.max(0.001)),
        }
    }

    /// Waits for this mail's slot. A slot that has come returns at once: tokio's timers
    /// have millisecond resolution, and sleeping to "now" would cost each mail up to 1 ms.
    async fn wait(&self) {
        let slot = {
            let mut next = self.next.lock().await;
            let now = tokio::time::Instant::now();
            let slot = (*next).max(now);
            *next = slot + self.interval;
            slot
        };
        if slot > tokio::time::Instant::now() {
            tokio::time::sleep_until(slot).await;
        }
    }
}

impl Sender<'_> {
    /// Finishes an unfinished run of `digest`, if there is one; starts nothing new.
    pub async fn finish(
        &self,
        digest: &Digest,
        corpus: &Corpus,
        now: i64,
    ) -> anyhow::Result<Report> {
        match self.store(|s| s.unfinished_run(&digest.name))? {
            Some(run) => self.deliver(digest, &run, corpus, now).await,
            None => Ok(Report::default()),
        }
    }

    /// Runs `digest` now as the schedule would: first finishes an unfinished run of it, then
    /// starts a new one if there is something to send. With `dry_run`, nothing is recorded
    /// or sent; the report says what would happen.
    pub async fn send(
        &self,
        digest: &Digest,
        corpus: &Corpus,
        now: i64,
        dry_run: bool,
    ) -> anyhow::Result<Report> {
        let mut report = Report::default();
        let unfinished = self.store(|s| s.unfinished_run(&digest.name))?;
        if let Some(run) = unfinished {
            if dry_run {
                report.nothing = Some(format!(
                    "run {} is unfinished; a send would finish it first",
                    run.id
                ));
                return Ok(report);
            }
            tracing::info!(digest = %digest.name, run = run.id, "finishing an unfinished run first");
            report = self.deliver(digest, &run, corpus, now).await?;
            if report.deferred > 0 {
                return Ok(report);
            }
        }
        let (plan, _) = self.plan_now(digest, corpus, now, !dry_run)?;
        report.items = plan.items.len();
        report.recipients = plan.recipients.len();
        report.run_id = None;
        if plan.below_minimum {
            report.nothing = Some(format!(
                "{} new item(s), fewer than min_items = {}",
                plan.items.len(),
                digest.min_items
            ));
            return Ok(report);
        }
        if dry_run {
            report.nothing = Some("dry run".into());
            return Ok(report);
        }
        let item_ids: Vec<String> = plan.items.iter().map(|i| i.id.clone()).collect();
        // Most recipients share an item set: one JSON text per set, not per recipient.
        let mut sets: HashMap<&[usize], String> = HashMap::new();
        for (_, its) in &plan.recipients {
            sets.entry(its.as_slice()).or_insert_with(|| {
                serde_json::to_string(
                    &its.iter()
                        .map(|&i| plan.items[i].id.as_str())
                        .collect::<Vec<_>>(),
                )
                .expect("ids serialise")
            });
        }
        let deliveries: Vec<(i64, &str)> = plan
            .recipients
            .iter()
            .map(|(id, its)| (*id, sets[its.as_slice()].as_str()))
            .collect();
        let fence = self.fence.as_ref().map(|(h, f)| (h.as_str(), *f));
        let started = self.subs.with_store(|s| {
            s.start_run_fenced(
                &digest.name,
                now,
                plan.window_start,
                &item_ids,
                &deliveries,
                fence,
            )
        });
        let run = match started {
            Ok(run) => run,
            Err(crate::store::Error::Planned(why)) => {
                // Another node planned it first: help deliver that run instead.
                tracing::info!(digest = %digest.name, "{why}");
                return self.finish(digest, corpus, now).await;
            }
            Err(e) => return Err(anyhow::anyhow!("database: {e}")),
        };
        tracing::info!(digest = %digest.name, run = run.id, items = item_ids.len(), recipients = deliveries.len(), "digest run started");
        self.archive_run(digest, corpus);
        let r = self.deliver(digest, &run, corpus, now).await?;
        report.run_id = r.run_id;
        report.sent += r.sent;
        report.failed += r.failed;
        report.deferred += r.deferred;
        report.skipped += r.skipped;
        Ok(report)
    }

    /// Writes the archive pages of `digest` (its runs, the new one among them) before its
    /// mails go out, since they link there. A failure is logged: the mails go out anyway.
    fn archive_run(&self, digest: &Digest, corpus: &Corpus) {
        if !(self.config.pages.enabled && digest.archive) {
            return;
        }
        let result = (|| -> anyhow::Result<()> {
            let meta = crate::pages::PageMeta::from_config(self.config);
            let archives = self
                .subs
                .with_store(|s| Ok(crate::pages::load_archives(s, &meta)))
                .map_err(|e| anyhow::anyhow!("database: {e}"))??;
            let templates = self.subs.templates();
            let now = crate::clock::now_in(self.config.site.timezone);
            let cache = crate::pages::EntryCache::default();
            let plan = crate::pages::plan(
                &corpus.items,
                None,
                now,
                &meta,
                templates.default_language(),
                &archives,
                &cache,
            );
            crate::pages::write_only(&self.config.pages.dir, &plan, &|i| {
                plan.is_archive_of(i, &digest.name)
            })?;
            Ok(())
        })();
        if let Err(e) = result {
            tracing::warn!(digest = %digest.name, "cannot write the digest's archive pages: {e:#}");
        }
    }

    /// Plans a run of `digest` at `now` from the database's state (first sights, the last
    /// finished run, the items sent since, the recipients); with `record`, first records the
    /// first sight of the corpus's items. Gives the plan and the last finished run.
    pub fn plan_now(
        &self,
        digest: &Digest,
        corpus: &Corpus,
        now: i64,
        record: bool,
    ) -> anyhow::Result<(Plan, Option<Run>)> {
        let schedule = schedule(self.config, digest)?;
        let seen = if record {
            let ids: Vec<&str> = corpus.items.iter().map(|i| i.id.as_str()).collect();
            self.store(|s| s.record_seen(&ids, now))?
        } else {
            self.store(|s| s.seen())?
        };
        let last = self.store(|s| s.last_finished_run(&digest.name))?;
        let recipients = self.store(|s| s.digest_recipients(&digest.name))?;
        let already = match &last {
            Some(r) => self.store(|s| s.items_of_runs_since(&digest.name, r.started_at))?,
            None => Vec::new(),
        };
        let plan = plan(
            digest,
            &schedule,
            corpus,
            &seen,
            &recipients,
            last.as_ref(),
            &already,
            now,
        );
        Ok((plan, last))
    }

    /// Sends the pending deliveries of `run` and records each outcome as it comes:
    /// `mail.concurrency` workers (one SMTP connection each, reused), paced together to
    /// `mail.rate_per_second`, temporary failures retried with exponential backoff and
    /// jitter. When `stop` is set, no new mail is started; those in flight finish and are
    /// recorded, the rest stay pending.
    pub async fn deliver(
        &self,
        digest: &Digest,
        run: &Run,
        corpus: &Corpus,
        now: i64,
    ) -> anyhow::Result<Report> {
        let started = std::time::Instant::now();
        self.lost_claim.store(false, Ordering::SeqCst);
        let by_id: HashMap<&str, &Arc<Item>> =
            corpus.items.iter().map(|i| (i.id.as_str(), i)).collect();
        let renditions: HashMap<String, crate::content::Rendition> = run
            .items
            .iter()
            .filter_map(|id| by_id.get(id.as_str()))
            .map(|i| (i.id.clone(), i.render()))
            .collect();
        let since = Utc
            .timestamp_opt(run.window_start, 0)
            .single()
            .unwrap_or_default();
        let run_time = Utc
            .timestamp_opt(run.started_at, 0)
            .single()
            .unwrap_or_default();
        let queue = std::sync::Mutex::new(std::collections::VecDeque::new());
        let total = self
            .store(|s| s.delivery_counts(run.id))?
            .get("pending")
            .copied()
            .unwrap_or(0) as usize;
        if let Some(p) = &self.progress {
            p.set_length(total as u64);
            p.set_message(digest.name.clone());
        }
        let pacer = Pacer::new(self.config.mail.rate_per_second);
        let counts = Counts::default();
        let workers_wanted = self.config.mail.concurrency.clamp(1, total.max(1));
        if self.node.is_some() {
            self.recorders.get_or_init(|| {
                (0..workers_wanted)
                    .filter_map(|_| crate::store::Store::connect(self.config).ok())
                    .map(std::sync::Mutex::new)
                    .collect()
            });
        }
        // Pending deliveries are read a page at a time, so a run for many subscribers needs
        // no more memory than a page.
        // Pending deliveries are read a page at a time (on PostgreSQL: claimed in small
        // batches), by whichever worker runs out first: no worker waits for the others
        // between pages, and a run for many subscribers needs no more memory than a page.
        let source = std::sync::Mutex::new(Source {
            after: i64::MIN,
            done: false,
        });
        let ctx = Context {
            digest,
            run,
            by_id: &by_id,
            renditions: &renditions,
            since,
            run_time,
            counts: &counts,
            now,
            subscribers: std::sync::Mutex::new(HashMap::new()),
        };
        let worker = || async {
            let mut connection = self.subs.mailer.connection();
            // Each worker composes (and signs) its next mail while the server takes the
            // current one, so signatures keep every core busy.
            let mut ahead: std::collections::VecDeque<Composing> =
                std::collections::VecDeque::with_capacity(COMPOSE_AHEAD + 1);
            loop {
                if self.stop.load(Ordering::SeqCst) || self.lost_claim.load(Ordering::SeqCst) {
                    // Mails composed ahead but not sent stay pending (on PostgreSQL their
                    // claims expire and they go to whoever asks next).
                    return Ok::<(), anyhow::Error>(());
                }
                while ahead.len() <= COMPOSE_AHEAD {
                    match self.compose_next(&queue, &source, &ctx)? {
                        Some(c) => ahead.push_back(c),
                        None => break,
                    }
                }
                let Some(current) = ahead.pop_front() else {
                    return Ok(());
                };
                let subscriber_id = current.subscriber_id;
                let message = current.message().await?;
                self.send_one(&mut connection, &ctx, subscriber_id, &message, &pacer)
                    .await?;
                if let Some(p) = &self.progress {
                    p.inc(1);
                }
            }
        };
        let workers: Vec<_> = (0..workers_wanted).map(|_| worker()).collect();
        for r in futures_util::future::join_all(workers).await {
            r?;
        }
        let report = Report {
            run_id: Some(run.id),
            sent: counts.sent.load(Ordering::SeqCst),
            failed: counts.failed.load(Ordering::SeqCst),
            deferred: counts.deferred.load(Ordering::SeqCst),
            skipped: counts.skipped.load(Ordering::SeqCst),
            ..Report::default()
        };
        let done =
            self.store(|s| s.finish_run_if_done(run.id, crate::clock::unix_seconds() as i64))?;
        if let Some(m) = &self.metrics {
            m.digest_sent
                .fetch_add(report.sent as u64, Ordering::Relaxed);
            m.digest_failed
                .fetch_add(report.failed as u64, Ordering::Relaxed);
            m.digest_retried.fetch_add(
                counts.retried.load(Ordering::SeqCst) as u64,
                Ordering::Relaxed,
            );
            m.digest_run_micros
                .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        }
        tracing::info!(
            digest = %digest.name,
            run = run.id,
            sent = report.sent,
            failed = report.failed,
            deferred = report.deferred,
            skipped = report.skipped,
            retried = counts.retried.load(Ordering::SeqCst),
            stopped = self.stop.load(Ordering::SeqCst),
            finished = done,
            seconds = started.elapsed().as_secs_f64(),
            "digest deliveries"
        );
        Ok(report)
    }

    /// Takes the next delivery from the queue and starts composing its mail; deliveries
    /// whose subscriber or items are gone are recorded as skipped on the way. `None` when
    /// the queue is empty.
    fn compose_next(
        &self,
        queue: &std::sync::Mutex<std::collections::VecDeque<crate::store::Delivery>>,
        source: &std::sync::Mutex<Source>,
        ctx: &Context<'_>,
    ) -> anyhow::Result<Option<Composing>> {
        loop {
            let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
            let d = match next {
                Some(d) => d,
                None => {
                    if !self.refill(queue, source, ctx)? {
                        return Ok(None);
                    }
                    continue;
                }
            };
            if let Some(c) = self.compose_one(ctx, &d)? {
                return Ok(Some(c));
            }
        }
    }

    /// Reads (on PostgreSQL: claims) the next page of pending deliveries into `queue`;
    /// `false` when there are none left. One worker at a time; the others find the queue
    /// filled when they get the lock.
    fn refill(
        &self,
        queue: &std::sync::Mutex<std::collections::VecDeque<crate::store::Delivery>>,
        source: &std::sync::Mutex<Source>,
        ctx: &Context<'_>,
    ) -> anyhow::Result<bool> {
        let run = ctx.run;
        let mut source = source.lock().unwrap_or_else(|e| e.into_inner());
        if !queue.lock().unwrap_or_else(|e| e.into_inner()).is_empty() {
            return Ok(true);
        }
        if source.done || self.stop.load(Ordering::SeqCst) || self.lost_claim.load(Ordering::SeqCst)
        {
            return Ok(false);
        }
        let after = source.after;
        let page = match &self.node {
            // Claims are small enough to be sent well within their lifetime at the
            // configured rate, so a node that dies leaves at most one batch to go twice.
            Some(node) => {
                let lease = self.config.database.lease.as_secs() as i64;
                let batch = ((self.config.mail.rate_per_second * lease as f64 / 3.0) as usize)
                    .clamp(1, CLAIM_BATCH);
                self.store(|s| s.claim_deliveries(run.id, node, after, batch, lease))?
            }
            None => self.store(|s| s.pending_deliveries_page(run.id, after, DELIVERY_PAGE))?,
        };
        let Some(last) = page.last() else {
            source.done = true;
            return Ok(false);
        };
        source.after = last.subscriber_id;
        // One query for the page's subscribers instead of one per mail.
        let ids: Vec<i64> = page.iter().map(|d| d.subscriber_id).collect();
        let found = self.store(|s| s.get_many(&ids))?;
        ctx.subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(found.into_iter().map(|s| (s.id, s)));
        queue.lock().unwrap_or_else(|e| e.into_inner()).extend(page);
        Ok(true)
    }

    /// Starts composing the mail of delivery `d` (signing on the blocking pool), or records
    /// it as skipped and gives `None`.
    fn compose_one(
        &self,
        ctx: &Context<'_>,
        d: &crate::store::Delivery,
    ) -> anyhow::Result<Option<Composing>> {
        let (run, now) = (ctx.run, ctx.now);
        let skip = |why: &str| -> anyhow::Result<Option<Composing>> {
            self.record(run.id, d.subscriber_id, "skipped", Some(why), now)?;
            ctx.counts.skipped.fetch_add(1, Ordering::SeqCst);
            Ok(None)
        };
        let cached = ctx
            .subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&d.subscriber_id);
        let subscriber = match cached {
            Some(s) => Some(s),
            None => self.store(|s| s.get(d.subscriber_id))?,
        };
        let Some(subscriber) = subscriber else {
            return skip("unsubscribed");
        };
        let items: Vec<&Arc<Item>> = d
            .items
            .iter()
            .filter_map(|id| ctx.by_id.get(id.as_str()).copied())
            .collect();
        if items.is_empty() {
            return skip("its items were removed");
        }
        let prepared = self.prepared(
            ctx.digest,
            run.id,
            &subscriber,
            &items,
            ctx.renditions,
            ctx.since,
            ctx.run_time,
        )?;
        let own = self.own_fields(run.id, &subscriber);
        let envelope = own.envelope(self.subs, run.id, d.subscriber_id)?;
        let bytes = match &self.dkim {
            // A signature (RSA above all) is the costly part: made on the signing threads.
            Some(signer) => {
                let signer = signer.clone();
                let time = ctx.run_time.timestamp();
                let (tx, rx) = tokio::sync::oneshot::channel();
                signing_pool().spawn(move || {
                    let _ = tx.send(own.assemble(&prepared, Some(&signer), time));
                });
                Bytes::Signing(rx)
            }
            None => Bytes::Ready(own.assemble(&prepared, None, 0)),
        };
        Ok(Some(Composing {
            subscriber_id: d.subscriber_id,
            envelope,
            bytes,
        }))
    }

    /// Sends one composed mail, retrying temporary failures, and records the outcome.
    async fn send_one(
        &self,
        connection: &mut crate::mail::Connection<'_>,
        ctx: &Context<'_>,
        subscriber_id: i64,
        message: &Outgoing,
        pacer: &Pacer,
    ) -> anyhow::Result<()> {
        let (run, counts, now) = (ctx.run, ctx.counts, ctx.now);
        let mut backoff = self.first_backoff;
        for attempt in 0..=self.retries {
            pacer.wait().await;
            match connection.send(message).await {
                Ok(()) => {
                    self.record(
                        run.id,
                        subscriber_id,
                        "sent",
                        None,
                        crate::clock::unix_seconds() as i64,
                    )?;
                    counts.sent.fetch_add(1, Ordering::SeqCst);
                    return Ok(());
                }
                Err(e) if e.permanent => {
                    tracing::warn!(
                        run = run.id,
                        subscriber = subscriber_id,
                        "permanent failure: {e}"
                    );
                    self.record(run.id, subscriber_id, "failed", Some(&e.message), now)?;
                    self.synchronous_bounce(run.id, subscriber_id, &e.message, now)?;
                    counts.failed.fetch_add(1, Ordering::SeqCst);
                    return Ok(());
                }
                Err(e) if attempt < self.retries && !self.stop.load(Ordering::SeqCst) => {
                    tracing::debug!(
                        run = run.id,
                        subscriber = subscriber_id,
                        attempt,
                        "temporary failure, retrying: {e}"
                    );
                    counts.retried.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(crate::clock::jitter(backoff)).await;
                    backoff *= 2;
                }
                Err(e) => {
                    tracing::warn!(
                        run = run.id,
                        subscriber = subscriber_id,
                        "temporary failure, left for the next send: {e}"
                    );
                    self.record(run.id, subscriber_id, "pending", Some(&e.message), now)?;
                    counts.deferred.fetch_add(1, Ordering::SeqCst);
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// A relay that refuses a recipient at once with a hard status code (`550 5.1.1`) says
    /// what a bounce would say later: it counts as a hard bounce (`[bounce]` limits). Other
    /// permanent failures count towards the suspension after repeated failures.
    fn synchronous_bounce(
        &self,
        run: i64,
        subscriber: i64,
        answer: &str,
        now: i64,
    ) -> anyhow::Result<()> {
        use crate::bounce::report::{Class, class_of, status_in};
        let Some(status) = status_in(answer).filter(|s| class_of(s) == Class::Hard) else {
            return Ok(());
        };
        let limits = crate::store::BounceLimits::from(&self.config.bounce);
        let outcome =
            self.store(|s| s.record_bounce(subscriber, run, true, Some(&status), limits, now))?;
        if let crate::store::Bounced::Recorded {
            suspended: Some(reason),
        } = outcome
        {
            tracing::warn!(run, subscriber, reason = %reason, "address suspended");
        }
        Ok(())
    }

    /// The mail of one delivery, signed when DKIM is configured.
    #[allow(clippy::too_many_arguments)]
    pub fn compose(
        &self,
        digest: &Digest,
        run_id: i64,
        s: &Subscriber,
        items: &[&Arc<Item>],
        renditions: &HashMap<String, crate::content::Rendition>,
        since: DateTime<Utc>,
        run_time: DateTime<Utc>,
    ) -> anyhow::Result<Outgoing> {
        let prepared = self.prepared(digest, run_id, s, items, renditions, since, run_time)?;
        let own = self.own_fields(run_id, s);
        Ok(Outgoing {
            envelope: own.envelope(self.subs, run_id, s.id)?,
            bytes: own.assemble(&prepared, self.dkim.as_deref(), run_time.timestamp()),
        })
    }

    /// The body for `s`'s language and items, encoded once for everyone who gets the same
    /// (rendered with markers where each recipient's links go).
    #[allow(clippy::too_many_arguments)]
    fn prepared(
        &self,
        digest: &Digest,
        run_id: i64,
        s: &Subscriber,
        items: &[&Arc<Item>],
        renditions: &HashMap<String, crate::content::Rendition>,
        since: DateTime<Utc>,
        run_time: DateTime<Utc>,
    ) -> anyhow::Result<Arc<Prepared>> {
        let templates = self.subs.templates();
        let language = templates.get(s.language.as_deref());
        let key = (
            run_id,
            language.code.clone(),
            items.iter().map(|i| i.id.clone()).collect::<Vec<_>>(),
        );
        if let Some(p) = self
            .rendered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(p.clone());
        }
        let views: Vec<ItemView> = items
            .iter()
            .map(|i| match renditions.get(&i.id) {
                Some(r) => ItemView::new(i, r, language),
                None => ItemView::new(i, &i.render(), language),
            })
            .collect();
        let markers = RecipientLinks {
            unsubscribe_url: mail::UNSUBSCRIBE_MARKER.into(),
            preferences_url: mail::PREFERENCES_MARKER.into(),
        };
        let archive = crate::pages::run_url(self.config, digest, run_id);
        let rendered = mail::render(
            self.config,
            language,
            digest,
            &views,
            since,
            &markers,
            archive.as_deref(),
            run_time,
        )?;
        let host = self.config.site.base_url.host_str().unwrap_or("localhost");
        let title = digest.title.clone().unwrap_or_else(|| digest.name.clone());
        let shared = mail::Shared {
            from: &self.subs.mailer.from,
            reply_to: self.subs.mailer.reply_to.as_ref(),
            list_id: format!(
                "{} <{}.{host}>",
                crate::mail::encode_phrase(&title.replace(['<', '>', '"'], "")),
                digest.name
            ),
            date: run_time,
            timezone: self.config.site.timezone,
        };
        let prepared = Arc::new(mail::prepare(&shared, &rendered));
        let mut cache = self.rendered.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() > 1000 {
            cache.clear();
        }
        cache.insert(key, prepared.clone());
        Ok(prepared)
    }

    /// What is `s`'s own in a mail of run `run_id`.
    fn own_fields(&self, run_id: i64, s: &Subscriber) -> OwnFields {
        let l = links(self.config, &self.subs.keys, s);
        let host = self.config.site.base_url.host_str().unwrap_or("localhost");
        let mut list_unsubscribe = format!("<{}>", l.unsubscribe);
        if let Some(m) = &self.config.mail.unsubscribe_mailto {
            list_unsubscribe.push_str(&format!(",\r\n <mailto:{m}?subject=unsubscribe>"));
        }
        OwnFields {
            to: s.email.as_str().to_string(),
            message_id: format!("<digest.{run_id}.{}@{host}>", s.id),
            list_unsubscribe,
            slots: [l.unsubscribe, l.preferences],
        }
    }

    /// Records a delivery's outcome; on PostgreSQL only where this node's claim stands
    /// (when another node took it over, this one stops starting mails).
    fn record(
        &self,
        run: i64,
        subscriber: i64,
        status: &str,
        error: Option<&str>,
        now: i64,
    ) -> anyhow::Result<()> {
        match &self.node {
            None => self.store(|s| s.record_delivery(run, subscriber, status, error, now)),
            Some(node) => {
                let held = match self.recorders.get().filter(|pool| !pool.is_empty()) {
                    Some(pool) => {
                        let mut store = pool
                            .iter()
                            .find_map(|m| m.try_lock().ok())
                            .unwrap_or_else(|| pool[0].lock().unwrap_or_else(|e| e.into_inner()));
                        store
                            .record_claimed(run, subscriber, node, status, error, now)
                            .map_err(|e| anyhow::anyhow!("database: {e}"))?
                    }
                    None => {
                        self.store(|s| s.record_claimed(run, subscriber, node, status, error, now))?
                    }
                };
                if !held && !self.lost_claim.swap(true, Ordering::SeqCst) {
                    tracing::warn!(
                        run,
                        subscriber,
                        "another node took over this node's claim: stopping this pass"
                    );
                }
                Ok(())
            }
        }
    }

    /// Runs `f` on the database.
    pub fn store<T>(
        &self,
        f: impl FnOnce(&mut crate::store::Store) -> crate::store::Result<T>,
    ) -> anyhow::Result<T> {
        self.subs
            .with_store(f)
            .map_err(|e| anyhow::anyhow!("database: {e}"))
    }
}
