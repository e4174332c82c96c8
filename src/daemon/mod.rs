//! `herold run`: one event loop that watches the content, rebuilds the feeds, wakes for
//! scheduled items, reloads on SIGHUP and stops on SIGTERM, while the HTTP server runs beside
//! it. Every trigger is an [`Event`]; every event is handled in [`Daemon::handle`].

pub mod content;
mod systemd;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, FixedOffset};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::build::{self, HtmlCache};
use crate::config::Config;
use crate::content::{Severity, SiteContext};
use crate::feed::FeedMeta;
use crate::metrics::Metrics;
use crate::subscriptions::Subscriptions;
use crate::templates::Templates;
use crate::web::{self, AppState};
use content::ContentState;

/// Everything that makes the daemon act.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The file system reported changes to these paths below the content directory
    /// (debounced).
    ContentChanged(Vec<PathBuf>),
    /// `content.poll_interval` passed: look for changes the watcher missed.
    Poll,
    /// A scheduled item's date has come.
    ScheduledDue,
    /// SIGHUP: read the configuration again.
    Reload,
    /// Time to tell systemd the loop is alive.
    Watchdog,
    /// Hourly: expire pending subscriptions, delete consent log entries past retention.
    Housekeeping,
    /// A digest's fire time (or its retry of deferred deliveries) has come.
    DigestDue,
    /// A digest send finished: its name and how many deliveries were deferred.
    DigestDone(String, usize),
    /// `bounce.imap.poll_interval` passed: read the bounce mailbox.
    BouncePoll,
    /// PostgreSQL: renew (or take) the schedule lease, and help deliver unfinished runs.
    Lease,
    /// SIGTERM or SIGINT.
    Shutdown,
}

/// How long the watcher waits for an editor's burst of writes to end.
const DEBOUNCE: Duration = Duration::from_millis(20);
/// The longest a burst may delay a rebuild.
const DEBOUNCE_MAX: Duration = Duration::from_millis(200);

/// The state the loop owns, grouped by what it serves.
pub struct Daemon {
    config_path: PathBuf,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    content: Content,
    feeds: FeedWriter,
    pages: PageWriter,
    web: Web,
    digests: Digests,
    /// The bounce mailbox poll in flight, if any (one at a time).
    bounce_poll: Option<tokio::task::JoinHandle<()>>,
    /// PostgreSQL: the fence of the schedule lease while this node holds it. On SQLite the
    /// one daemon always schedules (`Some(0)`).
    lease: Option<i64>,
}

/// The content directory as the daemon knows it.
struct Content {
    /// The files, parsed; re-parsed only when they change.
    files: ContentState,
    /// A snapshot of the corpus for digest sends, made when one starts after a change
    /// (`None`: changed since the last one), so a change does not copy every item.
    snapshot: Option<Arc<crate::content::Corpus>>,
    /// When the next scheduled item is due.
    next_due: Option<DateTime<FixedOffset>>,
    /// Problems already logged, so a poll does not repeat them.
    reported: Vec<String>,
    /// Whether a file system watcher runs (then polls are only a light safety net).
    watching: bool,
    /// Counts polls, to rotate the light poll's slice of files.
    polls: u64,
}

/// The HTTP side: the handlers' state and the subscription services.
struct Web {
    state: Arc<AppState>,
    subs: Arc<Subscriptions>,
    /// The address the listener got (port 0 becomes a real port).
    bound: std::net::SocketAddr,
}

/// The digest scheduler.
struct Digests {
    /// Per digest: when to wake next, and whether that starts a new run (a fire time) or
    /// only finishes deferred deliveries.
    wake: std::collections::BTreeMap<String, (chrono::DateTime<chrono::Utc>, bool)>,
    /// Set on SIGTERM: digest sends start no new mail.
    stop: Arc<std::sync::atomic::AtomicBool>,
    tasks: tokio::task::JoinSet<()>,
    done: mpsc::UnboundedSender<(String, usize)>,
    dkim: Option<Arc<crate::mail::dkim::Signer>>,
    /// Item ids whose first sight is in the database.
    recorded: std::collections::HashSet<String>,
    /// Digests this node is sending now.
    sending: std::collections::HashSet<String>,
}

/// How long deferred deliveries wait before the daemon tries them again.
const DEFERRED_RETRY: Duration = Duration::from_secs(300);

/// How a rebuild finds out what changed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refresh {
    /// Walk and stat everything.
    Full,
    /// Only these paths (from the watcher).
    Paths(Vec<PathBuf>),
    /// The safety-net poll beside a watcher: directories, and a slice of the files.
    Light,
}

/// Into how many slices the light poll divides the files.
const POLL_SLICES: u64 = 10;

/// The feed files as last written: rendered bodies and a fingerprint per file, so a change
/// renders only the files that show it; and the client that pings WebSub hubs.
struct FeedWriter {
    cache: HtmlCache,
    /// Path → fingerprint of each file written: empty after a start or reload, complete
    /// once a write has succeeded (every plan has the site feed), so stale files are then
    /// found here instead of on disk.
    fingerprints: rustc_hash::FxHashMap<String, u64>,
    hubs: reqwest::Client,
}

/// The pages: what each file on disk shows, and the leads and digest archives they need.
#[derive(Default)]
struct PageWriter {
    entries: crate::pages::EntryCache,
    fingerprints: crate::pages::Manifest,
    /// Whether `fingerprints` is what this process wrote (else it is read from the
    /// manifest, and checked against the files, on the next write).
    loaded: bool,
    archives: Vec<crate::pages::DigestArchive>,
}

/// Runs the daemon until SIGTERM. Returns once the server has stopped.
pub async fn run(config_path: PathBuf, config: Config) -> anyhow::Result<()> {
    // Signals first: from here on SIGTERM and SIGINT stop cleanly, never kill half-way.
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let lock = crate::lock::acquire(&config.database)?;
    if let Some(l) = &lock {
        tracing::debug!(lock = %l.path.display(), "instance lock taken");
    }
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let addr = listener.local_addr()?;
    let config = Arc::new(with_bound_address(config, addr));
    let metrics = Arc::new(Metrics::default());
    let subs = Arc::new(Subscriptions::open(&config)?);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(String, usize)>();
    let web = AppState::new(config.clone(), metrics.clone(), Some(subs.clone()));
    let shared = config.database.url.is_some();
    let mut daemon = Daemon {
        bounce_poll: None,
        lease: if shared { None } else { Some(0) },
        config_path,
        config: config.clone(),
        metrics,
        content: Content {
            files: ContentState::new(
                config.content.dir.clone(),
                SiteContext::from_config(&config),
            ),
            snapshot: None,
            next_due: None,
            reported: Vec::new(),
            watching: false,
            polls: 0,
        },
        feeds: FeedWriter {
            cache: HtmlCache::default(),
            fingerprints: Default::default(),
            hubs: crate::websub::client(),
        },
        pages: PageWriter::default(),
        web: Web {
            state: web.clone(),
            subs,
            bound: addr,
        },
        digests: Digests {
            wake: std::collections::BTreeMap::new(),
            stop: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            tasks: tokio::task::JoinSet::new(),
            done: done_tx,
            dkim: crate::mail::dkim_signer(
                &config,
                std::env::var_os("CREDENTIALS_DIRECTORY")
                    .map(PathBuf::from)
                    .as_deref(),
            )?,
            recorded: std::collections::HashSet::new(),
            sending: std::collections::HashSet::new(),
        },
    };
    // The watcher starts before the first scan: a file written while the daemon starts
    // is either in that scan or in an event that follows it, never in neither.
    let (watch_tx, mut watch_rx) = mpsc::unbounded_channel();
    let mut watcher = watch(&config.content.dir, watch_tx.clone());
    daemon.content.watching = watcher.is_some();
    daemon.housekeeping();
    daemon.load_archives();
    daemon.rebuild(Refresh::Full, true);
    if shared {
        // On PostgreSQL the node that holds the lease schedules.
        daemon.renew_lease();
    } else {
        daemon.schedule_digests(true);
    }

    tracing::info!(addr = %addr, public_url = %config.public_url(), "listening on http://{addr}");
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(
        axum::serve(
            listener,
            web::app(web.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        })
        .into_future(),
    );
    systemd::ready(&daemon.status());

    let mut poll = tokio::time::interval_at(
        tokio::time::Instant::now() + config.content.poll_interval,
        config.content.poll_interval,
    );
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let watchdog_every = systemd::watchdog_interval().unwrap_or(Duration::from_secs(3600));
    let mut watchdog = tokio::time::interval(watchdog_every);
    let mut bounce_poll = bounce_interval(&config);
    let mut lease_tick = tokio::time::interval(lease_interval(&config));
    lease_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut housekeeping = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(3600),
        Duration::from_secs(3600),
    );

    loop {
        let due_in = daemon.due_in();
        let digest_in = daemon.digest_due_in();
        let event = tokio::select! {
            Some(path) = watch_rx.recv() => Event::ContentChanged(debounce(path, &mut watch_rx).await),
            _ = poll.tick() => Event::Poll,
            _ = tokio::time::sleep(due_in.unwrap_or(Duration::from_secs(3600))), if due_in.is_some() => Event::ScheduledDue,
            _ = hup.recv() => Event::Reload,
            _ = watchdog.tick() => Event::Watchdog,
            _ = housekeeping.tick() => Event::Housekeeping,
            _ = bounce_poll.tick(), if daemon.config.bounce.imap.is_some() => Event::BouncePoll,
            _ = lease_tick.tick(), if shared => Event::Lease,
            _ = tokio::time::sleep(digest_in.unwrap_or(Duration::from_secs(3600))), if digest_in.is_some() => Event::DigestDue,
            Some((name, deferred)) = done_rx.recv() => Event::DigestDone(name, deferred),
            _ = term.recv() => Event::Shutdown,
            _ = int.recv() => Event::Shutdown,
        };
        if event == Event::Shutdown {
            break;
        }
        let old_dir = daemon.config.content.dir.clone();
        let reload = event == Event::Reload;
        tokio::task::block_in_place(|| daemon.handle(event));
        if reload {
            if daemon.config.content.dir != old_dir {
                watcher = watch(&daemon.config.content.dir, watch_tx.clone());
                daemon.content.watching = watcher.is_some();
            }
            poll = tokio::time::interval(daemon.config.content.poll_interval);
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            bounce_poll = bounce_interval(&daemon.config);
        }
    }
    drop(watcher);
    systemd::stopping();
    tracing::info!("shutting down");
    if shared && daemon.lease.is_some() {
        // A clean stop hands the schedule on at once.
        let released = daemon
            .web
            .subs
            .lock_store()
            .release_lease(crate::store::SCHEDULE, crate::store::node_id());
        if let Err(e) = released {
            tracing::warn!("cannot release the schedule lease: {e}");
        }
    }
    daemon
        .digests
        .stop
        .store(true, std::sync::atomic::Ordering::SeqCst);
    if !daemon.digests.tasks.is_empty() {
        tracing::info!("waiting for the digest mails in flight");
        let wait = async { while daemon.digests.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(60), wait)
            .await
            .is_err()
        {
            tracing::warn!("digest sends did not stop within 60 s");
        }
    }
    let _ = stop_tx.send(true);
    match tokio::time::timeout(Duration::from_secs(10), server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!("server ended with an error: {e}"),
        Ok(Err(e)) => tracing::warn!("server task failed: {e}"),
        Err(_) => tracing::warn!("open connections did not finish within 10 s"),
    }
    drop(lock);
    tracing::info!("stopped");
    Ok(())
}

impl Daemon {
    /// Acts on one event. Runs on the loop's thread; the HTTP server keeps serving meanwhile.
    pub fn handle(&mut self, event: Event) {
        match event {
            Event::ContentChanged(paths) => self.rebuild(Refresh::Paths(paths), false),
            Event::Poll if self.content.watching => self.rebuild(Refresh::Light, false),
            Event::Poll => self.rebuild(Refresh::Full, false),
            Event::ScheduledDue => self.rebuild(Refresh::Full, true),
            Event::Reload => self.reload(),
            Event::Watchdog => systemd::watchdog(),
            Event::Housekeeping if self.lease.is_none() => {}
            Event::Housekeeping => self.housekeeping(),
            Event::BouncePoll => self.poll_bounces(),
            Event::Lease => {
                self.renew_lease();
                self.help_unfinished_runs();
                if self.lease.is_some() {
                    // Erased addresses leave PostgreSQL's table files within seconds (SQLite
                    // overwrote them at once and needs nothing).
                    match self.web.subs.lock_store().compact() {
                        Ok(true) => tracing::info!(
                            "erased addresses removed from the table files (VACUUM FULL)"
                        ),
                        Ok(false) => {}
                        Err(e) => tracing::error!("cannot compact the tables after erasures: {e}"),
                    }
                }
            }
            Event::DigestDue if self.lease.is_none() => {}
            Event::DigestDue => self.run_due_digests(),
            Event::DigestDone(name, deferred) => {
                self.digests.sending.remove(&name);
                // The run's pages were written when it started; the sitemap and the
                // archive's other pages follow here.
                self.load_archives();
                self.rebuild(Refresh::Paths(Vec::new()), true);
                if deferred > 0 {
                    let retry = crate::clock::now_utc()
                        + chrono::TimeDelta::from_std(DEFERRED_RETRY).unwrap_or_default();
                    let entry = self
                        .digests
                        .wake
                        .entry(name.clone())
                        .or_insert((retry, false));
                    if retry < entry.0 {
                        *entry = (retry, false);
                    }
                    tracing::info!(digest = %name, deferred, "deferred deliveries are tried again in 5 minutes");
                }
            }
            Event::Shutdown => {}
        }
    }

    /// How long until the next scheduled item is due.
    fn due_in(&self) -> Option<Duration> {
        let due = self.content.next_due?;
        let left = due.signed_duration_since(crate::clock::now_utc());
        // Wake at most an hour ahead, so a jump of the wall clock is noticed.
        Some(
            left.to_std()
                .unwrap_or(Duration::ZERO)
                .min(Duration::from_secs(3600))
                + Duration::from_millis(5),
        )
    }

    fn status(&self) -> String {
        format!(
            "{} items in the feeds, {} scheduled, {} content problems",
            self.metrics
                .items
                .load(std::sync::atomic::Ordering::Relaxed),
            self.metrics
                .scheduled
                .load(std::sync::atomic::Ordering::Relaxed),
            self.metrics
                .problems
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Reads the content again and writes the feeds that changed. With `always`, the feeds
    /// are planned even if no file changed (a scheduled item's time, a reload, the start).
    fn rebuild(&mut self, refresh: Refresh, always: bool) {
        let started = Instant::now();
        let refreshed = match refresh {
            Refresh::Full => self.content.files.refresh(),
            Refresh::Paths(paths) => self.content.files.refresh_paths(&paths),
            Refresh::Light => {
                self.content.polls += 1;
                self.content
                    .files
                    .refresh_light(self.content.polls % POLL_SLICES, POLL_SLICES)
            }
        };
        let changes = match refreshed {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(dir = %self.content.files.dir().display(), "cannot read the content directory: {e}");
                return;
            }
        };
        if changes.is_empty() && !always {
            return;
        }
        let refreshed_at = started.elapsed();
        let problems = self.content.files.problems();
        let errors = problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
            .count();
        let items = self.content.files.items();
        let now = crate::clock::now_in(self.config.site.timezone);
        let meta = FeedMeta::from_config(&self.config);
        let plan = build::prepare_indexed(
            items,
            Some(self.content.files.plan_index()),
            now,
            &meta,
            &mut self.feeds.cache,
        );
        let fingerprints: Vec<u64> = (0..plan.len()).map(|i| plan.fingerprint(i)).collect();
        let planned_at = started.elapsed();
        let known = &self.feeds.fingerprints;
        let select = |i: usize| known.get(plan.path(i)) != Some(&fingerprints[i]);
        let rendered = (0..plan.len()).filter(|&i| select(i)).count();
        let mut before = known.keys().map(String::as_str);
        let written = build::write_feeds_where(
            &self.config.feeds.dir,
            &plan,
            &select,
            (!known.is_empty()).then_some(&mut before as _),
        );
        match written {
            Ok(stats) => {
                let map = &mut self.feeds.fingerprints;
                for (i, &f) in fingerprints.iter().enumerate() {
                    match map.get_mut(plan.path(i)) {
                        Some(old) => *old = f,
                        None => {
                            map.insert(plan.path(i).to_string(), f);
                        }
                    }
                }
                if map.len() > plan.len() {
                    let planned: rustc_hash::FxHashSet<&str> =
                        (0..plan.len()).map(|i| plan.path(i)).collect();
                    map.retain(|path, _| planned.contains(path.as_str()));
                }
                let m = &self.metrics;
                use std::sync::atomic::Ordering::Relaxed;
                m.items.store(plan.published as u64, Relaxed);
                m.scheduled.store(plan.scheduled as u64, Relaxed);
                m.problems.store(errors as u64, Relaxed);
                m.files_written
                    .fetch_add(stats.changed.len() as u64, Relaxed);
                let unix = crate::clock::unix_seconds();
                m.build_done(started.elapsed().as_secs_f64(), unix);
                tracing::info!(
                    parsed = changes.parsed.len(),
                    removed = changes.removed.len(),
                    items = plan.published,
                    scheduled = plan.scheduled,
                    problems = errors,
                    rendered,
                    files_changed = stats.changed.len(),
                    files_removed = stats.removed.len(),
                    refresh_ms = refreshed_at.as_secs_f64() * 1e3,
                    plan_ms = (planned_at - refreshed_at).as_secs_f64() * 1e3,
                    ms = started.elapsed().as_millis() as u64,
                    "feeds updated"
                );
                if !stats.changed.is_empty() && !self.config.feeds.websub_hubs.is_empty() {
                    let base = self.config.feeds_base_url();
                    let urls: Vec<String> = stats
                        .changed
                        .iter()
                        .map(|p| format!("{base}/{p}"))
                        .collect();
                    crate::websub::publish(
                        &self.feeds.hubs,
                        &self.config.feeds.websub_hubs,
                        &urls,
                        &self.metrics,
                    );
                }
                systemd::status(&self.status());
            }
            Err(e) => {
                self.metrics
                    .build_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // Nothing is recorded as written, so the next event tries every file again.
                tracing::error!(dir = %self.config.feeds.dir.display(), "cannot write the feeds, the previous files stay: {e}");
            }
        }
        self.content.next_due = plan.next_due;
        *self
            .web
            .subs
            .topics
            .write()
            .unwrap_or_else(|e| e.into_inner()) = if self.config.feeds.per_tag {
            // The tags of the tag feeds, known from the plan without another pass over every
            // item (and without the tags of items not yet published).
            offered_topics(&self.config, plan.tag_names().into_iter())
        } else {
            offered_topics(&self.config, all_tags(items).into_iter())
        };
        let new_ids = self.unrecorded_ids(items);
        drop(plan);
        let mut problems = problems;
        problems.extend(self.write_pages(now));
        self.report_problems(&problems);
        self.record_seen(new_ids);
        self.content.snapshot = None;
    }

    /// Writes the pages that changed (all of them after a start or reload, where nothing is
    /// known; a file whose bytes would not change is left alone either way). Gives the page
    /// URL clashes, to be reported with the content's problems.
    fn write_pages(&mut self, now: DateTime<FixedOffset>) -> Vec<crate::content::Problem> {
        if !self.config.pages.enabled {
            return Vec::new();
        }
        let started = Instant::now();
        let templates = self.web.subs.templates();
        let meta = crate::pages::PageMeta::from_config(&self.config);
        let items = self.content.files.items();
        let plan = crate::pages::plan(
            items,
            Some(self.content.files.plan_index()),
            now,
            &meta,
            templates.default_language(),
            &self.pages.archives,
            &self.pages.entries,
        );
        let planned = started.elapsed();
        // After a start or reload every page is rendered and compared with its file: pages
        // are not synced to disk one by one, so what the manifest says is not trusted; it
        // only names the pages to remove when they are no longer part of the site.
        let verify = !self.pages.loaded;
        if verify {
            self.pages.fingerprints = crate::pages::read_manifest(&self.config.pages.dir);
            self.pages.fingerprints.forget_fingerprints();
        }
        let written = crate::pages::write_pages(
            &self.config.pages.dir,
            &plan,
            &mut self.pages.fingerprints,
            verify,
            false,
        );
        let made = plan.made_entries();
        let (pages, problems) = (plan.len(), plan.problems);
        self.pages.entries.absorb(made);
        match written {
            Ok(stats) => {
                self.pages.loaded = true;
                if verify || stats.rendered > 0 || stats.removed > 0 {
                    tracing::info!(
                        pages,
                        rendered = stats.rendered,
                        plan_ms = planned.as_secs_f64() * 1e3,
                        pages_changed = stats.changed,
                        pages_removed = stats.removed,
                        ms = started.elapsed().as_millis() as u64,
                        "pages updated"
                    );
                }
            }
            Err(e) => {
                self.pages.loaded = false;
                self.metrics
                    .build_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::error!(dir = %self.config.pages.dir.display(), "cannot write the pages, the previous files stay: {e:#}");
            }
        }
        let dir = self.content.files.dir();
        problems
            .into_iter()
            .map(|mut p| {
                p.path = crate::content::scan::display_path(dir, &p.path);
                p
            })
            .collect()
    }

    /// Reads the digest runs the archive pages show.
    fn load_archives(&mut self) {
        if !self.config.pages.enabled {
            return;
        }
        let meta = crate::pages::PageMeta::from_config(&self.config);
        match self
            .web
            .subs
            .with_store(|s| Ok(crate::pages::load_archives(s, &meta)))
        {
            Ok(Ok(a)) => self.pages.archives = a,
            Ok(Err(e)) => {
                tracing::error!("cannot read the digest runs for the archive pages: {e:#}")
            }
            Err(e) => tracing::error!("cannot read the digest runs for the archive pages: {e}"),
        }
    }

    /// Logs each problem once, when it first appears.
    fn report_problems(&mut self, problems: &[crate::content::Problem]) {
        let now: Vec<String> = problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
            .map(|p| p.to_string())
            .collect();
        for p in problems.iter().filter(|p| p.severity == Severity::Error) {
            if !self.content.reported.contains(&p.to_string()) {
                tracing::warn!(file = %p.path, line = p.line, "{}", p.message);
            }
        }
        self.content.reported = now;
    }

    /// How long until the next digest is due.
    fn digest_due_in(&self) -> Option<Duration> {
        let (at, _) = self.digests.wake.values().min_by_key(|(t, _)| *t)?;
        Some(
            (*at - crate::clock::now_utc())
                .to_std()
                .unwrap_or(Duration::ZERO)
                .min(Duration::from_secs(3600)),
        )
    }

    /// Sets each digest's next wake-up; at start, also runs a fire time missed while herold
    /// was down (at most `catch_up` old) and finishes unfinished runs.
    fn schedule_digests(&mut self, at_start: bool) {
        let now = crate::clock::now_utc();
        self.digests.wake.clear();
        for d in self.config.digest.clone() {
            let schedule = match crate::digest::run::schedule(&self.config, &d) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(digest = %d.name, "{e:#}");
                    continue;
                }
            };
            let (since, last, unfinished) = {
                let mut store = self.web.subs.lock_store();
                let since = store
                    .meta_or_insert(
                        &format!("scheduler_since:{}", d.name),
                        &now.timestamp().to_string(),
                    )
                    .ok()
                    .and_then(|v| v.parse::<i64>().ok())
                    .unwrap_or(now.timestamp());
                (
                    since,
                    store.last_run_started(&d.name).ok().flatten(),
                    store.unfinished_run(&d.name).ok().flatten(),
                )
            };
            let at = |t: i64| {
                chrono::TimeZone::timestamp_opt(&chrono::Utc, t, 0)
                    .single()
                    .unwrap_or(now)
            };
            let catch_up = chrono::TimeDelta::from_std(d.catch_up).unwrap_or_default();
            let due = crate::schedule::due(&schedule, at(since), last.map(at), now, catch_up);
            if let Some(next) = due.next {
                self.digests.wake.insert(d.name.clone(), (next, true));
                tracing::info!(digest = %d.name, next = %schedule.local(next), "digest scheduled");
            }
            if at_start {
                if let Some(missed) = due.missed {
                    tracing::warn!(
                        digest = %d.name,
                        missed = %schedule.local(missed),
                        "a run was missed while herold was down and is older than catch_up: not sent late; its items go into the next run"
                    );
                }
                if let Some(fire) = due.run_now {
                    tracing::info!(digest = %d.name, fire = %schedule.local(fire), "running a missed fire time now (catch_up)");
                    self.spawn_digest(&d.name, true);
                } else if unfinished.is_some() {
                    self.spawn_digest(&d.name, false);
                }
            }
        }
    }

    /// Starts the digests whose time has come.
    fn run_due_digests(&mut self) {
        let now = crate::clock::now_utc();
        let due: Vec<(String, bool)> = self
            .digests
            .wake
            .iter()
            .filter(|(_, (t, _))| *t <= now)
            .map(|(n, (_, new_run))| (n.clone(), *new_run))
            .collect();
        for (name, new_run) in due {
            self.spawn_digest(&name, new_run);
            // The next fire time after this one.
            let next = self
                .config
                .digest
                .iter()
                .find(|d| d.name == name)
                .and_then(|d| crate::digest::run::schedule(&self.config, d).ok())
                .and_then(|s| s.next_after(now));
            match next {
                Some(t) => {
                    self.digests.wake.insert(name, (t, true));
                }
                None => {
                    self.digests.wake.remove(&name);
                }
            }
        }
    }

    /// Sends a digest on its own task: feeds and HTTP go on meanwhile. With `new_run` it runs
    /// as the schedule would; without, it only finishes deferred deliveries.
    fn spawn_digest(&mut self, name: &str, new_run: bool) {
        let (config, subs, corpus, stop, metrics, dkim, done) = (
            self.config.clone(),
            self.web.subs.clone(),
            self.snapshot(),
            self.digests.stop.clone(),
            self.metrics.clone(),
            self.digests.dkim.clone(),
            self.digests.done.clone(),
        );
        let name = name.to_string();
        self.digests.sending.insert(name.clone());
        let fence = self
            .lease
            .filter(|_| config.database.url.is_some())
            .map(|f| (crate::store::node_id().to_string(), f));
        self.digests.tasks.spawn(async move {
            let result = async {
                let _lock = crate::lock::acquire_digest(&config.database, &name)?;
                let digest = crate::digest::run::find(&config, &name)?;
                let mut sender = crate::digest::run::Sender::new(&config, &subs, dkim);
                sender.stop = stop;
                sender.metrics = Some(metrics);
                sender.fence = fence;
                let now = crate::clock::unix_seconds() as i64;
                systemd::status(&format!("sending digest {name}"));
                if new_run {
                    sender.send(digest, &corpus, now, false).await
                } else {
                    sender.finish(digest, &corpus, now).await
                }
            }
            .await;
            match result {
                Ok(r) => {
                    if let Some(why) = &r.nothing {
                        tracing::info!(digest = %name, "no digest sent: {why}");
                    }
                    let _ = done.send((name, r.deferred));
                }
                Err(e) => {
                    tracing::error!(digest = %name, "digest send failed: {e:#}");
                    let _ = done.send((name, 1));
                }
            }
        });
    }

    /// Records the first sight of items the database does not know yet.
    /// The corpus for a digest send: the snapshot of the last change, made now if needed.
    fn snapshot(&mut self) -> Arc<crate::content::Corpus> {
        self.content
            .snapshot
            .get_or_insert_with(|| Arc::new(self.content.files.corpus()))
            .clone()
    }

    /// The ids whose first sight a digest needs and that are not recorded yet.
    fn unrecorded_ids(&self, items: &[Arc<crate::content::Item>]) -> Vec<String> {
        let now = crate::clock::unix_seconds() as i64;
        crate::digest::select::relevant_ids(&self.config.digest, items, now)
            .into_iter()
            .filter(|id| !self.digests.recorded.contains(*id))
            .map(str::to_string)
            .collect()
    }

    fn record_seen(&mut self, new: Vec<String>) {
        if new.is_empty() {
            return;
        }
        let now = crate::clock::unix_seconds() as i64;
        let ids: Vec<&str> = new.iter().map(String::as_str).collect();
        let recorded = self.web.subs.lock_store().note_seen(&ids, now);
        match recorded {
            Ok(_) => self.digests.recorded.extend(new),
            Err(e) => tracing::error!("cannot record when items were first seen: {e}"),
        }
    }

    /// PostgreSQL: takes or renews the schedule lease. A node that gains it schedules the
    /// digests (and catches up what its predecessor missed); one that lost it stops
    /// scheduling, and its planning would fail the fence check anyway.
    fn renew_lease(&mut self) {
        let seconds = self.config.database.lease.as_secs() as i64;
        let node = crate::store::node_id();
        let result =
            self.web
                .subs
                .lock_store()
                .acquire_lease(crate::store::SCHEDULE, node, seconds);
        let now = match result {
            Ok(f) => f,
            Err(e) => {
                // Unknown: the lease may run out while the database is away; stop scheduling
                // until it is renewed.
                tracing::warn!("cannot renew the schedule lease: {e}");
                None
            }
        };
        match (self.lease, now) {
            (None, Some(fence)) => {
                tracing::info!(node, fence, "this node holds the schedule lease");
                self.lease = Some(fence);
                self.schedule_digests(true);
            }
            (Some(_), None) => {
                tracing::warn!(node, "this node lost the schedule lease");
                self.lease = None;
                self.digests.wake.clear();
            }
            (Some(old), Some(fence)) if old != fence => {
                self.lease = Some(fence);
                self.schedule_digests(true);
            }
            _ => {}
        }
        let view = match self.lease {
            Some(fence) => web::LeaseView {
                holder: Some(node.to_string()),
                fence,
                mine: true,
            },
            None => {
                let state = self.web.subs.lock_store().lease(crate::store::SCHEDULE);
                let (holder, fence) = match state {
                    Ok(s) if s.expires_at >= s.now => (s.holder, s.fence),
                    Ok(s) => (None, s.fence),
                    Err(_) => (None, 0),
                };
                web::LeaseView {
                    holder,
                    fence,
                    mine: false,
                }
            }
        };
        *self
            .web
            .state
            .lease
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(view);
    }

    /// PostgreSQL: every node helps deliver runs that another node started (or left behind
    /// when it died): their deliveries are claimed in small batches.
    fn help_unfinished_runs(&mut self) {
        let runs = match self.web.subs.lock_store().unfinished_runs() {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("unfinished runs: {e}");
                return;
            }
        };
        for run in runs {
            if self.digests.sending.contains(&run.digest)
                || !self.config.digest.iter().any(|d| d.name == run.digest)
            {
                continue;
            }
            self.spawn_digest(&run.digest, false);
        }
    }

    /// Starts a poll of the bounce mailbox unless one is still running. It runs on the
    /// blocking pool with its own database connection, so a slow IMAP server or a busy
    /// database never holds up the loop.
    fn poll_bounces(&mut self) {
        let Some(imap) = self.config.bounce.imap.clone() else {
            return;
        };
        if self.bounce_poll.as_ref().is_some_and(|h| !h.is_finished()) {
            tracing::debug!("the last bounce mailbox poll is still running");
            return;
        }
        let config = self.config.clone();
        self.bounce_poll = Some(tokio::task::spawn_blocking(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => return tracing::error!("bounce mailbox: no runtime: {e}"),
            };
            if let Err(e) = runtime.block_on(crate::bounce::poll_mailbox(&config, &imap)) {
                tracing::warn!(
                    "bounce mailbox: {e:#}; trying again in {:?}",
                    imap.poll_interval
                );
            }
        }));
    }

    /// Expires pending subscriptions and deletes consent log entries past retention.
    fn housekeeping(&mut self) {
        let now = crate::clock::unix_seconds() as i64;
        let privacy = &self.config.privacy;
        let mut store = self.web.subs.lock_store();
        match store.expire_pending(now, privacy.pending_expiry.as_secs() as i64) {
            Ok(0) => {}
            Ok(n) => tracing::info!(expired = n, "unconfirmed subscriptions deleted"),
            Err(e) => tracing::error!("cannot expire pending subscriptions: {e}"),
        }
        match store.purge_log(now, privacy.log_retention.as_secs() as i64) {
            Ok(0) => {}
            Ok(n) => tracing::info!(entries = n, "consent log entries past retention deleted"),
            Err(e) => tracing::error!("cannot purge the consent log: {e}"),
        }
        let bounce = &self.config.bounce;
        let purged = crate::bounce::handle::purge_unmatched(
            &bounce.unmatched_dir(&self.config.database.path),
            bounce.keep,
            now as u64,
        );
        if purged > 0 {
            tracing::info!(
                deleted = purged,
                "unmatched bounces past bounce.keep deleted"
            );
        }
    }

    /// SIGHUP: a valid new configuration (and templates) replaces the old one; an invalid one
    /// is logged and the old one kept.
    fn reload(&mut self) {
        let loaded = Config::load(&self.config_path)
            .map_err(|e| e.to_string())
            .and_then(|c| {
                let t = Templates::for_config(&c).map_err(|e| format!("{e:#}"))?;
                Ok((c, t))
            });
        let (new, templates) = match loaded {
            Ok(x) => x,
            Err(e) => {
                tracing::error!("reload rejected, the running configuration stays: {e}");
                systemd::status(&format!("reload rejected: {e}"));
                return;
            }
        };
        let new = with_bound_address(new, self.web.bound);
        *self
            .web
            .subs
            .templates
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(templates);
        if new.server.listen != self.config.server.listen {
            tracing::warn!(
                running = %self.config.server.listen,
                configured = %new.server.listen,
                "server.listen changed: restart herold to listen on the new address"
            );
        }
        let new = Arc::new(new);
        self.content
            .files
            .reset(new.content.dir.clone(), SiteContext::from_config(&new));
        // New settings may change every file: render each once and compare it with the disk.
        self.feeds.fingerprints.clear();
        self.pages.loaded = false;
        self.config = new.clone();
        self.load_archives();
        self.web.state.set_config(new);
        tracing::info!(config = %self.config_path.display(), "configuration reloaded");
        self.rebuild(Refresh::Full, true);
        self.schedule_digests(false);
    }
}

/// Without `server.public_url`, links point at the address the listener actually got.
fn with_bound_address(mut config: Config, bound: std::net::SocketAddr) -> Config {
    if config.server.public_url.is_none() {
        config.server.public_url = url::Url::parse(&format!("http://{bound}")).ok();
    }
    config
}

/// The topics the form offers: the digests' `topics` when every digest names its own,
/// else every tag of the content (first spelling of each slug), sorted.
pub fn offered_topics(config: &Config, tags: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> =
        if !config.digest.is_empty() && config.digest.iter().all(|d| !d.topics.is_empty()) {
            config
                .digest
                .iter()
                .flat_map(|d| d.topics.iter().cloned())
                .collect()
        } else {
            tags.collect()
        };
    out.sort_by_key(|t| t.to_lowercase());
    out.dedup();
    out
}

/// Every tag of the corpus, one spelling per slug (the newest item's).
fn all_tags(items: &[Arc<crate::content::Item>]) -> Vec<String> {
    let mut by_slug: HashMap<&str, &str> = HashMap::new();
    for i in items {
        for (t, slug) in i.tags.iter().zip(&i.tag_slugs) {
            by_slug.entry(slug).or_insert(t);
        }
    }
    by_slug.into_values().map(str::to_string).collect()
}

/// Collects the paths of a burst of watcher events, until the watcher has been quiet for
/// [`DEBOUNCE`] (at most [`DEBOUNCE_MAX`]).
/// How often a node on PostgreSQL renews the schedule lease: three times a lease.
fn lease_interval(config: &Config) -> Duration {
    (config.database.lease / 3).max(Duration::from_secs(1))
}

/// The bounce mailbox's poll timer: its first tick at once (a message waiting since the last
/// stop is read at start).
fn bounce_interval(config: &Config) -> tokio::time::Interval {
    let every = config
        .bounce
        .imap
        .as_ref()
        .map_or(Duration::from_secs(3600), |i| i.poll_interval);
    let mut i = tokio::time::interval(every.max(Duration::from_secs(1)));
    i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    i
}

async fn debounce(first: PathBuf, rx: &mut mpsc::UnboundedReceiver<PathBuf>) -> Vec<PathBuf> {
    let until = tokio::time::Instant::now() + DEBOUNCE_MAX;
    let mut paths = vec![first];
    while let Ok(Some(p)) =
        tokio::time::timeout_at(until.min(tokio::time::Instant::now() + DEBOUNCE), rx.recv()).await
    {
        paths.push(p);
    }
    paths.sort();
    paths.dedup();
    paths
}

/// Watches `dir` recursively; each relevant path of a file system event is sent. Without a
/// watcher (an unsupported file system, no inotify watches left) polling finds changes.
fn watch(dir: &Path, tx: mpsc::UnboundedSender<PathBuf>) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let root = dir.to_path_buf();
    let handler = move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        if matches!(event.kind, notify::EventKind::Access(_)) {
            return;
        }
        for p in event.paths {
            let rel = p
                .strip_prefix(&root)
                .map(|r| r.to_string_lossy().replace('\\', "/"))
                .unwrap_or_default();
            // Editor temp files and names herold never reads are no reason to wake up.
            let hidden = rel
                .split('/')
                .any(|part| part.starts_with('.') || part.starts_with('_'));
            if !hidden && !crate::content::is_temp_file(&rel) {
                let _ = tx.send(p);
            }
        }
    };
    match notify::recommended_watcher(handler)
        .and_then(|mut w| w.watch(dir, notify::RecursiveMode::Recursive).map(|()| w))
    {
        Ok(w) => {
            tracing::debug!(dir = %dir.display(), "watching for changes");
            Some(w)
        }
        Err(e) => {
            tracing::warn!(dir = %dir.display(), "cannot watch the content directory, polling only: {e}");
            None
        }
    }
}
