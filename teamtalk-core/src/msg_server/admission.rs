//! Admission of client requests against the request budgets ([`super::budget`]): serving
//! now, waiting, and releasing waiting requests as answers come back.

use super::*;

impl MsgServer {
    /// Serves a request of a logged-in connection now, or keeps it waiting when the
    /// connection's or the total budget of requests in flight is used up ([`budget`]).
    pub(super) fn admit(&mut self, conn: ConnId, user: UserId, pdu: Pdu, now_ms: u64) {
        if !budget::counts(pdu.command()) {
            return self.serve(conn, user, pdu, now_ms);
        }
        let max = self.config.max_requests_in_flight;
        let room = self.turns.in_flight < self.config.max_requests_in_flight_total.max(1)
            && self.turns.waiting() == 0;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        match c.budget.admit(pdu, max, room) {
            budget::Admit::Go(pdu) => self.serve(conn, user, pdu, now_ms),
            budget::Admit::Wait { pause } => {
                if pause {
                    self.out.push_back(Action::PauseReading(conn));
                }
                // Its turn may be now: connections ahead may be waiting on their own budget
                // only (they leave the turns until their next answer).
                self.turns.enqueue(conn);
                self.release();
            }
            budget::Admit::Overflow => {
                tracing::debug!(?conn, "too many requests waiting, closing");
                self.close(conn);
            }
        }
    }

    /// A request of `conn` was sent upstream.
    pub(super) fn request_sent(&mut self, conn: ConnId) {
        let now = self.now.ms;
        if let Some(c) = self.conns.get_mut(&conn) {
            c.budget.sent(now);
            self.turns.in_flight += 1;
            self.timers.arm(
                now.saturating_add(budget::REQUEST_TIMEOUT_MS),
                conn,
                timers::Timer::Request,
            );
        }
    }

    /// An answer for `conn` came back: its request stops counting, and waiting requests
    /// may go.
    pub(super) fn request_answered(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if c.budget.answered() {
                self.turns.in_flight = self.turns.in_flight.saturating_sub(1);
            }
            if c.budget.has_waiting() {
                self.turns.enqueue(conn);
            }
        }
        self.release();
    }

    /// Serves waiting requests while the total budget has room, one per connection in turn;
    /// a connection left with nothing waiting is read again.
    pub(super) fn release(&mut self) {
        let max = self.config.max_requests_in_flight;
        let total = self.config.max_requests_in_flight_total;
        // A connection at its own budget is skipped (its next answer gives it a turn again),
        // so every pass ends.
        while let Some(conn) = self.turns.next(total) {
            let Some(c) = self.conns.get_mut(&conn) else {
                continue;
            };
            let ConnState::Open(user) = c.state else {
                continue;
            };
            let Some(pdu) = c.budget.next(max) else {
                continue;
            };
            if c.budget.has_waiting() {
                self.turns.enqueue(conn);
            } else if c.budget.resume() {
                self.out.push_back(Action::ResumeReading(conn));
            }
            let now = self.now.ms;
            self.serve(conn, user, pdu, now);
        }
    }

    /// A closed connection's requests in flight stop counting.
    pub(super) fn forget_budget(&mut self, conn: ConnId, budget: &budget::RequestBudget) {
        self.turns.in_flight = self
            .turns
            .in_flight
            .saturating_sub(budget.in_flight_count());
        self.turns.remove(conn);
    }
}
