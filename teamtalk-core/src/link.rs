//! Heartbeats and idle timeouts of a server-to-server link (docs/protocol.md), as a state
//! machine.
//!
//! The connection task tells the timer when it sent ([`LinkTimer::handle_sent`]) and received
//! ([`LinkTimer::handle_received`]) anything and sleeps until [`Machine::poll_timeout`]; at
//! that moment [`Machine::handle_timeout`] decides whether a heartbeat is due or the link is
//! dead, and [`Machine::poll_output`] says so. Time comes in with every input, never read
//! here.

use crate::time::{Machine, Now};

/// Send a heartbeat when nothing was sent for this long (ms): `SERVER_HEARTBEAT_INTERVAL`.
pub const SERVER_HEARTBEAT_INTERVAL_MS: u64 = 5_000;
/// Close a server link when nothing was received for this long (ms): `SERVER_TIMEOUT`.
pub const SERVER_TIMEOUT_MS: u64 = 30_000;

/// What the timer asks its link to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkAction {
    /// Nothing was sent for a heartbeat interval: send `CID_OTHER_HEARTBEAT`.
    SendHeartbeat,
    /// Nothing was received for the timeout: close the link. The timer is done: it arms no
    /// further deadline.
    Close,
}

/// Heartbeat and timeout bookkeeping of one link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkTimer {
    heartbeat_ms: u64,
    timeout_ms: u64,
    last_sent: u64,
    last_received: u64,
    /// The action decided by the last [`Machine::handle_timeout`], not yet polled.
    due: Option<LinkAction>,
    /// [`LinkAction::Close`] was decided: no more deadlines.
    closed: bool,
}

impl LinkTimer {
    /// A server link opened at `now` with the original's intervals (5 s, 30 s).
    pub const fn new(now: Now) -> LinkTimer {
        LinkTimer::with_intervals(now, SERVER_HEARTBEAT_INTERVAL_MS, SERVER_TIMEOUT_MS)
    }

    /// A link opened at `now` with other intervals (tests, or client links with their longer
    /// timeouts).
    pub const fn with_intervals(now: Now, heartbeat_ms: u64, timeout_ms: u64) -> LinkTimer {
        LinkTimer {
            heartbeat_ms,
            timeout_ms,
            last_sent: now.ms,
            last_received: now.ms,
            due: None,
            closed: false,
        }
    }

    /// Something was sent at `now` (postpones the next heartbeat).
    pub fn handle_sent(&mut self, now: Now) {
        self.last_sent = self.last_sent.max(now.ms);
    }

    /// Something was received at `now` (postpones the idle timeout).
    pub fn handle_received(&mut self, now: Now) {
        self.last_received = self.last_received.max(now.ms);
    }
}

impl Machine for LinkTimer {
    type Output = LinkAction;

    /// The action due at the last [`Machine::handle_timeout`]; a heartbeat handed out here
    /// counts as sent.
    fn poll_output(&mut self) -> Option<LinkAction> {
        self.due.take()
    }

    /// The earlier of the next heartbeat and the idle timeout; `None` once the timer decided
    /// to close.
    fn poll_timeout(&self) -> Option<u64> {
        if self.closed {
            return None;
        }
        Some(
            self.last_sent
                .saturating_add(self.heartbeat_ms)
                .min(self.last_received.saturating_add(self.timeout_ms)),
        )
    }

    fn handle_timeout(&mut self, now: Now) {
        if self.closed {
            return;
        }
        if now.ms >= self.last_received.saturating_add(self.timeout_ms) {
            self.closed = true;
            self.due = Some(LinkAction::Close);
        } else if now.ms >= self.last_sent.saturating_add(self.heartbeat_ms) {
            self.last_sent = now.ms;
            self.due = Some(LinkAction::SendHeartbeat);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fires the timer at `ms` and drains it.
    fn fire(t: &mut LinkTimer, ms: u64) -> Option<LinkAction> {
        t.handle_timeout(Now::from_ms(ms));
        let action = t.poll_output();
        assert_eq!(t.poll_output(), None, "one action per firing");
        action
    }

    #[test]
    fn heartbeats_after_send_silence_close_after_receive_silence() {
        let mut t = LinkTimer::new(Now::from_ms(0));
        assert_eq!(t.poll_timeout(), Some(5_000));
        assert_eq!(fire(&mut t, 4_999), None);
        assert_eq!(fire(&mut t, 5_000), Some(LinkAction::SendHeartbeat));
        assert_eq!(t.poll_timeout(), Some(10_000));
        t.handle_sent(Now::from_ms(7_000));
        assert_eq!(fire(&mut t, 10_000), None, "a send postpones the heartbeat");
        t.handle_received(Now::from_ms(20_000));
        assert_eq!(fire(&mut t, 49_999), Some(LinkAction::SendHeartbeat));
        assert_eq!(fire(&mut t, 50_000), Some(LinkAction::Close));
        assert_eq!(t.poll_timeout(), None, "a closed link arms no timer");
        assert_eq!(fire(&mut t, 60_000), None);
    }
}
