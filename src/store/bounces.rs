//! Bounces and complaints in the database: one row per bounce (class, status code, date;
//! never the message), suspensions with their reason, counts by class for `/metrics`.

use super::sql::{Conn, args};
use super::{Result, Store};

/// `[bounce]` limits: this many hard bounces, or soft bounces within `soft_window` seconds,
/// suspend an address.
#[derive(Debug, Clone, Copy)]
pub struct BounceLimits {
    pub hard: u32,
    pub soft: u32,
    pub soft_window: i64,
}

impl From<&crate::config::Bounce> for BounceLimits {
    fn from(b: &crate::config::Bounce) -> BounceLimits {
        BounceLimits {
            hard: b.hard_limit,
            soft: b.soft_limit,
            soft_window: b.soft_window.as_secs() as i64,
        }
    }
}

/// What recording a bounce did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bounced {
    /// Recorded; `Some(reason)` when it suspended the address just now.
    Recorded { suspended: Option<String> },
    /// The same delivery had bounced before: nothing new (a repeated report).
    Repeated,
    /// A complaint: the address was erased and blocked.
    Unsubscribed,
    /// The subscriber no longer exists (unsubscribed meanwhile): nothing to change.
    Gone,
}

impl Store {
    /// Records a bounce of subscriber `id`'s mail in `run` (0: outside a digest), and
    /// suspends the address when it crosses a limit. A soft bounce counts only while no later
    /// delivery went through: the soft count starts after the newest delivery before `run`
    /// that was sent and did not bounce.
    pub fn record_bounce(
        &mut self,
        id: i64,
        run: i64,
        hard: bool,
        status: Option<&str>,
        limits: BounceLimits,
        now: i64,
    ) -> Result<Bounced> {
        let class = if hard { "hard" } else { "soft" };
        self.write(|tx| {
            count_on(tx, class)?;
            let exists: bool = tx
                .one(
                    "SELECT EXISTS (SELECT 1 FROM subscribers WHERE id = ?1)",
                    args![id],
                )?
                .get(0)?;
            if !exists {
                return Ok(Bounced::Gone);
            }
            let repeated: bool = run > 0
                && tx
                    .one(
                        "SELECT EXISTS (SELECT 1 FROM bounces WHERE subscriber_id = ?1 AND run_id = ?2 AND class = ?3)",
                        args![id, run, class],
                    )?
                    .get(0)?;
            if repeated {
                return Ok(Bounced::Repeated);
            }
            tx.exec(
                "INSERT INTO bounces (subscriber_id, run_id, class, status, at) VALUES (?1, ?2, ?3, ?4, ?5)",
                args![id, run, class, status, now],
            )?;
            let reason = if hard {
                let n: i64 = tx
                    .one(
                        "SELECT COUNT(*) FROM bounces WHERE subscriber_id = ?1 AND class = 'hard'",
                        args![id],
                    )?
                    .get(0)?;
                (n >= i64::from(limits.hard)).then(|| match (n, status) {
                    (1, Some(s)) => format!("hard bounce {s}"),
                    (1, None) => "hard bounce".to_string(),
                    (n, Some(s)) => format!("{n} hard bounces (last {s})"),
                    (n, None) => format!("{n} hard bounces"),
                })
            } else {
                let n: i64 = tx
                    .one(
                        "SELECT COUNT(*) FROM bounces WHERE subscriber_id = ?1 AND class = 'soft' AND at >= ?2
                           AND run_id > COALESCE((
                               SELECT MAX(d.run_id) FROM deliveries d
                               WHERE d.subscriber_id = ?1 AND d.status = 'sent' AND d.run_id < ?3
                                 AND NOT EXISTS (SELECT 1 FROM bounces b WHERE b.subscriber_id = ?1 AND b.run_id = d.run_id)), 0)",
                        args![id, now - limits.soft_window, run],
                    )?
                    .get(0)?;
                (n >= i64::from(limits.soft)).then(|| {
                    let days = (limits.soft_window as f64 / 86_400.0).round();
                    match status {
                        Some(s) => format!("{n} soft bounces within {days}d (last {s})"),
                        None => format!("{n} soft bounces within {days}d"),
                    }
                })
            };
            let mut suspended = None;
            if let Some(reason) = reason {
                let n = tx.exec(
                    "UPDATE subscribers SET suspended_at = ?2, suspended_reason = ?3 WHERE id = ?1 AND suspended_at IS NULL",
                    args![id, now, &reason],
                )?;
                if n == 1 {
                    suspended = Some(reason);
                }
            }
            Ok(Bounced::Recorded { suspended })
        })
    }

    /// A complaint (the recipient marked the mail as spam): the subscription ends at once,
    /// the address is erased and blocked, and the consent log says `complaint`.
    pub fn record_complaint(&mut self, id: i64, source: &str, now: i64) -> Result<Bounced> {
        let erased = self.write(|tx| {
            count_on(tx, "complaint")?;
            super::subscribers::erase_on(tx, id, "complaint", source, now)
        })?;
        if !erased {
            return Ok(Bounced::Gone);
        }
        self.scrub();
        Ok(Bounced::Unsubscribed)
    }

    /// Counts a message that changed nothing (`ignored`, `unmatched`, `forged`).
    pub fn count_bounce(&mut self, class: &str) -> Result<()> {
        count_on(self.c(), class)
    }

    /// Messages handled by class, since the database was made (`/metrics`).
    pub fn bounce_counts(&self) -> Result<Vec<(String, i64)>> {
        self.c()
            .rows("SELECT class, n FROM bounce_counts ORDER BY class", &[])?
            .iter()
            .map(|r| Ok((r.get(0)?, r.get(1)?)))
            .collect()
    }

    /// How many addresses are suspended now (`/metrics`).
    pub fn suspended_count(&self) -> Result<i64> {
        self.c()
            .one(
                "SELECT COUNT(*) FROM subscribers WHERE suspended_at IS NOT NULL",
                &[],
            )?
            .get(0)
    }

    /// Lifts a suspension: digests again, bounce count from zero. Gives whether there was
    /// one.
    pub fn reactivate(&mut self, id: i64, _now: i64) -> Result<bool> {
        self.write(|tx| {
            let n = tx.exec(
                "UPDATE subscribers SET suspended_at = NULL, suspended_reason = NULL WHERE id = ?1 AND suspended_at IS NOT NULL",
                args![id],
            )?;
            tx.exec("DELETE FROM bounces WHERE subscriber_id = ?1", args![id])?;
            Ok(n == 1)
        })
    }
}

fn count_on(conn: &dyn Conn, class: &str) -> Result<()> {
    conn.exec(
        "INSERT INTO bounce_counts (class, n) VALUES (?1, 1) ON CONFLICT (class) DO UPDATE SET n = bounce_counts.n + 1",
        args![class],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::email::Email;
    use crate::store::{Choice, ImportAction, ImportRow, Status};

    /// A store on each engine with one active subscriber of digest `w`.
    fn setup() -> Vec<(crate::store::tests::Place, Store, i64)> {
        crate::store::tests::stores()
            .into_iter()
            .map(|(place, st)| {
                let (st, id) = with_subscriber(st);
                (place, st, id)
            })
            .collect()
    }

    fn with_subscriber(mut st: Store) -> (Store, i64) {
        let a = Email::parse("anna@example.org").unwrap();
        st.import(
            &ImportRow {
                email: a.clone(),
                source: "test".into(),
                action: ImportAction::Subscribe {
                    status: Status::Active,
                    choice: Choice {
                        digests: vec!["w".into()],
                        ..Choice::default()
                    },
                    consented_at: None,
                    consent_version: "1".into(),
                },
            },
            1,
        )
        .unwrap();
        let id = st.by_email(&a).unwrap().unwrap().id;
        (st, id)
    }

    const LIMITS: BounceLimits = BounceLimits {
        hard: 1,
        soft: 3,
        soft_window: 30 * 86_400,
    };

    /// A run of digest `w` with one delivery to `id`, sent at `at`.
    fn sent_run(st: &mut Store, id: i64, at: i64) -> i64 {
        let run = st
            .start_run("w", at, at - 1, &["i".into()], &[(id, "[\"i\"]")])
            .unwrap();
        st.record_delivery(run.id, id, "sent", None, at).unwrap();
        assert!(st.finish_run_if_done(run.id, at).unwrap());
        run.id
    }

    #[test]
    fn one_hard_bounce_suspends_with_its_reason_and_reactivation_clears_it() {
        for (_d, mut st, id) in setup() {
            let run = sent_run(&mut st, id, 100);
            let b = st
                .record_bounce(id, run, true, Some("5.1.1"), LIMITS, 200)
                .unwrap();
            assert_eq!(
                b,
                Bounced::Recorded {
                    suspended: Some("hard bounce 5.1.1".into())
                }
            );
            let s = st.get(id).unwrap().unwrap();
            assert_eq!(s.suspended.as_ref().unwrap().reason, "hard bounce 5.1.1");
            assert!(st.digest_recipients("w").unwrap().is_empty());
            assert_eq!(
                st.record_bounce(id, run, true, Some("5.1.1"), LIMITS, 201)
                    .unwrap(),
                Bounced::Repeated
            );
            assert!(st.reactivate(id, 300).unwrap());
            assert!(st.get(id).unwrap().unwrap().suspended.is_none());
            assert_eq!(st.digest_recipients("w").unwrap().len(), 1);
            assert!(!st.reactivate(id, 301).unwrap());
            let counts = st.bounce_counts().unwrap();
            assert_eq!(counts, [("hard".to_string(), 2)]);
        }
    }

    #[test]
    fn soft_bounces_suspend_at_the_limit_and_a_clean_delivery_resets_the_count() {
        for (_d, mut st, id) in setup() {
            let day = 86_400;
            let r1 = sent_run(&mut st, id, day);
            st.record_bounce(id, r1, false, Some("4.2.2"), LIMITS, day + 60)
                .unwrap();
            let r2 = sent_run(&mut st, id, 2 * day);
            st.record_bounce(id, r2, false, Some("4.2.2"), LIMITS, 2 * day + 60)
                .unwrap();
            // Run 3 went through: no bounce for it.
            let _r3 = sent_run(&mut st, id, 3 * day);
            let r4 = sent_run(&mut st, id, 4 * day);
            let b = st
                .record_bounce(id, r4, false, Some("5.2.2"), LIMITS, 4 * day + 60)
                .unwrap();
            assert_eq!(b, Bounced::Recorded { suspended: None }, "reset by run 3");
            let r5 = sent_run(&mut st, id, 5 * day);
            st.record_bounce(id, r5, false, None, LIMITS, 5 * day + 60)
                .unwrap();
            let r6 = sent_run(&mut st, id, 6 * day);
            let b = st
                .record_bounce(id, r6, false, Some("4.4.1"), LIMITS, 6 * day + 60)
                .unwrap();
            assert_eq!(
                b,
                Bounced::Recorded {
                    suspended: Some("3 soft bounces within 30d (last 4.4.1)".into())
                }
            );
        }
    }

    #[test]
    fn soft_bounces_outside_the_window_do_not_count() {
        for (_d, mut st, id) in setup() {
            let day = 86_400;
            for (i, at) in [day, 40 * day, 80 * day].into_iter().enumerate() {
                let r = st
                    .start_run("w", at, at - 1, &["i".into()], &[(id, "[\"i\"]")])
                    .unwrap();
                st.record_delivery(r.id, id, "sent", None, at).unwrap();
                st.finish_run_if_done(r.id, at).unwrap();
                let b = st
                    .record_bounce(id, r.id, false, Some("4.2.2"), LIMITS, at + 1)
                    .unwrap();
                assert_eq!(b, Bounced::Recorded { suspended: None }, "bounce {i}");
            }
        }
    }

    #[test]
    fn a_complaint_erases_blocks_and_logs() {
        for (_d, mut st, id) in setup() {
            let a = Email::parse("anna@example.org").unwrap();
            let run = sent_run(&mut st, id, 100);
            st.record_bounce(id, run, false, None, LIMITS, 150).unwrap();
            assert_eq!(
                st.record_complaint(id, "feedback report", 200).unwrap(),
                Bounced::Unsubscribed
            );
            assert!(st.by_email(&a).unwrap().is_none());
            assert!(st.is_blocked(&a).unwrap());
            let events: Vec<String> = st
                .consent_log(&a)
                .unwrap()
                .into_iter()
                .map(|e| e.event)
                .collect();
            assert_eq!(events, ["import", "complaint"]);
            let left: i64 = st
                .c()
                .one("SELECT COUNT(*) FROM bounces", &[])
                .unwrap()
                .get(0)
                .unwrap();
            assert_eq!(left, 0, "bounce rows go with the subscriber");
            assert_eq!(
                st.record_complaint(id, "feedback report", 300).unwrap(),
                Bounced::Gone
            );
            assert_eq!(
                st.record_bounce(id, run, true, None, LIMITS, 300).unwrap(),
                Bounced::Gone
            );
        }
    }
}
