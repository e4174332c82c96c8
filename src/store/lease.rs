//! Leases and claims, for several nodes on one PostgreSQL database (on SQLite, one daemon
//! per file holds them trivially; the same statements run there).
//!
//! The schedule lease is a row with a holder, an expiry and a fencing number. A node takes it
//! when it is free or expired (the fence goes up), keeps it by renewing it, and every run it
//! plans checks holder and fence in the same transaction, with the lease row locked: a
//! node that lost the lease can never plan a run, and a taker waits for a planning in flight
//! to commit. Deliveries are claimed in small batches (`FOR UPDATE SKIP LOCKED`, so two
//! nodes never claim the same one), each claim with an expiry; an answer is recorded only
//! where this node's claim still stands. Times are the database's clock, so the nodes'
//! clocks may differ.

use super::sql::{Conn, Engine, Error, Result, args};
use super::{Delivery, Store};

/// The lease of the digest schedules.
pub const SCHEDULE: &str = "schedule";

/// The database's clock, in Unix seconds.
fn now_sql(c: &dyn Conn) -> &'static str {
    match c.engine() {
        Engine::Sqlite => "CAST(strftime('%s', 'now') AS INTEGER)",
        Engine::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS BIGINT)",
    }
}

/// Who holds a lease, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseState {
    pub holder: Option<String>,
    pub fence: i64,
    pub expires_at: i64,
    /// The database's clock now.
    pub now: i64,
}

impl Store {
    /// Takes lease `name` for `holder` for `seconds`, or renews it; gives the fence when this
    /// holder has it, `None` when another holds it.
    pub fn acquire_lease(&mut self, name: &str, holder: &str, seconds: i64) -> Result<Option<i64>> {
        let c = self.c();
        let now = now_sql(c);
        let row = c.row(
            &format!(
                "INSERT INTO leases (name, holder, fence, expires_at) VALUES (?1, ?2, 1, {now} + ?3)
                 ON CONFLICT (name) DO UPDATE SET
                    fence = CASE WHEN leases.holder = excluded.holder AND leases.expires_at >= {now}
                                 THEN leases.fence ELSE leases.fence + 1 END,
                    holder = excluded.holder,
                    expires_at = excluded.expires_at
                 WHERE leases.holder = excluded.holder OR leases.holder IS NULL OR leases.expires_at < {now}
                 RETURNING fence"
            ),
            args![name, holder, seconds],
        )?;
        row.map(|r| r.get(0)).transpose()
    }

    /// Gives lease `name` up, if `holder` has it (a clean stop: another node takes over at
    /// once instead of after the expiry).
    pub fn release_lease(&mut self, name: &str, holder: &str) -> Result<()> {
        self.c().exec(
            "UPDATE leases SET holder = NULL, expires_at = 0 WHERE name = ?1 AND holder = ?2",
            args![name, holder],
        )?;
        Ok(())
    }

    /// The state of lease `name`.
    pub fn lease(&self, name: &str) -> Result<LeaseState> {
        let c = self.c();
        let now = now_sql(c);
        let row = c.row(
            &format!("SELECT holder, fence, expires_at, {now} FROM leases WHERE name = ?1"),
            args![name],
        )?;
        match row {
            Some(r) => Ok(LeaseState {
                holder: r.get(0)?,
                fence: r.get(1)?,
                expires_at: r.get(2)?,
                now: r.get(3)?,
            }),
            None => Ok(LeaseState {
                holder: None,
                fence: 0,
                expires_at: 0,
                now: c.one(&format!("SELECT {now}"), &[])?.get(0)?,
            }),
        }
    }

    /// Claims up to `limit` pending deliveries of `run` for `holder` for `seconds`: those no
    /// one claims, and those whose claim expired (a node that died). `after`: only subscriber
    /// ids above it (the claims this node holds already are in flight).
    pub fn claim_deliveries(
        &mut self,
        run: i64,
        holder: &str,
        after: i64,
        limit: usize,
        seconds: i64,
    ) -> Result<Vec<Delivery>> {
        self.write(|tx| {
            let now = now_sql(tx);
            let lock = tx.dialect("", "FOR UPDATE SKIP LOCKED");
            tx.rows(
                &format!(
                    "UPDATE deliveries SET claimed_by = ?2, claim_expires = {now} + ?5
                     WHERE run_id = ?1 AND subscriber_id IN (
                        SELECT subscriber_id FROM deliveries
                        WHERE run_id = ?1 AND status = 'pending' AND subscriber_id > ?3
                          AND (claimed_by IS NULL OR claim_expires < {now})
                        ORDER BY subscriber_id LIMIT ?4 {lock})
                     RETURNING run_id, subscriber_id, items, status, attempts"
                ),
                args![run, holder, after, limit as i64, seconds],
            )?
            .iter()
            .map(super::runs::row_to_delivery)
            .collect::<Result<Vec<_>>>()
            .map(|mut v| {
                v.sort_by_key(|d| d.subscriber_id);
                v
            })
        })
    }

    /// Records a delivery's outcome only where `holder`'s claim stands; gives whether it did
    /// (`false`: another node claimed it meanwhile, this one must stop).
    pub fn record_claimed(
        &mut self,
        run: i64,
        subscriber: i64,
        holder: &str,
        status: &str,
        error: Option<&str>,
        now: i64,
    ) -> Result<bool> {
        let n = self.c().exec(
            "UPDATE deliveries SET status = ?3, error = ?4, attempts = attempts + 1, updated_at = ?5,
                claimed_by = NULL, claim_expires = NULL
             WHERE run_id = ?1 AND subscriber_id = ?2 AND status = 'pending' AND claimed_by = ?6",
            args![run, subscriber, status, error, now, holder],
        )?;
        if n == 1 && status == "failed" {
            self.suspend_if_failing(subscriber, now)?;
        }
        Ok(n == 1)
    }

    /// Runs of any digest that started and have not finished (every node may help deliver
    /// them).
    pub fn unfinished_runs(&self) -> Result<Vec<super::Run>> {
        self.c()
            .rows(
                &format!(
                    "{} WHERE finished_at IS NULL ORDER BY id",
                    super::runs::RUN_SELECT
                ),
                &[],
            )?
            .iter()
            .map(super::runs::row_to_run)
            .collect()
    }
}

/// In a planning transaction: fails unless `holder` still holds the schedule lease with
/// `fence` (the row locked, so a taker waits for this transaction).
pub(super) fn check_fence(tx: &dyn Conn, holder: &str, fence: i64) -> Result<()> {
    let now = now_sql(tx);
    let lock = tx.dialect("", "FOR UPDATE");
    let held = tx.row(
        &format!(
            "SELECT fence FROM leases WHERE name = ?1 AND holder = ?2 AND fence = ?3 AND expires_at >= {now} {lock}"
        ),
        args![SCHEDULE, holder, fence],
    )?;
    match held {
        Some(_) => Ok(()),
        None => Err(Error::Other(
            "this node no longer holds the schedule lease: the run is left to the node that does"
                .into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::stores;

    #[test]
    fn one_holder_at_a_time_and_a_stale_one_cannot_plan() {
        for (_place, mut st) in stores() {
            assert_eq!(st.acquire_lease(SCHEDULE, "a", 30).unwrap(), Some(1));
            assert_eq!(st.acquire_lease(SCHEDULE, "b", 30).unwrap(), None);
            assert_eq!(
                st.acquire_lease(SCHEDULE, "a", 30).unwrap(),
                Some(1),
                "renewed"
            );
            // a's lease runs out (it stopped renewing): b takes over with a new fence.
            assert_eq!(st.acquire_lease(SCHEDULE, "a", -10).unwrap(), Some(1));
            assert_eq!(st.acquire_lease(SCHEDULE, "b", 30).unwrap(), Some(2));
            assert_eq!(st.acquire_lease(SCHEDULE, "a", 30).unwrap(), None);
            let state = st.lease(SCHEDULE).unwrap();
            assert_eq!((state.holder.as_deref(), state.fence), (Some("b"), 2));
            assert!(state.expires_at > state.now);
            // a still believes it holds fence 1: its run is refused, b's goes through.
            let err = st
                .start_run_fenced("w", 100, 0, &["i".into()], &[], Some(("a", 1)))
                .unwrap_err();
            assert!(err.to_string().contains("no longer holds"), "{err}");
            assert!(st.unfinished_runs().unwrap().is_empty());
            st.start_run_fenced(
                "w",
                100,
                0,
                &["i".into()],
                &[(7, "[\"i\"]")],
                Some(("b", 2)),
            )
            .unwrap();
            assert_eq!(st.unfinished_runs().unwrap().len(), 1);
            // A clean stop hands the lease on at once.
            st.release_lease(SCHEDULE, "b").unwrap();
            assert_eq!(st.acquire_lease(SCHEDULE, "a", 30).unwrap(), Some(3));
        }
    }

    #[test]
    fn claims_never_overlap_and_expired_ones_return() {
        for (_place, mut st) in stores() {
            let deliveries: Vec<(i64, &str)> = (1..=10).map(|i| (i, "[\"i\"]")).collect();
            let run = st
                .start_run("w", 100, 0, &["i".into()], &deliveries)
                .unwrap()
                .id;
            let ids = |v: &[Delivery]| v.iter().map(|d| d.subscriber_id).collect::<Vec<_>>();
            let x = st.claim_deliveries(run, "x", 0, 4, 30).unwrap();
            assert_eq!(ids(&x), [1, 2, 3, 4]);
            let y = st.claim_deliveries(run, "y", 0, 4, 30).unwrap();
            assert_eq!(ids(&y), [5, 6, 7, 8]);
            assert!(st.record_claimed(run, 1, "x", "sent", None, 101).unwrap());
            assert!(
                !st.record_claimed(run, 2, "y", "sent", None, 101).unwrap(),
                "x's claim"
            );
            assert!(
                !st.record_claimed(run, 1, "x", "sent", None, 101).unwrap(),
                "done already"
            );
            let counts = st
                .c()
                .one(
                    "SELECT COUNT(*), COUNT(CASE WHEN claimed_by IS NOT NULL AND claimed_by <> 'y' THEN 1 END)
                     FROM deliveries WHERE run_id = ?1 AND status = 'pending'",
                    &[crate::store::sql::Value::Int(run)],
                )
                .unwrap();
            let pending_and_others: (i64, i64) = (counts.get(0).unwrap(), counts.get(1).unwrap());
            assert_eq!(
                pending_and_others,
                (9, 3),
                "pending, and claimed by another node"
            );
            // x dies; its claims expire and go to whoever asks next.
            let z = st.claim_deliveries(run, "z", 0, 10, 30).unwrap();
            assert_eq!(ids(&z), [9, 10]);
            assert!(
                st.claim_deliveries(run, "z", 0, 10, 30).unwrap().is_empty(),
                "x's stand"
            );
            st.c()
                .exec(
                    "UPDATE deliveries SET claim_expires = 0 WHERE claimed_by = 'x'",
                    &[],
                )
                .unwrap();
            let taken = st.claim_deliveries(run, "z", 0, 10, 30).unwrap();
            assert_eq!(ids(&taken), [2, 3, 4]);
            assert!(!st.record_claimed(run, 3, "x", "sent", None, 102).unwrap());
            assert!(st.record_claimed(run, 3, "z", "sent", None, 102).unwrap());
        }
    }
}
