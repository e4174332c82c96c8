//! Subscribers: requests, confirmation, preferences, unsubscription and erasure, imports,
//! the block list and the expiry of pending addresses.

use super::consent::log;
use super::sql::{Conn, Row, args};
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
        self.write(|tx| {
            let existing = get_where(tx, "email = ?1", args![email.as_str()])?;
            log(
                tx,
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
                    tx.exec(
                        "INSERT INTO subscribers (email, address_hash, status, topics, digests, created_at, consent_version, source,
                            client_address, mail_window_start, mails_in_window, language)
                         VALUES (?1, ?2, 'pending', ?3, ?4, ?5, ?6, 'form', ?7, ?5, 1, ?8)",
                        args![email.as_str(), &hash, json(topics), json(digests), now, consent_version, client, language],
                    )?;
                    let s = get_where(tx, "email = ?1", args![email.as_str()])?
                        .expect("just inserted");
                    Requested::Confirm(s)
                }
                Some(s) => {
                    let r = tx.one(
                        "SELECT mail_window_start, mails_in_window FROM subscribers WHERE id = ?1",
                        args![s.id],
                    )?;
                    let (start, count): (i64, i64) = (r.get(0)?, r.get(1)?);
                    let (start, count) = if now - start >= 86_400 {
                        (now, 0)
                    } else {
                        (start, count)
                    };
                    if count >= MAILS_PER_DAY {
                        Requested::Quiet
                    } else {
                        tx.exec(
                            "UPDATE subscribers SET mail_window_start = ?2, mails_in_window = ?3 WHERE id = ?1",
                            args![s.id, start, count + 1],
                        )?;
                        if s.status == Status::Pending {
                            // The latest request of a pending address decides its choice; the
                            // choice of an active one changes only through its preferences link.
                            tx.exec(
                                "UPDATE subscribers SET topics = ?2, digests = ?3, consent_version = ?4, language = ?5 WHERE id = ?1",
                                args![s.id, json(topics), json(digests), consent_version, language],
                            )?;
                            Requested::Confirm(get_where(tx, "id = ?1", args![s.id])?.expect("exists"))
                        } else {
                            Requested::AlreadyActive(s)
                        }
                    }
                }
            };
            Ok(outcome)
        })
    }

    /// Confirms a pending subscriber.
    pub fn confirm(&mut self, id: i64, client: Option<&str>, now: i64) -> Result<Confirmed> {
        self.write(|tx| {
            let Some(s) = get_where(tx, "id = ?1", args![id])? else {
                return Ok(Confirmed::Unknown);
            };
            if s.status == Status::Active {
                return Ok(Confirmed::Already(s));
            }
            tx.exec(
                "UPDATE subscribers SET status = 'active', confirmed_at = ?2, suspended_at = NULL, suspended_reason = NULL WHERE id = ?1",
                args![id, now],
            )?;
            let hash = hash_of(tx, id)?.expect("exists");
            log(
                tx,
                &hash,
                "confirm",
                now,
                Some(&s.consent_version),
                Some(&s.source),
                client,
                s.language.as_deref(),
            )?;
            Ok(Confirmed::Now(
                get_where(tx, "id = ?1", args![id])?.expect("exists"),
            ))
        })
    }

    /// Unsubscribes from everything: the row with the address goes, the keyed hash stays in
    /// the log and the block list. Returns whether there was a subscriber.
    pub fn unsubscribe(&mut self, id: i64, source: &str, now: i64) -> Result<bool> {
        let erased = self.write(|tx| erase_on(tx, id, "unsubscribe", source, now))?;
        if erased {
            self.scrub();
        }
        Ok(erased)
    }

    /// Changes a subscriber's topics and digests (DSGVO Art. 16).
    pub fn set_preferences(&mut self, id: i64, choice: &Choice, now: i64) -> Result<bool> {
        self.write(|tx| {
            let n = tx.exec(
                "UPDATE subscribers SET topics = ?2, digests = ?3, language = ?4 WHERE id = ?1",
                args![
                    id,
                    json(&choice.topics),
                    json(&choice.digests),
                    &choice.language
                ],
            )?;
            if n == 1 {
                let hash = hash_of(tx, id)?.expect("exists");
                log(
                    tx,
                    &hash,
                    "preferences",
                    now,
                    None,
                    Some("preferences page"),
                    None,
                    choice.language.as_deref(),
                )?;
            }
            Ok(n == 1)
        })
    }

    pub fn get(&self, id: i64) -> Result<Option<Subscriber>> {
        get_where(self.c(), "id = ?1", args![id])
    }

    pub fn by_email(&self, email: &Email) -> Result<Option<Subscriber>> {
        get_where(self.c(), "email = ?1", args![email.as_str()])
    }

    /// The subscribers of these ids that exist (a page of deliveries at once).
    pub fn get_many(&self, ids: &[i64]) -> Result<Vec<Subscriber>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("?{i}")).collect();
            let values: Vec<super::sql::Value> =
                chunk.iter().map(|&i| super::sql::Value::Int(i)).collect();
            for r in self.c().rows(
                &format!("{SELECT} WHERE id IN ({})", marks.join(", ")),
                &values,
            )? {
                out.push(row_to_subscriber(&r)?);
            }
        }
        Ok(out)
    }

    /// Pending and active subscribers, by address.
    pub fn list(&self) -> Result<Vec<Subscriber>> {
        self.c()
            .rows(&format!("{SELECT} ORDER BY email"), &[])?
            .iter()
            .map(row_to_subscriber)
            .collect()
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
        let key = self.address_key.clone();
        let (out, erased) = self.write(|tx| {
            let mut out = Vec::with_capacity(rows.len());
            let mut erased = false;
            for row in rows {
                let hash = super::hash_address(&key, &row.email);
                let outcome = match &row.action {
                    ImportAction::Block => {
                        erased |= block_on(tx, &hash, &row.source, now)?;
                        Imported::Unsubscribed
                    }
                    ImportAction::Subscribe {
                        status,
                        choice,
                        consented_at,
                        consent_version,
                    } => import_on(
                        tx,
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
            Ok((out, erased))
        })?;
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
        self.c()
            .one(
                "SELECT EXISTS (SELECT 1 FROM blocked WHERE address_hash = ?1)",
                args![self.address_hash(email)],
            )?
            .get(0)
    }

    /// Deletes pending subscriptions older than `expiry` seconds; logs each as `expire`.
    pub fn expire_pending(&mut self, now: i64, expiry: i64) -> Result<usize> {
        let cutoff = now - expiry;
        let n = self.write(|tx| {
            let hashes: Vec<String> = tx
                .rows(
                    "SELECT address_hash FROM subscribers WHERE status = 'pending' AND created_at < ?1",
                    args![cutoff],
                )?
                .iter()
                .map(|r| r.get(0))
                .collect::<Result<_>>()?;
            for h in &hashes {
                log(tx, h, "expire", now, None, None, None, None)?;
            }
            tx.exec(
                "DELETE FROM subscribers WHERE status = 'pending' AND created_at < ?1",
                args![cutoff],
            )?;
            Ok(hashes.len())
        })?;
        if n > 0 {
            self.scrub();
        }
        Ok(n)
    }
}

const SELECT: &str = "SELECT id, email, status, topics, digests, created_at, confirmed_at, consent_version, source, client_address, suspended_at, language, suspended_reason FROM subscribers";

fn get_where(c: &dyn Conn, condition: &str, p: &[super::sql::Value]) -> Result<Option<Subscriber>> {
    c.row(&format!("{SELECT} WHERE {condition}"), p)?
        .as_ref()
        .map(row_to_subscriber)
        .transpose()
}

fn row_to_subscriber(r: &Row) -> Result<Subscriber> {
    let email: String = r.get(1)?;
    let status: String = r.get(2)?;
    let list = |i: usize| -> Result<Vec<String>> {
        let s: String = r.get(i)?;
        Ok(serde_json::from_str(&s).unwrap_or_default())
    };
    Ok(Subscriber {
        id: r.get(0)?,
        email: Email::parse(&email).map_err(|e| super::Error::Data {
            column: 1,
            what: e.to_string(),
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
        suspended: r.get::<Option<i64>>(10)?.map(|at| Suspension {
            at,
            reason: r
                .get::<Option<String>>(12)
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
    tx: &dyn Conn,
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
        .one(
            "SELECT EXISTS (SELECT 1 FROM blocked WHERE address_hash = ?1)",
            args![hash],
        )?
        .get(0)?;
    if blocked {
        return Ok(Imported::Blocked);
    }
    let existing = get_where(tx, "email = ?1", args![email.as_str()])?;
    let at = consented_at.unwrap_or(now);
    let outcome = match existing {
        None => {
            tx.exec(
                "INSERT INTO subscribers (email, address_hash, status, topics, digests, created_at, confirmed_at, consent_version, source, language)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                args![
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
            tx.exec(
                "UPDATE subscribers SET status = ?2, topics = ?3, digests = ?4, confirmed_at = COALESCE(confirmed_at, ?5),
                    language = ?6 WHERE id = ?1",
                args![s.id, status.as_str(), json(topics), json(digests), (status == Status::Active).then_some(at), language],
            )?;
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
fn block_on(tx: &dyn Conn, hash: &str, source: &str, now: i64) -> Result<bool> {
    let erased = tx.exec(
        "DELETE FROM subscribers WHERE address_hash = ?1",
        args![hash],
    )? > 0;
    let new = tx.exec(
        "INSERT INTO blocked (address_hash, at) VALUES (?1, ?2) ON CONFLICT (address_hash) DO NOTHING",
        args![hash, now],
    )? == 1;
    if erased || new {
        log(tx, hash, "unsubscribe", now, None, Some(source), None, None)?;
    }
    Ok(erased)
}

/// Ends subscriber `id`'s subscription on an open transaction: the row with the address
/// goes, the keyed hash stays in the block list and the log (as `event`). Gives whether there
/// was a subscriber.
pub(super) fn erase_on(
    tx: &dyn Conn,
    id: i64,
    event: &str,
    source: &str,
    now: i64,
) -> Result<bool> {
    let Some(hash) = hash_of(tx, id)? else {
        return Ok(false);
    };
    tx.exec("DELETE FROM subscribers WHERE id = ?1", args![id])?;
    tx.exec(
        "INSERT INTO blocked (address_hash, at) VALUES (?1, ?2) ON CONFLICT (address_hash) DO UPDATE SET at = excluded.at",
        args![&hash, now],
    )?;
    log(tx, &hash, event, now, None, Some(source), None, None)?;
    Ok(true)
}

/// The keyed hash of subscriber `id`'s address.
fn hash_of(tx: &dyn Conn, id: i64) -> Result<Option<String>> {
    tx.row(
        "SELECT address_hash FROM subscribers WHERE id = ?1",
        args![id],
    )?
    .map(|r| r.get(0))
    .transpose()
}
