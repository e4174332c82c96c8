//! The wall clock: the one module that reads it (`clippy.toml` forbids it elsewhere), so the
//! core stays a function of its inputs and tests can pass any time they like.

use chrono::{DateTime, FixedOffset, Utc};

/// Now, in the given time zone.
#[allow(clippy::disallowed_methods)]
pub fn now_in(tz: chrono_tz::Tz) -> DateTime<FixedOffset> {
    Utc::now().with_timezone(&tz).fixed_offset()
}

/// Now, in UTC.
#[allow(clippy::disallowed_methods)]
pub fn now_utc() -> DateTime<Utc> {
    Utc::now()
}

/// Seconds since the Unix epoch.
#[allow(clippy::disallowed_methods)]
pub fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Nanoseconds since the Unix epoch, to compare with file times.
#[allow(clippy::disallowed_methods)]
pub fn unix_nanos() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// `d` plus up to a quarter more, from the clock's nanoseconds, so that retries (of hub
/// pings, of mails) do not march in step. Not for secrets.
#[allow(clippy::disallowed_methods)]
pub fn jitter(d: std::time::Duration) -> std::time::Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    d + d.mul_f64(f64::from(nanos % 1000) / 4000.0)
}
