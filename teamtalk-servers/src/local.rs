//! msg_servers, route_server and login_server in one task, linked in memory: a shell over
//! [`teamtalk_core::local::Node`] (docs/architecture.md, "One process").
//!
//! The node's db requests are answered through a [`Handler`] on their own tasks (the node
//! bounds them per db link as db_proxy_server does). msg_servers of other processes still
//! link to the route hub and the login registry over TCP (`route` and `login` listeners;
//! roles of this process, such as http_msg_server, come in through their in-process doors),
//! and push_server / file_server links are dialled as a msg_server dials them — in memory
//! when they are [`LinkTarget::Memory`] ([`crate::link::memory`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use teamtalk_core::balance::{MsgServerLink, Registry, RegistryEvent};
use teamtalk_core::local::{answer_db, DbRequest, LocalOutput, Node, ServerId};
use teamtalk_core::msg_server::{Action, ConnId, LinkId, MsgServerConfig, Upstream};
use teamtalk_core::routing::RouteLink;
use teamtalk_core::service::Handler;
use teamtalk_core::time::{Epoch, Machine};
use teamtalk_core::Pdu;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::link::{self, Backoff, LinkConfig, LinkEvent, LinkTarget, Listeners, Outbox};
use crate::shutdown::Shutdown;

/// The node of a process, shared with the login_server's HTTP discovery
/// ([`crate::login_server::RegistryView`]).
pub type SharedNode = Arc<Mutex<Node>>;

impl crate::login_server::RegistryView for Mutex<Node> {
    fn with_registry(&self, read: &mut dyn FnMut(&Registry)) {
        read(
            self.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .registry(),
        );
    }
}

/// One msg_server of the node: where its clients connect, its core settings, and the
/// push_servers and file_servers it dials.
#[derive(Debug)]
pub struct LocalMsgServer {
    /// The client listener.
    pub listener: Listeners,
    /// The core settings (advertised address, limits, timeouts).
    pub core: MsgServerConfig,
    /// push_servers: addresses, or listeners of this process.
    pub push_servers: Vec<LinkTarget>,
    /// file_servers' msg_server ports: addresses, or listeners of this process.
    pub file_servers: Vec<LinkTarget>,
}

/// Links of the node's shell.
#[derive(Clone, Debug)]
pub struct LocalSettings {
    /// Client links (no heartbeats of our own; the core applies the idle timeouts).
    pub client_link: LinkConfig,
    /// Dialled push_server and file_server links (heartbeat 5 s, timeout 30 s).
    pub upstream_link: LinkConfig,
    /// Links of msg_servers of other processes (route and login ports).
    pub external_link: LinkConfig,
    /// First reconnect delay of dialled links (4 s, doubling to 64 s).
    pub reconnect_delay: Duration,
}

impl Default for LocalSettings {
    fn default() -> Self {
        LocalSettings {
            client_link: LinkConfig::client(),
            upstream_link: LinkConfig {
                outbox: 64 * 1024,
                ..LinkConfig::default()
            },
            external_link: LinkConfig::default(),
            reconnect_delay: Duration::from_secs(4),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Peer {
    Client(ServerId, ConnId),
    /// A dialled link: an index into the kinds table.
    Up(usize),
    Route(u64),
    Login(u64),
}

/// What the loop hears besides link events.
enum Input {
    Accepted(ServerId, link::Conn, SocketAddr),
    Answer(DbRequest, Option<Pdu>),
}

/// Adds every msg_server to `node` and serves them, with the route and login ports for other
/// processes, until `shutdown`. `epoch` is the clock of every [`teamtalk_core::time::Now`]
/// given to the node (the HTTP discovery reads the registry on the same scale).
#[allow(clippy::too_many_arguments)]
pub async fn run<H: Handler + 'static>(
    settings: LocalSettings,
    servers: Vec<LocalMsgServer>,
    route: Listeners,
    login: Listeners,
    node: SharedNode,
    epoch: Epoch,
    handler: Arc<H>,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    let (events_tx, mut events) = mpsc::channel::<LinkEvent<Peer>>(8192);
    let (inputs_tx, mut inputs) = mpsc::channel::<Input>(8192);
    let mut kinds: Vec<(ServerId, Upstream)> = Vec::new();
    for msg in servers {
        let mut core = msg.core;
        // The advertised capacity is also the most clients this msg_server holds, and it
        // advertises no more than its listener's cap (as msg_server::run).
        msg.listener
            .cap_total(usize::try_from(core.max_conn_cnt).unwrap_or(usize::MAX));
        if let Ok(cap) = u32::try_from(msg.listener.limits().max_total) {
            if cap != 0 {
                core.max_conn_cnt = core.max_conn_cnt.min(cap);
            }
        }
        let added = node
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .add_msg_server(epoch.now(), core);
        let Some(id) = added else {
            warn!("too many msg_servers in one node");
            break;
        };
        info!(server = id.0, addr = ?msg.listener.local_addrs(), "msg_server listening (in-process links)");
        for (addrs, kind) in [
            (msg.push_servers, Upstream::Push),
            (msg.file_servers, Upstream::File),
        ] {
            for target in addrs {
                let index = kinds.len();
                kinds.push((id, kind));
                tokio::spawn(link::dial(
                    target,
                    Peer::Up(index),
                    settings.upstream_link.clone(),
                    Backoff::new(settings.reconnect_delay, 5),
                    events_tx.clone(),
                    shutdown.clone(),
                ));
            }
        }
        let (tx, mut stop) = (inputs_tx.clone(), shutdown.clone());
        tokio::spawn(async move {
            loop {
                let (conn, peer) = tokio::select! {
                    accepted = link::accept(&msg.listener) => accepted,
                    _ = stop.wait() => return,
                };
                if tx.send(Input::Accepted(id, conn, peer)).await.is_err() {
                    return;
                }
            }
        });
    }
    info!(route = ?route.local_addrs(), login = ?login.local_addrs(), "route_server and login_server listening");
    // Heartbeats count as signs of life: a msg_server silent for 10 s is not offered.
    let mut login_link = settings.external_link.clone();
    login_link.report_heartbeats = true;
    let mut next_link = 0u64;
    let mut clients: HashMap<(ServerId, ConnId), Outbox> = HashMap::new();
    let mut upstreams: HashMap<(ServerId, LinkId), Outbox> = HashMap::new();
    let mut current: HashMap<usize, (ServerId, LinkId)> = HashMap::new();
    let mut routes: HashMap<u64, (RouteLink, Outbox)> = HashMap::new();
    let mut route_outboxes: HashMap<RouteLink, Outbox> = HashMap::new();
    let mut logins: HashMap<u64, (MsgServerLink, Outbox)> = HashMap::new();
    loop {
        let wake = node
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .poll_timeout()
            .map(|ms| epoch.instant_at(ms));
        let far = std::time::Instant::now() + Duration::from_secs(3600);
        let mut answers = Vec::new();
        {
            // What happened, under the lock; its outputs are performed below.
            let event = tokio::select! {
                Some(input) = inputs.recv() => Some(Ok(input)),
                Some(event) = events.recv() => Some(Err(event)),
                (stream, peer) = link::accept_link(&route) => {
                    next_link += 1;
                    link::spawn_serve("route", stream, peer, Peer::Route(next_link), settings.external_link.clone(), events_tx.clone(), shutdown.clone());
                    None
                }
                (stream, peer) = link::accept_link(&login) => {
                    next_link += 1;
                    link::spawn_serve("login", stream, peer, Peer::Login(next_link), login_link.clone(), events_tx.clone(), shutdown.clone());
                    None
                }
                () = tokio::time::sleep_until(wake.unwrap_or(far).into()), if wake.is_some() => {
                    node.lock().unwrap_or_else(PoisonError::into_inner).handle_timeout(epoch.now());
                    None
                }
                _ = shutdown.wait() => break,
            };
            let mut node = node.lock().unwrap_or_else(PoisonError::into_inner);
            let now = epoch.now();
            match event {
                None => {}
                Some(Ok(Input::Accepted(server, conn, peer))) => {
                    if let Some(id) = node.handle_client_opened(now, server, Some(peer.ip())) {
                        link::spawn_serve(
                            "client",
                            conn,
                            peer,
                            Peer::Client(server, id),
                            settings.client_link.clone(),
                            events_tx.clone(),
                            shutdown.clone(),
                        );
                    }
                }
                Some(Ok(Input::Answer(request, answer))) => {
                    node.handle_db_answer(now, request, answer)
                }
                Some(Err(LinkEvent::Opened(peer, outbox))) => match peer {
                    Peer::Client(server, conn) => {
                        clients.insert((server, conn), outbox);
                    }
                    Peer::Up(index) => {
                        if let Some(&(server, kind)) = kinds.get(index) {
                            info!(server = server.0, ?kind, "upstream link up");
                            if let Some(old) = current.remove(&index) {
                                upstreams.remove(&old);
                                node.handle_upstream_closed(now, old.0, old.1);
                            }
                            if let Some(id) = node.handle_upstream_opened(now, server, kind) {
                                current.insert(index, (server, id));
                                upstreams.insert((server, id), outbox);
                            }
                        }
                    }
                    Peer::Route(id) => {
                        let link = node.handle_route_link_opened(now);
                        info!(id, %link, "linked to route_server");
                        route_outboxes.insert(link, outbox.clone());
                        routes.insert(id, (link, outbox));
                    }
                    Peer::Login(id) => {
                        // The login_server sends nothing, but the link lives as long as its outbox.
                        logins.insert(id, (node.handle_login_link_opened(now), outbox));
                    }
                },
                Some(Err(LinkEvent::Frame(peer, pdu))) => match peer {
                    Peer::Client(server, conn) => node.handle_client_frame(now, server, conn, pdu),
                    Peer::Up(index) => {
                        if let Some(&(server, id)) = current.get(&index) {
                            node.handle_upstream_frame(now, server, id, pdu);
                        }
                    }
                    Peer::Route(id) => {
                        if let Some((link, _)) = routes.get(&id) {
                            node.handle_route_frame(now, *link, &pdu);
                        }
                    }
                    Peer::Login(id) => {
                        if let Some((link, _)) = logins.get(&id) {
                            node.handle_login_frame(now, *link, &pdu);
                        }
                    }
                },
                Some(Err(LinkEvent::Closed(peer))) => match peer {
                    Peer::Client(server, conn) => {
                        clients.remove(&(server, conn));
                        node.handle_client_closed(now, server, conn);
                    }
                    Peer::Up(index) => {
                        info!(kind = ?kinds.get(index), "upstream link down");
                        if let Some((server, id)) = current.remove(&index) {
                            upstreams.remove(&(server, id));
                            node.handle_upstream_closed(now, server, id);
                        }
                    }
                    Peer::Route(id) => {
                        if let Some((link, _)) = routes.remove(&id) {
                            info!(id, %link, "route link closed");
                            route_outboxes.remove(&link);
                            node.handle_route_link_closed(now, link);
                        }
                    }
                    Peer::Login(id) => {
                        if let Some((link, _)) = logins.remove(&id) {
                            info!(id, %link, "login link closed");
                            node.handle_login_link_closed(now, link);
                        }
                    }
                },
            }
            while let Some(output) = node.poll_output() {
                match output {
                    LocalOutput::Db { request, pdu, .. } => answers.push((request, pdu)),
                    LocalOutput::Msg(server, action) => {
                        perform(server, action, &mut clients, &upstreams);
                    }
                    LocalOutput::Route(transmit) => {
                        if let Some(outbox) = route_outboxes.get(&transmit.link) {
                            if let Err(error) = outbox.send(transmit.frame) {
                                warn!(link = %transmit.link, %error, "relay dropped");
                            }
                        }
                    }
                    LocalOutput::Registry(event) => log_registry(&event),
                    other => debug!(?other, "node output"),
                }
            }
        }
        for (request, pdu) in answers {
            let (handler, tx) = (handler.clone(), inputs_tx.clone());
            tokio::spawn(async move {
                let answer = answer_db(&*handler, &pdu).await;
                let _ = tx.send(Input::Answer(request, answer)).await;
            });
        }
    }
    Ok(())
}

fn log_registry(event: &RegistryEvent) {
    match event {
        RegistryEvent::Registered(link, info) => {
            info!(%link, ip1 = %info.ip1, port = info.port, cur = info.cur_conn_cnt, "msg_server registered");
        }
        RegistryEvent::Silent(link) => info!(%link, "msg_server silent, not offered"),
        RegistryEvent::Resumed(link) => info!(%link, "msg_server heard again, offered"),
        other => debug!(?other, "registry event"),
    }
}

/// Performs one action of a msg_server (as msg_server.rs's `perform`).
fn perform(
    server: ServerId,
    action: Action,
    clients: &mut HashMap<(ServerId, ConnId), Outbox>,
    upstreams: &HashMap<(ServerId, LinkId), Outbox>,
) {
    match action {
        Action::ToClient(conn, frame) => {
            if let Some(outbox) = clients.get(&(server, conn)) {
                if let Err(error) = outbox.send(frame.wire().clone()) {
                    debug!(conn = conn.0, %error, "client does not keep up, disconnecting");
                    // Dropping the outbox closes the link; its Closed event tells the core.
                    clients.remove(&(server, conn));
                }
            }
        }
        Action::Close(conn) => {
            clients.remove(&(server, conn));
        }
        Action::PauseReading(conn) => {
            if let Some(outbox) = clients.get(&(server, conn)) {
                outbox.pause_reading(true);
            }
        }
        Action::ResumeReading(conn) => {
            if let Some(outbox) = clients.get(&(server, conn)) {
                outbox.pause_reading(false);
            }
        }
        Action::ToUpstream(link, frame) => match upstreams.get(&(server, link)) {
            Some(outbox) => {
                if let Err(error) = outbox.send(frame.wire().clone()) {
                    warn!(link = link.0, %error, command = %frame.command(), "upstream frame dropped");
                }
            }
            None => debug!(link = link.0, "upstream gone, frame dropped"),
        },
    }
}
