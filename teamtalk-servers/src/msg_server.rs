//! msg_server: owns the client connections and links them to db_proxy, route_server and
//! login_server (spec/servers.md §3), a shell over [`teamtalk_core::msg_server::MsgServer`].
//!
//! One hub task owns the core state; every client connection and upstream link is a
//! [`link`] task reporting to it. The hub runs the core's decisions: frames to clients and
//! upstreams, closes, pausing and resuming the reading of a client. Budgets per client
//! connection: the core's requests in flight upstream (beyond, the client is not read), and
//! the link's queued answer bytes (above half of `outbox_bytes` the client is not read; a
//! send that finds the queue full — frames or bytes — disconnects it). A heavy client so
//! slows itself only. The hub never awaits a link: every send is `try`-style.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use teamtalk_core::msg_server::{
    Action, ConnId, DbRange, LinkId, MsgServer, MsgServerConfig, Upstream,
};
use teamtalk_core::time::{Epoch, Machine};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::link::{self, Backoff, LinkConfig, LinkEvent, Listeners, Outbox};
use crate::shutdown::Shutdown;

/// Settings of a msg_server.
#[derive(Clone, Debug)]
pub struct MsgServerSettings {
    /// The core settings (advertised addresses, limits, timeouts).
    pub core: MsgServerConfig,
    /// db_proxy_servers (`DBServerIP{n}`/`DBServerPort{n}`).
    pub db_servers: Vec<SocketAddr>,
    /// Connections per db_proxy_server (`ConcurrentDBConnCnt`, default 2).
    pub db_connections: usize,
    /// route_servers (`RouteServerIP{n}`/`RouteServerPort{n}`).
    pub route_servers: Vec<SocketAddr>,
    /// login_servers (`LoginServerIP{n}`/`LoginServerPort{n}`).
    pub login_servers: Vec<SocketAddr>,
    /// push_servers (`PushServerIP{n}`/`PushServerPort{n}`).
    pub push_servers: Vec<SocketAddr>,
    /// file_servers' msg_server ports (`FileServerIP{n}`/`FileServerPort{n}`).
    pub file_servers: Vec<SocketAddr>,
    /// Client links (no heartbeats of our own; the core applies the idle timeouts).
    pub client_link: LinkConfig,
    /// Upstream links (heartbeat 5 s, timeout 30 s).
    pub upstream_link: LinkConfig,
    /// First reconnect delay of upstream links other than db_proxy (4 s, doubling to 64 s,
    /// then 4 s again), and the cap of the db_proxy links' delay.
    pub reconnect_delay: Duration,
    /// First reconnect delay of db_proxy links (100 ms, doubling up to `reconnect_delay`):
    /// messages wait for them (docs/compatibility.md).
    pub db_reconnect_delay: Duration,
}

impl Default for MsgServerSettings {
    fn default() -> Self {
        MsgServerSettings {
            core: MsgServerConfig::default(),
            db_servers: Vec::new(),
            db_connections: 2,
            route_servers: Vec::new(),
            login_servers: Vec::new(),
            push_servers: Vec::new(),
            file_servers: Vec::new(),
            client_link: LinkConfig::client(),
            upstream_link: LinkConfig {
                outbox: 64 * 1024,
                ..LinkConfig::default()
            },
            reconnect_delay: Duration::from_secs(4),
            db_reconnect_delay: DB_RECONNECT_DELAY,
        }
    }
}

/// First reconnect delay of db_proxy links.
pub const DB_RECONNECT_DELAY: Duration = Duration::from_millis(100);

/// Who a link task reports for: a client connection, or one dialled upstream (an index into
/// the dial list; every time it connects, the core gives it a new [`LinkId`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Peer {
    Client(ConnId),
    Up(usize),
}

/// Serves clients accepted on `listener` until `shutdown`, keeping the upstream links up.
///
/// One loop owns the core: after every input (an accepted client, a link event, a due
/// deadline) it drains [`Machine::poll_output`] fully, then sleeps until the next input or
/// [`Machine::poll_timeout`].
pub async fn run(
    settings: MsgServerSettings,
    listener: impl Into<Listeners>,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    let listener: Listeners = listener.into();
    // The advertised capacity is also the most clients this msg_server holds, and it
    // advertises no more than its listener's cap.
    listener.cap_total(usize::try_from(settings.core.max_conn_cnt).unwrap_or(usize::MAX));
    let mut settings = settings;
    if let Ok(cap) = u32::try_from(listener.limits().max_total) {
        if cap != 0 {
            settings.core.max_conn_cnt = settings.core.max_conn_cnt.min(cap);
        }
    }
    info!(addr = ?listener.local_addrs(), max_conn_cnt = listener.limits().max_total, "msg_server listening");
    let (events_tx, mut events) = mpsc::channel::<LinkEvent<Peer>>(8192);
    let mut core = MsgServer::new(settings.core.clone());
    // What each dialled link leads to, and the core's id of its current connection.
    let mut kinds: Vec<Upstream> = Vec::new();
    let mut dial = |addr: SocketAddr, kind: Upstream| {
        let index = kinds.len();
        kinds.push(kind);
        let backoff = match kind {
            Upstream::Db(_) => Backoff::capped(
                settings.db_reconnect_delay.min(settings.reconnect_delay),
                settings.reconnect_delay,
            ),
            _ => Backoff::new(settings.reconnect_delay, 5),
        };
        tokio::spawn(link::dial(
            addr,
            Peer::Up(index),
            settings.upstream_link.clone(),
            backoff,
            events_tx.clone(),
            shutdown.clone(),
        ));
    };
    // The first half of the db_proxy entries serve logins first (spec/wire.md §9).
    let login_entries = settings.db_servers.len() / 2;
    for (i, addr) in settings.db_servers.iter().enumerate() {
        let range = if i < login_entries {
            DbRange::Login
        } else {
            DbRange::Other
        };
        for _ in 0..settings.db_connections.max(1) {
            dial(*addr, Upstream::Db(range));
        }
    }
    for addr in &settings.route_servers {
        dial(*addr, Upstream::Route);
    }
    for addr in &settings.login_servers {
        dial(*addr, Upstream::Login);
    }
    for addr in &settings.push_servers {
        dial(*addr, Upstream::Push);
    }
    for addr in &settings.file_servers {
        dial(*addr, Upstream::File);
    }

    let epoch = Epoch::start();
    let mut clients: HashMap<ConnId, Outbox> = HashMap::new();
    let mut upstreams: HashMap<LinkId, Outbox> = HashMap::new();
    let mut current: HashMap<usize, LinkId> = HashMap::new();
    loop {
        let wake = core.poll_timeout().map(|ms| epoch.instant_at(ms));
        tokio::select! {
            (stream, peer) = link::accept(&listener) => {
                let conn = core.handle_client_opened(epoch.now(), Some(peer.ip()));
                link::spawn_serve("client", stream, peer, Peer::Client(conn), settings.client_link.clone(), events_tx.clone(), shutdown.clone());
            }
            Some(event) = events.recv() => {
                let now = epoch.now();
                match event {
                    LinkEvent::Opened(Peer::Client(conn), outbox) => {
                        clients.insert(conn, outbox);
                    }
                    LinkEvent::Opened(Peer::Up(index), outbox) => {
                        if let Some(&kind) = kinds.get(index) {
                            info!(?kind, "upstream link up");
                            if let Some(old) = current.remove(&index) {
                                upstreams.remove(&old);
                                core.handle_upstream_closed(now, old);
                            }
                            let id = core.handle_upstream_opened(now, kind);
                            current.insert(index, id);
                            upstreams.insert(id, outbox);
                        }
                    }
                    LinkEvent::Frame(Peer::Client(conn), pdu) => core.handle_client_frame(now, conn, pdu),
                    LinkEvent::Frame(Peer::Up(index), pdu) => {
                        if let Some(&id) = current.get(&index) {
                            core.handle_upstream_frame(now, id, pdu);
                        }
                    }
                    LinkEvent::Closed(Peer::Client(conn)) => {
                        clients.remove(&conn);
                        core.handle_client_closed(now, conn);
                    }
                    LinkEvent::Closed(Peer::Up(index)) => {
                        info!(kind = ?kinds.get(index), "upstream link down");
                        if let Some(id) = current.remove(&index) {
                            upstreams.remove(&id);
                            core.handle_upstream_closed(now, id);
                        }
                    }
                }
            }
            () = sleep_until(wake), if wake.is_some() => {
                core.handle_timeout(epoch.now());
            }
            _ = shutdown.wait() => break,
        }
        perform(&mut core, &mut clients, &upstreams);
    }
    Ok(())
}

/// Sleeps until `at` (never returns without one; the caller guards with `if`).
async fn sleep_until(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// Drains the core's actions fully and performs them.
fn perform(
    core: &mut MsgServer,
    clients: &mut HashMap<ConnId, Outbox>,
    upstreams: &HashMap<LinkId, Outbox>,
) {
    while let Some(action) = core.poll_output() {
        match action {
            // A frame is encoded once in the core; every recipient's outbox takes a clone of
            // the same `Bytes` (no copy, no serializing here).
            Action::ToClient(conn, frame) => {
                if let Some(outbox) = clients.get(&conn) {
                    if let Err(error) = outbox.send(frame.wire().clone()) {
                        debug!(conn = conn.0, %error, "client does not keep up, disconnecting");
                        // Dropping the outbox closes the link; its Closed event tells the core.
                        clients.remove(&conn);
                    }
                }
            }
            Action::Close(conn) => {
                clients.remove(&conn);
            }
            Action::PauseReading(conn) => {
                if let Some(outbox) = clients.get(&conn) {
                    outbox.pause_reading(true);
                }
            }
            Action::ResumeReading(conn) => {
                if let Some(outbox) = clients.get(&conn) {
                    outbox.pause_reading(false);
                }
            }
            Action::ToUpstream(link, frame) => match upstreams.get(&link) {
                Some(outbox) => {
                    if let Err(error) = outbox.send(frame.wire().clone()) {
                        warn!(link = link.0, %error, command = %frame.command(), "upstream frame dropped");
                    }
                }
                None => debug!(link = link.0, "upstream gone, frame dropped"),
            },
        }
    }
}
