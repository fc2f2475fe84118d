//! The client side of a msg_server connection as plain data: sequence numbers, pending
//! requests, heartbeats and request timeouts, and the split of incoming frames into answers
//! and events. An async client (ours is `teamtalk-client`) moves the bytes; any other runtime
//! can reuse this.
//!
//! Sequence numbers follow the Android client: 1..=32766, never 0 (the servers send 0 on
//! unsolicited frames), wrapping, skipping numbers still pending. An incoming frame is the
//! answer to a request when its seq is pending **and** its command is the request's answer
//! command (the Android client matched by seq alone, which let relayed frames be mistaken for
//! answers, quirks.md Q-23).

use std::collections::HashMap;

use crate::command::AnyMessage;
use crate::ids::CommandId;
use crate::pdu::Pdu;
use crate::proto::other::ImHeartBeat;

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
}

/// What an incoming frame is.
#[derive(Clone, Debug, PartialEq)]
pub enum Incoming {
    /// The answer to the pending request with this seq.
    Answer(u16, AnyMessage),
    /// Something the server sent on its own (a message, a notice, a kick …).
    Event(AnyMessage),
    /// A frame that is neither (a heartbeat echo, an answer nobody waits for any more, an
    /// undecodable body); nothing to do.
    Nothing,
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    answer: CommandId,
    deadline_ms: u64,
}

/// One connection's request bookkeeping.
#[derive(Clone, Debug)]
pub struct ClientSession {
    next_seq: u16,
    pending: HashMap<u16, Pending>,
    request_timeout_ms: u64,
    heartbeat_ms: u64,
    last_sent_ms: u64,
}

impl ClientSession {
    /// A fresh connection opened at `now_ms`: requests time out after `request_timeout_ms`, a
    /// heartbeat is due after `heartbeat_ms` without sending (keep it well below the server's
    /// 120 s idle timeout).
    pub fn new(now_ms: u64, request_timeout_ms: u64, heartbeat_ms: u64) -> ClientSession {
        ClientSession {
            next_seq: 0,
            pending: HashMap::new(),
            request_timeout_ms,
            heartbeat_ms,
            last_sent_ms: now_ms,
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

    /// Frames `request` with a new seq. Returns the seq and the frame; when the request has an
    /// answer, it is pending until [`ClientSession::receive`] sees it or it times out.
    pub fn request(
        &mut self,
        request: &AnyMessage,
        now_ms: u64,
    ) -> Result<(u16, Pdu), SessionError> {
        let seq = self.allocate()?;
        if let Some(answer) = answer_command(request.command()) {
            self.pending.insert(
                seq,
                Pending {
                    answer,
                    deadline_ms: now_ms.saturating_add(self.request_timeout_ms),
                },
            );
        }
        self.last_sent_ms = now_ms;
        Ok((seq, request.to_pdu(seq)))
    }

    /// Something else was sent at `now_ms` (postpones the heartbeat).
    pub fn sent(&mut self, now_ms: u64) {
        self.last_sent_ms = self.last_sent_ms.max(now_ms);
    }

    /// Classifies an incoming frame.
    pub fn receive(&mut self, pdu: &Pdu) -> Incoming {
        let command = pdu.command();
        if command == CommandId::OTHER_HEARTBEAT {
            return Incoming::Nothing;
        }
        let seq = pdu.seq_num();
        let is_answer = seq != 0 && self.pending.get(&seq).is_some_and(|p| p.answer == command);
        let message = match pdu.decode_any() {
            Ok(message) => message,
            Err(error) => {
                tracing::debug!(%command, %error, "undecodable frame from the server");
                if is_answer {
                    // The request will not get a readable answer: let it time out now.
                    if let Some(p) = self.pending.get_mut(&seq) {
                        p.deadline_ms = 0;
                    }
                }
                return Incoming::Nothing;
            }
        };
        if is_answer {
            self.pending.remove(&seq);
            return Incoming::Answer(seq, message);
        }
        if is_event(command) {
            Incoming::Event(message)
        } else {
            Incoming::Nothing
        }
    }

    /// Requests whose answer did not come by `now_ms`; they are no longer pending.
    pub fn expired(&mut self, now_ms: u64) -> Vec<u16> {
        let mut late: Vec<u16> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline_ms <= now_ms)
            .map(|(seq, _)| *seq)
            .collect();
        late.sort_unstable();
        for seq in &late {
            self.pending.remove(seq);
        }
        late
    }

    /// A heartbeat frame when one is due at `now_ms`.
    pub fn heartbeat(&mut self, now_ms: u64) -> Option<Pdu> {
        if now_ms.saturating_sub(self.last_sent_ms) < self.heartbeat_ms {
            return None;
        }
        self.last_sent_ms = now_ms;
        Some(Pdu::encode_message(&ImHeartBeat {}, 0))
    }

    /// When to call [`ClientSession::expired`] and [`ClientSession::heartbeat`] next.
    pub fn next_deadline(&self) -> u64 {
        let heartbeat = self.last_sent_ms.saturating_add(self.heartbeat_ms);
        self.pending
            .values()
            .map(|p| p.deadline_ms)
            .fold(heartbeat, u64::min)
    }

    /// The connection is gone: every pending request fails. Returns their seqs.
    pub fn fail_all(&mut self) -> Vec<u16> {
        let mut seqs: Vec<u16> = self.pending.drain().map(|(seq, _)| seq).collect();
        seqs.sort_unstable();
        seqs
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

    fn time_req() -> AnyMessage {
        message::ImClientTimeReq {}.into()
    }

    #[test]
    fn answers_match_seq_and_command() {
        let mut s = ClientSession::new(0, 1_000, 30_000);
        let (seq, pdu) = s.request(&time_req(), 0).unwrap();
        assert_eq!((seq, pdu.seq_num()), (1, 1));
        // A relayed message carrying the same seq is an event, not the answer.
        let relayed = Pdu::encode_message(&message::ImMsgData::default(), seq);
        assert!(matches!(
            s.receive(&relayed),
            Incoming::Event(AnyMessage::MsgData(_))
        ));
        assert_eq!(s.pending(), 1);
        let answer = Pdu::encode_message(&message::ImClientTimeRsp { server_time: 5 }, seq);
        assert!(matches!(
            s.receive(&answer),
            Incoming::Answer(1, AnyMessage::ClientTimeRsp(_))
        ));
        assert_eq!(s.pending(), 0);
        assert_eq!(s.receive(&answer), Incoming::Nothing, "answered once");
    }

    #[test]
    fn requests_without_answers_are_not_pending() {
        let mut s = ClientSession::new(0, 1_000, 30_000);
        let ack: AnyMessage = message::ImMsgDataReadAck::default().into();
        s.request(&ack, 0).unwrap();
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn seqs_wrap_skip_pending_and_never_use_zero() {
        let mut s = ClientSession::new(0, u64::MAX / 2, 30_000);
        let (first, _) = s.request(&time_req(), 0).unwrap();
        for _ in 1..MAX_SEQ {
            let (seq, _) = s
                .request(&buddy::ImAllUserReq::default().into(), 0)
                .unwrap();
            assert_ne!(seq, 0);
        }
        assert_eq!(s.request(&time_req(), 0), Err(SessionError::TooManyPending));
        let answer = Pdu::encode_message(&message::ImClientTimeRsp { server_time: 5 }, first);
        assert!(matches!(s.receive(&answer), Incoming::Answer(..)));
        assert_eq!(
            s.request(&time_req(), 0).unwrap().0,
            first,
            "the freed seq is reused"
        );
    }

    #[test]
    fn timeouts_heartbeats_and_failure() {
        let mut s = ClientSession::new(0, 1_000, 30_000);
        s.request(&time_req(), 0).unwrap();
        s.request(&time_req(), 500).unwrap();
        assert_eq!(s.next_deadline(), 1_000);
        assert_eq!(s.expired(999), Vec::<u16>::new());
        assert_eq!(s.expired(1_000), vec![1]);
        assert_eq!(s.heartbeat(29_000), None);
        assert!(s.heartbeat(30_500).is_some());
        assert_eq!(s.heartbeat(30_600), None);
        assert_eq!(s.fail_all(), vec![2]);
        assert_eq!(s.pending(), 0);
    }
}
