//! Heartbeats and idle timeouts of a server-to-server link (spec/wire.md §5), as data.
//!
//! The connection task tells the timer when it sent and received anything and asks when to
//! wake up; at that moment the timer says whether to send a heartbeat or close the link. Time
//! is monotonic milliseconds passed in by the caller, never read here.

/// Send a heartbeat when nothing was sent for this long (ms): `SERVER_HEARTBEAT_INTERVAL`.
pub const SERVER_HEARTBEAT_INTERVAL_MS: u64 = 5_000;
/// Close a server link when nothing was received for this long (ms): `SERVER_TIMEOUT`.
pub const SERVER_TIMEOUT_MS: u64 = 30_000;

/// What to do when the timer fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkAction {
    /// Nothing was sent for a heartbeat interval: send `CID_OTHER_HEARTBEAT`.
    SendHeartbeat,
    /// Nothing was received for the timeout: close the link.
    Close,
}

/// Heartbeat and timeout bookkeeping of one link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkTimer {
    heartbeat_ms: u64,
    timeout_ms: u64,
    last_sent: u64,
    last_received: u64,
}

impl LinkTimer {
    /// A server link opened at `now_ms` with the original's intervals (5 s, 30 s).
    pub const fn new(now_ms: u64) -> LinkTimer {
        LinkTimer::with_intervals(now_ms, SERVER_HEARTBEAT_INTERVAL_MS, SERVER_TIMEOUT_MS)
    }

    /// A link with other intervals (tests, or client links with their longer timeouts).
    pub const fn with_intervals(now_ms: u64, heartbeat_ms: u64, timeout_ms: u64) -> LinkTimer {
        LinkTimer {
            heartbeat_ms,
            timeout_ms,
            last_sent: now_ms,
            last_received: now_ms,
        }
    }

    /// Something was sent at `now_ms`.
    pub fn sent(&mut self, now_ms: u64) {
        self.last_sent = self.last_sent.max(now_ms);
    }

    /// Something was received at `now_ms`.
    pub fn received(&mut self, now_ms: u64) {
        self.last_received = self.last_received.max(now_ms);
    }

    /// When to call [`LinkTimer::poll`] next (ms).
    pub fn next_deadline(&self) -> u64 {
        (self.last_sent + self.heartbeat_ms).min(self.last_received + self.timeout_ms)
    }

    /// What is due at `now_ms`, if anything. A due heartbeat counts as sent.
    pub fn poll(&mut self, now_ms: u64) -> Option<LinkAction> {
        if now_ms >= self.last_received + self.timeout_ms {
            return Some(LinkAction::Close);
        }
        if now_ms >= self.last_sent + self.heartbeat_ms {
            self.last_sent = now_ms;
            return Some(LinkAction::SendHeartbeat);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_after_send_silence_close_after_receive_silence() {
        let mut t = LinkTimer::new(0);
        assert_eq!(t.next_deadline(), 5_000);
        assert_eq!(t.poll(4_999), None);
        assert_eq!(t.poll(5_000), Some(LinkAction::SendHeartbeat));
        assert_eq!(t.next_deadline(), 10_000);
        t.sent(7_000);
        assert_eq!(t.poll(10_000), None, "a send postpones the heartbeat");
        t.received(20_000);
        assert_eq!(t.poll(49_999), Some(LinkAction::SendHeartbeat));
        assert_eq!(t.poll(50_000), Some(LinkAction::Close));
    }
}
