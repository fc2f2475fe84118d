//! The client side of a msg_server connection as plain data: sequence numbers, pending
//! requests, heartbeats and request timeouts, and the split of incoming frames into answers
//! and events. An async client (ours is `teamtalk-client`) moves the bytes; any other runtime
//! can reuse this.
//!
//! Sequence numbers follow the Android client: 1..=32766, never 0 (the servers send 0 on
//! unsolicited frames), wrapping, skipping numbers still pending. An incoming frame is the
//! answer to a request when its seq is pending **and** its command is the request's answer
//! command (the Android client matched by seq alone, which let relayed frames be mistaken for
//! answers, docs/compatibility.md Q-23).

use std::collections::{HashMap, VecDeque};

use crate::command::AnyMessage;
use crate::ids::CommandId;
use crate::pdu::Pdu;
use crate::proto::other::ImHeartBeat;
use crate::time::{Machine, Now};

/// Highest sequence number a client uses (the Android client's range).
pub const MAX_SEQ: u16 = 32_766;

/// The answer command of a request command; `None` for requests that get no answer
/// (read acks, delivery acks, heartbeats, P2P commands, offline-file bookkeeping).
pub fn answer_command(request: CommandId) -> Option<CommandId> {
    use CommandId as C;
    Some(match request {
        C::LOGIN_REQ_USERLOGIN => C::LOGIN_RES_USERLOGIN,
        C::LOGIN_REQ_LOGINOUT => C::LOGIN_RES_LOGINOUT,
        C::LOGIN_REQ_DEVICETOKEN => C::LOGIN_RES_DEVICETOKEN,
        C::LOGIN_REQ_KICKPCCLIENT => C::LOGIN_RES_KICKPCCLIENT,
        C::LOGIN_REQ_PUSH_SHIELD => C::LOGIN_RES_PUSH_SHIELD,
        C::LOGIN_REQ_QUERY_PUSH_SHIELD => C::LOGIN_RES_QUERY_PUSH_SHIELD,
        C::BUDDY_LIST_RECENT_CONTACT_SESSION_REQUEST => {
            C::BUDDY_LIST_RECENT_CONTACT_SESSION_RESPONSE
        }
        C::BUDDY_LIST_USER_INFO_REQUEST => C::BUDDY_LIST_USER_INFO_RESPONSE,
        C::BUDDY_LIST_REMOVE_SESSION_REQ => C::BUDDY_LIST_REMOVE_SESSION_RES,
        C::BUDDY_LIST_ALL_USER_REQUEST => C::BUDDY_LIST_ALL_USER_RESPONSE,
        C::BUDDY_LIST_USERS_STATUS_REQUEST => C::BUDDY_LIST_USERS_STATUS_RESPONSE,
        C::BUDDY_LIST_CHANGE_AVATAR_REQUEST => C::BUDDY_LIST_CHANGE_AVATAR_RESPONSE,
        C::BUDDY_LIST_DEPARTMENT_REQUEST => C::BUDDY_LIST_DEPARTMENT_RESPONSE,
        C::BUDDY_LIST_CHANGE_SIGN_INFO_REQUEST => C::BUDDY_LIST_CHANGE_SIGN_INFO_RESPONSE,
        C::MSG_DATA => C::MSG_DATA_ACK,
        C::MSG_TIME_REQUEST => C::MSG_TIME_RESPONSE,
        C::MSG_UNREAD_CNT_REQUEST => C::MSG_UNREAD_CNT_RESPONSE,
        C::MSG_LIST_REQUEST => C::MSG_LIST_RESPONSE,
        C::MSG_GET_LATEST_MSG_ID_REQ => C::MSG_GET_LATEST_MSG_ID_RSP,
        C::MSG_GET_BY_MSG_ID_REQ => C::MSG_GET_BY_MSG_ID_RES,
        C::GROUP_NORMAL_LIST_REQUEST => C::GROUP_NORMAL_LIST_RESPONSE,
        C::GROUP_INFO_REQUEST => C::GROUP_INFO_RESPONSE,
        C::GROUP_CREATE_REQUEST => C::GROUP_CREATE_RESPONSE,
        C::GROUP_CHANGE_MEMBER_REQUEST => C::GROUP_CHANGE_MEMBER_RESPONSE,
        C::GROUP_SHIELD_GROUP_REQUEST => C::GROUP_SHIELD_GROUP_RESPONSE,
        C::FILE_REQUEST => C::FILE_RESPONSE,
        C::FILE_HAS_OFFLINE_REQ => C::FILE_HAS_OFFLINE_RES,
        _ => return None,
    })
}

/// Why a request could not be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// Every sequence number is taken by a pending request.
    #[error("too many requests in flight")]
    TooManyPending,
    /// The connection was reported closed ([`ClientSession::handle_closed`]).
    #[error("the connection is closed")]
    Closed,
}

/// What the session asks its shell to do, drained with [`Machine::poll_output`].
#[derive(Clone, Debug, PartialEq)]
pub enum ClientOutput {
    /// Write this frame to the server (a request, or a heartbeat).
    Transmit(Pdu),
    /// The answer to the pending request with this seq.
    Answer(u16, AnyMessage),
    /// Something the server sent on its own (a message, a notice, a kick …).
    Event(AnyMessage),
    /// The request with this seq got no (readable) answer in time; it is no longer pending.
    TimedOut(u16),
    /// The connection closed before the request with this seq was answered.
    Failed(u16),
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    answer: CommandId,
    deadline_ms: u64,
}

/// One connection's request bookkeeping, as a state machine ([`Machine`], see the crate's
/// "Run loop"): feed it the requests to send, the frames received and the close of the
/// connection; write the frames and deliver the answers and events it outputs; wake it at
/// [`Machine::poll_timeout`] for heartbeats and request timeouts. Frames that are neither
/// answers nor events (heartbeat echoes, answers nobody waits for any more, undecodable
/// bodies) produce no output.
#[derive(Clone, Debug)]
pub struct ClientSession {
    next_seq: u16,
    pending: HashMap<u16, Pending>,
    request_timeout_ms: u64,
    heartbeat_ms: u64,
    last_sent_ms: u64,
    closed: bool,
    out: VecDeque<ClientOutput>,
}

impl ClientSession {
    /// A fresh connection opened at `now`: requests time out after `request_timeout_ms`, a
    /// heartbeat is due after `heartbeat_ms` without sending (keep it well below the server's
    /// 120 s idle timeout).
    pub fn new(now: Now, request_timeout_ms: u64, heartbeat_ms: u64) -> ClientSession {
        ClientSession {
            next_seq: 0,
            pending: HashMap::new(),
            request_timeout_ms,
            heartbeat_ms,
            last_sent_ms: now.ms,
            closed: false,
            out: VecDeque::new(),
        }
    }

    /// Requests waiting for their answer.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    fn allocate(&mut self) -> Result<u16, SessionError> {
        for _ in 0..MAX_SEQ {
            self.next_seq = if self.next_seq >= MAX_SEQ {
                1
            } else {
                self.next_seq + 1
            };
            if !self.pending.contains_key(&self.next_seq) {
                return Ok(self.next_seq);
            }
        }
        Err(SessionError::TooManyPending)
    }

    /// Sends `request` at `now` with a new seq: queues its frame
    /// ([`ClientOutput::Transmit`]) and returns the seq. When the request has an answer
    /// ([`answer_command`]), it is pending until the answer arrives
    /// ([`ClientOutput::Answer`]), it times out ([`ClientOutput::TimedOut`]) or the
    /// connection closes ([`ClientOutput::Failed`]).
    pub fn handle_request(&mut self, now: Now, request: &AnyMessage) -> Result<u16, SessionError> {
        if self.closed {
            return Err(SessionError::Closed);
        }
        let seq = self.allocate()?;
        if let Some(answer) = answer_command(request.command()) {
            self.pending.insert(
                seq,
                Pending {
                    answer,
                    deadline_ms: now.ms.saturating_add(self.request_timeout_ms),
                },
            );
        }
        self.last_sent_ms = self.last_sent_ms.max(now.ms);
        self.out
            .push_back(ClientOutput::Transmit(request.to_pdu(seq)));
        Ok(seq)
    }

    /// A frame from the server arrived at `now`: an answer, an event, or nothing.
    pub fn handle_frame(&mut self, _now: Now, pdu: &Pdu) {
        let command = pdu.command();
        if self.closed || command == CommandId::OTHER_HEARTBEAT {
            return;
        }
        let seq = pdu.seq_num();
        let is_answer = seq != 0 && self.pending.get(&seq).is_some_and(|p| p.answer == command);
        let message = match pdu.decode_any() {
            Ok(message) => message,
            Err(error) => {
                tracing::debug!(%command, %error, "undecodable frame from the server");
                if is_answer {
                    // The request will not get a readable answer: it times out now.
                    self.pending.remove(&seq);
                    self.out.push_back(ClientOutput::TimedOut(seq));
                }
                return;
            }
        };
        if is_answer {
            self.pending.remove(&seq);
            self.out.push_back(ClientOutput::Answer(seq, message));
        } else if is_event(command) {
            self.out.push_back(ClientOutput::Event(message));
        }
    }

    /// The connection closed at `now`: every pending request fails
    /// ([`ClientOutput::Failed`], in seq order). The session is done: no more timers, and
    /// requests are refused.
    pub fn handle_closed(&mut self, _now: Now) {
        self.closed = true;
        let mut seqs: Vec<u16> = self.pending.drain().map(|(seq, _)| seq).collect();
        seqs.sort_unstable();
        self.out.extend(seqs.into_iter().map(ClientOutput::Failed));
    }
}

impl Machine for ClientSession {
    type Output = ClientOutput;

    fn poll_output(&mut self) -> Option<ClientOutput> {
        self.out.pop_front()
    }

    /// The next heartbeat or request timeout, whichever is first; `None` once closed.
    fn poll_timeout(&self) -> Option<u64> {
        if self.closed {
            return None;
        }
        let heartbeat = self.last_sent_ms.saturating_add(self.heartbeat_ms);
        Some(
            self.pending
                .values()
                .map(|p| p.deadline_ms)
                .fold(heartbeat, u64::min),
        )
    }

    /// Requests whose answer did not come by `now` time out (in seq order); a heartbeat is
    /// sent when nothing was sent for the heartbeat interval.
    fn handle_timeout(&mut self, now: Now) {
        if self.closed {
            return;
        }
        let mut late: Vec<u16> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline_ms <= now.ms)
            .map(|(seq, _)| *seq)
            .collect();
        late.sort_unstable();
        for seq in late {
            self.pending.remove(&seq);
            self.out.push_back(ClientOutput::TimedOut(seq));
        }
        if now.ms.saturating_sub(self.last_sent_ms) >= self.heartbeat_ms {
            self.last_sent_ms = now.ms;
            self.out
                .push_back(ClientOutput::Transmit(Pdu::encode_message(
                    &ImHeartBeat {},
                    0,
                )));
        }
    }
}

/// Commands the server sends on its own.
fn is_event(command: CommandId) -> bool {
    use CommandId as C;
    matches!(
        command,
        C::MSG_DATA
            | C::MSG_READ_NOTIFY
            | C::LOGIN_KICK_USER
            | C::BUDDY_LIST_STATUS_NOTIFY
            | C::BUDDY_LIST_PC_LOGIN_STATUS_NOTIFY
            | C::BUDDY_LIST_REMOVE_SESSION_NOTIFY
            | C::BUDDY_LIST_SIGN_INFO_CHANGED_NOTIFY
            | C::BUDDY_LIST_AVATAR_CHANGED_NOTIFY
            | C::GROUP_CHANGE_MEMBER_NOTIFY
            | C::SWITCH_P2P_CMD
            | C::FILE_NOTIFY
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{buddy, message};

    const T0: Now = Now::from_ms(0);

    fn time_req() -> AnyMessage {
        message::ImClientTimeReq {}.into()
    }

    fn drain(s: &mut ClientSession) -> Vec<ClientOutput> {
        std::iter::from_fn(|| s.poll_output()).collect()
    }

    /// Feeds a frame and returns what it was (at most one output).
    fn receive(s: &mut ClientSession, pdu: &Pdu) -> Option<ClientOutput> {
        s.handle_frame(T0, pdu);
        let mut out = drain(s);
        assert!(out.len() <= 1, "{out:?}");
        out.pop()
    }

    /// Sends a request at `ms`; returns its seq and frame.
    fn request(s: &mut ClientSession, m: &AnyMessage, ms: u64) -> Result<(u16, Pdu), SessionError> {
        let seq = s.handle_request(Now::from_ms(ms), m)?;
        match &drain(s)[..] {
            [ClientOutput::Transmit(pdu)] => Ok((seq, pdu.clone())),
            other => panic!("{other:?}"),
        }
    }

    /// Fires the timer at `ms`: the seqs that timed out, and whether a heartbeat was sent.
    fn fire(s: &mut ClientSession, ms: u64) -> (Vec<u16>, bool) {
        s.handle_timeout(Now::from_ms(ms));
        let (mut late, mut beat) = (Vec::new(), false);
        for output in drain(s) {
            match output {
                ClientOutput::TimedOut(seq) => late.push(seq),
                ClientOutput::Transmit(pdu) if pdu.command() == CommandId::OTHER_HEARTBEAT => {
                    beat = true;
                }
                other => panic!("{other:?}"),
            }
        }
        (late, beat)
    }

    #[test]
    fn answers_match_seq_and_command() {
        let mut s = ClientSession::new(T0, 1_000, 30_000);
        let (seq, pdu) = request(&mut s, &time_req(), 0).unwrap();
        assert_eq!((seq, pdu.seq_num()), (1, 1));
        // A relayed message carrying the same seq is an event, not the answer.
        let relayed = Pdu::encode_message(&message::ImMsgData::default(), seq);
        assert!(matches!(
            receive(&mut s, &relayed),
            Some(ClientOutput::Event(AnyMessage::MsgData(_)))
        ));
        assert_eq!(s.pending(), 1);
        let answer = Pdu::encode_message(&message::ImClientTimeRsp { server_time: 5 }, seq);
        assert!(matches!(
            receive(&mut s, &answer),
            Some(ClientOutput::Answer(1, AnyMessage::ClientTimeRsp(_)))
        ));
        assert_eq!(s.pending(), 0);
        assert_eq!(receive(&mut s, &answer), None, "answered once");
    }

    #[test]
    fn requests_without_answers_are_not_pending() {
        let mut s = ClientSession::new(T0, 1_000, 30_000);
        let ack: AnyMessage = message::ImMsgDataReadAck::default().into();
        request(&mut s, &ack, 0).unwrap();
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn seqs_wrap_skip_pending_and_never_use_zero() {
        let mut s = ClientSession::new(T0, u64::MAX / 2, 30_000);
        let (first, _) = request(&mut s, &time_req(), 0).unwrap();
        for _ in 1..MAX_SEQ {
            let (seq, _) = request(&mut s, &buddy::ImAllUserReq::default().into(), 0).unwrap();
            assert_ne!(seq, 0);
        }
        assert_eq!(
            request(&mut s, &time_req(), 0),
            Err(SessionError::TooManyPending)
        );
        let answer = Pdu::encode_message(&message::ImClientTimeRsp { server_time: 5 }, first);
        assert!(matches!(
            receive(&mut s, &answer),
            Some(ClientOutput::Answer(..))
        ));
        assert_eq!(
            request(&mut s, &time_req(), 0).unwrap().0,
            first,
            "the freed seq is reused"
        );
    }

    #[test]
    fn timeouts_heartbeats_and_failure() {
        let mut s = ClientSession::new(T0, 1_000, 30_000);
        request(&mut s, &time_req(), 0).unwrap();
        request(&mut s, &time_req(), 500).unwrap();
        assert_eq!(s.poll_timeout(), Some(1_000));
        assert_eq!(fire(&mut s, 999), (vec![], false));
        assert_eq!(fire(&mut s, 1_000), (vec![1], false));
        s.handle_closed(Now::from_ms(1_200));
        assert_eq!(drain(&mut s), vec![ClientOutput::Failed(2)]);
        assert_eq!(s.pending(), 0);
        assert_eq!(s.poll_timeout(), None, "a closed session arms no timer");
        assert_eq!(
            s.handle_request(Now::from_ms(1_300), &time_req()),
            Err(SessionError::Closed)
        );

        let mut s = ClientSession::new(T0, 1_000, 30_000);
        request(&mut s, &time_req(), 500).unwrap();
        assert_eq!(fire(&mut s, 1_500), (vec![1], false));
        assert_eq!(s.poll_timeout(), Some(30_500), "the heartbeat is next");
        assert_eq!(fire(&mut s, 29_000), (vec![], false));
        assert_eq!(fire(&mut s, 30_500), (vec![], true));
        assert_eq!(fire(&mut s, 30_600), (vec![], false));
    }

    #[test]
    fn an_undecodable_answer_times_the_request_out_at_once() {
        let mut s = ClientSession::new(T0, 1_000, 30_000);
        let (seq, _) = request(&mut s, &time_req(), 0).unwrap();
        let broken = Pdu::new(
            CommandId::MSG_TIME_RESPONSE,
            seq,
            bytes::Bytes::from_static(&[0xff, 0xff]),
        );
        assert_eq!(receive(&mut s, &broken), Some(ClientOutput::TimedOut(seq)));
        assert_eq!(s.pending(), 0);
    }
}
