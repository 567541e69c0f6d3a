//! Wall-clock time as the counters record it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix time in milliseconds; 0 if the clock is before 1970 (never on a sane host).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
