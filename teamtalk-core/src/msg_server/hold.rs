//! A connection's messages on their way to db_proxy (docs/compatibility.md, "Messages while
//! db_proxy is away").
//!
//! One message per connection is in flight on a db_proxy link at a time (db_proxy answers
//! concurrently, in any order, so this keeps a sender's messages in order); the others are
//! held behind it. Messages are also held while no db_proxy link is up, and the one in flight
//! on a link that closed goes back to the head of the line, to be sent again on the next link.
//!
//! Holding is bounded: at most [`MAX_HELD`] messages per connection, and every message must
//! be stored within [`HOLD_MS`] of its arrival. A message over either bound is refused; the
//! msg_server then closes the connection (the protocol has no negative answer to
//! `CID_MSG_DATA`), so the client sees its unacknowledged messages as not sent.

use std::collections::VecDeque;

use super::LinkId;
use crate::proto::message;

/// Messages a connection may have waiting for storage (in flight and held).
pub(super) const MAX_HELD: usize = 256;

/// A message must be stored within this time of its arrival (ms), whether it waited for a
/// db_proxy link, behind the connection's earlier messages, or for db_proxy's answer.
pub(super) const HOLD_MS: u64 = 10_000;

/// A message from a client, not yet stored.
#[derive(Clone, Debug)]
pub(super) struct Pending {
    /// The message as it goes to db_proxy.
    pub(super) data: message::ImMsgData,
    /// The client's seq, for the ack.
    pub(super) seq: u16,
    /// When it arrived (ms).
    pub(super) since_ms: u64,
}

/// Why a message is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// [`MAX_HELD`] messages are waiting already.
    Full,
    /// A message was not stored within [`HOLD_MS`].
    Expired,
}

/// The messages of one connection waiting for storage.
#[derive(Clone, Debug, Default)]
pub(super) struct Outgoing {
    /// The message handed to a db_proxy link, and which link.
    in_flight: Option<(LinkId, Pending)>,
    /// Messages waiting, oldest first: behind the one in flight, or for a db_proxy link.
    held: VecDeque<Pending>,
}

impl Outgoing {
    /// Adds a message behind the others; refused when [`MAX_HELD`] are waiting.
    pub(super) fn push(&mut self, message: Pending) -> Result<(), Refusal> {
        if self.len() >= MAX_HELD {
            return Err(Refusal::Full);
        }
        self.held.push_back(message);
        Ok(())
    }

    /// Messages waiting (in flight and held).
    pub(super) fn len(&self) -> usize {
        self.held.len() + usize::from(self.in_flight.is_some())
    }

    /// Whether a message waits to be sent (none in flight, one held).
    pub(super) fn ready(&self) -> bool {
        self.in_flight.is_none() && !self.held.is_empty()
    }

    /// Takes the next message to send on `link` when none is in flight; the caller sends
    /// the returned copy.
    pub(super) fn send_next(&mut self, link: LinkId) -> Option<&Pending> {
        if self.in_flight.is_some() {
            return None;
        }
        let next = self.held.pop_front()?;
        self.in_flight = Some((link, next));
        self.in_flight.as_ref().map(|(_, p)| p)
    }

    /// The message in flight was answered (or given up with the connection).
    pub(super) fn done(&mut self) {
        self.in_flight = None;
    }

    /// Whether the message in flight went out on `link`.
    pub(super) fn in_flight_on(&self, link: LinkId) -> bool {
        self.in_flight.as_ref().is_some_and(|(l, _)| *l == link)
    }

    /// `link` closed before answering: its message in flight goes back to the head of the
    /// line, to be sent again. db_proxy may have stored it before the link went (it keeps no
    /// record of what it stored for whom), so the copy sent again can be stored twice: the
    /// delivery is at least once, never silently none.
    pub(super) fn link_lost(&mut self, link: LinkId) {
        if self.in_flight_on(link) {
            if let Some((_, message)) = self.in_flight.take() {
                self.held.push_front(message);
            }
        }
    }

    /// [`Refusal::Expired`] when the oldest waiting message arrived [`HOLD_MS`] or more
    /// before `now_ms`.
    pub(super) fn check(&self, now_ms: u64) -> Result<(), Refusal> {
        let oldest = self
            .in_flight
            .as_ref()
            .map(|(_, p)| p)
            .or_else(|| self.held.front());
        match oldest {
            Some(p) if now_ms.saturating_sub(p.since_ms) >= HOLD_MS => Err(Refusal::Expired),
            _ => Ok(()),
        }
    }

    /// Forgets every waiting message (the connection is being closed).
    pub(super) fn clear(&mut self) {
        self.in_flight = None;
        self.held.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(n: u32, since_ms: u64) -> Pending {
        Pending {
            data: message::ImMsgData {
                msg_id: n,
                ..Default::default()
            },
            seq: 1,
            since_ms,
        }
    }

    #[test]
    fn a_message_lost_with_its_link_is_sent_again_first() {
        let mut o = Outgoing::default();
        o.push(message(1, 0)).unwrap();
        o.push(message(2, 0)).unwrap();
        assert_eq!(o.send_next(LinkId(1)).unwrap().data.msg_id, 1);
        assert!(o.send_next(LinkId(1)).is_none(), "one in flight at a time");
        o.link_lost(LinkId(2));
        assert!(
            o.in_flight_on(LinkId(1)),
            "another link's loss changes nothing"
        );
        o.link_lost(LinkId(1));
        assert_eq!(o.send_next(LinkId(3)).unwrap().data.msg_id, 1);
        o.done();
        assert_eq!(o.send_next(LinkId(3)).unwrap().data.msg_id, 2);
    }

    #[test]
    fn bounds_by_count_and_by_age() {
        let mut o = Outgoing::default();
        for n in 0..MAX_HELD {
            o.push(message(n as u32, 5)).unwrap();
        }
        assert_eq!(o.push(message(0, 5)), Err(Refusal::Full));
        assert_eq!(o.check(5 + HOLD_MS - 1), Ok(()));
        assert_eq!(o.check(5 + HOLD_MS), Err(Refusal::Expired));
        o.clear();
        assert_eq!(o.len(), 0);
        assert_eq!(o.check(u64::MAX), Ok(()));
    }
}
