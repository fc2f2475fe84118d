//! Everything in one process: login_server, route_server, db_proxy_server and msg_server
//! wired together over loopback TCP, as `teamtalk serve` runs them. The roles talk through
//! the same links and core code as separate processes would, so a msg_server on another
//! machine can join this system through its ports.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::limits::{ListenConfig, ServeLimits, ServePort};
use crate::link::Listeners;
use teamtalk_core::domain::Timestamp;
use teamtalk_core::msg_server::MsgServerConfig;
use teamtalk_core::service::DbProxy;
use teamtalk_core::store::Store;
use tokio::task::JoinSet;
use tracing::warn;

use crate::clock::SystemClock;
use crate::db_proxy::DbProxyServerConfig;
use crate::login_server::LoginServerConfig;
use crate::msg_server::MsgServerSettings;
use crate::route_server::RouteServerConfig;
use crate::shutdown::{self, Shutdown, ShutdownTrigger};

/// Where the all-in-one system listens and how it behaves.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Address every listener binds to. Default 127.0.0.1.
    pub listen: IpAddr,
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

/// Binds every listener and starts every role on `store`.
pub async fn start<S: Store + 'static>(config: ServeConfig, store: S) -> std::io::Result<Running> {
    let ip = config.listen;
    let limits = ServeLimits {
        budget: config.limits.budget(),
        ..config.limits
    };
    let internal = limits.listen(ServePort::Internal);
    let http_config = limits.listen(ServePort::LoginHttp);
    let http = bind(ip, config.http_port, "login_server (HTTP)", http_config).await?;
    let login = bind(ip, config.login_port, "login_server", internal).await?;
    let route = bind(ip, config.route_port, "route_server", internal).await?;
    let db = bind(ip, config.db_proxy_port, "db_proxy_server", internal).await?;
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
                ip,
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
            bind(ip, config.file_ms_port, "file_server", internal).await?,
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
            bind(ip, config.push_port, "push_server", internal).await?,
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
        internal = internal.limits.max_total,
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
        http_msg: match &http_msg {
            Some((listener, _)) => Some(listener.local_addr()?),
            None => None,
        },
        trigger,
        tasks: JoinSet::new(),
    };
    let proxy = Arc::new(DbProxy::new(store, SystemClock, Default::default()));
    let tasks = &mut running.tasks;
    tasks.spawn(crate::db_proxy::run(
        DbProxyServerConfig::default(),
        db,
        proxy.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(sync_groups(
        proxy,
        config.group_sync_interval,
        shutdown.clone(),
    ));
    tasks.spawn(crate::route_server::run(
        RouteServerConfig::default(),
        route,
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
        let msfs_config = crate::msfs::MsfsConfig::new(dir);
        tasks.spawn(crate::msfs::run(msfs_config, listener, shutdown.clone()));
    }
    tasks.spawn(crate::login_server::run(
        login_config,
        http,
        login,
        shutdown.clone(),
    ));
    let file_servers = match files {
        Some((clients, links, dir)) => {
            let addr = links.local_addr()?;
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
            vec![addr]
        }
        None => Vec::new(),
    };
    let push_servers = match push {
        Some((listener, backend)) => {
            let addr = listener.local_addr()?;
            tasks.spawn(crate::push::run(
                Arc::new(backend),
                listener,
                shutdown.clone(),
            ));
            vec![addr]
        }
        None => Vec::new(),
    };
    if let Some((listener, key)) = http_msg {
        let mut http_config =
            crate::http_msg::HttpMsgConfig::new(&key, vec![running.db_proxy], vec![running.route]);
        http_config.reconnect_delay = config.reconnect_delay;
        tasks.spawn(crate::http_msg::run(
            http_config,
            listener,
            shutdown.clone(),
        ));
    }
    for listener in msg_listeners {
        let port = listener.local_addr()?.port();
        // Advertise no more than this msg_server holds, so login_server balances right.
        let max_conn_cnt = u32::try_from(listener.limits().max_total)
            .unwrap_or(u32::MAX)
            .min(config.msg.max_conn_cnt);
        let settings = MsgServerSettings {
            core: MsgServerConfig {
                ip1: advertise.clone(),
                ip2: advertise.clone(),
                port: u32::from(port),
                host_name: host_name(),
                max_conn_cnt,
                ..config.msg.clone()
            },
            db_servers: vec![running.db_proxy],
            route_servers: vec![running.route],
            login_servers: vec![running.login],
            push_servers: push_servers.clone(),
            file_servers: file_servers.clone(),
            reconnect_delay: config.reconnect_delay,
            ..MsgServerSettings::default()
        };
        tasks.spawn(crate::msg_server::run(
            settings,
            listener,
            SystemClock,
            shutdown.clone(),
        ));
    }
    Ok(running)
}

/// Refreshes the group sessions of members every `interval` (the original's sync thread).
pub async fn sync_groups<S: Store, C: teamtalk_core::domain::Clock>(
    proxy: Arc<DbProxy<S, C>>,
    interval: Duration,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    let mut since = Timestamp(0);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait() => return Ok(()),
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
