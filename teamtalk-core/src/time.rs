//! Time as the state machines see it: every input carries a [`Now`], read once by the shell.
//!
//! The state machines of this crate never read a clock. A shell reads [`SystemClock::now`]
//! once per input (a frame, a timer firing, a link opening) from its [`Epoch`] and passes the
//! result in; tests
//! build [`Now`] values by hand and step them, so a whole multi-party run is deterministic.
//! [`Epoch`] and [`SystemClock`] are the one place in this crate that touches the operating
//! system's clocks, and only shells and services call them.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::domain::{Clock, Timestamp};

/// The moment an input happened: a monotonic reading in milliseconds (for timers) and the
/// Unix time in seconds (for the protocol's time fields), taken together.
///
/// `ms` only has meaning relative to other readings of the same clock: deadlines returned by
/// [`Machine::poll_timeout`] are on the same scale.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Now {
    /// Monotonic milliseconds since an arbitrary start (the shell's clock).
    pub ms: u64,
    /// Unix time in seconds, as every TeamTalk time field carries it.
    pub unix: Timestamp,
}

impl Now {
    /// A moment `ms` on the monotonic scale at Unix time `unix`.
    pub const fn new(ms: u64, unix: Timestamp) -> Now {
        Now { ms, unix }
    }

    /// A moment for tests: monotonic `ms`, and Unix time `1_000_000 + ms / 1000` so that both
    /// move together.
    pub const fn from_ms(ms: u64) -> Now {
        let secs = ms / 1000;
        let unix = if secs > (u32::MAX - 1_000_000) as u64 {
            u32::MAX
        } else {
            1_000_000 + secs as u32
        };
        Now {
            ms,
            unix: Timestamp(unix),
        }
    }

    /// The moment `delta_ms` later on both scales (Unix time moves by whole seconds elapsed).
    pub const fn plus_ms(self, delta_ms: u64) -> Now {
        let ms = self.ms.saturating_add(delta_ms);
        let whole = ms / 1000 - self.ms / 1000;
        let unix = if whole > u32::MAX as u64 {
            u32::MAX
        } else {
            self.unix.0.saturating_add(whole as u32)
        };
        Now {
            ms,
            unix: Timestamp(unix),
        }
    }
}

/// The wall clock of the operating system as a [`Clock`] (Unix seconds), for the
/// storage-backed services ([`crate::service::DbProxy`]), which stamp rows with the time of
/// the call.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        unix_now()
    }
}

/// A shell's zero point on the monotonic clock: [`Epoch::now`] reads the monotonic clock
/// (milliseconds since the epoch was started) and the wall clock together, as the [`Now`]
/// of the next input.
#[derive(Clone, Copy, Debug)]
pub struct Epoch {
    start: Instant,
}

impl Default for Epoch {
    fn default() -> Self {
        Epoch::start()
    }
}

impl Epoch {
    /// An epoch whose monotonic readings start at 0 now.
    pub fn start() -> Epoch {
        Epoch {
            start: Instant::now(),
        }
    }

    /// The current moment.
    pub fn now(&self) -> Now {
        Now {
            ms: self.ms(),
            unix: unix_now(),
        }
    }

    /// Monotonic milliseconds since the epoch started.
    pub fn ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The `Instant` whose reading is `ms` (for a shell's `sleep_until`).
    pub fn instant_at(&self, ms: u64) -> Instant {
        self.start + std::time::Duration::from_millis(ms)
    }
}

/// Unix time from the operating system, in seconds (saturating at `u32::MAX`, in 2106).
fn unix_now() -> Timestamp {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Timestamp(u32::try_from(secs).unwrap_or(u32::MAX))
}

/// The run-loop side every state machine of this crate shares: outputs drained one at a
/// time, and the next moment it needs to be woken (see the crate's "Run loop" section).
///
/// Inputs differ per machine (`handle_*` methods, each taking a [`Now`]); draining and timers
/// are the same everywhere, so one shell loop can drive any of them.
pub trait Machine {
    /// What the machine asks its shell to do.
    type Output;

    /// The next output, or `None` when there is nothing more to do until the next input.
    /// After every input the shell calls this until it returns `None`.
    fn poll_output(&mut self) -> Option<Self::Output>;

    /// The monotonic time (ms, on the scale of [`Now::ms`]) at which
    /// [`Machine::handle_timeout`] must be called, or `None` when no timer is armed. Asked
    /// again after every input: the answer can move earlier or later.
    fn poll_timeout(&self) -> Option<u64>;

    /// Time has reached `now` (at or after the deadline from [`Machine::poll_timeout`]; an
    /// early call is harmless). Followed, like every input, by draining
    /// [`Machine::poll_output`].
    fn handle_timeout(&mut self, now: Now);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_moves_both_scales_together() {
        let t = Now::from_ms(1_500);
        assert_eq!(t.unix, Timestamp(1_000_001));
        let later = t.plus_ms(600);
        assert_eq!((later.ms, later.unix), (2_100, Timestamp(1_000_002)));
        assert_eq!(t.plus_ms(400).unix, Timestamp(1_000_001));
    }

    #[test]
    fn epoch_is_monotonic() {
        let epoch = Epoch::start();
        let a = epoch.now();
        let b = epoch.now();
        assert!(b.ms >= a.ms);
        assert!(a.unix.0 > 1_600_000_000);
        assert_eq!(SystemClock.now().0 / 10, a.unix.0 / 10);
        assert_eq!(epoch.instant_at(0), epoch.start);
    }
}
