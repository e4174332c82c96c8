//! The consent log: append-only, keyed hashes of addresses only, purged after
//! `privacy.log_retention`.

use super::sql::{Conn, args};
use super::{Result, Store};
use crate::email::Email;

/// One entry of the consent log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConsentEvent {
    pub event: String,
    pub at: i64,
    pub consent_version: Option<String>,
    pub source: Option<String>,
    pub client_address: Option<String>,
    /// The language of the consent text shown (or of the choice recorded).
    pub language: Option<String>,
}

impl Store {
    /// The consent log entries of an address, oldest first.
    pub fn consent_log(&self, email: &Email) -> Result<Vec<ConsentEvent>> {
        self.c()
            .rows(
                "SELECT event, at, consent_version, source, client_address, language FROM consent_log WHERE address_hash = ?1 ORDER BY at, id",
                args![self.address_hash(email)],
            )?
            .iter()
            .map(|r| {
                Ok(ConsentEvent {
                    event: r.get(0)?,
                    at: r.get(1)?,
                    consent_version: r.get(2)?,
                    source: r.get(3)?,
                    client_address: r.get(4)?,
                    language: r.get(5)?,
                })
            })
            .collect()
    }

    /// Deletes the log entries of addresses whose subscription ended more than `retention`
    /// seconds ago (and that have not subscribed again).
    pub fn purge_log(&mut self, now: i64, retention: i64) -> Result<usize> {
        let n = self.c().exec(
            "DELETE FROM consent_log WHERE address_hash IN (
                SELECT address_hash FROM consent_log GROUP BY address_hash
                HAVING MAX(CASE WHEN event IN ('unsubscribe', 'expire', 'complaint') THEN at END) < ?1
                   AND MAX(at) = MAX(CASE WHEN event IN ('unsubscribe', 'expire', 'complaint') THEN at END))
             AND address_hash NOT IN (SELECT address_hash FROM subscribers)",
            args![now - retention],
        )?;
        Ok(n as usize)
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn log(
    conn: &dyn Conn,
    hash: &str,
    event: &str,
    at: i64,
    version: Option<&str>,
    source: Option<&str>,
    client: Option<&str>,
    language: Option<&str>,
) -> Result<()> {
    conn.exec(
        "INSERT INTO consent_log (address_hash, event, at, consent_version, source, client_address, language)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        args![hash, event, at, version, source, client, language],
    )?;
    Ok(())
}
