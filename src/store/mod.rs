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

mod bounces;
mod consent;
mod runs;
mod subscribers;

pub use bounces::{BounceLimits, Bounced};
pub use consent::ConsentEvent;
pub use runs::{Delivery, Run};
pub use subscribers::{
    Choice, Confirmed, ImportAction, ImportRow, Imported, MAILS_PER_DAY, Requested,
    SUSPEND_AFTER_FAILURES, Status, Subscriber, Suspension,
};

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
    // 4: a language per subscriber; the consent log records the language of the text shown.
    "ALTER TABLE subscribers ADD COLUMN language TEXT;
     ALTER TABLE consent_log ADD COLUMN language TEXT;",
    // 5: bounces and complaints. The consent log learns `complaint` (SQLite cannot change a
    // CHECK constraint: the table is copied, and its trigger and index made again).
    "CREATE TABLE consent_log_new (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        address_hash TEXT NOT NULL,
        event TEXT NOT NULL CHECK (event IN ('request', 'confirm', 'unsubscribe', 'import', 'expire', 'preferences', 'complaint')),
        at INTEGER NOT NULL,
        consent_version TEXT,
        source TEXT,
        client_address TEXT,
        language TEXT
     ) STRICT;
     INSERT INTO consent_log_new (id, address_hash, event, at, consent_version, source, client_address, language)
        SELECT id, address_hash, event, at, consent_version, source, client_address, language FROM consent_log;
     DROP TABLE consent_log;
     ALTER TABLE consent_log_new RENAME TO consent_log;
     CREATE INDEX consent_log_address ON consent_log (address_hash, at);
     CREATE TRIGGER consent_log_append_only BEFORE UPDATE ON consent_log
        BEGIN SELECT RAISE(ABORT, 'the consent log is append-only'); END;
     ALTER TABLE subscribers ADD COLUMN suspended_reason TEXT;
     CREATE TABLE bounces (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        subscriber_id INTEGER NOT NULL REFERENCES subscribers (id) ON DELETE CASCADE,
        run_id INTEGER NOT NULL,
        class TEXT NOT NULL CHECK (class IN ('hard', 'soft')),
        status TEXT,
        at INTEGER NOT NULL
     ) STRICT;
     CREATE INDEX bounces_subscriber ON bounces (subscriber_id, at);
     CREATE TABLE bounce_counts (class TEXT PRIMARY KEY, n INTEGER NOT NULL) STRICT;",
];

pub type Result<T> = std::result::Result<T, rusqlite::Error>;

/// The one handle on the database that web, digests and commands use.
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
        hash_address(&self.address_key, email)
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
}

fn hash_address(key: &[u8], email: &Email) -> String {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
    m.update(email.as_str().as_bytes());
    m.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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

    fn active(a: &Email, consented_at: Option<i64>, source: &str) -> ImportRow {
        ImportRow {
            email: a.clone(),
            source: source.into(),
            action: ImportAction::Subscribe {
                status: Status::Active,
                choice: Choice::default(),
                consented_at,
                consent_version: "1".into(),
            },
        }
    }

    #[test]
    fn double_opt_in_lifecycle_keeps_only_hashes() {
        let (dir, mut st) = store();
        let a = e("anna@example.org");
        let Requested::Confirm(s) = st
            .request(
                &a,
                &Choice {
                    topics: vec!["OZG".into()],
                    digests: vec!["woechentlich".into()],
                    language: Some("en".into()),
                },
                "1",
                None,
                100,
            )
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(s.status, Status::Pending);
        assert_eq!(s.language.as_deref(), Some("en"));
        assert!(matches!(
            st.confirm(s.id, None, 200).unwrap(),
            Confirmed::Now(_)
        ));
        assert!(matches!(
            st.confirm(s.id, None, 201).unwrap(),
            Confirmed::Already(_)
        ));
        assert!(matches!(
            st.request(&a, &Choice::default(), "1", None, 300).unwrap(),
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
                st.request(&a, &Choice::default(), "1", None, 1000 + t)
                    .unwrap(),
                Requested::Quiet
            ) {
                mails += 1;
            }
        }
        assert_eq!(mails, MAILS_PER_DAY);
        assert!(matches!(
            st.request(&a, &Choice::default(), "1", None, 1000 + 86_400)
                .unwrap(),
            Requested::Confirm(_)
        ));
    }

    #[test]
    fn imports_respect_the_block_list_and_log_consent() {
        let (_d, mut st) = store();
        let a = e("c@example.org");
        assert_eq!(
            st.import(&active(&a, Some(50), "altliste.csv"), 100)
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
            st.import(&active(&a, None, "again.csv"), 300).unwrap(),
            Imported::Blocked
        );
        assert!(st.by_email(&a).unwrap().is_none());
    }

    #[test]
    fn pending_expire_and_old_log_entries_are_purged() {
        let (_d, mut st) = store();
        let a = e("d@example.org");
        st.request(&a, &Choice::default(), "1", Some("192.0.2.1"), 0)
            .unwrap();
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
        st.request(&e("x@example.org"), &Choice::default(), "1", None, 1)
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
        one.import(&active(&e("y@example.org"), None, "cli"), 1)
            .unwrap();
        assert_eq!(two.list().unwrap().len(), 1);
        assert_eq!(
            one.address_hash(&e("y@example.org")),
            two.address_hash(&e("y@example.org"))
        );
    }
}
