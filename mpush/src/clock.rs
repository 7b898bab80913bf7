//! The wall clock, in one place: every layer that stamps times asks here (`protocol` has no
//! clock of its own; its callers pass times in).

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock epoch milliseconds (0 if the system clock is before 1970).
pub(crate) fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
