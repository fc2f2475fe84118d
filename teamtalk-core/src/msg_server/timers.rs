//! Deadlines as data: one entry per armed timer of a connection, in a heap ordered by
//! deadline, and the [`Machine`] side of the msg_server.
//!
//! Entries are never removed when they stop mattering (a connection closes, a message is
//! stored, an answer comes, a frame resets the idle time): when one is due, its condition is
//! checked again on the connection's state, and an idle timer whose connection was heard
//! from since is armed again at the real deadline. So no input scans the connections, and a
//! wake-up may find nothing to do.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::*;
use crate::time::Machine;

/// What a deadline is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Timer {
    /// A message may be held this long ([`hold::HOLD_MS`]).
    Hold,
    /// A request in flight stops counting ([`budget::REQUEST_TIMEOUT_MS`]).
    Request,
    /// The connection must have logged in.
    Login,
    /// A logged-in connection idle since its last frame is closed.
    Idle,
}

/// The armed deadlines (monotonic ms), earliest first.
#[derive(Debug, Default)]
pub(super) struct Timers {
    heap: BinaryHeap<Reverse<(u64, ConnId, Timer)>>,
}

impl Timers {
    /// Arms `timer` of `conn` at `deadline_ms`.
    pub(super) fn arm(&mut self, deadline_ms: u64, conn: ConnId, timer: Timer) {
        self.heap.push(Reverse((deadline_ms, conn, timer)));
    }

    /// The earliest deadline.
    fn next(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Takes every entry due at `now_ms`.
    fn due(&mut self, now_ms: u64) -> Vec<(ConnId, Timer)> {
        let mut due = Vec::new();
        while let Some(Reverse((at, conn, timer))) = self.heap.peek().copied() {
            if at > now_ms {
                break;
            }
            self.heap.pop();
            due.push((conn, timer));
        }
        due
    }
}

impl MsgServer {
    /// Arms the idle timer of a connection that just logged in.
    pub(super) fn arm_idle(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get(&conn) {
            let at = c
                .last_received_ms
                .saturating_add(idle_timeout(&self.config, c.client));
            self.timers.arm(at, conn, Timer::Idle);
        }
    }
}

impl Machine for MsgServer {
    type Output = Action;

    fn poll_output(&mut self) -> Option<Action> {
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<u64> {
        self.timers.next()
    }

    /// Closes connections with a message not stored within 10 s of its arrival (no db_proxy
    /// link came back, or db_proxy did not answer): the protocol has no negative answer to a
    /// message, so closing is how the sender learns that its unacknowledged messages were
    /// not sent (docs/compatibility.md). Then unanswered requests stop counting, and last
    /// connections that did not log in in time and idle ones are closed.
    fn handle_timeout(&mut self, now: Now) {
        self.advance(now);
        let now_ms = self.now.ms;
        let mut due = self.timers.due(now_ms);
        due.sort_unstable_by_key(|&(conn, timer)| (timer, conn));
        due.dedup();
        let mut released = false;
        for (conn, timer) in due {
            if released && timer > Timer::Request {
                // Waiting requests go before late connections are closed.
                self.release();
                released = false;
            }
            let Some(c) = self.conns.get_mut(&conn) else {
                continue;
            };
            match timer {
                Timer::Hold => {
                    if c.state != ConnState::Closing && c.outgoing.check(now_ms).is_err() {
                        self.refuse_messages(conn, hold::Refusal::Expired);
                    }
                }
                Timer::Request => {
                    let expired = c.budget.expire(now_ms);
                    self.turns.in_flight = self.turns.in_flight.saturating_sub(expired);
                    if c.budget.has_waiting() {
                        self.turns.enqueue(conn);
                    }
                    released = true;
                }
                Timer::Login => {
                    if matches!(c.state, ConnState::New | ConnState::Validating(..)) {
                        tracing::debug!(?conn, "client timed out");
                        self.close(conn);
                    }
                }
                Timer::Idle => {
                    if !matches!(c.state, ConnState::Open(_)) {
                        continue;
                    }
                    let at = c
                        .last_received_ms
                        .saturating_add(idle_timeout(&self.config, c.client));
                    if now_ms >= at {
                        tracing::debug!(?conn, "client timed out");
                        self.close(conn);
                    } else {
                        self.timers.arm(at, conn, Timer::Idle);
                    }
                }
            }
        }
        if released {
            self.release();
        }
    }
}

/// The idle timeout of a connection's device class.
fn idle_timeout(config: &MsgServerConfig, client: Option<ClientType>) -> u64 {
    if client.is_some_and(ClientType::is_mobile) {
        config.mobile_timeout_ms
    } else {
        config.pc_timeout_ms
    }
}
