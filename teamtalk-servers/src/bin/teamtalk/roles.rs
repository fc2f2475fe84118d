//! One server role alone in its process (`teamtalk msg-server --config msgserver.conf` …):
//! [`Role`] names each role with its config file, and its one match says how each starts.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Subcommand};
use teamtalk_core::crypt::MessageKey;
use teamtalk_core::service::{DbProxy, DbProxyConfig};
use teamtalk_core::store::Store;
use teamtalk_servers::clock::SystemClock;
use teamtalk_servers::conf::ConfFile;
use teamtalk_servers::db_proxy_conf::DbProxyConf;
use teamtalk_servers::link::{ListenConfig, Listeners};
use teamtalk_servers::shutdown::Shutdown;
use teamtalk_servers::trust::PeerGate;
use teamtalk_servers::{db_proxy, login_server, msg_server, roles, route_server, serve, shutdown};
use teamtalk_store::MysqlRedisStore;

use crate::store_choice::{open_store, AnyStore, Settings};
use crate::{conf_error, run_error, usage, Failure};

const ROLE_HELP: &str = "\
One role alone, reading the original .conf file (dbproxyserver.conf, routeserver.conf,
loginserver.conf, msgserver.conf, msfs.conf …) or a .toml file with the same keys. A
db-proxy-server config without DBInstances serves the embedded store in data_dir.
Internal ports listen on 127.0.0.1 and serve only AllowedPeers (default loopback).
Keys and defaults: docs/deploy.md.";

/// A server role run alone, with its config file.
#[derive(Subcommand)]
pub(crate) enum Role {
    /// db_proxy_server alone: the store behind the roles (dbproxyserver.conf)
    #[command(after_help = ROLE_HELP)]
    DbProxyServer(RoleArgs),
    /// route_server alone: presence and routing between msg_servers (routeserver.conf)
    #[command(after_help = ROLE_HELP)]
    RouteServer(RoleArgs),
    /// login_server alone: HTTP discovery, msg_server balancing (loginserver.conf)
    #[command(after_help = ROLE_HELP)]
    LoginServer(RoleArgs),
    /// msg_server alone: the clients' server (msgserver.conf)
    #[command(after_help = ROLE_HELP)]
    MsgServer(RoleArgs),
    /// msfs alone: images and audio over HTTP (msfs.conf)
    #[command(after_help = ROLE_HELP)]
    Msfs(RoleArgs),
    /// http_msg_server alone: the admin HTTP API (httpmsgserver.conf)
    #[command(after_help = ROLE_HELP)]
    HttpMsgServer(RoleArgs),
    /// push_server alone: push notifications, webhook or APNs (pushserver.conf)
    #[command(after_help = ROLE_HELP)]
    PushServer(RoleArgs),
    /// file_server alone: file transfers, online and offline (fileserver.conf)
    #[command(after_help = ROLE_HELP)]
    FileServer(RoleArgs),
}

/// A role's flags.
#[derive(Args)]
pub(crate) struct RoleArgs {
    /// The role's config file: the original .conf (Key=value lines) or .toml with the same keys
    #[arg(long, value_name = "FILE", allow_hyphen_values = true)]
    config: PathBuf,
}

impl Role {
    /// Runs the role until SIGINT or SIGTERM (then gracefully) or a failure.
    pub(crate) async fn run(self) -> Result<(), Failure> {
        match self {
            Role::DbProxyServer(args) => args.run(run_db_proxy_server).await,
            Role::RouteServer(args) => args.run(run_route_server).await,
            Role::LoginServer(args) => args.run(run_login_server).await,
            Role::MsgServer(args) => args.run(run_msg_server).await,
            Role::Msfs(args) => args.run(run_msfs).await,
            Role::HttpMsgServer(args) => args.run(run_http_msg_server).await,
            Role::PushServer(args) => args.run(run_push_server).await,
            Role::FileServer(args) => args.run(run_file_server).await,
        }
    }
}

impl RoleArgs {
    /// Reads the config file, then runs `start` with it until it ends; a signal triggers the
    /// shutdown it was given, and the role is awaited to its end.
    async fn run<F, R>(self, start: F) -> Result<(), Failure>
    where
        F: FnOnce(ConfFile, PathBuf, Shutdown) -> R,
        R: Future<Output = Result<(), Failure>>,
    {
        let conf = ConfFile::load_any(&self.config).map_err(|e| Failure::Usage(usage(e)))?;
        let (trigger, shutdown) = shutdown::channel();
        let signal = async move {
            let _ = shutdown::signal().await;
            tracing::info!("shutting down");
            trigger.trigger();
        };
        let task = start(conf, self.config, shutdown);
        tokio::pin!(task);
        tokio::select! {
            result = &mut task => result,
            () = signal => task.await,
        }
    }
}

/// db_proxy_server: MySQL + Redis with `DBInstances`, else the embedded store in `data_dir`.
async fn run_db_proxy_server(
    conf: ConfFile,
    path: PathBuf,
    shutdown: Shutdown,
) -> Result<(), Failure> {
    let role = "db-proxy-server";
    let (conf, path) = (&conf, path.as_path());
    let db_server = || roles::db_proxy_server(conf).map_err(|e| conf_error(path, e));
    if conf.get("DBInstances").is_some() {
        let conf_file = conf;
        let listening = role_listen(conf, path, 1, false)?;
        let conf = DbProxyConf::from_conf(conf).map_err(|e| conf_error(path, e))?;
        let business = conf.business().map_err(|e| conf_error(path, e))?;
        let listener = internal(
            bind_all(&conf.listen, role, &listening).await?,
            conf_file,
            path,
            "db_proxy_server",
        )?;
        let store = MysqlRedisStore::connect(&conf.store)
            .await
            .map_err(run_error)?;
        return serve_db_proxy(listener, store, business, db_server()?, shutdown).await;
    }
    // No MySQL pools configured: the embedded store in `data_dir`.
    let listen = roles::listen_addrs(conf, "ListenIP", "ListenPort", "127.0.0.1", 10600)
        .map_err(|e| conf_error(path, e))?;
    let business = match conf.get("aesKey") {
        Some(key) => {
            let key = MessageKey::new(key)
                .map_err(|_| conf_error(path, "aesKey must have 32 characters"))?;
            DbProxyConfig {
                audio_preview: key.encrypt("[语音]".as_bytes()).into(),
                ..DbProxyConfig::default()
            }
        }
        None => DbProxyConfig::default(),
    };
    let listening = role_listen(conf, path, 1, false)?;
    let listener = internal(
        bind_all(&listen, role, &listening).await?,
        conf,
        path,
        "db_proxy_server",
    )?;
    let settings = Settings {
        data_dir: PathBuf::from(conf.get("data_dir").unwrap_or("./teamtalk-data")),
        conf: ConfFile::default(),
    };
    match open_store(&settings).await? {
        AnyStore::Sqlite(store) => {
            serve_db_proxy(listener, store, business, db_server()?, shutdown.clone()).await
        }
        AnyStore::Mysql(store) => {
            serve_db_proxy(listener, store, business, db_server()?, shutdown.clone()).await
        }
    }
}

/// route_server on `ListenIP` / `ListenMsgPort`.
async fn run_route_server(
    conf: ConfFile,
    path: PathBuf,
    shutdown: Shutdown,
) -> Result<(), Failure> {
    let role = "route-server";
    let (conf, path) = (&conf, path.as_path());
    let listen = roles::route_listen(conf).map_err(|e| conf_error(path, e))?;
    let listening = role_listen(conf, path, 1, false)?;
    let listener = internal(
        bind_all(&listen, role, &listening).await?,
        conf,
        path,
        "route_server",
    )?;
    route_server::run(Default::default(), listener, shutdown)
        .await
        .map_err(run_error)
}

/// msfs: files under `BaseDir`, served on `ListenIP` / `ListenPort`.
async fn run_msfs(conf: ConfFile, path: PathBuf, shutdown: Shutdown) -> Result<(), Failure> {
    let role = "msfs";
    let (conf, path) = (&conf, path.as_path());
    let listen = roles::listen_addrs(conf, "ListenIP", "ListenPort", "0.0.0.0", 8700)
        .map_err(|e| conf_error(path, e))?;
    let base = conf.require("BaseDir").map_err(|e| conf_error(path, e))?;
    let mut config = teamtalk_servers::msfs::MsfsConfig::new(base);
    if let Some(n) = conf
        .parsed("FilesPerDir", "a number")
        .map_err(|e| conf_error(path, e))?
    {
        config.files_per_dir = n;
    }
    config.upload_token = conf
        .get("UploadToken")
        .filter(|t| !t.is_empty())
        .map(str::to_owned);
    config
        .apply_upload_keys(conf, "UploadBudgetMB", "UploadWaitSecs")
        .map_err(|e| conf_error(path, e))?;
    let listening = role_listen(conf, path, 1, true)?;
    let listener = bind_all(&listen, role, &listening).await?;
    teamtalk_servers::msfs::run(config, listener, shutdown)
        .await
        .map_err(run_error)
}

/// http_msg_server: the admin API (`ApiKey`), linked to db_proxy and route_servers.
async fn run_http_msg_server(
    conf: ConfFile,
    path: PathBuf,
    shutdown: Shutdown,
) -> Result<(), Failure> {
    let role = "http-msg-server";
    let (conf, path) = (&conf, path.as_path());
    let listen = roles::listen_addrs(conf, "ListenIP", "ListenPort", "127.0.0.1", 8400)
        .map_err(|e| conf_error(path, e))?;
    let key = conf.require("ApiKey").map_err(|e| conf_error(path, e))?;
    let db =
        roles::peer_addrs(conf, "DBServerIP", "DBServerPort").map_err(|e| conf_error(path, e))?;
    let routes = roles::peer_addrs(conf, "RouteServerIP", "RouteServerPort")
        .map_err(|e| conf_error(path, e))?;
    let mut config = teamtalk_servers::http_msg::HttpMsgConfig::new(key, db, routes);
    if let Some(n) = conf
        .parsed("ConcurrentDBConnCnt", "a number")
        .map_err(|e| conf_error(path, e))?
    {
        config.db_connections = n;
    }
    if let Some(aes) = conf.get("aesKey") {
        config.message_key = aes.to_owned();
    }
    tls_dial(conf, path, &mut config.upstream_link)?;
    let listening = role_listen(conf, path, 1, true)?;
    let listener = bind_all(&listen, role, &listening).await?;
    teamtalk_servers::http_msg::run(config, listener, shutdown)
        .await
        .map_err(run_error)
}

/// file_server: clients on `ClientListen*`, msg_servers on `MsgServerListen*`.
async fn run_file_server(conf: ConfFile, path: PathBuf, shutdown: Shutdown) -> Result<(), Failure> {
    let role = "file-server";
    let (conf, path) = (&conf, path.as_path());
    let clients = roles::listen_addrs(conf, "ClientListenIP", "ClientListenPort", "0.0.0.0", 8600)
        .map_err(|e| conf_error(path, e))?;
    let links = roles::listen_addrs(
        conf,
        "MsgServerListenIP",
        "MsgServerListenPort",
        "127.0.0.1",
        8601,
    )
    .map_err(|e| conf_error(path, e))?;
    let port = clients.first().map_or(8600, |a| u32::from(a.port()));
    let advertise: Vec<(String, u32)> = conf
        .addresses("FileServerIp")
        .into_iter()
        .map(|ip| (ip, port))
        .collect();
    if advertise.is_empty() {
        return Err(conf_error(
            path,
            "FileServerIp (the addresses clients reach this server at) is required",
        ));
    }
    let mut limits = teamtalk_core::file_transfer::FileLimits::default();
    if let Some(secs) = conf
        .parsed::<u64>("TaskTimeout", "seconds")
        .map_err(|e| conf_error(path, e))?
    {
        limits.idle_ms = secs.saturating_mul(1000);
    }
    if let Some(days) = conf
        .parsed::<u64>("OfflineRetentionDays", "days")
        .map_err(|e| conf_error(path, e))?
    {
        limits.offline_retention_ms = days.saturating_mul(86_400_000);
    }
    let config = teamtalk_servers::file_server::FileServerConfig {
        dir: PathBuf::from(conf.get("OfflineDir").unwrap_or("./offline_file")),
        advertise,
        limits,
    };
    let listening = role_listen(conf, path, 2, false)?;
    let clients = bind_all(&clients, role, &listening).await?;
    let link_listening = role_listen(conf, path, 2, false)?;
    let links = internal(
        bind_all(&links, role, &link_listening).await?,
        conf,
        path,
        "file_server",
    )?;
    teamtalk_servers::file_server::run(config, clients, links, shutdown)
        .await
        .map_err(run_error)
}

/// push_server with its backend (webhook or APNs).
async fn run_push_server(conf: ConfFile, path: PathBuf, shutdown: Shutdown) -> Result<(), Failure> {
    let role = "push-server";
    let (conf, path) = (&conf, path.as_path());
    let (listen, settings) = roles::push_server(conf).map_err(|e| conf_error(path, e))?;
    let backend = settings.backend().map_err(|e| conf_error(path, e))?;
    let listening = role_listen(conf, path, 1, false)?;
    let listener = internal(
        bind_all(&listen, role, &listening).await?,
        conf,
        path,
        "push_server",
    )?;
    teamtalk_servers::push::run(Arc::new(backend), listener, shutdown)
        .await
        .map_err(run_error)
}

/// login_server: HTTP discovery and the msg_servers' links.
async fn run_login_server(
    conf: ConfFile,
    path: PathBuf,
    shutdown: Shutdown,
) -> Result<(), Failure> {
    let role = "login-server";
    let (conf, path) = (&conf, path.as_path());
    let (http, links, config) = roles::login_server(conf).map_err(|e| conf_error(path, e))?;
    let listening = role_listen(conf, path, 2, true)?;
    let http = bind_all(&http, role, &listening).await?;
    let link_listening = role_listen(conf, path, 2, false)?;
    let links = internal(
        bind_all(&links, role, &link_listening).await?,
        conf,
        path,
        "login_server",
    )?;
    login_server::run(config, http, links, shutdown)
        .await
        .map_err(run_error)
}

/// msg_server: clients on `ListenIP` / `ListenPort`, linked to the other roles.
async fn run_msg_server(conf: ConfFile, path: PathBuf, shutdown: Shutdown) -> Result<(), Failure> {
    let role = "msg-server";
    let (conf, path) = (&conf, path.as_path());
    let (listen, mut settings) = roles::msg_server(conf).map_err(|e| conf_error(path, e))?;
    tls_dial(conf, path, &mut settings.upstream_link)?;
    let listening = role_listen(conf, path, 1, false)?;
    let listener = bind_all(&listen, role, &listening).await?;
    msg_server::run(settings, listener, shutdown.clone())
        .await
        .map_err(run_error)
}

/// Binds every address of a role's `ListenIP` list with `config`'s backlog and caps.
async fn bind_all(
    addrs: &[std::net::SocketAddr],
    role: &str,
    config: &ListenConfig,
) -> Result<Listeners, Failure> {
    if addrs.is_empty() {
        return Err(usage(format!("{role}: no listen address")).into());
    }
    Listeners::bind_with(addrs, config)
        .await
        .map_err(|e| run_error(format!("{role}: {e}")))
}

/// A role's internal port: its allow-list (`AllowedPeers`) and, with the TLS keys, mutual
/// TLS (docs/deploy.md "Trust model").
fn internal(
    listeners: Listeners,
    conf: &ConfFile,
    path: &Path,
    role: &'static str,
) -> Result<Listeners, Failure> {
    let listeners = listeners.guarded(gate(conf, path, role)?);
    #[cfg(feature = "tls")]
    if let Some(files) =
        roles::tls_files(conf, &roles::TlsKeys::ROLE).map_err(|e| conf_error(path, e))?
    {
        let acceptor = files.acceptor().map_err(|e| conf_error(path, e))?;
        return Ok(listeners.with_tls(acceptor));
    }
    #[cfg(not(feature = "tls"))]
    roles::tls_files(conf, &roles::TlsKeys::ROLE).map_err(|e| conf_error(path, e))?;
    Ok(listeners)
}

/// The TLS identity of a role's dialed links, from its TLS keys (none: plain TCP).
fn tls_dial(
    conf: &ConfFile,
    path: &Path,
    link: &mut teamtalk_servers::link::LinkConfig,
) -> Result<(), Failure> {
    #[cfg(feature = "tls")]
    {
        link.tls =
            match roles::tls_files(conf, &roles::TlsKeys::ROLE).map_err(|e| conf_error(path, e))? {
                Some(files) => Some(files.connector().map_err(|e| conf_error(path, e))?),
                None => None,
            };
    }
    #[cfg(not(feature = "tls"))]
    {
        let _ = link;
        roles::tls_files(conf, &roles::TlsKeys::ROLE).map_err(|e| conf_error(path, e))?;
    }
    Ok(())
}

/// The gate of a role's internal port: its `AllowedPeers` (default loopback only).
fn gate(conf: &ConfFile, path: &Path, role: &'static str) -> Result<PeerGate, Failure> {
    let peers = roles::allowed_peers(conf).map_err(|e| conf_error(path, e))?;
    Ok(PeerGate::new(role, peers))
}

/// How a role alone in its process listens: the `.conf` keys (`MaxConnCnt`, `MaxConnPerIp`,
/// `ListenBacklog`, `HttpHeaderTimeout`, `HttpIdleTimeout`) over defaults that give each of
/// the role's `ports` listening ports an equal share of the descriptor budget, and HTTP ports
/// a per-address cap.
fn role_listen(
    conf: &ConfFile,
    path: &Path,
    ports: usize,
    http: bool,
) -> Result<ListenConfig, Failure> {
    let limit = teamtalk_servers::limits::descriptor_limit().unwrap_or(1 << 20);
    let budget = teamtalk_core::limits::connection_budget(limit);
    let per_ip = if http {
        teamtalk_servers::limits::DEFAULT_HTTP_PER_SOURCE
    } else {
        0
    };
    let defaults = ListenConfig::capped((budget / ports.max(1)).max(1), per_ip);
    roles::listen_config(conf, defaults).map_err(|e| conf_error(path, e))
}

/// Serves db_proxy on `store`, with the group sync every 5 s, until `shutdown`.
async fn serve_db_proxy<S: Store + 'static>(
    listener: Listeners,
    store: S,
    business: DbProxyConfig,
    server: db_proxy::DbProxyServerConfig,
    shutdown: shutdown::Shutdown,
) -> Result<(), Failure> {
    let proxy = Arc::new(DbProxy::new(store, SystemClock, business));
    let sync = serve::sync_groups(
        proxy.clone(),
        std::time::Duration::from_secs(5),
        shutdown.clone(),
    );
    let (served, _) = tokio::join!(db_proxy::run(server, listener, proxy, shutdown), sync);
    served.map_err(run_error)
}
