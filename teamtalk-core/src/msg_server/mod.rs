//! The msg_server as a state machine (docs/protocol.md § msg_server): client connections,
//! logged-in users and the upstream links to db_proxy, route_server and login_server.
//!
//! The shell reports what happens — a client connected, a frame arrived from a client or an
//! upstream, a link opened or closed, a deadline passed — each with its [`Now`],
//! then drains the [`Action`]s ([`Machine::poll_output`](crate::time::Machine::poll_output))
//! and sleeps until [`Machine::poll_timeout`](crate::time::Machine::poll_timeout): send a frame
//! to a client or an upstream, close a client, pause or resume its reading. No sockets, no
//! clock reads: monotonic milliseconds and Unix time both come with the inputs.
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
//!
//! Layout (one `impl MsgServer` block per concern):
//! - this file: the types, the settings, the state and the client-side inputs;
//! - `timers.rs`: the deadlines as data, [`Machine`](crate::time::Machine) for `MsgServer`;
//! - `session.rs`: login, its validation answer, refusals, kicks, closing;
//! - `admission.rs`: requests against the request budgets ([`budget`]);
//! - `requests.rs`: serving client requests, forwarding them where their row of the request
//!   table ([`crate::command::requests`]) says and routing the answers back;
//! - `delivery.rs`: messages, held ones (`hold.rs`), stored ones, route_server's relays;
//! - `groups.rs`: group fan-out and member-change notifications;
//! - [`push`]: push alerts and the push_server requests;
//! - `files.rs`: file_server links and transfers;
//! - `upstream.rs`: upstream links opening, closing, their frames, choosing a link;
//! - `fanout.rs`: frames to a user's, a device class's or everyone's connections.

mod admission;
pub mod budget;
mod delivery;
mod fanout;
mod files;
mod groups;
mod hold;
pub mod identity;
pub mod push;
mod requests;
mod session;
mod timers;
mod upstream;

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

use crate::attach::{AttachType, DbAttach, PduAttach};
use crate::command::requests as table;
use crate::command::AnyMessage;
use crate::domain::{ClientType, UserId};
use crate::ids::CommandId;
use crate::kick::{self, KICK_REASON_DUPLICATE_USER, KICK_REASON_MOBILE_KICK};
use crate::pdu::Pdu;
use crate::proto::{base_define as bd, buddy, file, group, login, message, server};
use crate::routing::{STATUS_OFFLINE, STATUS_ONLINE};
use crate::time::Now;

/// A client connection; its value is the handle carried in attach data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u32);

/// An upstream link (to a db_proxy, route_server, login_server, push_server or
/// file_server), allocated by [`MsgServer::handle_upstream_opened`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LinkId(pub u32);

/// Which db_proxy connections a request prefers: a column of the request table
/// ([`crate::command::requests`]).
pub use crate::command::requests::DbRange;

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

/// A PDU encoded for the wire once: every recipient of a fan-out gets a clone of the same
/// [`Frame`], which shares one allocation of header and body ([`Frame::wire`]), so the shell
/// writes the bytes as they are, without serializing per recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    header: crate::pdu::PduHeader,
    wire: Bytes,
}

impl Frame {
    /// Encodes `pdu` (header and body, [`Pdu::to_bytes`]).
    pub fn new(pdu: &Pdu) -> Frame {
        Frame {
            header: pdu.header,
            wire: pdu.to_bytes(),
        }
    }

    /// The frame as written on the wire: the 16-byte header, then the body.
    pub fn wire(&self) -> &Bytes {
        &self.wire
    }

    /// The frame's command.
    pub fn command(&self) -> CommandId {
        self.header.command_id
    }

    /// The PDU again, its body a view into [`Frame::wire`] (no copy).
    pub fn pdu(&self) -> Pdu {
        let body = if self.wire.len() >= crate::pdu::HEADER_LEN {
            self.wire.slice(crate::pdu::HEADER_LEN..)
        } else {
            Bytes::new()
        };
        Pdu {
            header: self.header,
            body,
        }
    }
}

impl From<Pdu> for Frame {
    fn from(pdu: Pdu) -> Frame {
        Frame::new(&pdu)
    }
}

/// Something for the shell to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send a frame to a client.
    ToClient(ConnId, Frame),
    /// Close a client connection after the frames queued before this action.
    Close(ConnId),
    /// Send a frame on an upstream link.
    ToUpstream(LinkId, Frame),
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
    /// Whether logins are refused (`REFUSE_REASON_NO_LOGIN_SERVER`) while no login_server
    /// link is open. True (as the original); false for a msg_server whose clients are given
    /// its address directly, without a login_server's discovery (`RequireLoginServer=0`,
    /// docs/architecture.md "Without a login_server"). Login_servers it is linked to still
    /// learn its load either way.
    pub require_login_server: bool,
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
            require_login_server: true,
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

/// The state of one msg_server, a sans-IO [`Machine`](crate::time::Machine): every input carries its [`Now`], the
/// [`Action`]s it decides are drained with [`Machine::poll_output`](crate::time::Machine::poll_output) after every input, and
/// [`Machine::poll_timeout`](crate::time::Machine::poll_timeout) says when
/// [`Machine::handle_timeout`](crate::time::Machine::handle_timeout) is due next (login
/// timeouts, idle timeouts, held messages' 10 s bound, unanswered requests).
///
/// Links a login needs: a login is refused at once (and the connection closed) with
/// `REFUSE_REASON_NO_DB_SERVER` unless a usable db_proxy link is open (one not stopped by
/// `CID_OTHER_STOP_RECV_PACKET`), with `REFUSE_REASON_NO_LOGIN_SERVER` unless a login_server
/// link is open (unless [`MsgServerConfig::require_login_server`] is off), and with
/// `REFUSE_REASON_NO_ROUTE_SERVER` unless a route_server link is open (checked in that
/// order). A login waiting for its check on a db_proxy link that closes is
/// refused with `REFUSE_REASON_NO_DB_SERVER`. push_server and file_server links are optional:
/// without them pushes are not sent and file requests fail.
#[derive(Debug)]
pub struct MsgServer {
    config: MsgServerConfig,
    next_conn: u32,
    conns: HashMap<ConnId, Conn>,
    /// The latest moment an input carried.
    now: Now,
    users: HashMap<UserId, LocalUser>,
    /// The kind of every open upstream link (the core allocates the ids).
    links: HashMap<LinkId, Upstream>,
    next_link: u32,
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
    /// What the shell is to do, in order ([`Machine::poll_output`](crate::time::Machine::poll_output)).
    out: VecDeque<Action>,
    /// Deadlines of the connections ([`timers`]).
    timers: timers::Timers,
}

impl MsgServer {
    /// A msg_server without connections or links.
    pub fn new(config: MsgServerConfig) -> MsgServer {
        let key = crate::crypt::MessageKey::new(&config.aes_key).unwrap_or_else(|_| {
            tracing::warn!("aesKey is not 32 characters; push alerts use the default key");
            crate::crypt::MessageKey::default_key()
        });
        MsgServer {
            config,
            next_conn: 0,
            conns: HashMap::new(),
            now: Now::default(),
            users: HashMap::new(),
            links: HashMap::new(),
            next_link: 0,
            db: Vec::new(),
            db_turn: 0,
            routes: Vec::new(),
            logins: Vec::new(),
            pushes: Vec::new(),
            files: Vec::new(),
            key,
            turns: budget::Turns::default(),
            out: VecDeque::new(),
            timers: timers::Timers::default(),
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

    /// Time moves to `now` (never backwards on the monotonic scale).
    fn advance(&mut self, now: Now) {
        self.now = Now::new(self.now.ms.max(now.ms), now.unix);
    }

    // ---- client side -------------------------------------------------------------------

    /// A client connected from `peer_ip` (`None`: unknown) at `now`; returns its handle. The
    /// address goes to db_proxy with the login check, which counts failed logins per source
    /// ([`crate::attach::ValidateAttach`]). It must log in within `login_timeout_ms`.
    pub fn handle_client_opened(&mut self, now: Now, peer_ip: Option<std::net::IpAddr>) -> ConnId {
        self.advance(now);
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
                last_received_ms: now.ms,
                rate_second: 0,
                rate_count: 0,
                outgoing: hold::Outgoing::default(),
                peer_ip,
                budget: budget::RequestBudget::default(),
            },
        );
        self.timers.arm(
            now.ms.saturating_add(self.config.login_timeout_ms),
            id,
            timers::Timer::Login,
        );
        id
    }

    /// The client connection closed at `now` (by the peer, an error, or after
    /// [`Action::Close`]).
    pub fn handle_client_closed(&mut self, now: Now, conn: ConnId) {
        self.advance(now);
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        self.forget_budget(conn, &c.budget);
        // A connection closed by us forgot its login in `close` already.
        if let ConnState::Open(user) = c.state {
            self.forget_login(conn, user, c.client);
        }
    }

    /// A frame from a client at `now`.
    ///
    /// Before login only `CID_OTHER_HEARTBEAT` (echoed) and one `CID_LOGIN_REQ_USERLOGIN`
    /// are accepted; anything else closes the connection. The login is refused unless a
    /// usable db_proxy link, a login_server link and a route_server link are open (see
    /// [`MsgServer`]); otherwise its check goes to db_proxy (a `Login`-range link first).
    /// After login, requests are served within the request budgets ([`budget`]).
    pub fn handle_client_frame(&mut self, now: Now, conn: ConnId, pdu: Pdu) {
        self.advance(now);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.last_received_ms = now.ms;
        let command = pdu.command();
        if command == CommandId::OTHER_HEARTBEAT {
            self.out.push_back(Action::ToClient(conn, Frame::from(pdu)));
            return;
        }
        match c.state.clone() {
            ConnState::Closing => {}
            ConnState::New if command == CommandId::LOGIN_REQ_USERLOGIN => {
                self.login(conn, &pdu);
            }
            ConnState::New | ConnState::Validating(..) => {
                // Only the rows the request table accepts before login; a second
                // login request on the connection is ignored.
                if !table::allowed_before_login(command) {
                    tracing::debug!(?conn, %command, "command before login: closing");
                    self.close(conn);
                }
            }
            ConnState::Open(user) => self.admit(conn, user, pdu, now.ms),
        }
    }
}

#[cfg(test)]
mod tests;
