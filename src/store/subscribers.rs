//! Subscribers: requests, confirmation, preferences, unsubscription and erasure, imports,
//! the block list and the expiry of pending addresses.

use rusqlite::{Connection, OptionalExtension, params};

use super::consent::log;
use super::{Result, Store, json};
use crate::email::Email;

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
    /// No more digests: its mails bounced or failed permanently (SPEC 12).
    pub suspended: Option<Suspension>,
    /// The language of its mails and pages; `None`: the site's language.
    pub language: Option<String>,
}

/// Why an address gets no more digests, and since when.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Suspension {
    pub at: i64,
    pub reason: String,
}

/// What a subscriber chose: topics (empty: every topic), digests, language (`None`: the
/// site's language).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Choice {
    pub topics: Vec<String>,
    pub digests: Vec<String>,
    pub language: Option<String>,
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

/// One row of an import (CSV or command line).
#[derive(Debug, Clone)]
pub struct ImportRow {
    pub email: Email,
    /// Where the consent was given, or why the address is blocked.
    pub source: String,
    pub action: ImportAction,
}

#[derive(Debug, Clone)]
pub enum ImportAction {
    /// Add or update; `active` with its consent date (default: now).
    Subscribe {
        status: Status,
        choice: Choice,
        consented_at: Option<i64>,
        consent_version: String,
    },
    /// Erase the address if present and put it on the block list.
    Block,
}

/// What an import row did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Imported {
    Added,
    Updated,
    Blocked,
    Unsubscribed,
}

impl Store {
    /// A subscription request from the form. Records it and says which mail to send.
    pub fn request(
        &mut self,
        email: &Email,
        choice: &Choice,
        consent_version: &str,
        client: Option<&str>,
        now: i64,
    ) -> Result<Requested> {
        let Choice {
            topics,
            digests,
            language,
        } = choice;
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
            language.as_deref(),
        )?;
        let outcome = match existing {
            None => {
                tx.execute(
                    "INSERT INTO subscribers (email, address_hash, status, topics, digests, created_at, consent_version, source,
                        client_address, mail_window_start, mails_in_window, language)
                     VALUES (?1, ?2, 'pending', ?3, ?4, ?5, ?6, 'form', ?7, ?5, 1, ?8)",
                    params![email.as_str(), hash, json(topics), json(digests), now, consent_version, client, language],
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
                            "UPDATE subscribers SET topics = ?2, digests = ?3, consent_version = ?4, language = ?5 WHERE id = ?1",
                            params![s.id, json(topics), json(digests), consent_version, language],
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
            "UPDATE subscribers SET status = 'active', confirmed_at = ?2, suspended_at = NULL, suspended_reason = NULL WHERE id = ?1",
            params![id, now],
        )?;
        let hash = hash_of(&tx, id)?;
        log(
            &tx,
            &hash,
            "confirm",
            now,
            Some(&s.consent_version),
            Some(&s.source),
            client,
            s.language.as_deref(),
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
        if !erase_on(&tx, id, "unsubscribe", source, now)? {
            return Ok(false);
        }
        tx.commit()?;
        self.scrub();
        Ok(true)
    }

    /// Changes a subscriber's topics and digests (DSGVO Art. 16).
    pub fn set_preferences(&mut self, id: i64, choice: &Choice, now: i64) -> Result<bool> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let n = tx.execute(
            "UPDATE subscribers SET topics = ?2, digests = ?3, language = ?4 WHERE id = ?1",
            params![
                id,
                json(&choice.topics),
                json(&choice.digests),
                choice.language
            ],
        )?;
        if n == 1 {
            let hash = hash_of(&tx, id)?;
            log(
                &tx,
                &hash,
                "preferences",
                now,
                None,
                Some("preferences page"),
                None,
                choice.language.as_deref(),
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
    pub fn import(&mut self, row: &ImportRow, now: i64) -> Result<Imported> {
        Ok(self.import_many(std::slice::from_ref(row), now)?[0])
    }

    /// Imports many rows in one transaction (one sync to disk for the lot), in order; gives
    /// what each row did.
    pub fn import_many(&mut self, rows: &[ImportRow], now: i64) -> Result<Vec<Imported>> {
        let key = &self.address_key;
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut out = Vec::with_capacity(rows.len());
        let mut erased = false;
        for row in rows {
            let hash = super::hash_address(key, &row.email);
            let outcome = match &row.action {
                ImportAction::Block => {
                    erased |= block_on(&tx, &hash, &row.source, now)?;
                    Imported::Unsubscribed
                }
                ImportAction::Subscribe {
                    status,
                    choice,
                    consented_at,
                    consent_version,
                } => import_on(
                    &tx,
                    &hash,
                    row,
                    *status,
                    choice,
                    *consented_at,
                    consent_version,
                    now,
                )?,
            };
            out.push(outcome);
        }
        tx.commit()?;
        if erased {
            self.scrub();
        }
        Ok(out)
    }

    /// Puts an address on the block list (an `unsubscribed` import row, `subscribers remove`),
    /// removing its subscription if there is one.
    pub fn block(&mut self, email: &Email, source: &str, now: i64) -> Result<Imported> {
        self.import(
            &ImportRow {
                email: email.clone(),
                source: source.to_string(),
                action: ImportAction::Block,
            },
            now,
        )
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
            log(&tx, h, "expire", now, None, None, None, None)?;
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
}

const SELECT: &str = "SELECT id, email, status, topics, digests, created_at, confirmed_at, consent_version, source, client_address, suspended_at, language, suspended_reason FROM subscribers";

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
        suspended: r.get::<_, Option<i64>>(10)?.map(|at| Suspension {
            at,
            reason: r
                .get::<_, Option<String>>(12)
                .ok()
                .flatten()
                .unwrap_or_else(|| "repeated permanent failures".into()),
        }),
        language: r.get(11)?,
    })
}

/// One import row on an open transaction.
#[allow(clippy::too_many_arguments)]
fn import_on(
    tx: &Connection,
    hash: &str,
    row: &ImportRow,
    status: Status,
    choice: &Choice,
    consented_at: Option<i64>,
    consent_version: &str,
    now: i64,
) -> Result<Imported> {
    let (topics, digests, language) = (&choice.topics, &choice.digests, &choice.language);
    let (email, source) = (&row.email, &row.source);
    let blocked: bool = tx
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM blocked WHERE address_hash = ?1)")?
        .query_row([hash], |r| r.get(0))?;
    if blocked {
        return Ok(Imported::Blocked);
    }
    let existing = get_where(tx, "email = ?1", [email.as_str()])?;
    let at = consented_at.unwrap_or(now);
    let outcome = match existing {
        None => {
            tx.prepare_cached(
                "INSERT INTO subscribers (email, address_hash, status, topics, digests, created_at, confirmed_at, consent_version, source, language)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?
            .execute(params![
                email.as_str(),
                hash,
                status.as_str(),
                json(topics),
                json(digests),
                now,
                (status == Status::Active).then_some(at),
                consent_version,
                source,
                language
            ])?;
            Imported::Added
        }
        Some(s) => {
            let status = if s.status == Status::Active {
                Status::Active
            } else {
                status
            };
            tx.prepare_cached(
                "UPDATE subscribers SET status = ?2, topics = ?3, digests = ?4, confirmed_at = COALESCE(confirmed_at, ?5),
                    language = ?6 WHERE id = ?1",
            )?
            .execute(params![s.id, status.as_str(), json(topics), json(digests), (status == Status::Active).then_some(at), language])?;
            Imported::Updated
        }
    };
    if status == Status::Active {
        log(
            tx,
            hash,
            "import",
            at,
            Some(consent_version),
            Some(source),
            None,
            language.as_deref(),
        )?;
    }
    Ok(outcome)
}

/// Erases the address of `hash` if subscribed and blocks it; logs the unsubscription once.
/// Gives whether a subscriber was erased.
fn block_on(tx: &Connection, hash: &str, source: &str, now: i64) -> Result<bool> {
    let erased = tx
        .prepare_cached("DELETE FROM subscribers WHERE address_hash = ?1")?
        .execute([hash])?
        > 0;
    let new = tx
        .prepare_cached("INSERT OR IGNORE INTO blocked (address_hash, at) VALUES (?1, ?2)")?
        .execute(params![hash, now])?
        == 1;
    if erased || new {
        log(tx, hash, "unsubscribe", now, None, Some(source), None, None)?;
    }
    Ok(erased)
}

/// Ends subscriber `id`'s subscription on an open transaction: the row with the address
/// goes, the keyed hash stays in the block list and the log (as `event`). Gives whether there
/// was a subscriber.
pub(super) fn erase_on(
    tx: &Connection,
    id: i64,
    event: &str,
    source: &str,
    now: i64,
) -> Result<bool> {
    let Some(hash) = hash_of(tx, id).optional()? else {
        return Ok(false);
    };
    tx.execute("DELETE FROM subscribers WHERE id = ?1", [id])?;
    tx.execute(
        "INSERT OR REPLACE INTO blocked (address_hash, at) VALUES (?1, ?2)",
        params![hash, now],
    )?;
    log(tx, &hash, event, now, None, Some(source), None, None)?;
    Ok(true)
}

/// The keyed hash of subscriber `id`'s address.
fn hash_of(tx: &Connection, id: i64) -> Result<String> {
    tx.prepare_cached("SELECT address_hash FROM subscribers WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
}
