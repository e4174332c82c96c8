//! Digest schedules: standard 5-field crontab lines (and `@daily`, `@weekly`, …) in a time
//! zone. Pure: the caller passes the time; nothing here reads the clock.

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// A parsed schedule in its time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    pub tz: Tz,
    pub line: String,
}

impl Schedule {
    /// Parses a crontab line: minute, hour, day of month, month, day of week (0 or 7 is
    /// Sunday, 1 Monday), or `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`.
    pub fn parse(line: &str, tz: Tz) -> Result<Schedule, String> {
        let trimmed = line.trim();
        let fields = trimmed.split_whitespace().count();
        if !trimmed.starts_with('@') && fields != 5 {
            return Err(format!(
                "`{line}` is not a crontab line: it needs 5 fields (minute hour day month weekday), not {fields}"
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(trimmed)
            .map_err(|e| format!("`{line}` is not a crontab line: {e}"))?;
        Ok(Schedule {
            cron,
            tz,
            line: trimmed.to_string(),
        })
    }

    /// The first fire time strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.tz), false)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The last fire time at or before `t`.
    pub fn last_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&t.with_timezone(&self.tz), true)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The schedule in words, e.g. "At 08:00 on Monday".
    pub fn describe(&self) -> String {
        self.cron.describe()
    }

    /// A fire time as the digest's local time, for people.
    pub fn local(&self, t: DateTime<Utc>) -> String {
        self.tz
            .from_utc_datetime(&t.naive_utc())
            .format("%a %Y-%m-%d %H:%M %Z")
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn fires(line: &str, from: &str, to: &str) -> Vec<String> {
        let s = Schedule::parse(line, chrono_tz::Europe::Berlin).unwrap();
        let (mut t, end) = (utc(from), utc(to));
        let mut out = Vec::new();
        while let Some(n) = s.next_after(t) {
            if n > end {
                break;
            }
            out.push(n.with_timezone(&chrono_tz::Europe::Berlin).to_rfc3339());
            t = n;
        }
        out
    }

    #[test]
    fn monday_is_1_as_in_crontab() {
        let s = Schedule::parse("0 8 * * 1", chrono_tz::Europe::Berlin).unwrap();
        // 2026-11-23 is a Monday.
        assert_eq!(
            s.next_after(utc("2026-11-20T12:00:00Z")).unwrap(),
            utc("2026-11-23T07:00:00Z")
        );
        assert_eq!(
            fires("0 9 * * 0", "2026-11-20T00:00:00Z", "2026-11-30T00:00:00Z"),
            ["2026-11-22T09:00:00+01:00", "2026-11-29T09:00:00+01:00"]
        );
        assert_eq!(
            fires("0 9 * * 7", "2026-11-20T00:00:00Z", "2026-11-23T00:00:00Z"),
            ["2026-11-22T09:00:00+01:00"]
        );
    }

    #[test]
    fn spring_forward_runs_a_skipped_time_once() {
        // 2026-03-29: 02:00 becomes 03:00 in Berlin; 02:30 does not exist that day.
        let got = fires("30 2 * * *", "2026-03-27T12:00:00Z", "2026-03-31T12:00:00Z");
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(got[0], "2026-03-28T02:30:00+01:00");
        assert!(got[1].starts_with("2026-03-29T03:"), "{got:?}");
        assert_eq!(got[2], "2026-03-30T02:30:00+02:00");
    }

    #[test]
    fn fall_back_runs_a_repeated_time_once() {
        // 2026-10-25: 03:00 becomes 02:00 again; 02:30 happens twice, the job runs once.
        let got = fires("30 2 * * *", "2026-10-23T12:00:00Z", "2026-10-26T12:00:00Z");
        assert_eq!(
            got,
            [
                "2026-10-24T02:30:00+02:00",
                "2026-10-25T02:30:00+02:00",
                "2026-10-26T02:30:00+01:00"
            ],
            "{got:?}"
        );
    }

    #[test]
    fn shortcuts_and_errors() {
        assert_eq!(
            fires("@daily", "2026-11-20T12:00:00Z", "2026-11-22T12:00:00Z").len(),
            2
        );
        assert_eq!(
            fires("@weekly", "2026-11-20T12:00:00Z", "2026-11-30T12:00:00Z").len(),
            2
        );
        let s = Schedule::parse("0 8 * * 1", chrono_tz::Europe::Berlin).unwrap();
        assert_eq!(
            s.last_at_or_before(utc("2026-11-23T07:00:00Z")).unwrap(),
            utc("2026-11-23T07:00:00Z")
        );
        assert_eq!(
            s.last_at_or_before(utc("2026-11-23T06:59:00Z")).unwrap(),
            utc("2026-11-16T07:00:00Z")
        );
        for bad in [
            "",
            "0 8 * *",
            "0 0 8 * * 1",
            "61 * * * *",
            "x y z a b",
            "@sometimes",
        ] {
            assert!(
                Schedule::parse(bad, chrono_tz::Europe::Berlin).is_err(),
                "{bad}"
            );
        }
    }
}

/// What the scheduler should do about one digest at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// A fire time that passed with no run since: run it now.
    pub run_now: Option<DateTime<Utc>>,
    /// A fire time that passed with no run since, but longer ago than `catch_up`: not sent
    /// late (its items go into the next run).
    pub missed: Option<DateTime<Utc>>,
    /// The next fire time after `now`.
    pub next: Option<DateTime<Utc>>,
}

/// Decides, at `now`, whether a fire time was missed and when the next one is. `since` is
/// when the scheduler first ran for this digest (fire times before it were never due);
/// `last_run` when its last run started. Pure: the clock is a parameter.
pub fn due(
    schedule: &Schedule,
    since: DateTime<Utc>,
    last_run: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    catch_up: chrono::TimeDelta,
) -> Due {
    let reference = last_run.map_or(since, |r| r.max(since));
    let latest = schedule.last_at_or_before(now).filter(|f| *f > reference);
    let (run_now, missed) = match latest {
        Some(f) if now - f <= catch_up => (Some(f), None),
        Some(f) => (None, Some(f)),
        None => (None, None),
    };
    Due {
        run_now,
        missed,
        next: schedule.next_after(now),
    }
}

#[cfg(test)]
mod due_tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn catch_up_with_a_fake_clock() {
        let s = Schedule::parse("0 8 * * 1", chrono_tz::Europe::Berlin).unwrap();
        let h12 = chrono::TimeDelta::hours(12);
        let since = t("2026-11-01T00:00:00Z");
        // Down over Monday 08:00, back at 10:00: run once now.
        let d = due(
            &s,
            since,
            Some(t("2026-11-16T07:00:00Z")),
            t("2026-11-23T09:00:00Z"),
            h12,
        );
        assert_eq!(d.run_now, Some(t("2026-11-23T07:00:00Z")));
        assert_eq!(d.next, Some(t("2026-11-30T07:00:00Z")));
        // Back the next day: too late, not sent; the next run takes its items.
        let d = due(
            &s,
            since,
            Some(t("2026-11-16T07:00:00Z")),
            t("2026-11-24T09:00:00Z"),
            h12,
        );
        assert_eq!(
            (d.run_now, d.missed),
            (None, Some(t("2026-11-23T07:00:00Z")))
        );
        // Already ran at that fire time: nothing to catch up.
        let d = due(
            &s,
            since,
            Some(t("2026-11-23T07:00:00Z")),
            t("2026-11-23T09:00:00Z"),
            h12,
        );
        assert_eq!((d.run_now, d.missed), (None, None));
        // A fresh install: fire times before the scheduler first ran were never due.
        let d = due(
            &s,
            t("2026-11-23T08:00:00Z"),
            None,
            t("2026-11-23T09:00:00Z"),
            h12,
        );
        assert_eq!((d.run_now, d.missed), (None, None));
        // Several missed fire times: one run, not several.
        let daily = Schedule::parse("@daily", chrono_tz::Europe::Berlin).unwrap();
        let d = due(
            &daily,
            since,
            Some(t("2026-11-20T00:00:00Z")),
            t("2026-11-23T03:00:00Z"),
            h12,
        );
        assert_eq!(d.run_now, Some(t("2026-11-22T23:00:00Z")));
    }
}
