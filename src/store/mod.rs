//! The database: subscribers, the consent log and the block list, in one SQLite file.
//!
//! SQLite in WAL mode with a busy timeout, so the daemon and the command line share the
//! file. The schema is migrated at open. Time is always passed in (Unix seconds).
//!
//! Privacy: the consent log and the block list never hold an address, only a keyed hash of
//! it (HMAC-SHA256 with a random key kept in the database). Unsubscribing deletes the
//! subscriber's row with the address, topics and client address.

use std::path::Path;

use hmac::{Hmac, Mac};
use rusqlite::{Connection, OptionalExtension, params};
use sha2::Sha256;

use crate::email::Email;

/// The schema, one migration a step; `PRAGMA user_version` counts the steps applied.
const MIGRATIONS: &[&str] = &[
    // 1: subscribers, consent log, block list, settings.
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL) STRICT;
     CREATE TABLE subscribers (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        email TEXT NOT NULL UNIQUE,
        address_hash TEXT NOT NULL UNIQUE,
        status TEXT NOT NULL CHECK (status IN ('pending', 'active')),
        topics TEXT NOT NULL DEFAULT '[]',
        digests TEXT NOT NULL DEFAULT '[]',
        created_at INTEGER NOT NULL,
        confirmed_at INTEGER,
        consent_version TEXT NOT NULL,
        source TEXT NOT NULL,
        client_address TEXT,
        mail_window_start INTEGER NOT NULL DEFAULT 0,
        mails_in_window INTEGER NOT NULL DEFAULT 0
     ) STRICT;
     CREATE INDEX subscribers_status ON subscribers (status, created_at);
     CREATE TABLE consent_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        address_hash TEXT NOT NULL,
        event TEXT NOT NULL CHECK (event IN ('request', 'confirm', 'unsubscribe', 'import', 'expire', 'preferences')),
        at INTEGER NOT NULL,
        consent_version TEXT,
        source TEXT,
        client_address TEXT
     ) STRICT;
     CREATE INDEX consent_log_address ON consent_log (address_hash, at);
     CREATE TRIGGER consent_log_append_only BEFORE UPDATE ON consent_log
        BEGIN SELECT RAISE(ABORT, 'the consent log is append-only'); END;
     CREATE TABLE blocked (address_hash TEXT PRIMARY KEY, at INTEGER NOT NULL) STRICT;",
    // 2: digests: when each item was first seen, runs, and a delivery per (run, subscriber).
    "CREATE TABLE items_seen (item_id TEXT PRIMARY KEY, first_seen INTEGER NOT NULL) STRICT;
     CREATE TABLE digest_runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        digest TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        window_start INTEGER NOT NULL,
        items TEXT NOT NULL,
        finished_at INTEGER
     ) STRICT;
     CREATE INDEX digest_runs_digest ON digest_runs (digest, started_at);
     CREATE TABLE deliveries (
        run_id INTEGER NOT NULL REFERENCES digest_runs (id),
        subscriber_id INTEGER NOT NULL,
        items TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'failed', 'skipped')),
        attempts INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (run_id, subscriber_id)
     ) STRICT;",
    // 3: an address whose mails fail permanently again and again is suspended.
    "ALTER TABLE subscribers ADD COLUMN suspended_at INTEGER;",
];

/// After this many permanent failures in a row, an address gets no more digests.
pub const SUSPEND_AFTER_FAILURES: i64 = 3;

/// How many mails one address may trigger through the subscription form per day.
pub const MAILS_PER_DAY: i64 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Active,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Active => "active",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Subscriber {
    pub id: i64,
    pub email: Email,
    pub status: Status,
    /// Chosen topics (tags); empty means every topic.
    pub topics: Vec<String>,
    /// Chosen digests by name.
    pub digests: Vec<String>,
    pub created_at: i64,
    pub confirmed_at: Option<i64>,
    pub consent_version: String,
    pub source: String,
    pub client_address: Option<String>,
    /// No more digests: its mails failed permanently again and again.
    pub suspended: bool,
}

/// One entry of the consent log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConsentEvent {
    pub event: String,
    pub at: i64,
    pub consent_version: Option<String>,
    pub source: Option<String>,
    pub client_address: Option<String>,
}

/// What a subscription request led to; the caller mails accordingly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requested {
    /// A new or still pending address: send the confirmation mail.
    Confirm(Subscriber),
    /// An active address: send a short notice instead.
    AlreadyActive(Subscriber),
    /// Too many mails to this address today: send nothing (the page says the same).
    Quiet,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirmed {
    Now(Subscriber),
    Already(Subscriber),
    Unknown,
}

/// What an import row did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Imported {
    Added,
    Updated,
    Blocked,
    Unsubscribed,
}

pub type Result<T> = std::result::Result<T, rusqlite::Error>;

pub struct Store {
    conn: Connection,
    address_key: Vec<u8>,
}

impl Store {
    /// Opens (and creates, and migrates) the database at `path`.
    pub fn open(path: &Path) -> anyhow::Result<Store> {
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        }
        let conn = Connection::open(path)
            .map_err(|e| anyhow::anyhow!("cannot open the database {}: {e}", path.display()))?;
        Store::setup(conn).map_err(|e| anyhow::anyhow!("database {}: {e}", path.display()))
    }

    fn setup(mut conn: Connection) -> anyhow::Result<Store> {
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Erased addresses must not linger in freed pages.
        conn.pragma_update(None, "secure_delete", "ON")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let version = usize::try_from(version).unwrap_or(0);
        anyhow::ensure!(
            version <= MIGRATIONS.len(),
            "the database was written by a newer herold (schema {version}, this one knows {})",
            MIGRATIONS.len()
        );
        if version < MIGRATIONS.len() {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            // Another process may have migrated meanwhile.
            let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
            let version = usize::try_from(version).unwrap_or(0);
            for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
                tx.execute_batch(sql)?;
                tx.pragma_update(None, "user_version", i as i64 + 1)?;
            }
            tx.commit()?;
        }
        let key: Option<Vec<u8>> = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'address_key'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        let address_key = match key {
            Some(k) => k,
            None => {
                let mut k = vec![0u8; 32];
                getrandom::fill(&mut k).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
                conn.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('address_key', ?1)",
                    [&k],
                )?;
                conn.query_row(
                    "SELECT value FROM meta WHERE key = 'address_key'",
                    [],
                    |r| r.get(0),
                )?
            }
        };
        Ok(Store { conn, address_key })
    }

    /// The keyed hash that stands for an address in the log and the block list.
    pub fn address_hash(&self, email: &Email) -> String {
        let mut m =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.address_key).expect("any key length");
        m.update(email.as_str().as_bytes());
        m.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// A subscription request from the form. Records it and says which mail to send.
    pub fn request(
        &mut self,
        email: &Email,
        topics: &[String],
        digests: &[String],
        consent_version: &str,
        client: Option<&str>,
        now: i64,
    ) -> Result<Requested> {
        let hash = self.address_hash(email);
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let existing = get_where(&tx, "email = ?1", params![email.as_str()])?;
        log(
            &tx,
            &hash,
            "request",
            now,
            Some(consent_version),
            Some("form"),
            client,
        )?;
        let outcome = match existing {
            None => {
                tx.execute(
                    "INSERT INTO subscribers (email, address_hash, status, topics, digests, created_at, consent_version, source,
                        client_address, mail_window_start, mails_in_window)
                     VALUES (?1, ?2, 'pending', ?3, ?4, ?5, ?6, 'form', ?7, ?5, 1)",
                    params![email.as_str(), hash, json(topics), json(digests), now, consent_version, client],
                )?;
                let s =
                    get_where(&tx, "email = ?1", params![email.as_str()])?.expect("just inserted");
                Requested::Confirm(s)
            }
            Some(s) => {
                let (start, count): (i64, i64) = tx.query_row(
                    "SELECT mail_window_start, mails_in_window FROM subscribers WHERE id = ?1",
                    [s.id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                let (start, count) = if now - start >= 86_400 {
                    (now, 0)
                } else {
                    (start, count)
                };
                if count >= MAILS_PER_DAY {
                    Requested::Quiet
                } else {
                    tx.execute(
                        "UPDATE subscribers SET mail_window_start = ?2, mails_in_window = ?3 WHERE id = ?1",
                        params![s.id, start, count + 1],
                    )?;
                    if s.status == Status::Pending {
                        // The latest request of a pending address decides its choice; the
                        // choice of an active one changes only through its preferences link.
                        tx.execute(
                            "UPDATE subscribers SET topics = ?2, digests = ?3, consent_version = ?4 WHERE id = ?1",
                            params![s.id, json(topics), json(digests), consent_version],
                        )?;
                        Requested::Confirm(get_where(&tx, "id = ?1", [s.id])?.expect("exists"))
                    } else {
                        Requested::AlreadyActive(s)
                    }
                }
            }
        };
        tx.commit()?;
        Ok(outcome)
    }

    /// Confirms a pending subscriber.
    pub fn confirm(&mut self, id: i64, client: Option<&str>, now: i64) -> Result<Confirmed> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let Some(s) = get_where(&tx, "id = ?1", [id])? else {
            return Ok(Confirmed::Unknown);
        };
        if s.status == Status::Active {
            return Ok(Confirmed::Already(s));
        }
        tx.execute(
            "UPDATE subscribers SET status = 'active', confirmed_at = ?2 WHERE id = ?1",
            params![id, now],
        )?;
        let hash: String = tx.query_row(
            "SELECT address_hash FROM subscribers WHERE id = ?1",
            [id],
            |r| r.get(0),
        )?;
        log(
            &tx,
            &hash,
            "confirm",
            now,
            Some(&s.consent_version),
            Some(&s.source),
            client,
        )?;
        let s = get_where(&tx, "id = ?1", [id])?.expect("exists");
        tx.commit()?;
        Ok(Confirmed::Now(s))
    }

    /// Unsubscribes from everything: the row with the address goes, the keyed hash stays in
    /// the log and the block list. Returns whether there was a subscriber.
    pub fn unsubscribe(&mut self, id: i64, source: &str, now: i64) -> Result<bool> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let hash: Option<String> = tx
            .query_row(
                "SELECT address_hash FROM subscribers WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()?;
        let Some(hash) = hash else { return Ok(false) };
        tx.execute("DELETE FROM subscribers WHERE id = ?1", [id])?;
        tx.execute(
            "INSERT OR REPLACE INTO blocked (address_hash, at) VALUES (?1, ?2)",
            params![hash, now],
        )?;
        log(&tx, &hash, "unsubscribe", now, None, Some(source), None)?;
        tx.commit()?;
        self.scrub();
        Ok(true)
    }

    /// Moves the write-ahead log into the database file and truncates it, so the page images
    /// of erased rows leave the WAL too. Best effort: a reader holding an old snapshot may
    /// keep the WAL until its next checkpoint.
    fn scrub(&self) {
        if let Err(e) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        {
            tracing::debug!("wal checkpoint: {e}");
        }
    }

    /// Changes a subscriber's topics and digests (DSGVO Art. 16).
    pub fn set_preferences(
        &mut self,
        id: i64,
        topics: &[String],
        digests: &[String],
        now: i64,
    ) -> Result<bool> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let n = tx.execute(
            "UPDATE subscribers SET topics = ?2, digests = ?3 WHERE id = ?1",
            params![id, json(topics), json(digests)],
        )?;
        if n == 1 {
            let hash: String = tx.query_row(
                "SELECT address_hash FROM subscribers WHERE id = ?1",
                [id],
                |r| r.get(0),
            )?;
            log(
                &tx,
                &hash,
                "preferences",
                now,
                None,
                Some("preferences page"),
                None,
            )?;
        }
        tx.commit()?;
        Ok(n == 1)
    }

    pub fn get(&self, id: i64) -> Result<Option<Subscriber>> {
        get_where(&self.conn, "id = ?1", [id])
    }

    pub fn by_email(&self, email: &Email) -> Result<Option<Subscriber>> {
        get_where(&self.conn, "email = ?1", [email.as_str()])
    }

    /// Pending and active subscribers, by address.
    pub fn list(&self) -> Result<Vec<Subscriber>> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("{SELECT} ORDER BY email"))?;
        let rows = stmt.query_map([], row_to_subscriber)?;
        rows.collect()
    }

    /// Adds or updates an address from the command line or a CSV import. An `active` one
    /// counts as imported consent (logged with its date and source); an address on the block
    /// list is not imported again.
    #[allow(clippy::too_many_arguments)]
    pub fn import(
        &mut self,
        email: &Email,
        status: Status,
        topics: &[String],
        digests: &[String],
        consented_at: Option<i64>,
        source: &str,
        consent_version: &str,
        now: i64,
    ) -> Result<Imported> {
        let hash = self.address_hash(email);
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let blocked: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM blocked WHERE address_hash = ?1)",
            [&hash],
            |r| r.get(0),
        )?;
        if blocked {
            return Ok(Imported::Blocked);
        }
        let existing = get_where(&tx, "email = ?1", [email.as_str()])?;
        let at = consented_at.unwrap_or(now);
        let outcome = match existing {
            None => {
                tx.execute(
                    "INSERT INTO subscribers (email, address_hash, status, topics, digests, created_at, confirmed_at, consent_version, source)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    params![
                        email.as_str(),
                        hash,
                        status.as_str(),
                        json(topics),
                        json(digests),
                        now,
                        (status == Status::Active).then_some(at),
                        consent_version,
                        source
                    ],
                )?;
                Imported::Added
            }
            Some(s) => {
                let status = if s.status == Status::Active {
                    Status::Active
                } else {
                    status
                };
                tx.execute(
                    "UPDATE subscribers SET status = ?2, topics = ?3, digests = ?4, confirmed_at = COALESCE(confirmed_at, ?5) WHERE id = ?1",
                    params![s.id, status.as_str(), json(topics), json(digests), (status == Status::Active).then_some(at)],
                )?;
                Imported::Updated
            }
        };
        if status == Status::Active {
            log(
                &tx,
                &hash,
                "import",
                at,
                Some(consent_version),
                Some(source),
                None,
            )?;
        }
        tx.commit()?;
        Ok(outcome)
    }

    /// Puts an address on the block list (an `unsubscribed` import row, `subscribers remove`),
    /// removing its subscription if there is one.
    pub fn block(&mut self, email: &Email, source: &str, now: i64) -> Result<Imported> {
        if let Some(s) = self.by_email(email)? {
            self.unsubscribe(s.id, source, now)?;
            return Ok(Imported::Unsubscribed);
        }
        let hash = self.address_hash(email);
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let new = tx.execute(
            "INSERT OR IGNORE INTO blocked (address_hash, at) VALUES (?1, ?2)",
            params![hash, now],
        )?;
        if new == 1 {
            log(&tx, &hash, "unsubscribe", now, None, Some(source), None)?;
        }
        tx.commit()?;
        Ok(Imported::Unsubscribed)
    }

    /// The consent log entries of an address, oldest first.
    pub fn consent_log(&self, email: &Email) -> Result<Vec<ConsentEvent>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT event, at, consent_version, source, client_address FROM consent_log WHERE address_hash = ?1 ORDER BY at, id",
        )?;
        let rows = stmt.query_map([self.address_hash(email)], |r| {
            Ok(ConsentEvent {
                event: r.get(0)?,
                at: r.get(1)?,
                consent_version: r.get(2)?,
                source: r.get(3)?,
                client_address: r.get(4)?,
            })
        })?;
        rows.collect()
    }

    pub fn is_blocked(&self, email: &Email) -> Result<bool> {
        self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM blocked WHERE address_hash = ?1)",
            [self.address_hash(email)],
            |r| r.get(0),
        )
    }

    /// Deletes pending subscriptions older than `expiry` seconds; logs each as `expire`.
    pub fn expire_pending(&mut self, now: i64, expiry: i64) -> Result<usize> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let cutoff = now - expiry;
        let hashes: Vec<String> = {
            let mut stmt = tx.prepare(
                "SELECT address_hash FROM subscribers WHERE status = 'pending' AND created_at < ?1",
            )?;
            stmt.query_map([cutoff], |r| r.get(0))?
                .collect::<Result<_>>()?
        };
        for h in &hashes {
            log(&tx, h, "expire", now, None, None, None)?;
        }
        tx.execute(
            "DELETE FROM subscribers WHERE status = 'pending' AND created_at < ?1",
            [cutoff],
        )?;
        tx.commit()?;
        if !hashes.is_empty() {
            self.scrub();
        }
        Ok(hashes.len())
    }

    /// Deletes the log entries of addresses whose subscription ended more than `retention`
    /// seconds ago (and that have not subscribed again).
    pub fn purge_log(&mut self, now: i64, retention: i64) -> Result<usize> {
        self.conn.execute(
            "DELETE FROM consent_log WHERE address_hash IN (
                SELECT address_hash FROM consent_log GROUP BY address_hash
                HAVING MAX(CASE WHEN event IN ('unsubscribe', 'expire') THEN at END) < ?1
                   AND MAX(at) = MAX(CASE WHEN event IN ('unsubscribe', 'expire') THEN at END))
             AND address_hash NOT IN (SELECT address_hash FROM subscribers)",
            [now - retention],
        )
    }
}

/// A digest run: its items and recipients were fixed when it started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub id: i64,
    pub digest: String,
    pub started_at: i64,
    pub window_start: i64,
    pub items: Vec<String>,
    pub finished_at: Option<i64>,
}

/// One mail of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub run_id: i64,
    pub subscriber_id: i64,
    pub items: Vec<String>,
    pub status: String,
    pub attempts: i64,
}

impl Store {
    /// Records `now` as the first sight of every id not seen before; gives every id's first
    /// sight.
    pub fn record_seen(
        &mut self,
        ids: &[&str],
        now: i64,
    ) -> Result<std::collections::HashMap<String, i64>> {
        let mut seen = self.seen()?;
        let new: Vec<&&str> = ids.iter().filter(|id| !seen.contains_key(**id)).collect();
        if !new.is_empty() {
            let tx = self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT OR IGNORE INTO items_seen (item_id, first_seen) VALUES (?1, ?2)",
                )?;
                for id in &new {
                    insert.execute(params![id, now])?;
                }
            }
            tx.commit()?;
            // Another process may have recorded some of them first: read them back.
            seen = self.seen()?;
        }
        Ok(seen)
    }

    /// Records `now` as the first sight of every id not seen before, in one statement, without
    /// reading anything back (for `build`, which needs no answer).
    pub fn note_seen(&mut self, ids: &[&str], now: i64) -> Result<usize> {
        let json = serde_json::to_string(ids).expect("strings serialise");
        self.conn.execute(
            "INSERT OR IGNORE INTO items_seen (item_id, first_seen) SELECT value, ?2 FROM json_each(?1)",
            params![json, now],
        )
    }

    /// The first sight of every item herold has seen.
    pub fn seen(&self) -> Result<std::collections::HashMap<String, i64>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT item_id, first_seen FROM items_seen")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect()
    }

    /// The last run of `digest` that finished.
    pub fn last_finished_run(&self, digest: &str) -> Result<Option<Run>> {
        self.conn
            .prepare_cached(&format!("{RUN_SELECT} WHERE digest = ?1 AND finished_at IS NOT NULL ORDER BY started_at DESC, id DESC LIMIT 1"))?
            .query_row([digest], row_to_run)
            .optional()
    }

    /// A setting kept in the database, e.g. when the scheduler first ran for a digest.
    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| {
                r.get::<_, Vec<u8>>(0)
            })
            .optional()
            .map(|v| v.map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// Sets `key` unless it is set; gives the value it has afterwards.
    pub fn meta_or_insert(&mut self, key: &str, value: &str) -> Result<String> {
        self.conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES (?1, ?2)",
            params![key, value.as_bytes()],
        )?;
        Ok(self.meta(key)?.unwrap_or_else(|| value.to_string()))
    }

    /// When the latest run of `digest` (finished or not) started.
    pub fn last_run_started(&self, digest: &str) -> Result<Option<i64>> {
        self.conn.query_row(
            "SELECT MAX(started_at) FROM digest_runs WHERE digest = ?1",
            [digest],
            |r| r.get(0),
        )
    }

    /// The items of every run of `digest` that started at or after `since` (runs that started
    /// within the same second as the window start count as before it).
    pub fn items_of_runs_since(&self, digest: &str, since: i64) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT items FROM digest_runs WHERE digest = ?1 AND started_at >= ?2",
        )?;
        let rows = stmt.query_map(params![digest, since], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for r in rows {
            out.extend(serde_json::from_str::<Vec<String>>(&r?).unwrap_or_default());
        }
        Ok(out)
    }

    /// The run of `digest` that started and has not finished, if any.
    pub fn unfinished_run(&self, digest: &str) -> Result<Option<Run>> {
        self.conn
            .prepare_cached(&format!(
                "{RUN_SELECT} WHERE digest = ?1 AND finished_at IS NULL ORDER BY id LIMIT 1"
            ))?
            .query_row([digest], row_to_run)
            .optional()
    }

    /// Starts a run: the run and one pending delivery per (subscriber, items), in one
    /// transaction, so a run exists with all its recipients or not at all.
    pub fn start_run(
        &mut self,
        digest: &str,
        now: i64,
        window_start: i64,
        items: &[String],
        deliveries: &[(i64, &str)],
    ) -> Result<Run> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO digest_runs (digest, started_at, window_start, items) VALUES (?1, ?2, ?3, ?4)",
            params![digest, now, window_start, json(items)],
        )?;
        let id = tx.last_insert_rowid();
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO deliveries (run_id, subscriber_id, items, status, updated_at) VALUES (?1, ?2, ?3, 'pending', ?4)",
            )?;
            for (subscriber, its) in deliveries {
                insert.execute(params![id, subscriber, its, now])?;
            }
        }
        if deliveries.is_empty() {
            tx.execute(
                "UPDATE digest_runs SET finished_at = ?2 WHERE id = ?1",
                params![id, now],
            )?;
        }
        tx.commit()?;
        Ok(Run {
            id,
            digest: digest.to_string(),
            started_at: now,
            window_start,
            items: items.to_vec(),
            finished_at: deliveries.is_empty().then_some(now),
        })
    }

    /// Active subscribers of `digest`: their id and topics.
    pub fn digest_recipients(&self, digest: &str) -> Result<Vec<(i64, Vec<String>)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, topics FROM subscribers WHERE status = 'active' AND suspended_at IS NULL
             AND EXISTS (SELECT 1 FROM json_each(subscribers.digests) WHERE value = ?1) ORDER BY id",
        )?;
        let rows = stmt.query_map([digest], |r| {
            let topics: String = r.get(1)?;
            Ok((r.get(0)?, serde_json::from_str(&topics).unwrap_or_default()))
        })?;
        rows.collect()
    }

    /// Up to `limit` pending deliveries of a run with a subscriber id above `after`.
    pub fn pending_deliveries_page(
        &self,
        run: i64,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Delivery>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT run_id, subscriber_id, items, status, attempts FROM deliveries
             WHERE run_id = ?1 AND status = 'pending' AND subscriber_id > ?2 ORDER BY subscriber_id LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![run, after, limit as i64], |r| {
            let items: String = r.get(2)?;
            Ok(Delivery {
                run_id: r.get(0)?,
                subscriber_id: r.get(1)?,
                items: serde_json::from_str(&items).unwrap_or_default(),
                status: r.get(3)?,
                attempts: r.get(4)?,
            })
        })?;
        rows.collect()
    }

    /// Records the outcome of one delivery: `sent`, `failed` (permanently), `skipped`, or
    /// `pending` again after a temporary failure.
    pub fn record_delivery(
        &mut self,
        run: i64,
        subscriber: i64,
        status: &str,
        error: Option<&str>,
        now: i64,
    ) -> Result<()> {
        // Written to the WAL without waiting for the disk: the record survives a killed
        // process (the page cache keeps it), which is what keeps a resumed run from sending
        // twice; only a power loss could lose the last records (and send those mails again).
        self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        let result = self
            .conn
            .prepare_cached(
                "UPDATE deliveries SET status = ?3, error = ?4, attempts = attempts + 1, updated_at = ?5 WHERE run_id = ?1 AND subscriber_id = ?2",
            )
            .and_then(|mut st| st.execute(params![run, subscriber, status, error, now]));
        self.conn.pragma_update(None, "synchronous", "FULL")?;
        result?;
        if status == "failed" {
            self.suspend_if_failing(subscriber, now)?;
        }
        Ok(())
    }

    /// Suspends a subscriber whose last [`SUSPEND_AFTER_FAILURES`] deliveries all failed
    /// permanently (the address is gone, the mailbox refuses): no more digests until the
    /// address subscribes again or an operator clears it.
    fn suspend_if_failing(&mut self, subscriber: i64, now: i64) -> Result<()> {
        let recent: Vec<String> = {
            let mut st = self.conn.prepare_cached(
                "SELECT status FROM deliveries WHERE subscriber_id = ?1 AND status IN ('sent', 'failed')
                 ORDER BY updated_at DESC, run_id DESC LIMIT ?2",
            )?;
            st.query_map(params![subscriber, SUSPEND_AFTER_FAILURES], |r| r.get(0))?
                .collect::<Result<_>>()?
        };
        if recent.len() as i64 == SUSPEND_AFTER_FAILURES && recent.iter().all(|s| s == "failed") {
            let n = self.conn.execute(
                "UPDATE subscribers SET suspended_at = ?2 WHERE id = ?1 AND suspended_at IS NULL",
                params![subscriber, now],
            )?;
            if n == 1 {
                tracing::warn!(
                    subscriber,
                    failures = SUSPEND_AFTER_FAILURES,
                    "address suspended after repeated permanent failures"
                );
            }
        }
        Ok(())
    }

    /// Whether a subscriber is suspended (repeated permanent failures).
    pub fn is_suspended(&self, id: i64) -> Result<bool> {
        self.conn
            .query_row(
                "SELECT suspended_at IS NOT NULL FROM subscribers WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()
            .map(|v| v.unwrap_or(false))
    }

    /// Marks a run finished if no delivery is pending; says whether it is.
    pub fn finish_run_if_done(&mut self, run: i64, now: i64) -> Result<bool> {
        let pending: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM deliveries WHERE run_id = ?1 AND status = 'pending'",
            [run],
            |r| r.get(0),
        )?;
        if pending == 0 {
            self.conn.execute(
                "UPDATE digest_runs SET finished_at = COALESCE(finished_at, ?2) WHERE id = ?1",
                params![run, now],
            )?;
        }
        Ok(pending == 0)
    }

    /// Counts of a run's deliveries by status.
    pub fn delivery_counts(&self, run: i64) -> Result<std::collections::BTreeMap<String, i64>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT status, COUNT(*) FROM deliveries WHERE run_id = ?1 GROUP BY status",
        )?;
        let rows = stmt.query_map([run], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect()
    }
}

const RUN_SELECT: &str =
    "SELECT id, digest, started_at, window_start, items, finished_at FROM digest_runs";

fn row_to_run(r: &rusqlite::Row) -> Result<Run> {
    let items: String = r.get(4)?;
    Ok(Run {
        id: r.get(0)?,
        digest: r.get(1)?,
        started_at: r.get(2)?,
        window_start: r.get(3)?,
        items: serde_json::from_str(&items).unwrap_or_default(),
        finished_at: r.get(5)?,
    })
}

const SELECT: &str = "SELECT id, email, status, topics, digests, created_at, confirmed_at, consent_version, source, client_address, suspended_at IS NOT NULL FROM subscribers";

fn get_where(
    conn: &Connection,
    condition: &str,
    p: impl rusqlite::Params,
) -> Result<Option<Subscriber>> {
    conn.prepare_cached(&format!("{SELECT} WHERE {condition}"))?
        .query_row(p, row_to_subscriber)
        .optional()
}

fn row_to_subscriber(r: &rusqlite::Row) -> Result<Subscriber> {
    let email: String = r.get(1)?;
    let status: String = r.get(2)?;
    let list = |i: usize| -> Result<Vec<String>> {
        let s: String = r.get(i)?;
        Ok(serde_json::from_str(&s).unwrap_or_default())
    };
    Ok(Subscriber {
        id: r.get(0)?,
        email: Email::parse(&email).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, Box::new(e))
        })?,
        status: if status == "active" {
            Status::Active
        } else {
            Status::Pending
        },
        topics: list(3)?,
        digests: list(4)?,
        created_at: r.get(5)?,
        confirmed_at: r.get(6)?,
        consent_version: r.get(7)?,
        source: r.get(8)?,
        client_address: r.get(9)?,
        suspended: r.get(10)?,
    })
}

fn log(
    conn: &Connection,
    hash: &str,
    event: &str,
    at: i64,
    version: Option<&str>,
    source: Option<&str>,
    client: Option<&str>,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO consent_log (address_hash, event, at, consent_version, source, client_address) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![hash, event, at, version, source, client])?;
    Ok(())
}

fn json(list: &[String]) -> String {
    serde_json::to_string(list).expect("a list of strings serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("data/h.sqlite3")).unwrap();
        (dir, s)
    }

    fn e(s: &str) -> Email {
        Email::parse(s).unwrap()
    }

    #[test]
    fn double_opt_in_lifecycle_keeps_only_hashes() {
        let (dir, mut st) = store();
        let a = e("anna@example.org");
        let Requested::Confirm(s) = st
            .request(
                &a,
                &["OZG".into()],
                &["woechentlich".into()],
                "1",
                None,
                100,
            )
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(s.status, Status::Pending);
        assert!(matches!(
            st.confirm(s.id, None, 200).unwrap(),
            Confirmed::Now(_)
        ));
        assert!(matches!(
            st.confirm(s.id, None, 201).unwrap(),
            Confirmed::Already(_)
        ));
        assert!(matches!(
            st.request(&a, &[], &[], "1", None, 300).unwrap(),
            Requested::AlreadyActive(_)
        ));
        assert_eq!(
            st.get(s.id).unwrap().unwrap().topics,
            ["OZG"],
            "a request does not change an active choice"
        );
        assert!(st.unsubscribe(s.id, "link", 400).unwrap());
        assert!(st.get(s.id).unwrap().is_none());
        assert!(st.is_blocked(&a).unwrap());
        let events: Vec<String> = st
            .consent_log(&a)
            .unwrap()
            .into_iter()
            .map(|c| c.event)
            .collect();
        assert_eq!(events, ["request", "confirm", "request", "unsubscribe"]);
        drop(st);
        // The address itself is nowhere in the file any more.
        let mut bytes = Vec::new();
        for f in std::fs::read_dir(dir.path().join("data")).unwrap() {
            bytes.extend(std::fs::read(f.unwrap().path()).unwrap());
        }
        assert!(
            !bytes
                .windows(a.as_str().len())
                .any(|w| w == a.as_str().as_bytes()),
            "address left in the database"
        );
    }

    #[test]
    fn mails_per_address_are_limited_quietly() {
        let (_d, mut st) = store();
        let a = e("b@example.org");
        let mut mails = 0;
        for t in 0..10 {
            if !matches!(
                st.request(&a, &[], &[], "1", None, 1000 + t).unwrap(),
                Requested::Quiet
            ) {
                mails += 1;
            }
        }
        assert_eq!(mails, MAILS_PER_DAY);
        assert!(matches!(
            st.request(&a, &[], &[], "1", None, 1000 + 86_400).unwrap(),
            Requested::Confirm(_)
        ));
    }

    #[test]
    fn imports_respect_the_block_list_and_log_consent() {
        let (_d, mut st) = store();
        let a = e("c@example.org");
        assert_eq!(
            st.import(
                &a,
                Status::Active,
                &[],
                &[],
                Some(50),
                "altliste.csv",
                "1",
                100
            )
            .unwrap(),
            Imported::Added
        );
        let log = st.consent_log(&a).unwrap();
        assert_eq!(
            (log[0].event.as_str(), log[0].at, log[0].source.as_deref()),
            ("import", 50, Some("altliste.csv"))
        );
        st.block(&a, "cli", 200).unwrap();
        assert_eq!(
            st.import(&a, Status::Active, &[], &[], None, "again.csv", "1", 300)
                .unwrap(),
            Imported::Blocked
        );
        assert!(st.by_email(&a).unwrap().is_none());
    }

    #[test]
    fn pending_expire_and_old_log_entries_are_purged() {
        let (_d, mut st) = store();
        let a = e("d@example.org");
        st.request(&a, &[], &[], "1", Some("192.0.2.1"), 0).unwrap();
        assert_eq!(st.expire_pending(100, 200).unwrap(), 0);
        assert_eq!(st.expire_pending(300, 200).unwrap(), 1);
        assert!(st.by_email(&a).unwrap().is_none());
        assert_eq!(st.consent_log(&a).unwrap().len(), 2);
        assert_eq!(st.purge_log(300 + 50, 100).unwrap(), 0, "not old enough");
        assert_eq!(st.purge_log(300 + 101, 100).unwrap(), 2);
        assert!(st.consent_log(&a).unwrap().is_empty());
    }

    #[test]
    fn the_consent_log_is_append_only() {
        let (_d, mut st) = store();
        st.request(&e("x@example.org"), &[], &[], "1", None, 1)
            .unwrap();
        let err = st
            .conn
            .execute("UPDATE consent_log SET event = 'confirm'", [])
            .unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");
    }

    #[test]
    fn two_connections_share_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.sqlite3");
        let mut one = Store::open(&path).unwrap();
        let two = Store::open(&path).unwrap();
        one.import(
            &e("y@example.org"),
            Status::Active,
            &[],
            &[],
            None,
            "cli",
            "1",
            1,
        )
        .unwrap();
        assert_eq!(two.list().unwrap().len(), 1);
        assert_eq!(
            one.address_hash(&e("y@example.org")),
            two.address_hash(&e("y@example.org"))
        );
    }
}
