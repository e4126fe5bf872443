//! Wall-clock processing time in milliseconds since the Unix epoch.

use std::time::{SystemTime, UNIX_EPOCH};

/// Processing time now, in epoch milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
