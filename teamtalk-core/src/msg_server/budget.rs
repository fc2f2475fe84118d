//! The per-connection budget of requests a client has in flight to db_proxy and
//! route_server (docs/compatibility.md, "msg_server: per-connection budgets"). Which requests
//! count is a column of the request table ([`crate::command::requests::counts`]).
//!
//! A client may have [`super::MsgServerConfig::max_requests_in_flight`] answered requests
//! upstream at once, and all clients together
//! [`super::MsgServerConfig::max_requests_in_flight_total`]. Further requests wait here, in
//! order per connection, and the shell is told to stop reading the connection
//! ([`super::Action::PauseReading`]) until they have gone. Connections with waiting requests
//! take turns (one request each per round), so a heavy client's requests queue
//! behind its own, a newcomer waits for one round at most, and the upstream links (and the
//! msg_server, which decodes every answer) never have more than the total budget of large
//! answers ahead of a login or a message. A request whose answer
//! does not come within [`REQUEST_TIMEOUT_MS`] stops counting (answers can be lost with a
//! link). More waiting than [`MAX_WAITING`] frames or [`MAX_WAITING_BYTES`] bytes — only a
//! shell that ignores the pause lets that happen — closes the connection.

use std::collections::VecDeque;

use super::ConnId;
use crate::pdu::Pdu;

/// A request in flight that got no answer for this long no longer counts (ms).
pub const REQUEST_TIMEOUT_MS: u64 = 10_000;

/// Requests of one connection waiting for room, at most.
pub const MAX_WAITING: usize = 1024;

/// Bytes of requests of one connection waiting for room, at most.
pub const MAX_WAITING_BYTES: usize = 4 << 20;

/// What to do with a request that counts.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Admit {
    /// Serve it now.
    Go(Pdu),
    /// It waits; `pause`: the shell must stop reading the connection now.
    Wait {
        /// The connection was not paused before.
        pause: bool,
    },
    /// Too much is waiting: close the connection.
    Overflow,
}

/// One connection's requests in flight and waiting.
#[derive(Clone, Debug, Default)]
pub(super) struct RequestBudget {
    /// When each request in flight was sent (ms), oldest first.
    in_flight: VecDeque<u64>,
    waiting: VecDeque<Pdu>,
    waiting_bytes: usize,
    paused: bool,
}

impl RequestBudget {
    /// A request that counts arrived; `max` requests may be in flight, and `room`: the
    /// total budget has room.
    pub(super) fn admit(&mut self, pdu: Pdu, max: usize, room: bool) -> Admit {
        if room && self.waiting.is_empty() && self.in_flight.len() < max.max(1) {
            return Admit::Go(pdu);
        }
        let size = pdu.frame_len();
        if self.waiting.len() >= MAX_WAITING || self.waiting_bytes + size > MAX_WAITING_BYTES {
            return Admit::Overflow;
        }
        self.waiting_bytes += size;
        self.waiting.push_back(pdu);
        let pause = !self.paused;
        self.paused = true;
        Admit::Wait { pause }
    }

    /// A request was sent upstream at `now_ms`.
    pub(super) fn sent(&mut self, now_ms: u64) {
        self.in_flight.push_back(now_ms);
    }

    /// An answer came back (which one does not matter: only the count does); whether a
    /// request was counted.
    pub(super) fn answered(&mut self) -> bool {
        self.in_flight.pop_front().is_some()
    }

    /// Forgets requests in flight longer than [`REQUEST_TIMEOUT_MS`]; how many.
    pub(super) fn expire(&mut self, now_ms: u64) -> usize {
        let mut expired = 0;
        while self
            .in_flight
            .front()
            .is_some_and(|&sent| now_ms.saturating_sub(sent) >= REQUEST_TIMEOUT_MS)
        {
            self.in_flight.pop_front();
            expired += 1;
        }
        expired
    }

    /// Requests in flight (they count against the total until answered or expired).
    pub(super) fn in_flight_count(&self) -> usize {
        self.in_flight.len()
    }

    /// The next waiting request, if there is room for it now.
    pub(super) fn next(&mut self, max: usize) -> Option<Pdu> {
        if self.in_flight.len() >= max.max(1) {
            return None;
        }
        let pdu = self.waiting.pop_front()?;
        self.waiting_bytes = self.waiting_bytes.saturating_sub(pdu.frame_len());
        Some(pdu)
    }

    /// Whether the connection is paused with nothing left waiting: then it must be resumed
    /// (and is recorded as such).
    pub(super) fn resume(&mut self) -> bool {
        if self.paused && self.waiting.is_empty() {
            self.paused = false;
            return true;
        }
        false
    }

    /// Requests in flight.
    #[cfg(test)]
    pub(super) fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether requests wait.
    pub(super) fn has_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }
}

/// The total budget: requests in flight of all connections, and the connections whose
/// requests wait, in turn order.
#[derive(Clone, Debug, Default)]
pub(super) struct Turns {
    /// Requests in flight, all connections.
    pub(super) in_flight: usize,
    /// Connections with waiting requests, next first (each at most once).
    queue: VecDeque<ConnId>,
}

impl Turns {
    /// `conn` has waiting requests: it gets a turn (once).
    pub(super) fn enqueue(&mut self, conn: ConnId) {
        if !self.queue.contains(&conn) {
            self.queue.push_back(conn);
        }
    }

    /// The connection whose turn it is, if the total `max` has room.
    pub(super) fn next(&mut self, max: usize) -> Option<ConnId> {
        if self.in_flight >= max.max(1) {
            return None;
        }
        self.queue.pop_front()
    }

    /// Connections waiting for a turn.
    pub(super) fn waiting(&self) -> usize {
        self.queue.len()
    }

    /// Forgets `conn` (closed).
    pub(super) fn remove(&mut self, conn: ConnId) {
        self.queue.retain(|&c| c != conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::CommandId;
    use bytes::Bytes;

    fn request(seq: u16) -> Pdu {
        Pdu::new(CommandId::BUDDY_LIST_ALL_USER_REQUEST, seq, Bytes::new())
    }

    #[test]
    fn within_the_budget_requests_go_beyond_they_wait_in_order_and_pause() {
        let mut b = RequestBudget::default();
        for seq in 0..2 {
            assert_eq!(b.admit(request(seq), 2, true), Admit::Go(request(seq)));
            b.sent(0);
        }
        assert_eq!(b.admit(request(2), 2, true), Admit::Wait { pause: true });
        assert_eq!(b.admit(request(3), 2, true), Admit::Wait { pause: false });
        assert_eq!(b.next(2), None, "no room yet");
        b.answered();
        assert_eq!(b.next(2).map(|p| p.seq_num()), Some(2));
        b.sent(1);
        assert!(!b.resume(), "one still waits");
        b.answered();
        assert_eq!(b.next(2).map(|p| p.seq_num()), Some(3));
        assert!(b.resume());
        assert!(!b.resume(), "resumed once");
    }

    #[test]
    fn a_newcomer_waits_behind_waiting_requests_even_with_room() {
        let mut b = RequestBudget::default();
        assert!(matches!(b.admit(request(0), 1, true), Admit::Go(_)));
        b.sent(0);
        assert!(matches!(b.admit(request(1), 1, true), Admit::Wait { .. }));
        b.answered();
        assert!(
            matches!(b.admit(request(2), 1, true), Admit::Wait { .. }),
            "order kept"
        );
        assert_eq!(b.next(1).map(|p| p.seq_num()), Some(1));
    }

    #[test]
    fn without_room_in_the_total_a_request_waits() {
        let mut b = RequestBudget::default();
        assert_eq!(b.admit(request(0), 8, false), Admit::Wait { pause: true });
        assert_eq!(b.next(8).map(|p| p.seq_num()), Some(0));
    }

    #[test]
    fn turns_go_round_and_respect_the_total() {
        let mut t = Turns::default();
        t.enqueue(ConnId(1));
        t.enqueue(ConnId(2));
        t.enqueue(ConnId(1));
        assert_eq!(t.waiting(), 2, "one turn per connection");
        t.in_flight = 2;
        assert_eq!(t.next(2), None, "the total is full");
        t.in_flight = 1;
        assert_eq!(t.next(2), Some(ConnId(1)));
        t.enqueue(ConnId(1));
        assert_eq!(
            t.next(2),
            Some(ConnId(2)),
            "the other connection's turn first"
        );
        assert_eq!(t.next(2), Some(ConnId(1)));
        assert_eq!(t.next(2), None);
    }

    #[test]
    fn lost_answers_stop_counting_after_the_timeout() {
        let mut b = RequestBudget::default();
        b.sent(0);
        b.sent(5_000);
        b.expire(REQUEST_TIMEOUT_MS);
        assert_eq!(b.in_flight(), 1);
        b.expire(REQUEST_TIMEOUT_MS + 5_000);
        assert_eq!(b.in_flight(), 0);
    }

    #[test]
    fn too_much_waiting_closes() {
        let mut b = RequestBudget::default();
        b.sent(0);
        for seq in 0..MAX_WAITING {
            assert!(matches!(
                b.admit(request(seq as u16), 1, true),
                Admit::Wait { .. }
            ));
        }
        assert_eq!(b.admit(request(0), 1, true), Admit::Overflow);
    }
}
