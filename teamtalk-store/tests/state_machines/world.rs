//! A deterministic, in-memory TeamTalk deployment: two msg_servers, one route_server
//! ([`RouteHub`]), the db_proxy business ([`DbProxy`] over a [`MemoryStore`]) and a
//! login_server link that answers nothing, with scripted clients that record what they
//! receive. Every frame is handed over in order; after each operation the world runs until
//! nothing is left to do (a stalled db_proxy link keeps its requests until resumed).
//!
//! The checks of the invariants are in `invariants.rs`; this file only moves frames and
//! keeps the bookkeeping the checks read.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use teamtalk_core::domain::{ClientType, GroupType, ManualClock, MsgType, Timestamp, UserId};
use teamtalk_core::msg_server::{
    Action, ConnId, DbRange, LinkId, MsgServer, MsgServerConfig, Upstream,
};
use teamtalk_core::proto::{login, message};
use teamtalk_core::routing::{RouteHub, RouteLink};
use teamtalk_core::service::{DbProxy, DbProxyConfig, Handler};
use teamtalk_core::store::{Credentials, GroupStore, NewGroup, NewUser, User, UserStore};
use teamtalk_core::time::{Machine, Now};
use teamtalk_core::{CommandId, Pdu, PduDecoder, PduMessage};
use teamtalk_store::MemoryStore;

/// Users of the deployment: `u0` … `u3`; the first three are the members of [`World::group`].
pub(crate) const USERS: usize = 4;
/// Every user's password.
const PASSWORD: &str = "secret";
/// Actions one operation may cause at most (a runaway loop is a failure, not a hang).
const MAX_ACTIONS_PER_STEP: usize = 20_000;

/// Polls a future that must complete at once (the memory store never waits).
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a memory-store future did not complete at once"),
    }
}

/// What a client sent and waits to see acknowledged.
#[derive(Clone, Debug)]
pub(crate) struct Sent {
    /// The unique payload identifying the message.
    pub(crate) tag: Bytes,
    /// Receiver user (single) or group.
    pub(crate) to: u32,
    /// Group message or not.
    pub(crate) group: bool,
    /// Clients that were logged in as receivers when the message was sent.
    pub(crate) receivers: Vec<usize>,
}

/// A message whose `CID_MSG_DATA_ACK` reached its sender.
#[derive(Clone, Debug)]
pub(crate) struct Acked {
    /// What was sent.
    pub(crate) sent: Sent,
    /// The sending client.
    pub(crate) sender: usize,
    /// The id db_proxy gave it.
    pub(crate) msg_id: u32,
}

/// A scripted client.
#[derive(Debug)]
pub(crate) struct Client {
    /// The msg_server it is connected to (0 or 1).
    pub(crate) server: usize,
    /// Its connection there.
    pub(crate) conn: ConnId,
    /// Its user.
    pub(crate) user: UserId,
    /// Its device.
    pub(crate) client_type: ClientType,
    /// The socket is still open (neither side closed it).
    pub(crate) live: bool,
    /// It received a successful login answer and is live.
    pub(crate) logged_in: bool,
    /// Reading is paused by the server ([`Action::PauseReading`]).
    paused: bool,
    /// Frames written by the client but not yet read by the server.
    outbox: VecDeque<Pdu>,
    next_seq: u16,
    /// Messages waiting for their ack, by seq.
    pub(crate) pending: HashMap<u16, Sent>,
    /// Payloads of every `CID_MSG_DATA` received.
    pub(crate) received: BTreeSet<Bytes>,
    /// It received `CID_LOGIN_KICK_USER`.
    pub(crate) kicked: bool,
}

/// One msg_server with its links.
#[derive(Debug)]
pub(crate) struct Server {
    /// The machine.
    pub(crate) ms: MsgServer,
    /// The db_proxy link, when up.
    pub(crate) db: Option<LinkId>,
    /// db_proxy does not answer while stalled; its requests wait in `db_queue`.
    pub(crate) db_stalled: bool,
    db_queue: VecDeque<Pdu>,
    /// The route_server link: the msg_server's id and the hub's.
    pub(crate) route: Option<(LinkId, RouteLink)>,
    login: LinkId,
    /// Connections the server closed or whose socket went away: never served again.
    pub(crate) closed: BTreeSet<ConnId>,
    /// Closed by the server; the shell reports the closing on the next round.
    closing: Vec<ConnId>,
}

/// What happened in a run, to show that the runs exercise the machines.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Stats {
    /// Successful logins.
    pub(crate) logins: usize,
    /// Acknowledged messages.
    pub(crate) acks: usize,
    /// `CID_MSG_DATA` frames clients received.
    pub(crate) deliveries: usize,
    /// `CID_LOGIN_KICK_USER` frames clients received.
    pub(crate) kicks: usize,
    /// Connections the servers closed (kicks, logouts, timeouts, refusals).
    pub(crate) server_closes: usize,
}

/// The whole deployment.
pub(crate) struct World {
    /// The moment of the next input.
    pub(crate) now: Now,
    /// The two msg_servers.
    pub(crate) servers: [Server; 2],
    /// The route_server.
    pub(crate) hub: RouteHub,
    /// The db_proxy business.
    pub(crate) proxy: DbProxy<MemoryStore, Arc<ManualClock>>,
    clock: Arc<ManualClock>,
    /// User ids of `u0` … `u3`.
    pub(crate) user_ids: Vec<UserId>,
    /// The group of `u0`, `u1`, `u2`.
    pub(crate) group: u32,
    /// Every client ever connected, in order.
    pub(crate) clients: Vec<Client>,
    by_conn: HashMap<(usize, ConnId), usize>,
    /// Messages acknowledged during the current operation.
    pub(crate) acked_now: Vec<Acked>,
    /// Every message acknowledged so far.
    pub(crate) acked: Vec<Acked>,
    /// What happened so far.
    pub(crate) stats: Stats,
    next_tag: u32,
    actions: usize,
}

impl World {
    /// The deployment with every link up and nobody connected.
    pub(crate) fn new() -> World {
        let now = Now::from_ms(0);
        let store = MemoryStore::new();
        let mut user_ids = Vec::new();
        for i in 0..USERS {
            let user = NewUser {
                profile: User {
                    name: format!("u{i}"),
                    nick: format!("User {i}"),
                    ..User::default()
                },
                credentials: Credentials::from_plain(PASSWORD, "77"),
            };
            user_ids.push(block_on(store.add_user(&user, Timestamp(1))).unwrap());
        }
        let group = NewGroup {
            name: "team".into(),
            avatar: String::new(),
            creator: user_ids[0],
            group_type: GroupType::Temporary,
            members: user_ids[..3].to_vec(),
        };
        let group = block_on(store.create_group(&group, Timestamp(1))).unwrap();
        let clock = Arc::new(ManualClock::new(now.unix));
        let proxy = DbProxy::new(store, clock.clone(), DbProxyConfig::default());
        let server = || {
            let mut ms = MsgServer::new(MsgServerConfig::default());
            let login = ms.handle_upstream_opened(now, Upstream::Login);
            Server {
                ms,
                db: None,
                db_stalled: false,
                db_queue: VecDeque::new(),
                route: None,
                login,
                closed: BTreeSet::new(),
                closing: Vec::new(),
            }
        };
        let mut world = World {
            now,
            servers: [server(), server()],
            hub: RouteHub::new(),
            proxy,
            clock,
            user_ids,
            group: group.0,
            clients: Vec::new(),
            by_conn: HashMap::new(),
            acked_now: Vec::new(),
            acked: Vec::new(),
            stats: Stats::default(),
            next_tag: 0,
            actions: 0,
        };
        for s in 0..2 {
            world.db_open(s);
            world.route_open(s);
        }
        world.run();
        world
    }

    /// Live clients, oldest first.
    pub(crate) fn live(&self) -> Vec<usize> {
        (0..self.clients.len())
            .filter(|&i| self.clients[i].live)
            .collect()
    }

    /// Starts an operation: nothing acknowledged yet.
    pub(crate) fn begin(&mut self) {
        self.acked_now.clear();
        self.actions = 0;
    }

    // ---- operations -----------------------------------------------------------------------

    /// A client of `user` with `client_type` connects to `server` and asks to log in with
    /// `status`; returns its index.
    pub(crate) fn login(
        &mut self,
        user: usize,
        client_type: ClientType,
        server: usize,
        status: i32,
    ) -> usize {
        let conn = self.servers[server].ms.handle_client_opened(self.now, None);
        let index = self.clients.len();
        self.clients.push(Client {
            server,
            conn,
            user: self.user_ids[user],
            client_type,
            live: true,
            logged_in: false,
            paused: false,
            outbox: VecDeque::new(),
            next_seq: 1,
            pending: HashMap::new(),
            received: BTreeSet::new(),
            kicked: false,
        });
        self.by_conn.insert((server, conn), index);
        let request = login::ImLoginReq {
            user_name: format!("u{user}"),
            password: teamtalk_core::password::client_password(PASSWORD),
            online_status: status,
            client_type: client_type.to_wire(),
            client_version: Some("props".into()),
        };
        self.send(index, &request);
        index
    }

    /// `client` writes `message` with its next seq; returns the seq.
    pub(crate) fn send<M: PduMessage>(&mut self, client: usize, message: &M) -> u16 {
        let c = &mut self.clients[client];
        let seq = c.next_seq;
        c.next_seq = c.next_seq.wrapping_add(1).max(1);
        c.outbox.push_back(Pdu::encode_message(message, seq));
        seq
    }

    /// `client` sends a new message to user `to` (single) or to the group; the receivers
    /// are the clients logged in now that must see it.
    pub(crate) fn send_message(&mut self, client: usize, to_user: usize, group: bool) {
        self.next_tag += 1;
        let tag = Bytes::from(format!("m{}", self.next_tag));
        let from = self.clients[client].user;
        let to = if group {
            self.group
        } else {
            self.user_ids[to_user].0
        };
        let audience: Vec<UserId> = if group {
            self.user_ids[..3].to_vec()
        } else {
            vec![from, UserId(to)]
        };
        let receivers = (0..self.clients.len())
            .filter(|&i| {
                i != client && self.clients[i].logged_in && audience.contains(&self.clients[i].user)
            })
            .collect();
        let kind = if group {
            MsgType::GroupText
        } else {
            MsgType::SingleText
        };
        let data = message::ImMsgData {
            from_user_id: from.0,
            to_session_id: to,
            msg_id: 0,
            create_time: 0,
            msg_type: kind.to_wire(),
            msg_data: tag.clone(),
            attach_data: None,
        };
        let seq = self.send(client, &data);
        self.clients[client].pending.insert(
            seq,
            Sent {
                tag,
                to,
                group,
                receivers,
            },
        );
    }

    /// The client closes its socket.
    pub(crate) fn close_socket(&mut self, client: usize) {
        let c = &mut self.clients[client];
        if !c.live {
            return;
        }
        c.live = false;
        c.logged_in = false;
        c.outbox.clear();
        let (server, conn) = (c.server, c.conn);
        self.servers[server].closed.insert(conn);
        self.servers[server].ms.handle_client_closed(self.now, conn);
    }

    /// The db_proxy link of `server` comes up (if it is down).
    pub(crate) fn db_open(&mut self, server: usize) {
        let s = &mut self.servers[server];
        if s.db.is_none() {
            s.db = Some(s.ms.handle_upstream_opened(self.now, Upstream::Db(DbRange::Login)));
            s.db_stalled = false;
        }
    }

    /// The db_proxy link of `server` drops. With `served`, db_proxy had handled the requests
    /// waiting on it (their answers are lost); otherwise they never reached it.
    pub(crate) fn db_drop(&mut self, server: usize, served: bool) {
        let Some(link) = self.servers[server].db.take() else {
            return;
        };
        let waiting: Vec<Pdu> = self.servers[server].db_queue.drain(..).collect();
        if served {
            for request in waiting {
                let _ = self.answer(&request);
            }
        }
        self.servers[server]
            .ms
            .handle_upstream_closed(self.now, link);
    }

    /// db_proxy stops answering `server` (its requests wait) or answers again.
    pub(crate) fn db_stall(&mut self, server: usize, stalled: bool) {
        if self.servers[server].db.is_some() {
            self.servers[server].db_stalled = stalled;
        }
    }

    /// The route_server link of `server` comes up (if it is down).
    pub(crate) fn route_open(&mut self, server: usize) {
        if self.servers[server].route.is_none() {
            let hub_side = self.hub.handle_link_opened(self.now);
            let ms_side = self.servers[server]
                .ms
                .handle_upstream_opened(self.now, Upstream::Route);
            self.servers[server].route = Some((ms_side, hub_side));
        }
    }

    /// The route_server link of `server` drops (both ends notice).
    pub(crate) fn route_drop(&mut self, server: usize) {
        if let Some((ms_side, hub_side)) = self.servers[server].route.take() {
            self.hub.handle_link_closed(self.now, hub_side);
            self.servers[server]
                .ms
                .handle_upstream_closed(self.now, ms_side);
        }
    }

    /// Time moves on by `ms`; with `heartbeat`, every live client sends a heartbeat at least
    /// every 10 s on the way. Timers fire at their deadlines.
    pub(crate) fn advance(&mut self, ms: u64, heartbeat: bool) {
        let target = self.now.ms + ms;
        loop {
            if heartbeat {
                for i in self.live() {
                    self.send(i, &teamtalk_core::proto::other::ImHeartBeat {});
                }
                self.run();
            }
            let chunk_end = if heartbeat {
                target.min(self.now.ms + 10_000)
            } else {
                target
            };
            loop {
                let due = (0..2)
                    .filter_map(|s| self.servers[s].ms.poll_timeout())
                    .min()
                    .filter(|&at| at <= chunk_end);
                let Some(at) = due else { break };
                self.set_time(at.max(self.now.ms));
                for s in 0..2 {
                    if self.servers[s].ms.poll_timeout().is_some_and(|t| t <= at) {
                        self.servers[s].ms.handle_timeout(self.now);
                    }
                }
                self.run();
            }
            self.set_time(chunk_end);
            if chunk_end >= target {
                break;
            }
        }
    }

    fn set_time(&mut self, ms: u64) {
        self.now = self.now.plus_ms(ms - self.now.ms);
        // The db_proxy's clock follows (it stamps stored rows).
        self.clock.set(self.now.unix);
    }

    // ---- moving frames --------------------------------------------------------------------

    /// Runs until no machine, link or client has anything left to do.
    pub(crate) fn run(&mut self) {
        loop {
            let mut moved = false;
            for s in 0..2 {
                while let Some(action) = self.servers[s].ms.poll_output() {
                    moved = true;
                    self.count();
                    self.action(s, action);
                }
            }
            while let Some(transmit) = self.hub.poll_output() {
                moved = true;
                self.count();
                let Some(s) = (0..2).find(|&s| {
                    self.servers[s]
                        .route
                        .is_some_and(|(_, hub)| hub == transmit.link)
                }) else {
                    continue;
                };
                let pdu = decode_frame(&transmit.frame);
                let (link, _) = self.servers[s].route.unwrap();
                self.servers[s]
                    .ms
                    .handle_upstream_frame(self.now, link, pdu);
            }
            for s in 0..2 {
                if self.servers[s].db_stalled {
                    continue;
                }
                while let Some(request) = self.servers[s].db_queue.pop_front() {
                    moved = true;
                    if let (Some(answer), Some(link)) = (self.answer(&request), self.servers[s].db)
                    {
                        self.servers[s]
                            .ms
                            .handle_upstream_frame(self.now, link, answer);
                    }
                }
            }
            for s in 0..2 {
                for conn in std::mem::take(&mut self.servers[s].closing) {
                    moved = true;
                    self.servers[s].ms.handle_client_closed(self.now, conn);
                }
            }
            for i in 0..self.clients.len() {
                let c = &mut self.clients[i];
                if !c.live || c.paused {
                    continue;
                }
                while let Some(pdu) = self.clients[i].outbox.pop_front() {
                    moved = true;
                    let (s, conn) = (self.clients[i].server, self.clients[i].conn);
                    self.servers[s].ms.handle_client_frame(self.now, conn, pdu);
                    if self.clients[i].paused || !self.clients[i].live {
                        break;
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn count(&mut self) {
        self.actions += 1;
        assert!(
            self.actions <= MAX_ACTIONS_PER_STEP,
            "more than {MAX_ACTIONS_PER_STEP} actions for one operation"
        );
    }

    /// db_proxy's answer to a request (with the request's seq), as its server sends it.
    fn answer(&self, request: &Pdu) -> Option<Pdu> {
        let decoded = request.decode_any().ok()?;
        let reply = block_on(self.proxy.handle_from(decoded, None))?;
        Some(reply.to_pdu(request.seq_num()))
    }

    fn action(&mut self, s: usize, action: Action) {
        match action {
            Action::ToClient(conn, frame) => {
                assert!(
                    !self.servers[s].closed.contains(&conn),
                    "server {s} sent {} to {conn:?} after it was closed",
                    frame.command()
                );
                let index = self.by_conn[&(s, conn)];
                self.client_frame(index, frame.pdu());
            }
            Action::Close(conn) => {
                assert!(
                    self.servers[s].closed.insert(conn),
                    "server {s} closed {conn:?} twice"
                );
                self.servers[s].closing.push(conn);
                self.stats.server_closes += 1;
                let index = self.by_conn[&(s, conn)];
                let c = &mut self.clients[index];
                c.live = false;
                c.logged_in = false;
                c.outbox.clear();
            }
            Action::ToUpstream(link, frame) => {
                let server = &mut self.servers[s];
                if server.db == Some(link) {
                    server.db_queue.push_back(frame.pdu());
                } else if let Some((ms_side, hub_side)) = server.route {
                    if ms_side == link {
                        self.hub.handle_frame(self.now, hub_side, &frame.pdu());
                    } else {
                        assert!(
                            link == server.login,
                            "a frame for a link that is not open: {link:?}"
                        );
                    }
                } else {
                    assert!(
                        link == server.login,
                        "a frame for a link that is not open: {link:?}"
                    );
                }
            }
            Action::PauseReading(conn) => {
                let index = self.by_conn[&(s, conn)];
                self.clients[index].paused = true;
            }
            Action::ResumeReading(conn) => {
                let index = self.by_conn[&(s, conn)];
                self.clients[index].paused = false;
            }
        }
    }

    fn client_frame(&mut self, index: usize, pdu: Pdu) {
        let command = pdu.command();
        if command == CommandId::LOGIN_RES_USERLOGIN {
            let res: login::ImLoginRes = pdu.decode_body().unwrap();
            let c = &mut self.clients[index];
            if res.result_code == 0 {
                assert!(c.live, "a login answer to a closed client");
                c.logged_in = true;
                self.stats.logins += 1;
            }
        } else if command == CommandId::MSG_DATA_ACK {
            let ack: message::ImMsgDataAck = pdu.decode_body().unwrap();
            let c = &mut self.clients[index];
            let sent = c
                .pending
                .remove(&pdu.seq_num())
                .unwrap_or_else(|| panic!("an ack for no message: {ack:?}"));
            assert_eq!(ack.session_id, sent.to, "ack of another conversation");
            assert_eq!(ack.user_id, c.user.0);
            let acked = Acked {
                sent,
                sender: index,
                msg_id: ack.msg_id,
            };
            self.stats.acks += 1;
            self.acked_now.push(acked.clone());
            self.acked.push(acked);
        } else if command == CommandId::MSG_DATA {
            let data: message::ImMsgData = pdu.decode_body().unwrap();
            self.stats.deliveries += 1;
            self.clients[index].received.insert(data.msg_data);
        } else if command == CommandId::LOGIN_KICK_USER {
            self.stats.kicks += 1;
            self.clients[index].kicked = true;
        }
    }
}

/// A frame the route_server wrote, read back as a PDU.
fn decode_frame(frame: &Bytes) -> Pdu {
    let mut buffer = BytesMut::from(&frame[..]);
    PduDecoder::new(1 << 20)
        .decode(&mut buffer)
        .unwrap()
        .unwrap()
}
