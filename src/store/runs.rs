//! Digests in the database: first sights of items, runs, and one delivery per (run,
//! subscriber) with its outcome.

use rusqlite::{OptionalExtension, params};

use super::{Result, SUSPEND_AFTER_FAILURES, Store, json};

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

    /// Every run of `digest` that has items, newest first (the digest archive: a run is
    /// archived from the moment it is planned, since its mails link to it).
    pub fn archived_runs(&self, digest: &str) -> Result<Vec<Run>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "{RUN_SELECT} WHERE digest = ?1 AND items <> '[]' ORDER BY started_at DESC, id DESC"
        ))?;
        let rows = stmt.query_map([digest], row_to_run)?;
        rows.collect()
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
                "UPDATE subscribers SET suspended_at = ?2, suspended_reason = ?3 WHERE id = ?1 AND suspended_at IS NULL",
                params![
                    subscriber,
                    now,
                    format!("{SUSPEND_AFTER_FAILURES} permanent SMTP failures in a row")
                ],
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
