//! The msg_server as a state machine (spec/servers.md §3, flows §8): client connections,
//! logged-in users and the upstream links to db_proxy, route_server and login_server.
//!
//! The shell reports what happens — a client connected, a frame arrived from a client or an
//! upstream, a link opened or closed, a second passed — and performs the [`Action`]s returned:
//! send a frame to a client or an upstream, close a client. No sockets, no clock reads: the
//! monotonic time in milliseconds is passed in, and Unix time comes from the injected
//! [`Clock`].
//!
//! Departures from the original, all compatible with its clients and servers:
//! - only HEARTBEAT and LOGIN are accepted before login; anything else closes the connection
//!   one login per connection;
//! - every identity field of a request is the authenticated user;
//! - a kicked connection gets `CID_LOGIN_KICK_USER` and is then closed, and every connection
//!   of the same device class is kicked;
//! - unsolicited frames to clients carry seq 0 and no attach data;
//! - group-change notifications reach each user once;
//! - a response with unreadable attach data is dropped alone, the link stays;
//! - the device token is cleared on logout only for mobile connections.
//! - messages are held while no db_proxy link is up and sent again when their link closed
//!   before the answer; one not stored within 10 s closes its connection (`hold.rs`,
//!   docs/compatibility.md).

pub mod budget;
mod hold;
pub mod identity;
pub mod push;

use std::collections::HashMap;

use bytes::Bytes;

use crate::attach::{AttachType, DbAttach, PduAttach};
use crate::command::AnyMessage;
use crate::domain::{ClientType, Clock, UserId};
use crate::ids::CommandId;
use crate::kick::{self, KICK_REASON_DUPLICATE_USER, KICK_REASON_MOBILE_KICK};
use crate::pdu::Pdu;
use crate::proto::{base_define as bd, buddy, file, group, login, message, server};
use crate::routing::{STATUS_OFFLINE, STATUS_ONLINE};

/// A client connection; its value is the handle carried in attach data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u32);

/// An upstream link (to a db_proxy, route_server or login_server), named by the shell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LinkId(pub u32);

/// Which db_proxy connections a request prefers (spec/wire.md §9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DbRange {
    /// Login and the big reads: validation, sessions, user info, history, unread counts.
    Login,
    /// Everything else.
    Other,
}

/// What an upstream link leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upstream {
    /// A db_proxy_server connection of a range.
    Db(DbRange),
    /// A route_server.
    Route,
    /// A login_server.
    Login,
    /// A push_server (the most recently connected one is used).
    Push,
    /// A file_server.
    File,
}

/// Something for the shell to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send a frame to a client.
    ToClient(ConnId, Pdu),
    /// Close a client connection after the frames queued before this action.
    Close(ConnId),
    /// Send a frame on an upstream link.
    ToUpstream(LinkId, Pdu),
    /// Stop reading the client connection: its requests in flight are at the budget
    /// ([`budget`]); its further requests wait in its TCP window.
    PauseReading(ConnId),
    /// Read the client connection again.
    ResumeReading(ConnId),
}

/// Settings of a msg_server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MsgServerConfig {
    /// Address advertised to clients first (`IpAddr1`).
    pub ip1: String,
    /// Second advertised address (`IpAddr2`, default `ip1`).
    pub ip2: String,
    /// Client port advertised (`ListenPort`).
    pub port: u32,
    /// Advertised capacity (`MaxConnCnt`, 100000).
    pub max_conn_cnt: u32,
    /// Host name reported to login_servers.
    pub host_name: String,
    /// Messages a connection may send per second; more are dropped (20).
    pub max_msgs_per_sec: u32,
    /// The message key (`aesKey`, 32 characters): push alerts show the decrypted text.
    pub aes_key: String,
    /// A connection that has not logged in by then is closed (15 s).
    pub login_timeout_ms: u64,
    /// Idle timeout of PC clients (120 s).
    pub pc_timeout_ms: u64,
    /// Idle timeout of mobile clients (300 s).
    pub mobile_timeout_ms: u64,
    /// Requests of one client connection in flight to db_proxy and route_server at once;
    /// beyond, its requests wait and the connection is not read ([`budget`]). 2.
    pub max_requests_in_flight: usize,
    /// Requests of all client connections in flight at once; beyond, requests wait and
    /// connections with waiting requests take turns ([`budget`]). 4 (measured:
    /// docs/benchmarks.md, "Heavy clients").
    pub max_requests_in_flight_total: usize,
}

impl Default for MsgServerConfig {
    fn default() -> Self {
        MsgServerConfig {
            ip1: "127.0.0.1".to_owned(),
            ip2: "127.0.0.1".to_owned(),
            port: 8000,
            max_conn_cnt: 100_000,
            host_name: String::new(),
            max_msgs_per_sec: 20,
            aes_key: crate::crypt::DEFAULT_KEY.to_owned(),
            login_timeout_ms: 15_000,
            pc_timeout_ms: 120_000,
            mobile_timeout_ms: 300_000,
            max_requests_in_flight: 2,
            max_requests_in_flight_total: 4,
        }
    }
}

/// `IMLoginRes.result_string` of a refused login when a server is missing.
const SERVER_ERROR: &str = "服务端异常";

#[derive(Clone, Debug, PartialEq, Eq)]
enum ConnState {
    /// Connected, no login request yet.
    New,
    /// Login sent to db_proxy under this name, on this link, with this seq.
    Validating(String, LinkId, u16),
    /// Logged in.
    Open(UserId),
    /// Being closed (kicked, refused, logged out): nothing more is served.
    Closing,
}

#[derive(Clone, Debug)]
struct Conn {
    state: ConnState,
    client: Option<ClientType>,
    status: i32,
    opened_ms: u64,
    last_received_ms: u64,
    rate_second: u64,
    rate_count: u32,
    /// Messages waiting for storage: one in flight, the others held (per-sender order).
    outgoing: hold::Outgoing,
    /// The client's address, sent along with its login check (login lockout per source).
    peer_ip: Option<std::net::IpAddr>,
    /// Requests answered through db_proxy / route_server, in flight and waiting.
    budget: budget::RequestBudget,
}

#[derive(Clone, Debug, Default)]
struct LocalUser {
    /// Logged-in connections, oldest first.
    conns: Vec<ConnId>,
    /// Whether a PC client of the user is online anywhere (route_server's last word; starts
    /// false, Q-39).
    pc_online: bool,
    /// Nickname, for push alerts.
    nick: String,
}

#[derive(Clone, Debug)]
struct DbLink {
    id: LinkId,
    range: DbRange,
    /// False after `CID_OTHER_STOP_RECV_PACKET`.
    usable: bool,
}

/// The state of one msg_server.
#[derive(Debug)]
pub struct MsgServer<C> {
    config: MsgServerConfig,
    clock: C,
    next_conn: u32,
    conns: HashMap<ConnId, Conn>,
    /// The latest time the shell reported (ms).
    now_ms: u64,
    users: HashMap<UserId, LocalUser>,
    db: Vec<DbLink>,
    db_turn: usize,
    /// Open route_server links, oldest first: the first is the master.
    routes: Vec<LinkId>,
    logins: Vec<LinkId>,
    /// push_server links, oldest first: the last is used.
    pushes: Vec<LinkId>,
    /// file_server links with the addresses they hand to clients.
    files: Vec<(LinkId, Vec<bd::IpAddr>)>,
    key: crate::crypt::MessageKey,
    /// Client requests in flight upstream, all connections, and whose turn is next.
    turns: budget::Turns,
}

impl<C: Clock> MsgServer<C> {
    /// A msg_server without connections or links.
    pub fn new(config: MsgServerConfig, clock: C) -> MsgServer<C> {
        let key = crate::crypt::MessageKey::new(&config.aes_key).unwrap_or_else(|_| {
            tracing::warn!("aesKey is not 32 characters; push alerts use the default key");
            crate::crypt::MessageKey::default_key()
        });
        MsgServer {
            config,
            clock,
            next_conn: 0,
            conns: HashMap::new(),
            now_ms: 0,
            users: HashMap::new(),
            db: Vec::new(),
            db_turn: 0,
            routes: Vec::new(),
            logins: Vec::new(),
            pushes: Vec::new(),
            files: Vec::new(),
            key,
            turns: budget::Turns::default(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &MsgServerConfig {
        &self.config
    }

    /// Client connections (logged in or not).
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Logged-in client connections.
    pub fn logged_in(&self) -> usize {
        self.users.values().map(|u| u.conns.len()).sum()
    }

    // ---- client side -------------------------------------------------------------------

    /// A client connected at `now_ms`; returns its handle. Its address is unknown: prefer
    /// [`MsgServer::client_opened_from`].
    pub fn client_opened(&mut self, now_ms: u64) -> ConnId {
        self.client_opened_from(now_ms, None)
    }

    /// A client connected from `peer_ip` at `now_ms`; returns its handle. The address goes
    /// to db_proxy with the login check, which counts failed logins per source
    /// ([`crate::attach::ValidateAttach`]).
    pub fn client_opened_from(&mut self, now_ms: u64, peer_ip: Option<std::net::IpAddr>) -> ConnId {
        let id = loop {
            self.next_conn = self.next_conn.wrapping_add(1).max(1);
            let id = ConnId(self.next_conn);
            if !self.conns.contains_key(&id) {
                break id;
            }
        };
        self.conns.insert(
            id,
            Conn {
                state: ConnState::New,
                client: None,
                status: STATUS_ONLINE as i32,
                opened_ms: now_ms,
                last_received_ms: now_ms,
                rate_second: 0,
                rate_count: 0,
                outgoing: hold::Outgoing::default(),
                peer_ip,
                budget: budget::RequestBudget::default(),
            },
        );
        id
    }

    /// The client connection closed (by the peer, an error, or after [`Action::Close`]).
    pub fn client_closed(&mut self, conn: ConnId, out: &mut Vec<Action>) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        self.forget_budget(conn, &c.budget);
        // A connection closed by us forgot its login in `close` already.
        if let ConnState::Open(user) = c.state {
            self.forget_login(conn, user, c.client, out);
        }
    }

    /// A frame from a client at `now_ms`.
    pub fn client_frame(&mut self, conn: ConnId, pdu: Pdu, now_ms: u64, out: &mut Vec<Action>) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.last_received_ms = now_ms;
        self.now_ms = self.now_ms.max(now_ms);
        let command = pdu.command();
        if command == CommandId::OTHER_HEARTBEAT {
            out.push(Action::ToClient(conn, pdu));
            return;
        }
        match c.state.clone() {
            ConnState::Closing => {}
            ConnState::New if command == CommandId::LOGIN_REQ_USERLOGIN => {
                self.login(conn, &pdu, out);
            }
            ConnState::New | ConnState::Validating(..) => {
                if command != CommandId::LOGIN_REQ_USERLOGIN {
                    tracing::debug!(?conn, %command, "command before login: closing");
                    self.close(conn, out);
                }
                // A second login request on the connection is ignored.
            }
            ConnState::Open(user) => self.admit(conn, user, pdu, now_ms, out),
        }
    }

    /// Serves a request of a logged-in connection now, or keeps it waiting when the
    /// connection's or the total budget of requests in flight is used up ([`budget`]).
    fn admit(&mut self, conn: ConnId, user: UserId, pdu: Pdu, now_ms: u64, out: &mut Vec<Action>) {
        if !budget::counts(pdu.command()) {
            return self.serve(conn, user, pdu, now_ms, out);
        }
        let max = self.config.max_requests_in_flight;
        let room = self.turns.in_flight < self.config.max_requests_in_flight_total.max(1)
            && self.turns.waiting() == 0;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        match c.budget.admit(pdu, max, room) {
            budget::Admit::Go(pdu) => self.serve(conn, user, pdu, now_ms, out),
            budget::Admit::Wait { pause } => {
                if pause {
                    out.push(Action::PauseReading(conn));
                }
                // Its turn may be now: connections ahead may be waiting on their own budget
                // only (they leave the turns until their next answer).
                self.turns.enqueue(conn);
                self.release(out);
            }
            budget::Admit::Overflow => {
                tracing::debug!(?conn, "too many requests waiting, closing");
                self.close(conn, out);
            }
        }
    }

    /// A request of `conn` was sent upstream.
    fn request_sent(&mut self, conn: ConnId) {
        let now = self.now_ms;
        if let Some(c) = self.conns.get_mut(&conn) {
            c.budget.sent(now);
            self.turns.in_flight += 1;
        }
    }

    /// An answer for `conn` came back: its request stops counting, and waiting requests
    /// may go.
    fn request_answered(&mut self, conn: ConnId, out: &mut Vec<Action>) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if c.budget.answered() {
                self.turns.in_flight = self.turns.in_flight.saturating_sub(1);
            }
            if c.budget.has_waiting() {
                self.turns.enqueue(conn);
            }
        }
        self.release(out);
    }

    /// Serves waiting requests while the total budget has room, one per connection in turn;
    /// a connection left with nothing waiting is read again.
    fn release(&mut self, out: &mut Vec<Action>) {
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
                out.push(Action::ResumeReading(conn));
            }
            let now = self.now_ms;
            self.serve(conn, user, pdu, now, out);
        }
    }

    /// A closed connection's requests in flight stop counting.
    fn forget_budget(&mut self, conn: ConnId, budget: &budget::RequestBudget) {
        self.turns.in_flight = self
            .turns
            .in_flight
            .saturating_sub(budget.in_flight_count());
        self.turns.remove(conn);
    }

    /// Once a second: closes connections that did not log in in time and idle ones, and
    /// connections with a message not stored within 10 s of its arrival (no db_proxy link
    /// came back, or db_proxy did not answer): the protocol has no negative answer to a
    /// message, so closing is how the sender learns that its unacknowledged messages were
    /// not sent (docs/compatibility.md).
    pub fn tick(&mut self, now_ms: u64, out: &mut Vec<Action>) {
        self.now_ms = self.now_ms.max(now_ms);
        let mut stuck: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.state != ConnState::Closing && c.outgoing.check(now_ms).is_err())
            .map(|(id, _)| *id)
            .collect();
        stuck.sort_unstable();
        for conn in stuck {
            self.refuse_messages(conn, hold::Refusal::Expired, out);
        }
        let mut waiting = Vec::new();
        for (&id, c) in &mut self.conns {
            let expired = c.budget.expire(now_ms);
            self.turns.in_flight = self.turns.in_flight.saturating_sub(expired);
            if c.budget.has_waiting() {
                waiting.push(id);
            }
        }
        waiting.sort_unstable();
        for conn in waiting {
            self.turns.enqueue(conn);
        }
        self.release(out);
        let mut expired = Vec::new();
        for (&id, c) in &self.conns {
            let late = match c.state {
                ConnState::New | ConnState::Validating(..) => {
                    now_ms.saturating_sub(c.opened_ms) >= self.config.login_timeout_ms
                }
                ConnState::Open(_) => {
                    let timeout = if c.client.is_some_and(ClientType::is_mobile) {
                        self.config.mobile_timeout_ms
                    } else {
                        self.config.pc_timeout_ms
                    };
                    now_ms.saturating_sub(c.last_received_ms) >= timeout
                }
                ConnState::Closing => false,
            };
            if late {
                expired.push(id);
            }
        }
        expired.sort();
        for id in expired {
            tracing::debug!(conn = ?id, "client timed out");
            self.close(id, out);
        }
    }

    fn login(&mut self, conn: ConnId, pdu: &Pdu, out: &mut Vec<Action>) {
        let seq = pdu.seq_num();
        let refuse = |code: bd::ResultType| login::ImLoginRes {
            server_time: 0,
            result_code: code as i32,
            result_string: Some(SERVER_ERROR.to_owned()),
            online_status: None,
            user_info: None,
        };
        let request: login::ImLoginReq = match pdu.decode_body() {
            Ok(request) => request,
            Err(error) => {
                tracing::debug!(?conn, %error, "undecodable login request");
                self.refuse(
                    conn,
                    seq,
                    refuse(bd::ResultType::RefuseReasonDbValidateFailed),
                    out,
                );
                return;
            }
        };
        let missing = if !self.db.iter().any(|l| l.usable) {
            Some(bd::ResultType::RefuseReasonNoDbServer)
        } else if self.logins.is_empty() {
            Some(bd::ResultType::RefuseReasonNoLoginServer)
        } else if self.routes.is_empty() {
            Some(bd::ResultType::RefuseReasonNoRouteServer)
        } else {
            None
        };
        if let Some(code) = missing {
            tracing::info!(?conn, ?code, "login refused: a server is missing");
            self.refuse(conn, seq, refuse(code), out);
            return;
        }
        let Some(client) = ClientType::from_wire(request.client_type) else {
            let mut answer = refuse(bd::ResultType::RefuseReasonDbValidateFailed);
            answer.result_string = Some("unknown client type".to_owned());
            self.refuse(conn, seq, answer, out);
            return;
        };
        let status = match request.online_status {
            s @ 1..=3 => s,
            _ => STATUS_ONLINE as i32,
        };
        let Some(link) = self.pick_db(DbRange::Login) else {
            return; // checked above
        };
        let mut peer_ip = None;
        if let Some(c) = self.conns.get_mut(&conn) {
            c.client = Some(client);
            c.status = status;
            c.state = ConnState::Validating(request.user_name.clone(), link, seq);
            peer_ip = c.peer_ip;
        }
        let attach = crate::attach::ValidateAttach {
            head: DbAttach::new(AttachType::HANDLE, conn.0),
            client: peer_ip,
        };
        let validate = server::ImValidateReq {
            user_name: request.user_name,
            password: request.password,
            attach_data: Some(attach.to_bytes()),
        };
        out.push(Action::ToUpstream(
            link,
            Pdu::encode_message(&validate, seq),
        ));
    }

    fn refuse(
        &mut self,
        conn: ConnId,
        seq: u16,
        mut answer: login::ImLoginRes,
        out: &mut Vec<Action>,
    ) {
        answer.server_time = self.clock.now().0;
        out.push(Action::ToClient(conn, Pdu::encode_message(&answer, seq)));
        self.close(conn, out);
    }

    /// Marks a connection closing and asks the shell to close it. A logged-in connection
    /// stays counted until [`MsgServer::client_closed`].
    fn close(&mut self, conn: ConnId, out: &mut Vec<Action>) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if let ConnState::Open(user) = c.state {
                let client = c.client;
                c.state = ConnState::Closing;
                self.forget_login(conn, user, client, out);
            } else {
                c.state = ConnState::Closing;
            }
            out.push(Action::Close(conn));
        }
    }

    /// Removes a logged-in connection from its user and tells the login and route servers.
    fn forget_login(
        &mut self,
        conn: ConnId,
        user: UserId,
        client: Option<ClientType>,
        out: &mut Vec<Action>,
    ) {
        if let Some(entry) = self.users.get_mut(&user) {
            entry.conns.retain(|c| *c != conn);
            if entry.conns.is_empty() {
                self.users.remove(&user);
            }
        }
        let count = server::ImUserCntUpdate {
            user_action: 2,
            user_id: user.0,
        };
        self.to_logins(&Pdu::encode_message(&count, 0), out);
        if let Some(client) = client {
            let status = server::ImUserStatusUpdate {
                user_status: STATUS_OFFLINE,
                user_id: user.0,
                client_type: client.to_wire(),
            };
            self.to_routes(&Pdu::encode_message(&status, 0), out);
        }
    }

    /// A client request of a logged-in connection.
    fn serve(&mut self, conn: ConnId, user: UserId, pdu: Pdu, now_ms: u64, out: &mut Vec<Action>) {
        let seq = pdu.seq_num();
        let mut message = match pdu.decode_any() {
            Ok(message) => message,
            Err(error) => {
                tracing::debug!(?conn, command = %pdu.command(), %error, "undecodable request ignored");
                return;
            }
        };
        identity::set_requester(&mut message, user.0);
        let client = self.conns.get(&conn).and_then(|c| c.client);
        let is_mobile = client.is_some_and(ClientType::is_mobile);
        use AnyMessage as M;
        match message {
            M::LogoutReq(_) => {
                if is_mobile {
                    let clear = login::ImDeviceTokenReq {
                        user_id: user.0,
                        device_token: String::new(),
                        client_type: client.map(ClientType::to_wire),
                        attach_data: None,
                    };
                    self.send_db(DbRange::Other, Pdu::encode_message(&clear, seq), out);
                }
                let answer = login::ImLogoutRsp { result_code: 0 };
                out.push(Action::ToClient(conn, Pdu::encode_message(&answer, seq)));
                self.close(conn, out);
            }
            M::DeviceTokenReq(mut request) => {
                if !is_mobile {
                    return;
                }
                let answer = login::ImDeviceTokenRsp {
                    user_id: user.0,
                    attach_data: None,
                };
                out.push(Action::ToClient(conn, Pdu::encode_message(&answer, seq)));
                request.client_type = client.map(ClientType::to_wire);
                request.attach_data = None;
                self.send_db(DbRange::Other, Pdu::encode_message(&request, seq), out);
            }
            M::KickPcClientReq(_) => {
                if !is_mobile {
                    return;
                }
                self.kick_local(user, ClientType::Mac, KICK_REASON_MOBILE_KICK, true, out);
                let kick = server::ImServerKickUser {
                    user_id: user.0,
                    client_type: ClientType::Mac.to_wire(),
                    reason: KICK_REASON_MOBILE_KICK as u32,
                };
                self.to_master_route(Pdu::encode_message(&kick, 0), out);
                let answer = login::ImKickPcClientRsp {
                    user_id: user.0,
                    result_code: 0,
                };
                out.push(Action::ToClient(conn, Pdu::encode_message(&answer, seq)));
            }
            M::MsgData(data) => self.client_message(conn, user, data, seq, now_ms, out),
            M::MsgDataAck(_) => {
                // Delivery acks only fed a statistic in the original: nothing to do.
            }
            M::MsgDataReadAck(ack) => {
                self.send_db(DbRange::Other, Pdu::encode_message(&ack, seq), out);
                let notify = message::ImMsgDataReadNotify {
                    user_id: user.0,
                    session_id: ack.session_id,
                    msg_id: ack.msg_id,
                    session_type: ack.session_type,
                };
                let notify = Pdu::encode_message(&notify, 0);
                self.to_user(user, Some(conn), &notify, out);
                self.to_master_route(notify, out);
            }
            M::ClientTimeReq(_) => {
                let answer = message::ImClientTimeRsp {
                    server_time: self.clock.now().0,
                };
                out.push(Action::ToClient(conn, Pdu::encode_message(&answer, seq)));
            }
            M::RemoveSessionReq(request) => {
                let (kind, peer) = (request.session_type, request.session_id);
                self.forward(
                    conn,
                    M::RemoveSessionReq(request),
                    seq,
                    DbRange::Other,
                    false,
                    out,
                );
                if kind == bd::SessionType::Single as i32 {
                    let notify = buddy::ImRemoveSessionNotify {
                        user_id: user.0,
                        session_type: kind,
                        session_id: peer,
                    };
                    let notify = Pdu::encode_message(&notify, 0);
                    self.to_user(user, Some(conn), &notify, out);
                    self.to_master_route(notify, out);
                }
            }
            M::UsersStatReq(mut request) => {
                request.attach_data =
                    Some(PduAttach::new(AttachType::HANDLE, conn.0, Bytes::new()).to_bytes());
                if !self.routes.is_empty() {
                    self.request_sent(conn);
                }
                self.to_master_route(Pdu::encode_message(&request, seq), out);
            }
            M::P2pCmdMsg(command) => {
                let to = UserId(command.to_user_id);
                let relay = Pdu::encode_message(&command, 0);
                self.to_user(user, Some(conn), &relay, out);
                if to != user {
                    self.to_user(to, None, &relay, out);
                }
                self.to_master_route(relay, out);
            }
            M::GroupCreateReq(request) => {
                if request.group_type == bd::GroupType::Normal as i32 {
                    // Only administrators create fixed groups (Q-36: answered, not dropped).
                    let answer = group::ImGroupCreateRsp {
                        user_id: user.0,
                        result_code: 1,
                        group_id: None,
                        group_name: request.group_name,
                        user_id_list: Vec::new(),
                        attach_data: None,
                    };
                    out.push(Action::ToClient(conn, Pdu::encode_message(&answer, seq)));
                } else {
                    self.forward(
                        conn,
                        M::GroupCreateReq(request),
                        seq,
                        DbRange::Other,
                        false,
                        out,
                    );
                }
            }
            M::FileReq(request) if !self.files.is_empty() => {
                self.file_request(conn, user, request, seq, out)
            }
            M::FileReq(request) => {
                // No file_server is connected to this msg_server: the request fails at once.
                let answer = file::ImFileRsp {
                    result_code: 1,
                    from_user_id: user.0,
                    to_user_id: request.to_user_id,
                    file_name: request.file_name,
                    task_id: String::new(),
                    ip_addr_list: Vec::new(),
                    trans_mode: request.trans_mode,
                };
                out.push(Action::ToClient(conn, Pdu::encode_message(&answer, seq)));
            }
            M::FileAddOfflineReq(request) => {
                let notify = file::ImFileNotify {
                    from_user_id: user.0,
                    to_user_id: request.to_user_id,
                    file_name: request.file_name.clone(),
                    file_size: request.file_size,
                    task_id: request.task_id.clone(),
                    ip_addr_list: self.file_addresses(),
                    trans_mode: bd::TransferFileType::FileTypeOffline as i32,
                    offline_ready: 1,
                };
                self.send_db(DbRange::Other, Pdu::encode_message(&request, seq), out);
                let notify = Pdu::encode_message(&notify, 0);
                self.to_user_pcs(UserId(request.to_user_id), &notify, out);
                self.to_master_route(notify, out);
            }
            M::FileDelOfflineReq(request) => {
                // Only the sender or the receiver of the file may delete its record.
                if request.from_user_id == user.0 || request.to_user_id == user.0 {
                    self.send_db(DbRange::Other, Pdu::encode_message(&request, seq), out);
                }
            }
            request @ (M::PushShieldReq(_)
            | M::QueryPushShieldReq(_)
            | M::ChangeSignInfoReq(_)
            | M::GroupInfoListReq(_)) => {
                self.forward(conn, request, seq, DbRange::Other, true, out);
            }
            request @ (M::GetMsgListReq(_)
            | M::GetMsgByIdReq(_)
            | M::UnreadMsgCntReq(_)
            | M::RecentContactSessionReq(_)
            | M::UsersInfoReq(_)) => {
                self.forward(conn, request, seq, DbRange::Login, false, out);
            }
            request @ (M::GetLatestMsgIdReq(_)
            | M::AllUserReq(_)
            | M::DepartmentReq(_)
            | M::ChangeAvatarReq(_)
            | M::NormalGroupListReq(_)
            | M::GroupChangeMemberReq(_)
            | M::GroupShieldReq(_)
            | M::FileHasOfflineReq(_)) => {
                self.forward(conn, request, seq, DbRange::Other, false, out);
            }
            other => {
                tracing::debug!(?conn, command = %other.command(), "client command ignored");
            }
        }
    }

    /// Sends a client request to db_proxy with the connection's handle as attach data (12
    /// bytes, or 16 with an empty embedded PDU where the original used that layout). Without
    /// a usable db_proxy, answers the requests that have a failure answer.
    fn forward(
        &mut self,
        conn: ConnId,
        mut request: AnyMessage,
        seq: u16,
        range: DbRange,
        long_attach: bool,
        out: &mut Vec<Action>,
    ) {
        let attach = if long_attach {
            PduAttach::new(AttachType::HANDLE, conn.0, Bytes::new()).to_bytes()
        } else {
            DbAttach::new(AttachType::HANDLE, conn.0).to_bytes()
        };
        set_attach(&mut request, attach);
        if self.pick_db(range).is_some() {
            self.send_db(range, request.to_pdu(seq), out);
            self.request_sent(conn);
            return;
        }
        tracing::debug!(?conn, command = %request.command(), "no db_proxy for request");
        if let Some(mut answer) = offline_answer(&request) {
            if let Some((_, attach)) = identity::reply_route(&mut answer) {
                *attach = None;
            }
            out.push(Action::ToClient(conn, answer.to_pdu(seq)));
        }
    }

    fn client_message(
        &mut self,
        conn: ConnId,
        user: UserId,
        mut data: message::ImMsgData,
        seq: u16,
        now_ms: u64,
        out: &mut Vec<Action>,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let second = now_ms / 1000;
        if c.rate_second != second {
            c.rate_second = second;
            c.rate_count = 0;
        }
        c.rate_count += 1;
        if c.rate_count > self.config.max_msgs_per_sec {
            tracing::debug!(?conn, "message rate limit exceeded, message dropped");
            return;
        }
        if data.msg_data.is_empty() {
            return;
        }
        let single = crate::domain::MsgType::from_wire(data.msg_type)
            .is_some_and(|t| t.session_kind() == crate::domain::SessionKind::Single);
        if single && data.to_session_id == user.0 {
            return; // self-addressed (compared with the authenticated id, Q-34)
        }
        data.create_time = self.clock.now().0;
        data.attach_data = Some(DbAttach::new(AttachType::HANDLE, conn.0).to_bytes());
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let pending = hold::Pending {
            data,
            seq,
            since_ms: now_ms,
        };
        if let Err(refusal) = c.outgoing.push(pending) {
            self.refuse_messages(conn, refusal, out);
            return;
        }
        self.dispatch_message(conn, out);
    }

    /// Sends the connection's next held message to db_proxy when none is in flight and a
    /// db_proxy link is up; it is the message in flight until its answer (or the loss of the
    /// link, or the hold bound). One at a time per connection keeps a sender's messages in
    /// order: db_proxy answers requests concurrently, in any order. Without a link the
    /// messages stay held (hold.rs).
    fn dispatch_message(&mut self, conn: ConnId, out: &mut Vec<Action>) {
        if !self.conns.get(&conn).is_some_and(|c| c.outgoing.ready()) {
            return;
        }
        let Some(link) = self.pick_db(DbRange::Other) else {
            tracing::debug!(?conn, "no db_proxy: message held");
            return;
        };
        let Some(next) = self
            .conns
            .get_mut(&conn)
            .and_then(|c| c.outgoing.send_next(link))
        else {
            return;
        };
        out.push(Action::ToUpstream(
            link,
            Pdu::encode_message(&next.data, next.seq),
        ));
    }

    /// The connection's message in flight is settled; the next held one goes.
    fn message_done(&mut self, conn: ConnId, out: &mut Vec<Action>) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.outgoing.done();
        self.dispatch_message(conn, out);
    }

    /// A message of `conn` cannot be stored in time or not held: the connection is closed,
    /// the one negative signal every client notices (its unacknowledged messages stay
    /// unsent; docs/compatibility.md). Its other held messages go with it.
    fn refuse_messages(&mut self, conn: ConnId, refusal: hold::Refusal, out: &mut Vec<Action>) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let waiting = c.outgoing.len();
        c.outgoing.clear();
        tracing::info!(
            ?conn,
            ?refusal,
            waiting,
            "messages cannot be stored: closing the connection"
        );
        self.close(conn, out);
    }

    /// Sends the held messages of every connection that has some (a db_proxy link is up).
    fn dispatch_held(&mut self, out: &mut Vec<Action>) {
        let mut ready: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.outgoing.ready())
            .map(|(id, _)| *id)
            .collect();
        ready.sort_unstable();
        for conn in ready {
            self.dispatch_message(conn, out);
        }
    }

    // ---- upstream side -----------------------------------------------------------------

    /// An upstream link is up: login_servers learn about this msg_server, route_servers get
    /// the connected users (and the master its role).
    pub fn upstream_opened(&mut self, link: LinkId, kind: Upstream, out: &mut Vec<Action>) {
        self.upstream_closed(link, out);
        match kind {
            Upstream::Db(range) => {
                self.db.push(DbLink {
                    id: link,
                    range,
                    usable: true,
                });
                self.dispatch_held(out);
            }
            Upstream::Push => self.pushes.push(link),
            Upstream::File => {
                self.files.push((link, Vec::new()));
                let ask = server::ImFileServerIpReq {};
                out.push(Action::ToUpstream(link, Pdu::encode_message(&ask, 0)));
            }
            Upstream::Login => {
                self.logins.push(link);
                let info = server::ImMsgServInfo {
                    ip1: self.config.ip1.clone(),
                    ip2: self.config.ip2.clone(),
                    port: self.config.port,
                    max_conn_cnt: self.config.max_conn_cnt,
                    cur_conn_cnt: u32::try_from(self.logged_in()).unwrap_or(u32::MAX),
                    host_name: self.config.host_name.clone(),
                };
                out.push(Action::ToUpstream(link, Pdu::encode_message(&info, 0)));
            }
            Upstream::Route => {
                self.routes.push(link);
                let mut list = Vec::new();
                for (user, entry) in &self.users {
                    for conn in &entry.conns {
                        if let Some(c) = self.conns.get(conn) {
                            list.push(bd::ServerUserStat {
                                user_id: user.0,
                                status: c.status,
                                client_type: c.client.map_or(0, ClientType::to_wire),
                            });
                        }
                    }
                }
                list.sort_by_key(|s| s.user_id);
                let info = server::ImOnlineUserInfo {
                    user_stat_list: list,
                };
                out.push(Action::ToUpstream(link, Pdu::encode_message(&info, 0)));
                if self.routes.len() == 1 {
                    let role = server::ImRoleSet { master: 1 };
                    out.push(Action::ToUpstream(link, Pdu::encode_message(&role, 0)));
                }
            }
        }
    }

    /// An upstream link closed; a new route master is elected when the master went away.
    /// Logins waiting for an answer on a closed db_proxy link are refused with
    /// `REFUSE_REASON_NO_DB_SERVER` (the answer can no longer come). Messages in flight on it
    /// are sent again on another db_proxy link, or held until one is up (hold.rs).
    pub fn upstream_closed(&mut self, link: LinkId, out: &mut Vec<Action>) {
        let mut stranded: Vec<(ConnId, u16)> = self
            .conns
            .iter()
            .filter_map(|(id, c)| match c.state {
                ConnState::Validating(_, l, seq) if l == link => Some((*id, seq)),
                _ => None,
            })
            .collect();
        stranded.sort_unstable();
        for (conn, seq) in stranded {
            let answer = login::ImLoginRes {
                server_time: 0,
                result_code: bd::ResultType::RefuseReasonNoDbServer as i32,
                result_string: Some(SERVER_ERROR.to_owned()),
                online_status: None,
                user_info: None,
            };
            self.refuse(conn, seq, answer, out);
        }
        let was_db = self.db.iter().any(|l| l.id == link);
        self.db.retain(|l| l.id != link);
        if was_db {
            for c in self.conns.values_mut() {
                c.outgoing.link_lost(link);
            }
            self.dispatch_held(out);
        }
        self.logins.retain(|l| *l != link);
        self.pushes.retain(|l| *l != link);
        self.files.retain(|(l, _)| *l != link);
        let was_master = self.routes.first() == Some(&link);
        self.routes.retain(|l| *l != link);
        if was_master {
            if let Some(&master) = self.routes.first() {
                let role = server::ImRoleSet { master: 1 };
                out.push(Action::ToUpstream(master, Pdu::encode_message(&role, 0)));
            }
        }
    }

    /// A frame from an upstream link of kind `kind`.
    pub fn upstream_frame(
        &mut self,
        link: LinkId,
        kind: Upstream,
        pdu: Pdu,
        out: &mut Vec<Action>,
    ) {
        if pdu.command() == CommandId::OTHER_HEARTBEAT {
            return;
        }
        match kind {
            Upstream::Db(_) => self.db_answer(link, pdu, out),
            Upstream::Route => self.route_message(pdu, out),
            Upstream::Login => {}
            Upstream::File => self.file_answer(link, pdu, out),
            Upstream::Push => {
                if pdu.command() == CommandId::OTHER_PUSH_TO_USER_RSP {
                    tracing::debug!("push_server answered");
                }
            }
        }
    }

    fn db_answer(&mut self, link: LinkId, pdu: Pdu, out: &mut Vec<Action>) {
        let seq = pdu.seq_num();
        let message = match pdu.decode_any() {
            Ok(message) => message,
            Err(error) => {
                tracing::debug!(command = %pdu.command(), %error, "undecodable db_proxy answer dropped");
                return;
            }
        };
        use AnyMessage as M;
        match message {
            M::StopReceivePacket(_) => {
                tracing::info!(?link, "db_proxy stops receiving on this link");
                if let Some(l) = self.db.iter_mut().find(|l| l.id == link) {
                    l.usable = false;
                }
            }
            M::ValidateRsp(answer) => self.validated(answer, seq, out),
            M::MsgData(data) => self.stored(data, seq, out),
            M::GroupInfoListRsp(mut info) => {
                let fan_out = info
                    .attach_data
                    .as_ref()
                    .and_then(|a| PduAttach::decode(a).ok())
                    .filter(|a| {
                        a.head.attach_type == AttachType::HANDLE_AND_PDU && !a.pdu.is_empty()
                    });
                match fan_out {
                    Some(attach) => self.group_fan_out(&info, attach, out),
                    None => {
                        let user = info.user_id;
                        let attach = info.attach_data.take();
                        self.route_back(user, attach, M::GroupInfoListRsp(info), seq, out);
                    }
                }
            }
            M::ChangeSignInfoRsp(mut answer) => {
                if answer.result_code == 0 {
                    let notify = buddy::ImSignInfoChangedNotify {
                        changed_user_id: answer.user_id,
                        sign_info: answer.sign_info.clone().unwrap_or_default(),
                    };
                    // route_server relays it to every msg_server, this one included.
                    self.to_master_route(Pdu::encode_message(&notify, 0), out);
                }
                let (user, attach) = (answer.user_id, answer.attach_data.take());
                self.route_back(user, attach, M::ChangeSignInfoRsp(answer), seq, out);
            }
            M::GroupChangeMemberRsp(mut answer) => {
                let handle = answer.attach_data.as_deref().and_then(handle_of);
                if answer.result_code == 0 {
                    let notify = group::ImGroupChangeMemberNotify {
                        user_id: answer.user_id,
                        change_type: answer.change_type,
                        group_id: answer.group_id,
                        cur_user_id_list: answer.cur_user_id_list.clone(),
                        chg_user_id_list: answer.chg_user_id_list.clone(),
                    };
                    self.member_change_notify(&notify, handle, out);
                    self.to_master_route(Pdu::encode_message(&notify, 0), out);
                }
                let (user, attach) = (answer.user_id, answer.attach_data.take());
                self.route_back(user, attach, M::GroupChangeMemberRsp(answer), seq, out);
            }
            M::ChangeAvatarRsp(answer) => {
                // Sent to every connection of the user, but it answers one request: that
                // request no longer counts against its connection's budget.
                let requester = answer.attach_data.as_deref().and_then(handle_of);
                let pdu = Pdu::encode_message(&answer, 0);
                self.to_user(UserId(answer.user_id), None, &pdu, out);
                if let Some(conn) = requester {
                    self.request_answered(conn, out);
                }
            }
            M::DeviceTokenRsp(_) => {} // token writes need no answer
            M::GroupGetShieldRsp(answer) => {
                let users: Vec<u32> = answer
                    .shield_status_list
                    .iter()
                    .filter(|s| s.shield_status == 0)
                    .map(|s| s.user_id)
                    .collect();
                if !users.is_empty() {
                    let request = server::ImGetDeviceTokenReq {
                        user_id: users,
                        attach_data: answer.attach_data,
                    };
                    self.send_db(DbRange::Other, Pdu::encode_message(&request, 0), out);
                }
            }
            M::GetDeviceTokenRsp(answer) => self.push_tokens(answer, out),
            M::FileHasOfflineRsp(mut answer) => {
                answer.ip_addr_list = self.file_addresses();
                let (user, attach) = (answer.user_id, answer.attach_data.take());
                self.route_back(user, attach, M::FileHasOfflineRsp(answer), seq, out);
            }
            mut answer => match identity::reply_route(&mut answer) {
                Some((user, attach)) => {
                    let attach = attach.take();
                    self.route_back(user, attach, answer, seq, out);
                }
                None => tracing::debug!(command = %answer.command(), "db_proxy message ignored"),
            },
        }
    }

    /// Sends an answer to the connection named by its attach data, if that connection is
    /// still logged in as `user`.
    fn route_back(
        &mut self,
        user: u32,
        attach: Option<Bytes>,
        answer: AnyMessage,
        seq: u16,
        out: &mut Vec<Action>,
    ) {
        let Some(conn) = attach.as_deref().and_then(handle_of) else {
            tracing::debug!(command = %answer.command(), "answer without readable attach data dropped");
            return;
        };
        match self.conns.get(&conn).map(|c| &c.state) {
            Some(ConnState::Open(owner)) if owner.0 == user => {
                out.push(Action::ToClient(conn, answer.to_pdu(seq)));
            }
            _ => {
                tracing::debug!(?conn, command = %answer.command(), "requester gone, answer dropped")
            }
        }
        self.request_answered(conn, out);
    }

    fn validated(&mut self, answer: server::ImValidateRsp, seq: u16, out: &mut Vec<Action>) {
        let Some(conn) = answer.attach_data.as_deref().and_then(handle_of) else {
            return;
        };
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if !matches!(&c.state, ConnState::Validating(name, ..) if *name == answer.user_name) {
            return;
        }
        let (client, status) = (c.client, c.status);
        let user_info = answer.user_info.filter(|_| answer.result_code == 0);
        let Some((client, mut info)) = client.zip(user_info) else {
            let failure = login::ImLoginRes {
                server_time: self.clock.now().0,
                result_code: bd::ResultType::RefuseReasonDbValidateFailed as i32,
                result_string: answer.result_string,
                online_status: None,
                user_info: None,
            };
            out.push(Action::ToClient(conn, Pdu::encode_message(&failure, seq)));
            self.close(conn, out);
            return;
        };
        let user = UserId(info.user_id);
        // Older connections of the same device class, here and on the other msg_servers.
        self.kick_local(user, client, KICK_REASON_DUPLICATE_USER, false, out);
        let kick = server::ImServerKickUser {
            user_id: user.0,
            client_type: client.to_wire(),
            reason: KICK_REASON_DUPLICATE_USER as u32,
        };
        self.to_master_route(Pdu::encode_message(&kick, 0), out);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.state = ConnState::Open(user);
        }
        let entry = self.users.entry(user).or_default();
        entry.conns.push(conn);
        entry.nick = info.user_nick_name.clone();
        let count = server::ImUserCntUpdate {
            user_action: 1,
            user_id: user.0,
        };
        self.to_logins(&Pdu::encode_message(&count, 0), out);
        let online = server::ImUserStatusUpdate {
            user_status: STATUS_ONLINE,
            user_id: user.0,
            client_type: client.to_wire(),
        };
        self.to_routes(&Pdu::encode_message(&online, 0), out);
        info.status = 0;
        let success = login::ImLoginRes {
            server_time: self.clock.now().0,
            result_code: 0,
            result_string: Some(answer.result_string.unwrap_or_else(|| "成功".to_owned())),
            online_status: Some(status),
            user_info: Some(info),
        };
        out.push(Action::ToClient(conn, Pdu::encode_message(&success, seq)));
    }

    /// Sends `CID_LOGIN_KICK_USER` to every logged-in connection of `user` in the device
    /// class of `client` (or every PC connection when `pc_only`) and closes them.
    fn kick_local(
        &mut self,
        user: UserId,
        client: ClientType,
        reason: i32,
        pc_only: bool,
        out: &mut Vec<Action>,
    ) {
        let Some(entry) = self.users.get(&user) else {
            return;
        };
        let existing = entry
            .conns
            .iter()
            .filter_map(|&c| Some((c, self.conns.get(&c)?.client?)));
        let victims = if pc_only {
            kick::kicked_by_mobile(ClientType::Android, existing)
        } else {
            kick::kicked_by_login(client, existing)
        };
        let notice = Pdu::encode_message(
            &login::ImKickUser {
                user_id: user.0,
                kick_reason: reason,
            },
            0,
        );
        for victim in victims {
            tracing::info!(conn = ?victim, user = user.0, reason, "kicking connection");
            out.push(Action::ToClient(victim, notice.clone()));
            self.close(victim, out);
        }
    }

    /// db_proxy stored a message (msg_id set, 0 = failure): acknowledge it to the sender,
    /// pass it to the other msg_servers and deliver it here.
    fn stored(&mut self, mut data: message::ImMsgData, seq: u16, out: &mut Vec<Action>) {
        let sender = data.attach_data.take().as_deref().and_then(handle_of);
        if let Some(conn) = sender {
            self.message_done(conn, out);
        }
        if data.msg_id == 0 {
            return;
        }
        let kind = crate::domain::MsgType::from_wire(data.msg_type).map(|t| t.session_kind());
        let Some(kind) = kind else {
            return;
        };
        let from = UserId(data.from_user_id);
        if let Some(conn) = sender {
            if matches!(self.conns.get(&conn).map(|c| &c.state), Some(ConnState::Open(u)) if *u == from)
            {
                let ack = message::ImMsgDataAck {
                    user_id: from.0,
                    session_id: data.to_session_id,
                    msg_id: data.msg_id,
                    session_type: kind.to_wire(),
                };
                out.push(Action::ToClient(conn, Pdu::encode_message(&ack, seq)));
            }
        }
        let relay = Pdu::encode_message(&data, 0);
        self.to_master_route(relay.clone(), out);
        match kind {
            crate::domain::SessionKind::Single => {
                self.to_user(from, sender, &relay, out);
                let to = UserId(data.to_session_id);
                if to != from {
                    self.to_user(to, None, &relay, out);
                    if !self.pushes.is_empty() {
                        let request = server::ImGetDeviceTokenReq {
                            user_id: vec![to.0],
                            attach_data: Some(prost::Message::encode_to_vec(&data).into()),
                        };
                        self.send_db(DbRange::Other, Pdu::encode_message(&request, 0), out);
                    }
                }
            }
            crate::domain::SessionKind::Group => self.ask_group_members(data, sender, out),
        }
    }

    /// Asks db_proxy for the members of a group message's group, embedding the message.
    fn ask_group_members(
        &mut self,
        data: message::ImMsgData,
        sender: Option<ConnId>,
        out: &mut Vec<Action>,
    ) {
        let request = group::ImGroupInfoListReq {
            user_id: data.from_user_id,
            group_version_list: vec![bd::GroupVersionInfo {
                group_id: data.to_session_id,
                version: 0,
            }],
            attach_data: Some(
                PduAttach::new(
                    AttachType::HANDLE_AND_PDU,
                    sender.map_or(0, |c| c.0),
                    prost::Message::encode_to_vec(&data).into(),
                )
                .to_bytes(),
            ),
        };
        self.send_db(DbRange::Other, Pdu::encode_message(&request, 0), out);
    }

    fn group_fan_out(
        &mut self,
        info: &group::ImGroupInfoListRsp,
        attach: PduAttach,
        out: &mut Vec<Action>,
    ) {
        let Ok(mut data) = <message::ImMsgData as prost::Message>::decode(attach.pdu.clone())
        else {
            return;
        };
        let Some(group) = info
            .group_info_list
            .iter()
            .find(|g| g.group_id == data.to_session_id)
        else {
            return;
        };
        if !group.group_member_list.contains(&data.from_user_id) {
            return;
        }
        data.attach_data = None;
        let pdu = Pdu::encode_message(&data, 0);
        let origin = (attach.head.handle != 0).then_some(ConnId(attach.head.handle));
        let mut members = group.group_member_list.clone();
        members.sort_unstable();
        members.dedup();
        for &member in &members {
            self.to_user(UserId(member), origin, &pdu, out);
        }
        // The msg_server the message was sent on asks for the pushes (once, not every one).
        if origin.is_some() && !self.pushes.is_empty() {
            let request = server::ImGroupGetShieldReq {
                group_id: group.group_id,
                user_id: members
                    .into_iter()
                    .filter(|m| *m != data.from_user_id)
                    .collect(),
                attach_data: Some(prost::Message::encode_to_vec(&data).into()),
            };
            self.send_db(DbRange::Other, Pdu::encode_message(&request, 0), out);
        }
    }

    /// db_proxy gave the push tokens of a message's receivers: push to those whose phone is
    /// not connected here; receivers on other msg_servers are looked up on route_server first
    /// (their push is silent while a PC of theirs is online).
    fn push_tokens(&mut self, answer: server::ImGetDeviceTokenRsp, out: &mut Vec<Action>) {
        let Some(message) = answer
            .attach_data
            .as_ref()
            .and_then(|a| <message::ImMsgData as prost::Message>::decode(a.clone()).ok())
        else {
            return;
        };
        let from = UserId(message.from_user_id);
        let nick = self
            .users
            .get(&from)
            .map(|u| u.nick.clone())
            .filter(|n| !n.is_empty());
        let Some(flash) = push::alert(&message, nick.as_deref(), &self.key) else {
            return;
        };
        let data = push::custom_data(&message);
        let (mut local, mut remote) = (Vec::new(), Vec::new());
        for mut token in answer.user_token_info {
            let user = UserId(token.user_id);
            if user == from {
                continue; // never push a sender their own message
            }
            match self.users.get(&user) {
                Some(entry) => {
                    let phone_here = entry.conns.iter().any(|c| {
                        self.conns
                            .get(c)
                            .and_then(|c| c.client)
                            .is_some_and(ClientType::is_mobile)
                    });
                    if phone_here {
                        continue; // the phone got the message itself
                    }
                    let pc_here = entry.conns.iter().any(|c| {
                        self.conns
                            .get(c)
                            .and_then(|c| c.client)
                            .is_some_and(|t| !t.is_mobile())
                    });
                    token.push_type = crate::kick::push_type(entry.pc_online || pc_here);
                    local.push(token);
                }
                None => remote.push(token),
            }
        }
        if !local.is_empty() {
            let request = server::ImPushToUserReq {
                flash: flash.clone(),
                data: data.clone(),
                user_token_list: local,
            };
            self.to_push(Pdu::encode_message(&request, 0), out);
        }
        if !remote.is_empty() {
            let mut users: Vec<u32> = remote.iter().map(|t| t.user_id).collect();
            users.sort_unstable();
            users.dedup();
            let prepared = server::ImPushToUserReq {
                flash,
                data,
                user_token_list: remote,
            };
            let query = buddy::ImUsersStatReq {
                user_id: 0,
                user_id_list: users,
                attach_data: Some(
                    PduAttach::new(
                        AttachType::PDU_FOR_PUSH,
                        0,
                        prost::Message::encode_to_vec(&prepared).into(),
                    )
                    .to_bytes(),
                ),
            };
            self.to_master_route(Pdu::encode_message(&query, 0), out);
        }
    }

    /// The addresses clients reach a file_server at (the first one that told us).
    fn file_addresses(&self) -> Vec<bd::IpAddr> {
        self.files
            .iter()
            .find(|(_, addrs)| !addrs.is_empty())
            .map(|(_, addrs)| addrs.clone())
            .unwrap_or_default()
    }

    fn to_file_server(&self, pdu: Pdu, out: &mut Vec<Action>) {
        let link = self
            .files
            .iter()
            .find(|(_, addrs)| !addrs.is_empty())
            .or_else(|| self.files.first())
            .map(|(l, _)| *l);
        if let Some(link) = link {
            out.push(Action::ToUpstream(link, pdu));
        }
    }

    /// CID_FILE_REQUEST (§8.10): the transfer is registered on a file_server; ONLINE only
    /// when the receiver can take it now (a PC client here, or online per route_server).
    fn file_request(
        &mut self,
        conn: ConnId,
        user: UserId,
        request: file::ImFileReq,
        seq: u16,
        out: &mut Vec<Action>,
    ) {
        let to = UserId(request.to_user_id);
        let mut transfer = server::ImFileTransferReq {
            from_user_id: user.0,
            to_user_id: to.0,
            file_name: request.file_name,
            file_size: request.file_size,
            trans_mode: request.trans_mode,
            attach_data: Some(DbAttach::new(AttachType::HANDLE, conn.0).to_bytes()),
        };
        let online_asked = request.trans_mode == bd::TransferFileType::FileTypeOnline as i32;
        if online_asked {
            match self.users.get(&to) {
                Some(entry) => {
                    let pc_here = entry.conns.iter().any(|c| {
                        self.conns
                            .get(c)
                            .and_then(|c| c.client)
                            .is_some_and(|t| !t.is_mobile())
                    });
                    if !pc_here {
                        transfer.trans_mode = bd::TransferFileType::FileTypeOffline as i32;
                    }
                }
                None if !self.routes.is_empty() => {
                    let query = buddy::ImUsersStatReq {
                        user_id: user.0,
                        user_id_list: vec![to.0],
                        attach_data: Some(
                            PduAttach::new(
                                AttachType::HANDLE_AND_PDU_FOR_FILE,
                                conn.0,
                                prost::Message::encode_to_vec(&transfer).into(),
                            )
                            .to_bytes(),
                        ),
                    };
                    self.to_master_route(Pdu::encode_message(&query, seq), out);
                    return;
                }
                None => transfer.trans_mode = bd::TransferFileType::FileTypeOffline as i32,
            }
        }
        self.to_file_server(Pdu::encode_message(&transfer, seq), out);
    }

    /// What a file_server says: its addresses, or a registered transfer for a client.
    fn file_answer(&mut self, link: LinkId, pdu: Pdu, out: &mut Vec<Action>) {
        let seq = pdu.seq_num();
        match pdu.decode_any() {
            Ok(AnyMessage::FileServerIpRsp(answer)) => {
                if let Some((_, addrs)) = self.files.iter_mut().find(|(l, _)| *l == link) {
                    *addrs = answer.ip_addr_list;
                }
            }
            Ok(AnyMessage::FileTransferRsp(answer)) => {
                let Some(conn) = answer.attach_data.as_deref().and_then(handle_of) else {
                    return;
                };
                if !matches!(self.conns.get(&conn).map(|c| &c.state), Some(ConnState::Open(u)) if u.0 == answer.from_user_id)
                {
                    return;
                }
                let addrs = self
                    .files
                    .iter()
                    .find(|(l, _)| *l == link)
                    .map(|(_, a)| a.clone())
                    .unwrap_or_default();
                let mode = answer
                    .trans_mode
                    .unwrap_or(bd::TransferFileType::FileTypeOffline as i32);
                let task_id = answer.task_id.clone().unwrap_or_default();
                let name = answer.file_name.clone().unwrap_or_default();
                let response = file::ImFileRsp {
                    result_code: answer.result_code,
                    from_user_id: answer.from_user_id,
                    to_user_id: answer.to_user_id,
                    file_name: name.clone(),
                    task_id: task_id.clone(),
                    ip_addr_list: addrs.clone(),
                    trans_mode: mode,
                };
                out.push(Action::ToClient(conn, Pdu::encode_message(&response, seq)));
                if answer.result_code == 0 {
                    let notify = file::ImFileNotify {
                        from_user_id: answer.from_user_id,
                        to_user_id: answer.to_user_id,
                        file_name: name,
                        file_size: answer.file_size.unwrap_or(0),
                        task_id,
                        ip_addr_list: addrs,
                        trans_mode: mode,
                        offline_ready: 0,
                    };
                    let notify = Pdu::encode_message(&notify, 0);
                    self.to_user_pcs(UserId(answer.to_user_id), &notify, out);
                    self.to_master_route(notify, out);
                }
            }
            _ => tracing::debug!(command = %pdu.command(), "file_server message ignored"),
        }
    }

    fn to_push(&self, pdu: Pdu, out: &mut Vec<Action>) {
        if let Some(&link) = self.pushes.last() {
            out.push(Action::ToUpstream(link, pdu));
        }
    }

    fn member_change_notify(
        &mut self,
        notify: &group::ImGroupChangeMemberNotify,
        except: Option<ConnId>,
        out: &mut Vec<Action>,
    ) {
        let pdu = Pdu::encode_message(notify, 0);
        let mut users: Vec<u32> = notify
            .chg_user_id_list
            .iter()
            .chain(&notify.cur_user_id_list)
            .copied()
            .collect();
        users.sort_unstable();
        users.dedup();
        for user in users {
            self.to_user(UserId(user), except, &pdu, out);
        }
    }

    fn route_message(&mut self, pdu: Pdu, out: &mut Vec<Action>) {
        let seq = pdu.seq_num();
        let message = match pdu.decode_any() {
            Ok(message) => message,
            Err(error) => {
                tracing::debug!(command = %pdu.command(), %error, "undecodable route_server message dropped");
                return;
            }
        };
        use AnyMessage as M;
        match message {
            M::ServerKickUser(kick) => {
                if let Some(client) = ClientType::from_wire(kick.client_type) {
                    let reason = i32::try_from(kick.reason).unwrap_or(KICK_REASON_DUPLICATE_USER);
                    let pc_only = reason == KICK_REASON_MOBILE_KICK;
                    self.kick_local(UserId(kick.user_id), client, reason, pc_only, out);
                }
            }
            M::UserStatNotify(notify) => {
                let pdu = Pdu::encode_message(&notify, 0);
                self.to_everyone(&pdu, true, out);
            }
            M::SignInfoChangedNotify(notify) => {
                let pdu = Pdu::encode_message(&notify, 0);
                self.to_everyone(&pdu, false, out);
            }
            M::UsersStatRsp(mut answer) => {
                let attach = answer.attach_data.take();
                let kind = attach
                    .as_deref()
                    .and_then(|a| DbAttach::decode(a).ok())
                    .map(|a| a.attach_type);
                if kind == Some(AttachType::HANDLE) {
                    self.route_back(answer.user_id, attach, M::UsersStatRsp(answer), seq, out);
                } else if kind == Some(AttachType::HANDLE_AND_PDU_FOR_FILE) {
                    // An ONLINE file request to a user elsewhere: online only if route_server
                    // sees them online.
                    let prepared = attach
                        .as_ref()
                        .and_then(|a| PduAttach::decode(a).ok())
                        .and_then(|a| {
                            <server::ImFileTransferReq as prost::Message>::decode(a.pdu).ok()
                        });
                    if let Some(mut prepared) = prepared {
                        let online = answer.user_stat_list.iter().any(|s| {
                            s.user_id == prepared.to_user_id && s.status == STATUS_ONLINE as i32
                        });
                        if !online {
                            prepared.trans_mode = bd::TransferFileType::FileTypeOffline as i32;
                        }
                        self.to_file_server(Pdu::encode_message(&prepared, seq), out);
                    }
                } else if kind == Some(AttachType::PDU_FOR_PUSH) {
                    // The receivers' presence decides silent (PC online) or normal pushes.
                    let prepared = attach
                        .as_ref()
                        .and_then(|a| PduAttach::decode(a).ok())
                        .and_then(|a| {
                            <server::ImPushToUserReq as prost::Message>::decode(a.pdu).ok()
                        });
                    if let Some(mut prepared) = prepared {
                        for token in &mut prepared.user_token_list {
                            let online = answer.user_stat_list.iter().any(|s| {
                                s.user_id == token.user_id && s.status == STATUS_ONLINE as i32
                            });
                            token.push_type = crate::kick::push_type(online);
                        }
                        self.to_push(Pdu::encode_message(&prepared, 0), out);
                    }
                }
            }
            M::MsgDataReadNotify(notify) => {
                let pdu = Pdu::encode_message(&notify, 0);
                self.to_user(UserId(notify.user_id), None, &pdu, out);
            }
            M::MsgData(mut data) => {
                data.attach_data = None;
                match crate::domain::MsgType::from_wire(data.msg_type).map(|t| t.session_kind()) {
                    Some(crate::domain::SessionKind::Single) => {
                        let pdu = Pdu::encode_message(&data, 0);
                        let (from, to) = (UserId(data.from_user_id), UserId(data.to_session_id));
                        self.to_user(from, None, &pdu, out);
                        if to != from {
                            self.to_user(to, None, &pdu, out);
                        }
                    }
                    Some(crate::domain::SessionKind::Group) if self.has_group_audience() => {
                        self.ask_group_members(data, None, out);
                    }
                    Some(crate::domain::SessionKind::Group) => {}
                    None => {}
                }
            }
            M::P2pCmdMsg(command) => {
                let pdu = Pdu::encode_message(&command, 0);
                let (from, to) = (UserId(command.from_user_id), UserId(command.to_user_id));
                self.to_user(from, None, &pdu, out);
                if to != from {
                    self.to_user(to, None, &pdu, out);
                }
            }
            M::ServerPcLoginStatusNotify(notify) => {
                let user = UserId(notify.user_id);
                let online = notify.login_status == 1;
                if let Some(entry) = self.users.get_mut(&user) {
                    entry.pc_online = online;
                }
                let status = if online {
                    STATUS_ONLINE
                } else {
                    STATUS_OFFLINE
                };
                let pdu = Pdu::encode_message(
                    &buddy::ImpcLoginStatusNotify {
                        user_id: user.0,
                        login_stat: status as i32,
                    },
                    0,
                );
                self.to_user_class(user, true, &pdu, out);
            }
            M::RemoveSessionNotify(notify) => {
                let pdu = Pdu::encode_message(&notify, 0);
                self.to_user(UserId(notify.user_id), None, &pdu, out);
            }
            M::GroupChangeMemberNotify(notify) => self.member_change_notify(&notify, None, out),
            M::FileNotify(notify) => {
                let pdu = Pdu::encode_message(&notify, 0);
                self.to_user_pcs(UserId(notify.to_user_id), &pdu, out);
            }
            other => tracing::debug!(command = %other.command(), "route_server message ignored"),
        }
    }

    /// Whether anyone is logged in here (a group message from elsewhere needs a member
    /// lookup only then).
    fn has_group_audience(&self) -> bool {
        !self.users.is_empty()
    }

    // ---- sending -----------------------------------------------------------------------

    fn pick_db(&mut self, range: DbRange) -> Option<LinkId> {
        let usable = |wanted: DbRange| {
            self.db
                .iter()
                .filter(move |l| l.usable && l.range == wanted)
                .map(|l| l.id)
        };
        let other = match range {
            DbRange::Login => DbRange::Other,
            DbRange::Other => DbRange::Login,
        };
        let first: Vec<LinkId> = usable(range).collect();
        let candidates = if first.is_empty() {
            usable(other).collect()
        } else {
            first
        };
        if candidates.is_empty() {
            return None;
        }
        self.db_turn = self.db_turn.wrapping_add(1);
        candidates.get(self.db_turn % candidates.len()).copied()
    }

    fn send_db(&mut self, range: DbRange, pdu: Pdu, out: &mut Vec<Action>) {
        match self.pick_db(range) {
            Some(link) => out.push(Action::ToUpstream(link, pdu)),
            None => tracing::debug!(command = %pdu.command(), "no db_proxy: request dropped"),
        }
    }

    fn to_master_route(&self, pdu: Pdu, out: &mut Vec<Action>) {
        if let Some(&master) = self.routes.first() {
            out.push(Action::ToUpstream(master, pdu));
        }
    }

    fn to_routes(&self, pdu: &Pdu, out: &mut Vec<Action>) {
        out.extend(
            self.routes
                .iter()
                .map(|&l| Action::ToUpstream(l, pdu.clone())),
        );
    }

    fn to_logins(&self, pdu: &Pdu, out: &mut Vec<Action>) {
        out.extend(
            self.logins
                .iter()
                .map(|&l| Action::ToUpstream(l, pdu.clone())),
        );
    }

    /// To every logged-in connection of `user` except `except`.
    fn to_user(&self, user: UserId, except: Option<ConnId>, pdu: &Pdu, out: &mut Vec<Action>) {
        if let Some(entry) = self.users.get(&user) {
            for &conn in &entry.conns {
                if Some(conn) != except {
                    out.push(Action::ToClient(conn, pdu.clone()));
                }
            }
        }
    }

    /// To the logged-in connections of `user` of one class (mobile or PC).
    fn to_user_class(&self, user: UserId, mobile: bool, pdu: &Pdu, out: &mut Vec<Action>) {
        if let Some(entry) = self.users.get(&user) {
            for &conn in &entry.conns {
                let is_mobile = self
                    .conns
                    .get(&conn)
                    .and_then(|c| c.client)
                    .is_some_and(ClientType::is_mobile);
                if is_mobile == mobile {
                    out.push(Action::ToClient(conn, pdu.clone()));
                }
            }
        }
    }

    fn to_user_pcs(&self, user: UserId, pdu: &Pdu, out: &mut Vec<Action>) {
        self.to_user_class(user, false, pdu, out);
    }

    /// To every logged-in connection here (only PC ones when `pc_only`).
    fn to_everyone(&self, pdu: &Pdu, pc_only: bool, out: &mut Vec<Action>) {
        let mut conns: Vec<ConnId> = self
            .users
            .values()
            .flat_map(|u| u.conns.iter().copied())
            .filter(|c| {
                !pc_only
                    || !self
                        .conns
                        .get(c)
                        .and_then(|c| c.client)
                        .is_some_and(ClientType::is_mobile)
            })
            .collect();
        conns.sort_unstable();
        out.extend(conns.into_iter().map(|c| Action::ToClient(c, pdu.clone())));
    }
}

/// The client connection named by attach data (its first 12 bytes); `None` when too short.
fn handle_of(attach: &[u8]) -> Option<ConnId> {
    DbAttach::decode(attach).ok().map(|a| ConnId(a.handle))
}

/// Puts `attach` into the attach data field of a request that has one.
fn set_attach(request: &mut AnyMessage, attach: Bytes) {
    macro_rules! set {
        ($($variant:ident),*) => {
            match request {
                $(AnyMessage::$variant(m) => m.attach_data = Some(attach),)*
                _ => {}
            }
        };
    }
    set!(
        PushShieldReq,
        QueryPushShieldReq,
        RecentContactSessionReq,
        UsersInfoReq,
        RemoveSessionReq,
        AllUserReq,
        UsersStatReq,
        ChangeAvatarReq,
        DepartmentReq,
        ChangeSignInfoReq,
        UnreadMsgCntReq,
        GetMsgListReq,
        GetLatestMsgIdReq,
        GetMsgByIdReq,
        NormalGroupListReq,
        GroupInfoListReq,
        GroupCreateReq,
        GroupChangeMemberReq,
        GroupShieldReq,
        FileHasOfflineReq
    );
}

/// The answer to a request when no db_proxy is reachable, for the requests the original
/// answers then (groups, offline files), with every required field filled.
fn offline_answer(request: &AnyMessage) -> Option<AnyMessage> {
    use AnyMessage as M;
    Some(match request {
        M::NormalGroupListReq(r) => group::ImNormalGroupListRsp {
            user_id: r.user_id,
            group_version_list: Vec::new(),
            attach_data: None,
        }
        .into(),
        M::GroupInfoListReq(r) => group::ImGroupInfoListRsp {
            user_id: r.user_id,
            group_info_list: Vec::new(),
            attach_data: None,
        }
        .into(),
        M::GroupCreateReq(r) => group::ImGroupCreateRsp {
            user_id: r.user_id,
            result_code: 1,
            group_id: None,
            group_name: r.group_name.clone(),
            user_id_list: Vec::new(),
            attach_data: None,
        }
        .into(),
        M::GroupChangeMemberReq(r) => group::ImGroupChangeMemberRsp {
            user_id: r.user_id,
            change_type: r.change_type,
            result_code: 1,
            group_id: r.group_id,
            cur_user_id_list: Vec::new(),
            chg_user_id_list: Vec::new(),
            attach_data: None,
        }
        .into(),
        M::GroupShieldReq(r) => group::ImGroupShieldRsp {
            user_id: r.user_id,
            group_id: r.group_id,
            result_code: 1,
            attach_data: None,
        }
        .into(),
        M::FileHasOfflineReq(r) => file::ImFileHasOfflineRsp {
            user_id: r.user_id,
            offline_file_list: Vec::new(),
            ip_addr_list: Vec::new(),
            attach_data: None,
        }
        .into(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests;
