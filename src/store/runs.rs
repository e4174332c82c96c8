//! Digests in the database: first sights of items, runs, and one delivery per (run,
//! subscriber) with its outcome.

use super::sql::{Conn, Row, args};
use super::{Db, Result, SUSPEND_AFTER_FAILURES, Store, json};

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
            self.write(|tx| {
                for id in &new {
                    tx.exec(
                        "INSERT INTO items_seen (item_id, first_seen) VALUES (?1, ?2) ON CONFLICT (item_id) DO NOTHING",
                        args![**id, now],
                    )?;
                }
                Ok(())
            })?;
            // Another process may have recorded some of them first: read them back.
            seen = self.seen()?;
        }
        Ok(seen)
    }

    /// Records `now` as the first sight of every id not seen before, in one statement, without
    /// reading anything back (for `build`, which needs no answer).
    pub fn note_seen(&mut self, ids: &[&str], now: i64) -> Result<usize> {
        let json = serde_json::to_string(ids).expect("strings serialise");
        let c = self.c();
        let n = c.exec(
            c.dialect(
                "INSERT INTO items_seen (item_id, first_seen) SELECT value, ?2 FROM json_each(?1) WHERE 1 ON CONFLICT (item_id) DO NOTHING",
                "INSERT INTO items_seen (item_id, first_seen) SELECT v, ?2 FROM jsonb_array_elements_text((?1::text)::jsonb) AS t(v) ON CONFLICT (item_id) DO NOTHING",
            ),
            args![json, now],
        )?;
        Ok(n as usize)
    }

    /// The first sight of every item herold has seen.
    pub fn seen(&self) -> Result<std::collections::HashMap<String, i64>> {
        self.c()
            .rows("SELECT item_id, first_seen FROM items_seen", &[])?
            .iter()
            .map(|r| Ok((r.get(0)?, r.get(1)?)))
            .collect()
    }

    /// The last run of `digest` that finished.
    pub fn last_finished_run(&self, digest: &str) -> Result<Option<Run>> {
        self.c()
            .row(
                &format!("{RUN_SELECT} WHERE digest = ?1 AND finished_at IS NOT NULL ORDER BY started_at DESC, id DESC LIMIT 1"),
                args![digest],
            )?
            .as_ref()
            .map(row_to_run)
            .transpose()
    }

    /// Every run of `digest` that has items, newest first (the digest archive: a run is
    /// archived from the moment it is planned, since its mails link to it).
    pub fn archived_runs(&self, digest: &str) -> Result<Vec<Run>> {
        self.c()
            .rows(
                &format!(
                    "{RUN_SELECT} WHERE digest = ?1 AND items <> '[]' ORDER BY started_at DESC, id DESC"
                ),
                args![digest],
            )?
            .iter()
            .map(row_to_run)
            .collect()
    }

    /// When the latest run of `digest` (finished or not) started.
    pub fn last_run_started(&self, digest: &str) -> Result<Option<i64>> {
        self.c()
            .one(
                "SELECT MAX(started_at) FROM digest_runs WHERE digest = ?1",
                args![digest],
            )?
            .get(0)
    }

    /// The items of every run of `digest` that started at or after `since` (runs that started
    /// within the same second as the window start count as before it).
    pub fn items_of_runs_since(&self, digest: &str, since: i64) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for r in self.c().rows(
            "SELECT items FROM digest_runs WHERE digest = ?1 AND started_at >= ?2",
            args![digest, since],
        )? {
            let items: String = r.get(0)?;
            out.extend(serde_json::from_str::<Vec<String>>(&items).unwrap_or_default());
        }
        Ok(out)
    }

    /// The run of `digest` that started and has not finished, if any.
    pub fn unfinished_run(&self, digest: &str) -> Result<Option<Run>> {
        self.c()
            .row(
                &format!(
                    "{RUN_SELECT} WHERE digest = ?1 AND finished_at IS NULL ORDER BY id LIMIT 1"
                ),
                args![digest],
            )?
            .as_ref()
            .map(row_to_run)
            .transpose()
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
        self.start_run_fenced(digest, now, window_start, items, deliveries, None)
    }

    /// [`Store::start_run`], checked in the same transaction against the schedule lease
    /// (`(holder, fence)`): a node that lost the lease can never plan a run.
    pub fn start_run_fenced(
        &mut self,
        digest: &str,
        now: i64,
        window_start: i64,
        items: &[String],
        deliveries: &[(i64, &str)],
        fence: Option<(&str, i64)>,
    ) -> Result<Run> {
        self.write(|tx| {
            if let Some((holder, fence)) = fence {
                super::lease::check_fence(tx, holder, fence)?;
            }
            // Never a run planned twice: one planner per digest at a time (SQLite's write
            // lock; PostgreSQL's advisory lock), and no run of it may have started since
            // the window this plan was made for.
            if tx.engine() == super::Engine::Postgres {
                tx.exec("SELECT pg_advisory_xact_lock(hashtext(?1))", args![digest])?;
            }
            let clash: bool = tx
                .one(
                    "SELECT EXISTS (SELECT 1 FROM digest_runs WHERE digest = ?1 AND (finished_at IS NULL OR started_at > ?2))",
                    args![digest, window_start],
                )?
                .get(0)?;
            if clash {
                return Err(super::Error::Planned(format!(
                    "a run of the digest `{digest}` was planned elsewhere meanwhile; nothing is planned twice"
                )));
            }
            let id: i64 = tx
                .one(
                    "INSERT INTO digest_runs (digest, started_at, window_start, items) VALUES (?1, ?2, ?3, ?4) RETURNING id",
                    args![digest, now, window_start, json(items)],
                )?
                .get(0)?;
            insert_deliveries(tx, id, deliveries, now)?;
            if deliveries.is_empty() {
                tx.exec(
                    "UPDATE digest_runs SET finished_at = ?2 WHERE id = ?1",
                    args![id, now],
                )?;
            }
            Ok(Run {
                id,
                digest: digest.to_string(),
                started_at: now,
                window_start,
                items: items.to_vec(),
                finished_at: deliveries.is_empty().then_some(now),
            })
        })
    }

    /// Active subscribers of `digest`: their id and topics.
    pub fn digest_recipients(&self, digest: &str) -> Result<Vec<(i64, Vec<String>)>> {
        let c = self.c();
        c.rows(
            c.dialect(
                "SELECT id, topics FROM subscribers WHERE status = 'active' AND suspended_at IS NULL
                 AND EXISTS (SELECT 1 FROM json_each(subscribers.digests) WHERE value = ?1) ORDER BY id",
                "SELECT id, topics FROM subscribers WHERE status = 'active' AND suspended_at IS NULL
                 AND EXISTS (SELECT 1 FROM jsonb_array_elements_text(subscribers.digests::jsonb) AS d(v) WHERE d.v = ?1) ORDER BY id",
            ),
            args![digest],
        )?
        .iter()
        .map(|r| {
            let topics: String = r.get(1)?;
            Ok((r.get(0)?, serde_json::from_str(&topics).unwrap_or_default()))
        })
        .collect()
    }

    /// Up to `limit` pending deliveries of a run with a subscriber id above `after`.
    pub fn pending_deliveries_page(
        &self,
        run: i64,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Delivery>> {
        self.c()
            .rows(
                "SELECT run_id, subscriber_id, items, status, attempts FROM deliveries
                 WHERE run_id = ?1 AND status = 'pending' AND subscriber_id > ?2 ORDER BY subscriber_id LIMIT ?3",
                args![run, after, limit as i64],
            )?
            .iter()
            .map(row_to_delivery)
            .collect()
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
        const SQL: &str = "UPDATE deliveries SET status = ?3, error = ?4, attempts = attempts + 1, updated_at = ?5, claimed_by = NULL, claim_expires = NULL WHERE run_id = ?1 AND subscriber_id = ?2";
        match &self.db {
            Db::Sqlite(conn) => {
                // Written to the WAL without waiting for the disk: the record survives a
                // killed process (the page cache keeps it), which is what keeps a resumed run
                // from sending twice; only a power loss could lose the last records (and send
                // those mails again).
                conn.pragma_update(None, "synchronous", "NORMAL")?;
                let result = conn.exec(SQL, args![run, subscriber, status, error, now]);
                conn.pragma_update(None, "synchronous", "FULL")?;
                result?;
            }
            Db::Postgres(pg) => {
                pg.exec(SQL, args![run, subscriber, status, error, now])?;
            }
        }
        if status == "failed" {
            self.suspend_if_failing(subscriber, now)?;
        }
        Ok(())
    }

    /// Suspends a subscriber whose last [`SUSPEND_AFTER_FAILURES`] deliveries all failed
    /// permanently (the address is gone, the mailbox refuses): no more digests until the
    /// address subscribes again or an operator clears it.
    pub(super) fn suspend_if_failing(&mut self, subscriber: i64, now: i64) -> Result<()> {
        let recent: Vec<String> = self
            .c()
            .rows(
                "SELECT status FROM deliveries WHERE subscriber_id = ?1 AND status IN ('sent', 'failed')
                 ORDER BY updated_at DESC, run_id DESC LIMIT ?2",
                args![subscriber, SUSPEND_AFTER_FAILURES],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect::<Result<_>>()?;
        if recent.len() as i64 == SUSPEND_AFTER_FAILURES && recent.iter().all(|s| s == "failed") {
            let n = self.c().exec(
                "UPDATE subscribers SET suspended_at = ?2, suspended_reason = ?3 WHERE id = ?1 AND suspended_at IS NULL",
                args![
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
        Ok(self
            .c()
            .row(
                "SELECT suspended_at IS NOT NULL FROM subscribers WHERE id = ?1",
                args![id],
            )?
            .map(|r| r.get(0))
            .transpose()?
            .unwrap_or(false))
    }

    /// Marks a run finished if no delivery is pending; says whether it is.
    pub fn finish_run_if_done(&mut self, run: i64, now: i64) -> Result<bool> {
        let pending: i64 = self
            .c()
            .one(
                "SELECT COUNT(*) FROM deliveries WHERE run_id = ?1 AND status = 'pending'",
                args![run],
            )?
            .get(0)?;
        if pending == 0 {
            self.c().exec(
                "UPDATE digest_runs SET finished_at = COALESCE(finished_at, ?2) WHERE id = ?1",
                args![run, now],
            )?;
        }
        Ok(pending == 0)
    }

    /// Counts of a run's deliveries by status.
    pub fn delivery_counts(&self, run: i64) -> Result<std::collections::BTreeMap<String, i64>> {
        self.c()
            .rows(
                "SELECT status, COUNT(*) FROM deliveries WHERE run_id = ?1 GROUP BY status",
                args![run],
            )?
            .iter()
            .map(|r| Ok((r.get(0)?, r.get(1)?)))
            .collect()
    }
}

/// The deliveries of a new run, many rows a statement.
fn insert_deliveries(tx: &dyn Conn, run: i64, deliveries: &[(i64, &str)], now: i64) -> Result<()> {
    const PER_STATEMENT: usize = 200;
    for chunk in deliveries.chunks(PER_STATEMENT) {
        let mut sql = String::from(
            "INSERT INTO deliveries (run_id, subscriber_id, items, status, updated_at) VALUES ",
        );
        let mut values = Vec::with_capacity(chunk.len() * 2 + 2);
        values.push(super::sql::Value::Int(run));
        values.push(super::sql::Value::Int(now));
        for (i, (subscriber, items)) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(',');
            }
            let n = values.len();
            sql.push_str(&format!("(?1, ?{}, ?{}, 'pending', ?2)", n + 1, n + 2));
            values.push(super::sql::Value::Int(*subscriber));
            values.push(super::sql::Value::Text(items.to_string()));
        }
        tx.exec(&sql, &values)?;
    }
    Ok(())
}

pub(super) fn row_to_delivery(r: &Row) -> Result<Delivery> {
    let items: String = r.get(2)?;
    Ok(Delivery {
        run_id: r.get(0)?,
        subscriber_id: r.get(1)?,
        items: serde_json::from_str(&items).unwrap_or_default(),
        status: r.get(3)?,
        attempts: r.get(4)?,
    })
}

pub(super) const RUN_SELECT: &str =
    "SELECT id, digest, started_at, window_start, items, finished_at FROM digest_runs";

pub(super) fn row_to_run(r: &Row) -> Result<Run> {
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
