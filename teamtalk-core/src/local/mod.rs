//! Several roles in one process without sockets between them: a [`Node`] owns one or more
//! [`MsgServer`]s, the route_server's [`RouteHub`] and the login_server's [`Registry`], and
//! links them in memory (docs/architecture.md, "One process").
//!
//! A login needs a db_proxy link, a login_server link and a route_server link of its
//! msg_server ([`MsgServer`]). The node opens all three for every msg_server it adds:
//!
//! - route and login links are handed over in memory, in order: a frame a msg_server sends
//!   on them is given to the hub or the registry as the [`Pdu`] it is, and what the hub sends
//!   back is split into header and body without copying and given to the msg_server it is
//!   for;
//! - db_proxy requests come out as [`LocalOutput::Db`]: the shell answers each through a
//!   [`crate::service::Handler`] (asynchronous, on any store) and hands the answer back with
//!   [`Node::handle_db_answer`]. Requests in flight are bounded per db link as
//!   db_proxy_server bounds a link's ([`NodeConfig`]).
//!
//! The hub and the registry also take links from other processes (`handle_route_link_*`,
//! `handle_login_link_*`), so msg_servers elsewhere can join; their frames come out as
//! [`LocalOutput::Route`]. A msg_server's optional links (push_server, file_server) are the
//! shell's to open ([`Node::handle_upstream_opened`]).
//!
//! The node is a [`Machine`] like the machines it owns: after every input, drain
//! [`Machine::poll_output`], then sleep until [`Machine::poll_timeout`].

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

use crate::balance::{MsgServerLink, Registry, RegistryEvent};
use crate::msg_server::{Action, ConnId, DbRange, LinkId, MsgServer, MsgServerConfig, Upstream};
use crate::pdu::{Pdu, PduHeader, DEFAULT_MAX_FRAME_LEN, HEADER_LEN};
use crate::proto::other::ImHeartBeat;
use crate::routing::{RouteHub, RouteLink, Transmit};
use crate::time::{Machine, Now};

#[cfg(test)]
mod tests;

/// How often the node tells the registry that its own msg_servers are alive, as a link's
/// heartbeat does between processes (5 s).
pub const ALIVE_INTERVAL_MS: u64 = 5_000;

/// A msg_server of a [`Node`], named by [`Node::add_msg_server`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerId(pub u16);

/// A db_proxy request handed to the shell ([`LocalOutput::Db`]); its answer names it again
/// ([`Node::handle_db_answer`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DbRequest(u64);

/// Settings of a [`Node`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// db links of every msg_server (`ConcurrentDBConnCnt`). Default 2.
    pub db_links: usize,
    /// Requests of one db link given to the shell at once (db_proxy_server's
    /// `max_in_flight`); further ones wait on their link, in order. Default 256.
    pub db_in_flight: usize,
    /// Requests that may wait on one db link (the upstream link's send queue); beyond, a
    /// request is answered at once with db_proxy's failure reply for it (the request table's
    /// `failure_reply`, as for a storage error) and a warning is logged; a request whose
    /// answer cannot say "failed" then gets none, as a full send queue drops it. Default
    /// 65536.
    pub db_queue: usize,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            db_links: 2,
            db_in_flight: 256,
            db_queue: 64 * 1024,
        }
    }
}

/// What the shell is to do.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LocalOutput {
    /// An action of msg_server `server` for the shell: a frame for a client, a close,
    /// pausing or resuming a client, or a frame on a link the shell opened
    /// ([`Node::handle_upstream_opened`]).
    Msg(ServerId, Action),
    /// A db_proxy request of msg_server `server`: answer it with a
    /// [`crate::service::Handler`], then call [`Node::handle_db_answer`] with `request`
    /// (also when the handler gives no answer, so that the slot is freed).
    Db {
        /// Names the request in [`Node::handle_db_answer`].
        request: DbRequest,
        /// The msg_server asking.
        server: ServerId,
        /// The request, as a db_proxy_server would read it.
        pdu: Pdu,
    },
    /// A frame of the route hub for a link of another process
    /// ([`Node::handle_route_link_opened`]).
    Route(Transmit),
    /// What changed in the login registry, for logs.
    Registry(RegistryEvent),
}

/// One db link of a local msg_server.
#[derive(Debug, Default)]
struct DbLink {
    in_flight: usize,
    waiting: VecDeque<Pdu>,
}

/// A msg_server of the node and its in-memory links.
#[derive(Debug)]
struct Local {
    server: MsgServer,
    db: HashMap<LinkId, DbLink>,
    route: (LinkId, RouteLink),
    login: (LinkId, MsgServerLink),
}

/// msg_servers, route hub and login registry of one process, linked in memory (see the
/// module's documentation).
#[derive(Debug)]
pub struct Node {
    config: NodeConfig,
    servers: Vec<Local>,
    hub: RouteHub,
    registry: Registry,
    /// The hub's links to local msg_servers.
    route_links: HashMap<RouteLink, (ServerId, LinkId)>,
    requests: HashMap<DbRequest, (ServerId, LinkId)>,
    next_request: u64,
    next_alive_ms: u64,
    out: VecDeque<LocalOutput>,
}

impl Node {
    /// A node without msg_servers.
    pub fn new(config: NodeConfig) -> Node {
        Node {
            config,
            servers: Vec::new(),
            hub: RouteHub::new(),
            registry: Registry::new(),
            route_links: HashMap::new(),
            requests: HashMap::new(),
            next_request: 0,
            next_alive_ms: 0,
            out: VecDeque::new(),
        }
    }

    /// Adds a msg_server with its db, route and login links, all open at once: it accepts
    /// logins right away. `None` when the node holds `u16::MAX` msg_servers already.
    pub fn add_msg_server(&mut self, now: Now, config: MsgServerConfig) -> Option<ServerId> {
        let id = ServerId(u16::try_from(self.servers.len()).ok()?);
        let mut server = MsgServer::new(config);
        let mut db = HashMap::new();
        for _ in 0..self.config.db_links.max(1) {
            let link = server.handle_upstream_opened(now, Upstream::Db(DbRange::Other));
            db.insert(link, DbLink::default());
        }
        let route_link = self.hub.handle_link_opened(now);
        let route = (
            server.handle_upstream_opened(now, Upstream::Route),
            route_link,
        );
        self.route_links.insert(route_link, (id, route.0));
        let login_link = self.registry.handle_link_opened(now);
        let login = (
            server.handle_upstream_opened(now, Upstream::Login),
            login_link,
        );
        self.servers.push(Local {
            server,
            db,
            route,
            login,
        });
        self.next_alive_ms = now.ms.saturating_add(ALIVE_INTERVAL_MS);
        self.pump(now);
        Some(id)
    }

    /// The msg_server `id`.
    pub fn msg_server(&self, id: ServerId) -> Option<&MsgServer> {
        self.servers.get(usize::from(id.0)).map(|l| &l.server)
    }

    /// The msg_servers, in the order they were added.
    pub fn msg_servers(&self) -> impl Iterator<Item = (ServerId, &MsgServer)> {
        (0u16..)
            .zip(&self.servers)
            .map(|(i, l)| (ServerId(i), &l.server))
    }

    /// The route hub (presence of every user of the system).
    pub fn hub(&self) -> &RouteHub {
        &self.hub
    }

    /// The login registry, for discovery ([`Registry::pick`]).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// db requests given to the shell and not answered yet.
    pub fn db_in_flight(&self) -> usize {
        self.requests.len()
    }

    /// A client connected to msg_server `server` ([`MsgServer::handle_client_opened`]);
    /// `None` for an unknown server.
    pub fn handle_client_opened(
        &mut self,
        now: Now,
        server: ServerId,
        peer_ip: Option<std::net::IpAddr>,
    ) -> Option<ConnId> {
        let conn = self
            .local_mut(server)?
            .server
            .handle_client_opened(now, peer_ip);
        self.pump(now);
        Some(conn)
    }

    /// A client's frame ([`MsgServer::handle_client_frame`]).
    pub fn handle_client_frame(&mut self, now: Now, server: ServerId, conn: ConnId, pdu: Pdu) {
        if let Some(local) = self.local_mut(server) {
            local.server.handle_client_frame(now, conn, pdu);
            self.pump(now);
        }
    }

    /// A client's connection closed ([`MsgServer::handle_client_closed`]).
    pub fn handle_client_closed(&mut self, now: Now, server: ServerId, conn: ConnId) {
        if let Some(local) = self.local_mut(server) {
            local.server.handle_client_closed(now, conn);
            self.pump(now);
        }
    }

    /// A link the shell opened for msg_server `server` (a push_server, a file_server, or
    /// any upstream in another process) is up ([`MsgServer::handle_upstream_opened`]); its
    /// frames come out as [`LocalOutput::Msg`] with [`Action::ToUpstream`].
    pub fn handle_upstream_opened(
        &mut self,
        now: Now,
        server: ServerId,
        kind: Upstream,
    ) -> Option<LinkId> {
        let link = self
            .local_mut(server)?
            .server
            .handle_upstream_opened(now, kind);
        self.pump(now);
        Some(link)
    }

    /// A frame on a link the shell opened ([`MsgServer::handle_upstream_frame`]).
    pub fn handle_upstream_frame(&mut self, now: Now, server: ServerId, link: LinkId, pdu: Pdu) {
        if let Some(local) = self.local_mut(server) {
            if local.is_internal(link) {
                tracing::debug!(?link, "frame for an in-memory link ignored");
                return;
            }
            local.server.handle_upstream_frame(now, link, pdu);
            self.pump(now);
        }
    }

    /// A link the shell opened closed ([`MsgServer::handle_upstream_closed`]).
    pub fn handle_upstream_closed(&mut self, now: Now, server: ServerId, link: LinkId) {
        if let Some(local) = self.local_mut(server) {
            if local.is_internal(link) {
                tracing::debug!(?link, "close of an in-memory link ignored");
                return;
            }
            local.server.handle_upstream_closed(now, link);
            self.pump(now);
        }
    }

    /// The answer to a [`LocalOutput::Db`] request (`None`: the handler sends none). The
    /// next request waiting on its link is given out. Unknown or repeated requests are
    /// ignored.
    pub fn handle_db_answer(&mut self, now: Now, request: DbRequest, answer: Option<Pdu>) {
        let Some((server, link)) = self.requests.remove(&request) else {
            tracing::debug!(?request, "answer to an unknown db request ignored");
            return;
        };
        let next = match self.local_mut(server) {
            Some(local) => {
                if let Some(pdu) = answer {
                    local.server.handle_upstream_frame(now, link, pdu);
                }
                local.db.get_mut(&link).and_then(|db| {
                    db.in_flight = db.in_flight.saturating_sub(1);
                    db.waiting.pop_front()
                })
            }
            None => None,
        };
        if let Some(pdu) = next {
            self.give_out(server, link, pdu);
        }
        self.pump(now);
    }

    /// A msg_server of another process linked to the route hub.
    pub fn handle_route_link_opened(&mut self, now: Now) -> RouteLink {
        self.hub.handle_link_opened(now)
    }

    /// A frame of such a link ([`RouteHub::handle_frame`]); the hub's links to local
    /// msg_servers are not the shell's to feed and are ignored.
    pub fn handle_route_frame(&mut self, now: Now, link: RouteLink, pdu: &Pdu) {
        if self.route_links.contains_key(&link) {
            return;
        }
        self.hub.handle_frame(now, link, pdu);
        self.pump(now);
    }

    /// Such a link closed ([`RouteHub::handle_link_closed`]).
    pub fn handle_route_link_closed(&mut self, now: Now, link: RouteLink) {
        if self.route_links.contains_key(&link) {
            return;
        }
        self.hub.handle_link_closed(now, link);
        self.pump(now);
    }

    /// A msg_server of another process linked to the login registry.
    pub fn handle_login_link_opened(&mut self, now: Now) -> MsgServerLink {
        self.registry.handle_link_opened(now)
    }

    /// A frame (heartbeats too) of such a link ([`Registry::handle_frame`]).
    pub fn handle_login_frame(&mut self, now: Now, link: MsgServerLink, pdu: &Pdu) {
        if self.is_local_login(link) {
            return;
        }
        self.registry.handle_frame(now, link, pdu);
        self.pump(now);
    }

    /// Such a link closed ([`Registry::handle_link_closed`]).
    pub fn handle_login_link_closed(&mut self, now: Now, link: MsgServerLink) {
        if self.is_local_login(link) {
            return;
        }
        self.registry.handle_link_closed(now, link);
        self.pump(now);
    }

    fn is_local_login(&self, link: MsgServerLink) -> bool {
        self.servers.iter().any(|l| l.login.1 == link)
    }

    fn local_mut(&mut self, server: ServerId) -> Option<&mut Local> {
        self.servers.get_mut(usize::from(server.0))
    }

    /// Moves every frame between the machines until none has anything left, keeping the
    /// order of each machine's outputs (and so of each link).
    fn pump(&mut self, now: Now) {
        loop {
            let mut moved = false;
            for index in 0..self.servers.len() {
                let server = ServerId(u16::try_from(index).unwrap_or(u16::MAX));
                while let Some(action) = self
                    .servers
                    .get_mut(index)
                    .and_then(|l| l.server.poll_output())
                {
                    moved = true;
                    self.perform(now, server, action);
                }
            }
            while let Some(transmit) = self.hub.poll_output() {
                moved = true;
                self.relay(now, transmit);
            }
            while let Some(event) = self.registry.poll_output() {
                self.out.push_back(LocalOutput::Registry(event));
            }
            if !moved {
                return;
            }
        }
    }

    /// An action of a local msg_server: frames on its in-memory links go to the hub, the
    /// registry or the db queue; everything else is the shell's.
    fn perform(&mut self, now: Now, server: ServerId, action: Action) {
        let Some(local) = self.servers.get_mut(usize::from(server.0)) else {
            return;
        };
        let Action::ToUpstream(link, frame) = action else {
            self.out.push_back(LocalOutput::Msg(server, action));
            return;
        };
        if frame.wire().len() > DEFAULT_MAX_FRAME_LEN as usize {
            tracing::warn!(?server, ?link, command = %frame.command(), "frame above the frame limit dropped");
            return;
        }
        if link == local.route.0 {
            let route = local.route.1;
            self.hub.handle_frame(now, route, &frame.pdu());
        } else if link == local.login.0 {
            let login = local.login.1;
            self.registry.handle_frame(now, login, &frame.pdu());
        } else if let Some(db) = local.db.get_mut(&link) {
            if db.in_flight < self.config.db_in_flight.max(1) {
                self.give_out(server, link, frame.pdu());
            } else if db.waiting.len() < self.config.db_queue {
                db.waiting.push_back(frame.pdu());
            } else {
                // Not dropped in silence: answered as db_proxy answers a request it cannot
                // serve (the request table's failure reply), so the client hears of it.
                tracing::warn!(?server, ?link, command = %frame.command(), "db request refused: its link's queue is full");
                let pdu = frame.pdu();
                let refusal = pdu
                    .decode_any()
                    .ok()
                    .and_then(|request| crate::command::requests::failure_reply(&request));
                if let Some(answer) = refusal {
                    local
                        .server
                        .handle_upstream_frame(now, link, answer.to_pdu(pdu.seq_num()));
                }
            }
        } else {
            self.out
                .push_back(LocalOutput::Msg(server, Action::ToUpstream(link, frame)));
        }
    }

    /// Hands a db request to the shell and counts it in flight on its link.
    fn give_out(&mut self, server: ServerId, link: LinkId, pdu: Pdu) {
        if let Some(db) = self
            .servers
            .get_mut(usize::from(server.0))
            .and_then(|l| l.db.get_mut(&link))
        {
            db.in_flight += 1;
        }
        self.next_request += 1;
        let request = DbRequest(self.next_request);
        self.requests.insert(request, (server, link));
        self.out.push_back(LocalOutput::Db {
            request,
            server,
            pdu,
        });
    }

    /// A frame of the hub: to a local msg_server's route link, or out to another process.
    fn relay(&mut self, now: Now, transmit: Transmit) {
        let Some(&(server, link)) = self.route_links.get(&transmit.link) else {
            self.out.push_back(LocalOutput::Route(transmit));
            return;
        };
        let Some(pdu) = pdu_of_frame(&transmit.frame) else {
            tracing::warn!(?server, "malformed frame of the route hub dropped");
            return;
        };
        if let Some(local) = self.local_mut(server) {
            local.server.handle_upstream_frame(now, link, pdu);
        }
    }
}

impl Local {
    fn is_internal(&self, link: LinkId) -> bool {
        link == self.route.0 || link == self.login.0 || self.db.contains_key(&link)
    }
}

impl Machine for Node {
    type Output = LocalOutput;

    fn poll_output(&mut self) -> Option<LocalOutput> {
        self.out.pop_front()
    }

    /// The earliest deadline of the msg_servers and the registry, and the next moment the
    /// node tells the registry that its msg_servers are alive.
    fn poll_timeout(&self) -> Option<u64> {
        let alive = (!self.servers.is_empty()).then_some(self.next_alive_ms);
        self.servers
            .iter()
            .filter_map(|l| l.server.poll_timeout())
            .chain(self.registry.poll_timeout())
            .chain(alive)
            .min()
    }

    fn handle_timeout(&mut self, now: Now) {
        if !self.servers.is_empty() && now.ms >= self.next_alive_ms {
            let alive = Pdu::encode_message(&ImHeartBeat {}, 0);
            for local in &self.servers {
                self.registry.handle_frame(now, local.login.1, &alive);
            }
            self.next_alive_ms = now.ms.saturating_add(ALIVE_INTERVAL_MS);
        }
        for local in &mut self.servers {
            if local.server.poll_timeout().is_some_and(|at| at <= now.ms) {
                local.server.handle_timeout(now);
            }
        }
        if self.registry.poll_timeout().is_some_and(|at| at <= now.ms) {
            self.registry.handle_timeout(now);
        }
        self.pump(now);
    }
}

/// A whole frame (header and body) as a [`Pdu`] whose body shares `frame`'s buffer; `None`
/// when it is shorter than a header or its length field disagrees with its size.
fn pdu_of_frame(frame: &Bytes) -> Option<Pdu> {
    let header: &[u8; HEADER_LEN] = frame.get(..HEADER_LEN)?.try_into().ok()?;
    let (len, header) = PduHeader::decode(header);
    if usize::try_from(len).ok()? != frame.len() {
        return None;
    }
    Some(Pdu {
        header,
        body: frame.slice(HEADER_LEN..),
    })
}

/// Answers one [`LocalOutput::Db`] request as db_proxy_server does: decodes it, lets
/// `handler` answer it and gives the answer the request's `seq_num`; `None` when the body
/// does not decode or the handler sends no answer. Hand the result to
/// [`Node::handle_db_answer`].
pub async fn answer_db<H: crate::service::Handler>(handler: &H, pdu: &Pdu) -> Option<Pdu> {
    let request = match pdu.decode_any() {
        Ok(request) => request,
        Err(error) => {
            tracing::debug!(command = %pdu.command(), %error, "undecodable db request, no answer");
            return None;
        }
    };
    let reply = handler.handle(request).await?;
    Some(reply.to_pdu(pdu.seq_num()))
}
