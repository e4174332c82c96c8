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

/// A few unpredictable bits from the clock, for backoff jitter (not for secrets).
#[allow(clippy::disallowed_methods)]
pub fn jitter_bits() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}
