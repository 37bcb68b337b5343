//! Wall-clock readings for metadata timestamps (never used for ordering or merging).

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub(crate) fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Seconds since the Unix epoch, the unit of Automerge change timestamps.
pub(crate) fn now_secs() -> i64 {
    now_millis() / 1000
}
