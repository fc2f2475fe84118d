//! Everything in one process, as `teamtalk serve` runs it: msg_servers, route_server and
//! login_server share one in-memory [`teamtalk_core::local::Node`] ([`crate::local`]), whose
//! db requests the store answers directly (docs/architecture.md, "One process"). The route,
//! login and db_proxy ports stay open with the same frames as separate processes, so a
//! msg_server on another machine (or http_msg_server) can join this system through them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::limits::{ListenConfig, ServeLimits, ServePort};
use crate::link::{LinkTarget, Listeners};
use teamtalk_core::domain::Timestamp;
use teamtalk_core::msg_server::MsgServerConfig;
use teamtalk_core::service::DbProxy;
use teamtalk_core::store::Store;
use tokio::task::JoinSet;
use tracing::warn;

use crate::clock::SystemClock;
use crate::db_proxy::DbProxyServerConfig;
use crate::login_server::LoginServerConfig;
use crate::shutdown::{self, Shutdown, ShutdownTrigger};

/// Where the all-in-one system listens and how it behaves.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Address the client-facing listeners bind to (msg_server, login_server HTTP, msfs,
    /// file_server's client port). Default 127.0.0.1.
    pub listen: IpAddr,
    /// Address the internal ports bind to (login_server's msg_server port, route_server,
    /// db_proxy_server, push_server, file_server's msg_server port), whatever `listen` is.
    /// Default 127.0.0.1; only an explicit setting puts them elsewhere (docs/deploy.md
    /// "Trust model").
    pub internal_listen: IpAddr,
    /// Peers allowed on the internal ports besides 127.0.0.1, ::1 and `internal_listen`
    /// (always allowed: roles of other processes on this machine). Default: none beyond
    /// those. (This process's own roles link in memory and need no port.)
    pub allowed_peers: crate::trust::AllowedPeers,
    /// Address of http_msg_server (the key-protected admin API). Default: `internal_listen`.
    pub http_msg_listen: Option<IpAddr>,
    /// Mutual TLS on every internal link (cargo feature `tls`): the internal ports accept only
    /// TLS with a client certificate of the CA, and this process's roles dial with TLS.
    /// Default: plain TCP.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::TlsFiles>,
    /// login_server HTTP port (clients' discovery). Default 8080; 0 picks a free port.
    pub http_port: u16,
    /// msg_server client ports, one msg_server per entry. Default `[8000]`.
    pub msg_ports: Vec<u16>,
    /// login_server port for msg_servers. Default 8100.
    pub login_port: u16,
    /// route_server port. Default 8200.
    pub route_port: u16,
    /// db_proxy_server port. Default 10600.
    pub db_proxy_port: u16,
    /// Address clients are told to connect to (`IpAddr1`). Default: the listen address.
    pub advertise: Option<String>,
    /// login_server settings (msfs and discovery URLs handed to clients).
    pub login: LoginServerConfig,
    /// Core msg_server settings (rate limit, timeouts); addresses and ports are filled in.
    pub msg: MsgServerConfig,
    /// First reconnect delay of the internal links. Default 4 s.
    pub reconnect_delay: Duration,
    /// How often group sessions of members are refreshed. Default 5 s.
    pub group_sync_interval: Duration,
    /// msfs port. Default 8700.
    pub msfs_port: u16,
    /// Where msfs keeps files; `None`: no msfs in this process.
    pub msfs_dir: Option<std::path::PathBuf>,
    /// Bytes all msfs uploads in flight may announce together. Default 64 MiB
    /// (`msfs_upload_budget_mb`).
    pub msfs_upload_budget: usize,
    /// How long an msfs upload waits for room in that budget before a 503. Default 5 s
    /// (`msfs_upload_wait_secs`).
    pub msfs_upload_wait: Duration,
    /// http_msg_server port. Default 8400.
    pub http_msg_port: u16,
    /// The API key of http_msg_server; `None`: no http_msg_server in this process.
    pub http_api_key: Option<String>,
    /// push_server's backends; none configured: no push_server, no pushes.
    pub push: crate::push::PushSettings,
    /// push_server port (msg_servers' links). Default 8500.
    pub push_port: u16,
    /// Where file_server keeps offline files; `None`: no file_server in this process.
    pub file_dir: Option<std::path::PathBuf>,
    /// file_server port for clients. Default 8600.
    pub file_client_port: u16,
    /// file_server port for msg_servers. Default 8601.
    pub file_ms_port: u16,
    /// Connection caps, backlogs and HTTP timeouts of every port.
    pub limits: crate::limits::ServeLimits,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: IpAddr::V4(Ipv4Addr::LOCALHOST),
            internal_listen: IpAddr::V4(Ipv4Addr::LOCALHOST),
            allowed_peers: crate::trust::AllowedPeers::none(),
            http_msg_listen: None,
            #[cfg(feature = "tls")]
            tls: None,
            http_port: 8080,
            msg_ports: vec![8000],
            login_port: 8100,
            route_port: 8200,
            db_proxy_port: 10600,
            advertise: None,
            login: LoginServerConfig::default(),
            msg: MsgServerConfig::default(),
            reconnect_delay: Duration::from_secs(4),
            group_sync_interval: Duration::from_secs(5),
            msfs_port: 8700,
            msfs_dir: None,
            msfs_upload_budget: 64 << 20,
            msfs_upload_wait: Duration::from_secs(5),
            http_msg_port: 8400,
            http_api_key: None,
            push: crate::push::PushSettings::default(),
            push_port: 8500,
            file_dir: None,
            file_client_port: 8600,
            file_ms_port: 8601,
            limits: crate::limits::ServeLimits::default(),
        }
    }
}

impl ServeConfig {
    /// Every port 0 (free ports picked by the system): for tests and benchmarks.
    pub fn ephemeral(msg_servers: usize) -> ServeConfig {
        ServeConfig {
            http_port: 0,
            msg_ports: vec![0; msg_servers.max(1)],
            login_port: 0,
            route_port: 0,
            db_proxy_port: 0,
            msfs_port: 0,
            http_msg_port: 0,
            push_port: 0,
            file_client_port: 0,
            file_ms_port: 0,
            reconnect_delay: Duration::from_millis(200),
            ..ServeConfig::default()
        }
    }
}

/// A running system.
#[derive(Debug)]
pub struct Running {
    /// The login_server's HTTP address: `http://{http}/msg_server`.
    pub http: SocketAddr,
    /// The msg_servers' client addresses.
    pub msg_servers: Vec<SocketAddr>,
    /// The login_server's msg_server port.
    pub login: SocketAddr,
    /// The route_server.
    pub route: SocketAddr,
    /// The db_proxy_server.
    pub db_proxy: SocketAddr,
    /// msfs, when started.
    pub msfs: Option<SocketAddr>,
    /// http_msg_server, when started.
    pub http_msg: Option<SocketAddr>,
    /// file_server's client port, when started.
    pub file_server: Option<SocketAddr>,
    /// file_server's port for msg_servers of other processes, when started.
    pub file_server_links: Option<SocketAddr>,
    /// push_server's port for msg_servers of other processes, when started.
    pub push_server: Option<SocketAddr>,
    trigger: ShutdownTrigger,
    tasks: JoinSet<std::io::Result<()>>,
}

impl Running {
    /// Stops every role (db_proxy finishes the requests in flight) and waits for them.
    pub async fn stop(mut self) -> std::io::Result<()> {
        self.trigger.trigger();
        self.wait().await
    }

    /// Waits until every role has stopped (after a shutdown, or a failure).
    pub async fn wait(&mut self) -> std::io::Result<()> {
        let mut result = Ok(());
        while let Some(joined) = self.tasks.join_next().await {
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(error)) => result = Err(error),
                Err(error) => result = Err(std::io::Error::other(error)),
            }
        }
        result
    }

    /// A handle that triggers the shutdown (for signal handlers).
    pub fn trigger(&self) -> &ShutdownTrigger {
        &self.trigger
    }
}

async fn bind(
    ip: IpAddr,
    port: u16,
    role: &str,
    config: ListenConfig,
) -> std::io::Result<Listeners> {
    Listeners::bind_with(&[SocketAddr::new(ip, port)], &config)
        .await
        .map_err(|error| std::io::Error::new(error.kind(), format!("{role}: {error}")))
}

/// How the internal ports are guarded: the allow-list and, with the `tls` feature, TLS.
struct Guard {
    allowed: crate::trust::AllowedPeers,
    #[cfg(feature = "tls")]
    tls: Option<(crate::tls::TlsAcceptor, crate::tls::TlsConnector)>,
}

impl Guard {
    fn new(config: &ServeConfig, allowed: crate::trust::AllowedPeers) -> std::io::Result<Guard> {
        #[cfg(feature = "tls")]
        let tls = match &config.tls {
            Some(files) => {
                let bad = |e: crate::tls::TlsError| {
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string())
                };
                Some((
                    files.acceptor().map_err(bad)?,
                    files.connector().map_err(bad)?,
                ))
            }
            None => None,
        };
        #[cfg(not(feature = "tls"))]
        let _ = config;
        Ok(Guard {
            allowed,
            #[cfg(feature = "tls")]
            tls,
        })
    }

    /// The settings of this process's dialed internal links.
    fn link(&self, link: crate::link::LinkConfig) -> crate::link::LinkConfig {
        #[cfg(feature = "tls")]
        let link = crate::link::LinkConfig {
            tls: self.tls.as_ref().map(|(_, connector)| connector.clone()),
            ..link
        };
        link
    }
}

/// Binds an internal port on `ip`, open only to the peers `guard` allows.
async fn bind_internal(
    ip: IpAddr,
    port: u16,
    role: &'static str,
    guard: &Guard,
    config: ListenConfig,
) -> std::io::Result<crate::link::Listeners> {
    let listener = bind(ip, port, role, config).await?;
    let gate = crate::trust::PeerGate::new(role, guard.allowed.clone());
    let listeners = listener.guarded(gate);
    #[cfg(feature = "tls")]
    if let Some((acceptor, _)) = &guard.tls {
        return Ok(listeners.with_tls(acceptor.clone()));
    }
    Ok(listeners)
}

/// Binds every listener and starts every role on `store`.
pub async fn start<S: Store + 'static>(config: ServeConfig, store: S) -> std::io::Result<Running> {
    let ip = config.listen;
    let limits = ServeLimits {
        budget: config.limits.budget(),
        ..config.limits
    };
    let internal_cfg = limits.listen(ServePort::Internal);
    let internal = config.internal_listen;
    // Roles of other processes on this machine come from 127.0.0.1 or ::1 (or the internal
    // address itself); this process's own roles link in memory and use no port.
    let mut allowed = config
        .allowed_peers
        .clone()
        .with(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .with(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST));
    if !internal.is_unspecified() {
        allowed = allowed.with(internal);
    }
    let guard = Guard::new(&config, allowed)?;
    let http_config = limits.listen(ServePort::LoginHttp);
    let http = bind(ip, config.http_port, "login_server (HTTP)", http_config).await?;
    let login = bind_internal(
        internal,
        config.login_port,
        "login_server",
        &guard,
        internal_cfg,
    )
    .await?;
    let route = bind_internal(
        internal,
        config.route_port,
        "route_server",
        &guard,
        internal_cfg,
    )
    .await?;
    let db = bind_internal(
        internal,
        config.db_proxy_port,
        "db_proxy_server",
        &guard,
        internal_cfg,
    )
    .await?;
    let msfs = match &config.msfs_dir {
        Some(dir) => Some((
            bind(ip, config.msfs_port, "msfs", limits.listen(ServePort::Msfs)).await?,
            dir.clone(),
        )),
        None => None,
    };
    let http_msg = match &config.http_api_key {
        Some(key) => Some((
            bind(
                config.http_msg_listen.unwrap_or(internal),
                config.http_msg_port,
                "http_msg_server",
                limits.listen(ServePort::HttpMsg),
            )
            .await?,
            key.clone(),
        )),
        None => None,
    };
    let files = match &config.file_dir {
        Some(dir) => Some((
            bind(
                ip,
                config.file_client_port,
                "file_server",
                limits.listen(ServePort::FileClients),
            )
            .await?,
            bind_internal(
                internal,
                config.file_ms_port,
                "file_server",
                &guard,
                internal_cfg,
            )
            .await?,
            dir.clone(),
        )),
        None => None,
    };
    let push = if config.push.is_empty() {
        None
    } else {
        let backend = config
            .push
            .backend()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        Some((
            bind_internal(
                internal,
                config.push_port,
                "push_server",
                &guard,
                internal_cfg,
            )
            .await?,
            backend,
        ))
    };
    let msg_config = limits.listen(ServePort::MsgClients {
        msg_servers: config.msg_ports.len(),
    });
    let mut msg_listeners = Vec::new();
    for port in &config.msg_ports {
        msg_listeners.push(bind(ip, *port, "msg_server", msg_config).await?);
    }
    tracing::info!(
        budget = limits.budget,
        msg_clients = msg_config.limits.max_total,
        http = http_config.limits.max_total,
        http_per_ip = http_config.limits.max_per_source,
        internal = internal_cfg.limits.max_total,
        "connection caps"
    );
    let (trigger, shutdown) = shutdown::channel();
    let mut running = Running {
        http: http.local_addr()?,
        msg_servers: msg_listeners
            .iter()
            .map(Listeners::local_addr)
            .collect::<Result<_, _>>()?,
        login: login.local_addr()?,
        route: route.local_addr()?,
        db_proxy: db.local_addr()?,
        msfs: match &msfs {
            Some((listener, _)) => Some(listener.local_addr()?),
            None => None,
        },
        file_server: match &files {
            Some((clients, _, _)) => Some(clients.local_addr()?),
            None => None,
        },
        file_server_links: match &files {
            Some((_, links, _)) => Some(links.local_addr()?),
            None => None,
        },
        push_server: match &push {
            Some((listener, _)) => Some(listener.local_addr()?),
            None => None,
        },
        http_msg: match &http_msg {
            Some((listener, _)) => Some(listener.local_addr()?),
            None => None,
        },
        trigger,
        tasks: JoinSet::new(),
    };
    // This process's roles reach each other through the listeners' in-process doors
    // (docs/architecture.md, "One process"); the ports serve other processes.
    let (db_door, route_door) = (db.connector(), route.connector());
    let proxy = Arc::new(DbProxy::new(store, SystemClock, Default::default()));
    let tasks = &mut running.tasks;
    tasks.spawn(crate::db_proxy::run(
        DbProxyServerConfig::default(),
        db,
        proxy.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(sync_groups(
        proxy.clone(),
        config.group_sync_interval,
        shutdown.clone(),
    ));
    let advertise = config.advertise.clone().unwrap_or_else(|| ip.to_string());
    let mut login_config = config.login.clone();
    if let Some((listener, dir)) = msfs {
        if let Some(addr) = running.msfs {
            // Clients get this msfs unless another URL was configured.
            if login_config.msfs == LoginServerConfig::default().msfs {
                login_config.msfs = format!("http://{advertise}:{}/", addr.port());
            }
        }
        let mut msfs_config = crate::msfs::MsfsConfig::new(dir);
        msfs_config.upload_budget = config.msfs_upload_budget;
        msfs_config.upload_wait = config.msfs_upload_wait;
        tasks.spawn(crate::msfs::run(msfs_config, listener, shutdown.clone()));
    }
    // msg_servers, route_server and login_server share one node (docs/architecture.md,
    // "One process"); the HTTP discovery reads its registry.
    let node: crate::local::SharedNode = Arc::new(std::sync::Mutex::new(
        teamtalk_core::local::Node::new(Default::default()),
    ));
    let epoch = teamtalk_core::time::Epoch::start();
    tasks.spawn(crate::login_server::serve_discovery(
        login_config.clone(),
        http,
        node.clone(),
        epoch,
        shutdown.clone(),
    ));
    let file_servers = match files {
        Some((clients, links, dir)) => {
            let door = links.connector();
            let port = u32::from(clients.local_addr()?.port());
            let file_config = crate::file_server::FileServerConfig {
                dir,
                advertise: vec![(advertise.clone(), port)],
                limits: Default::default(),
            };
            tasks.spawn(crate::file_server::run(
                file_config,
                clients,
                links,
                shutdown.clone(),
            ));
            vec![LinkTarget::from(door)]
        }
        None => Vec::new(),
    };
    let push_servers = match push {
        Some((listener, backend)) => {
            let door = listener.connector();
            tasks.spawn(crate::push::run(
                Arc::new(backend),
                listener,
                shutdown.clone(),
            ));
            vec![LinkTarget::from(door)]
        }
        None => Vec::new(),
    };
    if let Some((listener, key)) = http_msg {
        let mut http_config = crate::http_msg::HttpMsgConfig::new(&key, [db_door], [route_door]);
        http_config.reconnect_delay = config.reconnect_delay;
        http_config.upstream_link = guard.link(http_config.upstream_link);
        tasks.spawn(crate::http_msg::run(
            http_config,
            listener,
            shutdown.clone(),
        ));
    }
    let mut servers = Vec::new();
    for listener in msg_listeners {
        let port = listener.local_addr()?.port();
        servers.push(crate::local::LocalMsgServer {
            listener,
            core: MsgServerConfig {
                ip1: advertise.clone(),
                ip2: advertise.clone(),
                port: u32::from(port),
                host_name: host_name(),
                // local::run advertises no more than its listener's cap.
                ..config.msg.clone()
            },
            push_servers: push_servers.clone(),
            file_servers: file_servers.clone(),
        });
    }
    let defaults = crate::local::LocalSettings::default();
    let settings = crate::local::LocalSettings {
        upstream_link: guard.link(defaults.upstream_link.clone()),
        external_link: login_config.link.clone(),
        reconnect_delay: config.reconnect_delay,
        ..defaults
    };
    tasks.spawn(crate::local::run(
        settings,
        servers,
        route,
        login,
        node,
        epoch,
        proxy,
        shutdown.clone(),
    ));
    Ok(running)
}

/// How long the last group-session sync on shutdown may take.
const LAST_SYNC_TIMEOUT: Duration = Duration::from_secs(10);

/// Refreshes the group sessions of members every `interval` (the original's sync thread).
///
/// On shutdown one last pass runs before returning: whoever serves the store next (the C++
/// db_proxy_server's sync starts from the time it starts) would otherwise never refresh the
/// groups that chatted since the previous pass (docs/compatibility.md). That pass is given
/// up after 10 s, so a stalled store cannot hold the shutdown.
pub async fn sync_groups<S: Store, C: teamtalk_core::domain::Clock>(
    proxy: Arc<DbProxy<S, C>>,
    interval: Duration,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    let mut since = Timestamp(0);
    loop {
        let last = tokio::select! {
            _ = tokio::time::sleep(interval) => false,
            _ = shutdown.wait() => true,
        };
        if last {
            // A store that stalls must not hold the shutdown up.
            match tokio::time::timeout(LAST_SYNC_TIMEOUT, proxy.sync_group_sessions(since)).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => warn!(%error, "last group session sync before shutdown failed"),
                Err(_) => warn!("last group session sync before shutdown timed out"),
            }
            return Ok(());
        }
        match proxy.sync_group_sessions(since).await {
            Ok(next) => since = next,
            Err(error) => warn!(%error, "group session sync failed; retrying"),
        }
    }
}

/// This machine's name, reported to login_servers.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_default()
}
