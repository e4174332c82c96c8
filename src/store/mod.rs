//! The database: subscribers, the consent log and the block list, digest runs and
//! deliveries, bounces. One `Store` over two engines: SQLite (a file, the default) and
//! PostgreSQL (`database.url`, for several nodes). Every query is written once against
//! [`sql::Conn`]; the callers never know which engine they talk to.
//!
//! SQLite runs in WAL mode with a busy timeout, so the daemon and the command line share the
//! file. The schema is migrated at open, on both engines. Time is always passed in (Unix
//! seconds).
//!
//! Privacy: the consent log and the block list never hold an address, only a keyed hash of
//! it (HMAC-SHA256 with a random key kept in the database). Unsubscribing deletes the
//! subscriber's row with the address, topics and client address; SQLite overwrites the
//! freed pages (`secure_delete`), PostgreSQL's old row versions are removed by
//! [`Store::compact`].

use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::email::Email;

mod bounces;
mod consent;
mod lease;
mod migrate;
mod pgtls;
pub mod postgres;
mod runs;
pub mod sql;
mod subscribers;
#[doc(hidden)]
pub mod testpg;

pub use bounces::{BounceLimits, Bounced};
pub use consent::ConsentEvent;
pub use lease::{LeaseState, SCHEDULE};
pub use runs::{Delivery, Run};
pub use sql::{Engine, Error};
pub use subscribers::{
    Choice, Confirmed, ImportAction, ImportRow, Imported, MAILS_PER_DAY, Requested,
    SUSPEND_AFTER_FAILURES, Status, Subscriber, Suspension,
};

use sql::{Conn, args};

/// SQLite's schema, one migration a step; `PRAGMA user_version` counts the steps applied.
const SQLITE: &[&str] = &[
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
    // 6: claims on deliveries (several nodes share a run on PostgreSQL; kept alike here).
    "ALTER TABLE deliveries ADD COLUMN claimed_by TEXT;
     ALTER TABLE deliveries ADD COLUMN claim_expires INTEGER;
     CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        holder TEXT,
        fence INTEGER NOT NULL DEFAULT 0,
        expires_at INTEGER NOT NULL DEFAULT 0
     ) STRICT;",
];

/// PostgreSQL's schema: the same tables, one migration a step, counted in `herold_schema`.
const POSTGRES: &[&str] = &[
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value BYTEA NOT NULL);
     CREATE TABLE subscribers (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        email TEXT NOT NULL UNIQUE,
        address_hash TEXT NOT NULL UNIQUE,
        status TEXT NOT NULL CHECK (status IN ('pending', 'active')),
        topics TEXT NOT NULL DEFAULT '[]',
        digests TEXT NOT NULL DEFAULT '[]',
        created_at BIGINT NOT NULL,
        confirmed_at BIGINT,
        consent_version TEXT NOT NULL,
        source TEXT NOT NULL,
        client_address TEXT,
        mail_window_start BIGINT NOT NULL DEFAULT 0,
        mails_in_window BIGINT NOT NULL DEFAULT 0,
        suspended_at BIGINT,
        language TEXT,
        suspended_reason TEXT
     );
     CREATE INDEX subscribers_status ON subscribers (status, created_at);
     CREATE TABLE consent_log (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        address_hash TEXT NOT NULL,
        event TEXT NOT NULL CHECK (event IN ('request', 'confirm', 'unsubscribe', 'import', 'expire', 'preferences', 'complaint')),
        at BIGINT NOT NULL,
        consent_version TEXT,
        source TEXT,
        client_address TEXT,
        language TEXT
     );
     CREATE INDEX consent_log_address ON consent_log (address_hash, at);
     CREATE FUNCTION herold_append_only() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN RAISE EXCEPTION 'the consent log is append-only'; END $$;
     CREATE TRIGGER consent_log_append_only BEFORE UPDATE ON consent_log
        FOR EACH ROW EXECUTE FUNCTION herold_append_only();
     CREATE TABLE blocked (address_hash TEXT PRIMARY KEY, at BIGINT NOT NULL);
     CREATE TABLE items_seen (item_id TEXT PRIMARY KEY, first_seen BIGINT NOT NULL);
     CREATE TABLE digest_runs (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        digest TEXT NOT NULL,
        started_at BIGINT NOT NULL,
        window_start BIGINT NOT NULL,
        items TEXT NOT NULL,
        finished_at BIGINT
     );
     CREATE INDEX digest_runs_digest ON digest_runs (digest, started_at);
     CREATE TABLE deliveries (
        run_id BIGINT NOT NULL REFERENCES digest_runs (id),
        subscriber_id BIGINT NOT NULL,
        items TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'failed', 'skipped')),
        attempts BIGINT NOT NULL DEFAULT 0,
        error TEXT,
        updated_at BIGINT NOT NULL,
        claimed_by TEXT,
        claim_expires BIGINT,
        PRIMARY KEY (run_id, subscriber_id)
     );
     CREATE INDEX deliveries_pending ON deliveries (run_id, subscriber_id) WHERE status = 'pending';
     CREATE TABLE bounces (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        subscriber_id BIGINT NOT NULL REFERENCES subscribers (id) ON DELETE CASCADE,
        run_id BIGINT NOT NULL,
        class TEXT NOT NULL CHECK (class IN ('hard', 'soft')),
        status TEXT,
        at BIGINT NOT NULL
     );
     CREATE INDEX bounces_subscriber ON bounces (subscriber_id, at);
     CREATE TABLE bounce_counts (class TEXT PRIMARY KEY, n BIGINT NOT NULL);
     CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        holder TEXT,
        fence BIGINT NOT NULL DEFAULT 0,
        expires_at BIGINT NOT NULL DEFAULT 0
     );",
];

pub type Result<T> = std::result::Result<T, Error>;

enum Db {
    Sqlite(rusqlite::Connection),
    Postgres(Box<postgres::Pg>),
}

/// The one handle on the database that web, digests and commands use.
pub struct Store {
    db: Db,
    address_key: Vec<u8>,
}

impl Store {
    /// The database of the configuration: PostgreSQL with `database.url`, else the SQLite
    /// file at `database.path`.
    pub fn connect(config: &crate::config::Config) -> anyhow::Result<Store> {
        match &config.database.url {
            Some(url) => Store::open_postgres(url, config.database.password()?),
            None => Store::open(&config.database.path),
        }
    }

    /// Opens (and creates, and migrates) the SQLite database at `path`.
    pub fn open(path: &Path) -> anyhow::Result<Store> {
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        }
        let conn = rusqlite::Connection::open(path)
            .map_err(|e| anyhow::anyhow!("cannot open the database {}: {e}", path.display()))?;
        Store::setup_sqlite(conn).map_err(|e| anyhow::anyhow!("database {}: {e}", path.display()))
    }

    /// Connects to (and migrates) the PostgreSQL database at `url`.
    pub fn open_postgres(url: &str, password: Option<String>) -> anyhow::Result<Store> {
        let pg = postgres::Pg::connect(url, password)?;
        migrate_postgres(&pg).map_err(|e| anyhow::anyhow!("database migration: {e}"))?;
        Store::finish(Db::Postgres(Box::new(pg))).map_err(|e| anyhow::anyhow!("database: {e}"))
    }

    fn setup_sqlite(mut conn: rusqlite::Connection) -> anyhow::Result<Store> {
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Erased addresses must not linger in freed pages.
        conn.pragma_update(None, "secure_delete", "ON")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let version = usize::try_from(version).unwrap_or(0);
        anyhow::ensure!(
            version <= SQLITE.len(),
            "the database was written by a newer herold (schema {version}, this one knows {})",
            SQLITE.len()
        );
        if version < SQLITE.len() {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            // Another process may have migrated meanwhile.
            let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
            let version = usize::try_from(version).unwrap_or(0);
            for (i, sql) in SQLITE.iter().enumerate().skip(version) {
                tx.execute_batch(sql)?;
                tx.pragma_update(None, "user_version", i as i64 + 1)?;
            }
            tx.commit()?;
        }
        Ok(Store::finish(Db::Sqlite(conn))?)
    }

    /// Reads (or makes) the key of the address hashes.
    fn finish(db: Db) -> Result<Store> {
        let mut store = Store {
            db,
            address_key: Vec::new(),
        };
        let key = store.meta_bytes("address_key")?;
        store.address_key = match key {
            Some(k) => k,
            None => {
                let mut k = vec![0u8; 32];
                getrandom::fill(&mut k).map_err(|e| Error::Other(format!("no randomness: {e}")))?;
                store.c().exec(
                    "INSERT INTO meta (key, value) VALUES ('address_key', ?1) ON CONFLICT (key) DO NOTHING",
                    args![k],
                )?;
                store.meta_bytes("address_key")?.ok_or(Error::NoRow)?
            }
        };
        Ok(store)
    }

    /// The connection, for one statement.
    fn c(&self) -> &dyn Conn {
        match &self.db {
            Db::Sqlite(c) => c,
            Db::Postgres(p) => p.as_ref(),
        }
    }

    /// Runs `f` in a transaction that writes (SQLite: `BEGIN IMMEDIATE`, so two writers
    /// queue instead of failing at commit).
    fn write<T>(&mut self, f: impl FnOnce(&dyn Conn) -> Result<T>) -> Result<T> {
        match &mut self.db {
            Db::Sqlite(c) => {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let v = f(&*tx)?;
                tx.commit()?;
                Ok(v)
            }
            Db::Postgres(p) => p.transaction(f),
        }
    }

    /// The keyed hash that stands for an address in the log and the block list.
    pub fn address_hash(&self, email: &Email) -> String {
        hash_address(&self.address_key, email)
    }

    /// For a bulk write (an import): SQLite keeps up to `mib` MiB of the database in its
    /// own page cache instead of the default 2 MiB, so the indexes of a large list are not
    /// read back from the operating system for every row. PostgreSQL needs nothing.
    pub fn cache_for_bulk(&self, mib: u32) {
        if let Db::Sqlite(c) = &self.db
            && let Err(e) = c.pragma_update(None, "cache_size", -i64::from(mib) * 1024)
        {
            tracing::debug!("cache size for a bulk write: {e}");
        }
    }

    /// After an erasure: SQLite moves the write-ahead log into the database file and
    /// truncates it, so the page images of erased rows leave the WAL too (best effort: a
    /// reader holding an old snapshot may keep the WAL until its next checkpoint).
    /// PostgreSQL notes that [`Store::compact`] has work to do.
    fn scrub(&self) {
        let done = match &self.db {
            Db::Sqlite(c) => c
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .map_err(Error::from),
            Db::Postgres(p) => p
                .exec(
                    "INSERT INTO meta (key, value) VALUES ('erased', '\\x31') ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    &[],
                )
                .map(|_| ()),
        };
        if let Err(e) = done {
            tracing::debug!("scrub after erasure: {e}");
        }
    }

    /// PostgreSQL keeps a deleted row's old version in the table file until it is written
    /// anew: when addresses were erased since the last time, `VACUUM FULL` rewrites the
    /// tables that held them (and the old files go). Gives whether it ran. SQLite needs
    /// nothing (`secure_delete` overwrote the rows at once).
    pub fn compact(&self) -> Result<bool> {
        let Db::Postgres(p) = &self.db else {
            return Ok(false);
        };
        if self.meta("erased")?.is_none() {
            return Ok(false);
        }
        p.exec("DELETE FROM meta WHERE key = 'erased'", &[])?;
        p.batch("VACUUM FULL subscribers, bounces")?;
        Ok(true)
    }

    fn meta_bytes(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.c()
            .row("SELECT value FROM meta WHERE key = ?1", args![key])?
            .map(|r| r.get(0))
            .transpose()
    }

    /// A setting kept in the database, e.g. when the scheduler first ran for a digest.
    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .meta_bytes(key)?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// Sets `key` unless it is set; gives the value it has afterwards.
    pub fn meta_or_insert(&mut self, key: &str, value: &str) -> Result<String> {
        self.c().exec(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
            args![key, value.as_bytes()],
        )?;
        Ok(self.meta(key)?.unwrap_or_else(|| value.to_string()))
    }
}

/// This process's name among the nodes sharing a database: host, process id and a random
/// part (a restarted process is a new node).
pub fn node_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "node".into());
        let mut r = [0u8; 3];
        let _ = getrandom::fill(&mut r);
        format!(
            "{host}-{}-{:02x}{:02x}{:02x}",
            std::process::id(),
            r[0],
            r[1],
            r[2]
        )
    })
}

/// Applies PostgreSQL's migrations, one node at a time (an advisory lock).
fn migrate_postgres(pg: &postgres::Pg) -> Result<()> {
    pg.transaction(|c| {
        c.exec("SELECT pg_advisory_xact_lock(4865726)", &[])?;
        c.exec(
            "CREATE TABLE IF NOT EXISTS herold_schema (version BIGINT NOT NULL)",
            &[],
        )?;
        let version: i64 = c
            .row("SELECT MAX(version) FROM herold_schema", &[])?
            .map(|r| r.get::<Option<i64>>(0))
            .transpose()?
            .flatten()
            .unwrap_or(0);
        let version = usize::try_from(version).unwrap_or(0);
        if version > POSTGRES.len() {
            return Err(Error::Other(format!(
                "the database was written by a newer herold (schema {version}, this one knows {})",
                POSTGRES.len()
            )));
        }
        for (i, sql) in POSTGRES.iter().enumerate().skip(version) {
            for statement in split_statements(sql) {
                c.exec(&statement, &[])?;
            }
            c.exec(
                "INSERT INTO herold_schema (version) VALUES (?1)",
                args![i as i64 + 1],
            )?;
        }
        Ok(())
    })
}

/// A migration's statements, one by one (a prepared statement holds one); `$$` bodies stay
/// whole.
fn split_statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut in_body = false;
    for part in sql.split_inclusive(';') {
        current.push_str(part);
        in_body ^= part.matches("$$").count() % 2 == 1;
        if !in_body {
            let s = current.trim().trim_end_matches(';').trim().to_string();
            if !s.is_empty() {
                out.push(s);
            }
            current.clear();
        }
    }
    out
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
pub(crate) mod tests {
    use super::*;

    /// A fresh store on each engine: SQLite in a temporary directory, and a database of
    /// the test PostgreSQL.
    pub(crate) fn stores() -> Vec<(Place, Store)> {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = Store::open(&dir.path().join("data/h.sqlite3")).unwrap();
        let url = testpg::database();
        let pg = Store::open_postgres(&url, None).unwrap();
        vec![(Place::Sqlite(dir), sqlite), (Place::Postgres(url), pg)]
    }

    /// Where a test store lives.
    pub(crate) enum Place {
        Sqlite(tempfile::TempDir),
        Postgres(String),
    }

    fn contains(hay: &[u8], needle: &str) -> bool {
        hay.windows(needle.len()).any(|w| w == needle.as_bytes())
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
        for (dir, mut st) in stores() {
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
            match dir {
                Place::Sqlite(dir) => {
                    drop(st);
                    // The address itself is nowhere in the file any more.
                    let mut bytes = Vec::new();
                    for f in std::fs::read_dir(dir.path().join("data")).unwrap() {
                        bytes.extend(std::fs::read(f.unwrap().path()).unwrap());
                    }
                    assert!(
                        !contains(&bytes, a.as_str()),
                        "address left in the database"
                    );
                }
                Place::Postgres(url) => {
                    // The deleted row's old version is still in the table file…
                    let file = |url: &str| {
                        testpg::psql(url, "CHECKPOINT");
                        let rel = testpg::psql(url, "SELECT pg_relation_filepath('subscribers')");
                        std::fs::read(testpg::data_dir().join(rel)).unwrap_or_default()
                    };
                    assert!(contains(&file(&url), a.as_str()), "the gap is real");
                    // …until compact() writes the table anew.
                    assert!(st.compact().unwrap());
                    assert!(
                        !contains(&file(&url), a.as_str()),
                        "address left in the table"
                    );
                    assert!(!st.compact().unwrap(), "nothing to do twice");
                }
            }
        }
    }

    #[test]
    fn mails_per_address_are_limited_quietly() {
        for (_d, mut st) in stores() {
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
    }

    #[test]
    fn imports_respect_the_block_list_and_log_consent() {
        for (_d, mut st) in stores() {
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
    }

    #[test]
    fn pending_expire_and_old_log_entries_are_purged() {
        for (_d, mut st) in stores() {
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
    }

    #[test]
    fn the_consent_log_is_append_only() {
        for (_d, mut st) in stores() {
            st.request(&e("x@example.org"), &Choice::default(), "1", None, 1)
                .unwrap();
            let err = st
                .c()
                .exec("UPDATE consent_log SET event = 'confirm'", &[])
                .unwrap_err();
            assert!(err.to_string().contains("append-only"), "{err}");
        }
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
