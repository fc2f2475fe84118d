//! The wall clock: the core never reads the time itself.

use std::time::{SystemTime, UNIX_EPOCH};

use teamtalk_core::domain::{Clock, Timestamp};

/// Unix time from the operating system, in seconds (saturating at `u32::MAX`, in 2106).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Timestamp(u32::try_from(secs).unwrap_or(u32::MAX))
    }
}
