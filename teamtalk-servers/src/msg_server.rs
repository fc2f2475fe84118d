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

use teamtalk_core::domain::Clock;
use teamtalk_core::msg_server::{
    Action, ConnId, DbRange, LinkId, MsgServer, MsgServerConfig, Upstream,
};
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Peer {
    Client(ConnId),
    Up(LinkId),
}

/// Serves clients accepted on `listener` until `shutdown`, keeping the upstream links up.
pub async fn run<C: Clock + 'static>(
    settings: MsgServerSettings,
    listener: impl Into<Listeners>,
    clock: C,
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
    let mut core = MsgServer::new(settings.core.clone(), clock);
    let mut kinds = HashMap::new();
    let mut next_link = 0u32;
    let mut dial = |addr: SocketAddr, kind: Upstream| {
        next_link += 1;
        let id = LinkId(next_link);
        kinds.insert(id, kind);
        let backoff = match kind {
            Upstream::Db(_) => Backoff::capped(
                settings.db_reconnect_delay.min(settings.reconnect_delay),
                settings.reconnect_delay,
            ),
            _ => Backoff::new(settings.reconnect_delay, 5),
        };
        tokio::spawn(link::dial(
            addr,
            Peer::Up(id),
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

    let started = Instant::now();
    let now_ms = || u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut clients: HashMap<ConnId, Outbox> = HashMap::new();
    let mut upstreams: HashMap<LinkId, Outbox> = HashMap::new();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut out = Vec::new();
    loop {
        tokio::select! {
            (stream, peer) = link::accept(&listener) => {
                let conn = core.client_opened_from(now_ms(), Some(peer.ip()));
                link::spawn_serve("client", stream, peer, Peer::Client(conn), settings.client_link.clone(), events_tx.clone(), shutdown.clone());
            }
            Some(event) = events.recv() => {
                match event {
                    LinkEvent::Opened(Peer::Client(conn), outbox) => {
                        clients.insert(conn, outbox);
                    }
                    LinkEvent::Opened(Peer::Up(id), outbox) => {
                        upstreams.insert(id, outbox);
                        if let Some(&kind) = kinds.get(&id) {
                            info!(?kind, "upstream link up");
                            core.upstream_opened(id, kind, &mut out);
                        }
                    }
                    LinkEvent::Frame(Peer::Client(conn), pdu) => core.client_frame(conn, pdu, now_ms(), &mut out),
                    LinkEvent::Frame(Peer::Up(id), pdu) => {
                        if let Some(&kind) = kinds.get(&id) {
                            core.upstream_frame(id, kind, pdu, &mut out);
                        }
                    }
                    LinkEvent::Closed(Peer::Client(conn)) => {
                        clients.remove(&conn);
                        core.client_closed(conn, &mut out);
                    }
                    LinkEvent::Closed(Peer::Up(id)) => {
                        upstreams.remove(&id);
                        info!(kind = ?kinds.get(&id), "upstream link down");
                        core.upstream_closed(id, &mut out);
                    }
                }
                perform(&mut out, &mut clients, &upstreams);
            }
            _ = ticker.tick() => {
                core.tick(now_ms(), &mut out);
                perform(&mut out, &mut clients, &upstreams);
            }
            _ = shutdown.wait() => break,
        }
    }
    Ok(())
}

fn perform(
    out: &mut Vec<Action>,
    clients: &mut HashMap<ConnId, Outbox>,
    upstreams: &HashMap<LinkId, Outbox>,
) {
    for action in out.drain(..) {
        match action {
            Action::ToClient(conn, pdu) => {
                if let Some(outbox) = clients.get(&conn) {
                    if let Err(error) = outbox.send_pdu(&pdu) {
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
            Action::ToUpstream(link, pdu) => match upstreams.get(&link) {
                Some(outbox) => {
                    if let Err(error) = outbox.send_pdu(&pdu) {
                        warn!(link = link.0, %error, command = %pdu.command(), "upstream frame dropped");
                    }
                }
                None => debug!(link = link.0, "upstream gone, frame dropped"),
            },
        }
    }
}
