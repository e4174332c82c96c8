//! Counters and gauges of the running daemon, rendered in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Every metric herold exposes at `/metrics`.
#[derive(Default)]
pub struct Metrics {
    pub items: AtomicU64,
    pub scheduled: AtomicU64,
    pub problems: AtomicU64,
    pub builds: AtomicU64,
    pub build_failures: AtomicU64,
    /// Sum of build durations, in microseconds.
    pub build_micros: AtomicU64,
    pub last_build_unix: AtomicU64,
    pub files_written: AtomicU64,
    pub websub_ok: AtomicU64,
    pub websub_failed: AtomicU64,
    pub mails_sent: AtomicU64,
    pub digest_sent: AtomicU64,
    pub digest_failed: AtomicU64,
    pub digest_retried: AtomicU64,
    /// Sum of digest run durations, in microseconds.
    pub digest_run_micros: AtomicU64,
    pub mails_failed: AtomicU64,
    http: Mutex<BTreeMap<(String, u16), u64>>,
}

/// The bounce counters and the suspended addresses, in the Prometheus text format.
pub fn bounces(counts: &[(String, i64)], suspended: i64) -> String {
    let mut out = String::from(
        "# HELP herold_bounces_total Returned messages handled, by class.\n# TYPE herold_bounces_total counter\n",
    );
    for class in crate::bounce::report::Class::ALL {
        let n = counts
            .iter()
            .find(|(c, _)| c == class.as_str())
            .map_or(0, |(_, n)| *n);
        let _ = writeln!(
            out,
            "herold_bounces_total{{class=\"{}\"}} {n}",
            class.as_str()
        );
    }
    let _ = writeln!(
        out,
        "# HELP herold_subscribers_suspended Addresses suspended after bounces or failures.\n# TYPE herold_subscribers_suspended gauge\nherold_subscribers_suspended {suspended}"
    );
    out
}

impl Metrics {
    /// Counts one HTTP response; `route` is the matched route pattern, never the raw path,
    /// so clients cannot grow the label set.
    pub fn http_response(&self, route: &str, status: u16) {
        let mut m = self.http.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry((route.to_string(), status)).or_default() += 1;
    }

    pub fn build_done(&self, seconds: f64, unix_time: u64) {
        self.builds.fetch_add(1, Ordering::Relaxed);
        self.build_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
        self.last_build_unix.store(unix_time, Ordering::Relaxed);
    }

    /// The Prometheus text exposition (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "herold_items",
            "gauge",
            "Items published in the feeds.",
            get(&self.items).to_string(),
        );
        metric(
            "herold_items_scheduled",
            "gauge",
            "Items waiting for their date.",
            get(&self.scheduled).to_string(),
        );
        metric(
            "herold_content_problems",
            "gauge",
            "Content files with problems.",
            get(&self.problems).to_string(),
        );
        metric(
            "herold_builds_total",
            "counter",
            "Feed builds done.",
            get(&self.builds).to_string(),
        );
        metric(
            "herold_build_failures_total",
            "counter",
            "Feed builds that failed to write.",
            get(&self.build_failures).to_string(),
        );
        metric(
            "herold_build_seconds_total",
            "counter",
            "Time spent building feeds.",
            format!("{:.6}", get(&self.build_micros) as f64 / 1e6),
        );
        metric(
            "herold_last_build_timestamp_seconds",
            "gauge",
            "Unix time of the last finished build.",
            get(&self.last_build_unix).to_string(),
        );
        metric(
            "herold_feed_files_written_total",
            "counter",
            "Feed files written (changed bytes only).",
            get(&self.files_written).to_string(),
        );
        let _ = writeln!(
            out,
            "# HELP herold_websub_pings_total WebSub publish notifications sent to hubs.\n# TYPE herold_websub_pings_total counter\nherold_websub_pings_total{{result=\"ok\"}} {}\nherold_websub_pings_total{{result=\"failed\"}} {}",
            get(&self.websub_ok),
            get(&self.websub_failed)
        );
        let _ = writeln!(
            out,
            "# HELP herold_digest_mails_total Digest mails by outcome.\n# TYPE herold_digest_mails_total counter\nherold_digest_mails_total{{result=\"sent\"}} {}\nherold_digest_mails_total{{result=\"failed\"}} {}\nherold_digest_mails_total{{result=\"retried\"}} {}\n# HELP herold_digest_run_seconds_total Time spent delivering digests.\n# TYPE herold_digest_run_seconds_total counter\nherold_digest_run_seconds_total {:.6}",
            get(&self.digest_sent),
            get(&self.digest_failed),
            get(&self.digest_retried),
            get(&self.digest_run_micros) as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "# HELP herold_subscription_mails_total Confirmation and notice mails.\n# TYPE herold_subscription_mails_total counter\nherold_subscription_mails_total{{result=\"sent\"}} {}\nherold_subscription_mails_total{{result=\"failed\"}} {}",
            get(&self.mails_sent),
            get(&self.mails_failed)
        );
        let _ = writeln!(
            out,
            "# HELP herold_http_requests_total HTTP responses by route and status.\n# TYPE herold_http_requests_total counter"
        );
        let http = self.http.lock().unwrap_or_else(|e| e.into_inner());
        for ((route, status), n) in http.iter() {
            let _ = writeln!(
                out,
                "herold_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.items.store(7, Ordering::Relaxed);
        m.http_response("/feeds/{*path}", 304);
        m.http_response("/feeds/{*path}", 304);
        m.build_done(0.25, 1_700_000_000);
        let text = m.render();
        assert!(text.contains("herold_items 7\n"), "{text}");
        assert!(
            text.contains(
                "herold_http_requests_total{route=\"/feeds/{*path}\",status=\"304\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("herold_build_seconds_total 0.250000\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE herold_builds_total counter\nherold_builds_total 1\n"),
            "{text}"
        );
    }
}
