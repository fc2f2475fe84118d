//! `teamtalk serve`: every role in one process, on the embedded store or MySQL + Redis; its
//! TOML settings (the keys are listed in `teamtalk serve --help` and docs/deploy.md).

use std::path::Path;

use teamtalk_core::store::Store;
use teamtalk_servers::conf::ConfFile;
use teamtalk_servers::serve::{self, ServeConfig};
use teamtalk_servers::{roles, shutdown};

use crate::cli::Options;
use crate::store_choice::{open_store, settings, Backend};
use crate::{run_error, usage, Failure};

/// `teamtalk serve [--config FILE] [--data-dir DIR]`: runs until SIGINT or SIGTERM.
pub(crate) async fn run(opts: Options) -> Result<(), Failure> {
    let settings = settings(&opts)?;
    let mut config = serve_config(&settings.conf)?;
    config.msfs_dir = Some(settings.data_dir.join("msfs"));
    config.file_dir = Some(settings.data_dir.join("offline_file"));
    config.http_api_key = Some(match settings.conf.get("http_api_key") {
        Some(key) if !key.is_empty() => key.to_owned(),
        _ => api_key(&settings.data_dir)?,
    });
    let (store, backend) = open_store(&settings).await?;
    match backend {
        Backend::Sqlite => println!(
            "teamtalk serve: data in {} (SQLite)",
            settings.data_dir.display()
        ),
        Backend::MysqlRedis => println!("teamtalk serve: data in MySQL + Redis"),
    }
    run_all(config, store).await
}

/// The data dir's http_msg_server API key, created (random, readable by the owner only) on
/// first use.
fn api_key(data_dir: &Path) -> Result<String, Failure> {
    let path = data_dir.join("http_api_key");
    if let Ok(key) = std::fs::read_to_string(&path) {
        if !key.trim().is_empty() {
            return Ok(key.trim().to_owned());
        }
    }
    let key =
        teamtalk_servers::secret::api_key(teamtalk_servers::secret::os_fill).map_err(run_error)?;
    std::fs::create_dir_all(data_dir).map_err(run_error)?;
    std::fs::write(&path, format!("{key}\n"))
        .map_err(|e| run_error(format!("{}: {e}", path.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
    Ok(key)
}

/// `teamtalk serve`'s settings from its config file (defaults for the keys it lacks).
fn serve_config(conf: &ConfFile) -> Result<ServeConfig, Failure> {
    let bad = |e: teamtalk_servers::conf::ConfError| Failure::Usage(usage(e.to_string()));
    let mut config = ServeConfig::default();
    if let Some(listen) = conf.get("listen") {
        config.listen = listen
            .parse()
            .map_err(|_| usage(format!("listen: not an IP address: {listen:?}")))?;
    }
    let ip_key = |key: &str| -> Result<Option<std::net::IpAddr>, Failure> {
        conf.get(key)
            .map(|v| {
                v.parse()
                    .map_err(|_| usage(format!("{key}: not an IP address: {v:?}")).into())
            })
            .transpose()
    };
    if let Some(internal) = ip_key("internal_listen")? {
        config.internal_listen = internal;
    }
    config.http_msg_listen = ip_key("http_msg_listen")?;
    #[cfg(feature = "tls")]
    {
        config.tls = roles::tls_files(conf, &roles::TlsKeys::SERVE).map_err(bad)?;
    }
    #[cfg(not(feature = "tls"))]
    roles::tls_files(conf, &roles::TlsKeys::SERVE).map_err(bad)?;
    if let Some(list) = conf.get("allowed_peers") {
        config.allowed_peers = list
            .parse()
            .map_err(|e| usage(format!("allowed_peers: {e}")))?;
    }
    let port = |key: &str, default: u16| -> Result<u16, Failure> {
        Ok(conf
            .parsed(key, "a TCP port")
            .map_err(bad)?
            .unwrap_or(default))
    };
    config.http_port = port("http_port", 8080)?;
    config.msg_ports = vec![port("msg_port", 8000)?];
    config.login_port = port("login_port", 8100)?;
    config.route_port = port("route_port", 8200)?;
    config.db_proxy_port = port("db_proxy_port", 10600)?;
    config.advertise = conf.get("advertise").map(str::to_owned);
    if let Some(msfs) = conf.get("msfs") {
        config.login.msfs = msfs.to_owned();
    }
    if let Some(discovery) = conf.get("discovery") {
        config.login.discovery = discovery.to_owned();
    }
    if let Some(rate) = conf.parsed("max_msgs_per_sec", "a number").map_err(bad)? {
        config.msg.max_msgs_per_sec = rate;
    }
    if let Some(max) = conf
        .parsed("max_requests_in_flight", "a number")
        .map_err(bad)?
    {
        config.msg.max_requests_in_flight = max;
    }
    if let Some(max) = conf
        .parsed("max_requests_in_flight_total", "a number")
        .map_err(bad)?
    {
        config.msg.max_requests_in_flight_total = max;
    }
    config.msg.require_login_server = conf.switch("require_login_server", true).map_err(bad)?;
    config.msfs_port = port("msfs_port", 8700)?;
    let mut msfs = teamtalk_servers::msfs::MsfsConfig::new("");
    msfs.apply_upload_keys(conf, "msfs_upload_budget_mb", "msfs_upload_wait_secs")
        .map_err(bad)?;
    (config.msfs_upload_budget, config.msfs_upload_wait) = (msfs.upload_budget, msfs.upload_wait);
    config.http_msg_port = port("http_msg_port", 8400)?;
    config.push_port = port("push_port", 8500)?;
    config.file_client_port = port("file_port", 8600)?;
    config.file_ms_port = port("file_ms_port", 8601)?;
    config.push = roles::push_settings(conf, &roles::PushKeys::SERVE).map_err(bad)?;
    config.limits = serve_limits(conf)?;
    Ok(config)
}

/// `teamtalk serve`'s connection keys: `listen_backlog`, `max_conn_per_ip`,
/// `client_max_conn_per_ip`, `max_conn_cnt`, `http_max_conn`, `msfs_max_conn`,
/// `file_max_conn`, `http_msg_max_conn`, `http_header_timeout`, `http_idle_timeout`.
fn serve_limits(conf: &ConfFile) -> Result<teamtalk_servers::limits::ServeLimits, Failure> {
    let bad = |e: teamtalk_servers::conf::ConfError| Failure::Usage(usage(e.to_string()));
    let mut limits = teamtalk_servers::limits::ServeLimits::default();
    let count = |key: &str, value: &mut usize| -> Result<(), Failure> {
        if let Some(n) = conf.parsed(key, "a number (0: default)").map_err(bad)? {
            *value = n;
        }
        Ok(())
    };
    count("max_conn_per_ip", &mut limits.http_per_ip)?;
    count("client_max_conn_per_ip", &mut limits.client_per_ip)?;
    count("max_conn_cnt", &mut limits.msg_max)?;
    count("http_max_conn", &mut limits.http_max)?;
    count("msfs_max_conn", &mut limits.msfs_max)?;
    count("file_max_conn", &mut limits.file_max)?;
    count("http_msg_max_conn", &mut limits.http_msg_max)?;
    if let Some(backlog) = conf
        .parsed::<u32>("listen_backlog", "a number")
        .map_err(bad)?
    {
        limits.backlog = backlog.max(1);
    }
    let seconds = |key: &str| -> Result<Option<std::time::Duration>, Failure> {
        match conf
            .parsed::<u64>(key, "seconds (at least 1)")
            .map_err(bad)?
        {
            Some(0) => Err(usage(format!("{key}: must be at least 1 second")).into()),
            other => Ok(other.map(std::time::Duration::from_secs)),
        }
    };
    if let Some(header) = seconds("http_header_timeout")? {
        limits.http.header = header;
    }
    if let Some(idle) = seconds("http_idle_timeout")? {
        limits.http.idle = idle;
    }
    Ok(limits)
}

/// Starts every role on `store`, prints the addresses, runs until a signal or a failure.
async fn run_all<S: Store + 'static>(config: ServeConfig, store: S) -> Result<(), Failure> {
    // Installed before any port is bound: a SIGTERM during start-up stops cleanly too.
    let mut signals = shutdown::Signals::install().map_err(run_error)?;
    let mut running = serve::start(config, store).await.map_err(run_error)?;
    println!(
        "  clients:    http://{}/msg_server (discovery)",
        running.http
    );
    for addr in &running.msg_servers {
        println!("  msg_server: {addr}");
    }
    if let Some(http) = running.http_msg {
        println!("  admin API:  http://{http}/query/ (http_msg_server; API key in the data dir's http_api_key file unless configured)");
    }
    if let Some(msfs) = running.msfs {
        println!("  msfs:       http://{msfs}/ (images, audio)");
    }
    println!(
        "  internal:   login_server {}, route_server {}, db_proxy_server {}",
        running.login, running.route, running.db_proxy
    );
    if let Some(links) = running.file_server_links {
        println!("              file_server (msg_servers) {links}");
    }
    if let Some(push) = running.push_server {
        println!("              push_server {push}");
    }
    println!(
        "  (the roles of this process link in memory; the internal ports serve other processes)"
    );
    println!("  stop with Ctrl-C or SIGTERM");
    tokio::select! {
        () = signals.recv() => {
            println!("teamtalk serve: shutting down");
            running.trigger().trigger();
            running.wait().await.map_err(run_error)
        }
        result = running.wait() => result.map_err(run_error),
    }
}
