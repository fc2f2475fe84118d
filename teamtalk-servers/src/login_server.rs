//! login_server: tells clients which msg_server to use (HTTP `/msg_server`) and keeps the
//! registry of msg_servers that report to it over TCP a shell over
//! [`teamtalk_core::balance`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::limits;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use teamtalk_core::balance::{discovery_json, MsgServerLink, Registry, RegistryEvent};
use teamtalk_core::time::{Epoch, Machine, Now};
use tokio::sync::mpsc;
use tracing::{debug, info};

use crate::link::{self, LinkConfig, LinkEvent, Listeners, Outbox};
use crate::shutdown::Shutdown;

/// Settings of the login_server.
#[derive(Clone, Debug)]
pub struct LoginServerConfig {
    /// The msfs URL handed to clients (`msfsPrior`, `msfsBackup`). Conf key `msfs`.
    pub msfs: String,
    /// The discovery URL handed to clients. Conf key `discovery`.
    pub discovery: String,
    /// The msg_server links (heartbeat 5 s, timeout 30 s by default).
    pub link: LinkConfig,
    /// Idle HTTP connections are closed after this long (the original: 60 s).
    pub http_timeout: Duration,
}

impl Default for LoginServerConfig {
    fn default() -> Self {
        LoginServerConfig {
            msfs: "http://127.0.0.1:8700/".to_owned(),
            discovery: "http://127.0.0.1/api/discovery".to_owned(),
            link: LinkConfig::default(),
            http_timeout: Duration::from_secs(60),
        }
    }
}

type SharedRegistry = Arc<Mutex<Registry>>;

/// Where the HTTP discovery reads the registry: the login_server's own, or the one of an
/// in-process [`teamtalk_core::local::Node`] (`teamtalk serve`, [`crate::local`]).
pub trait RegistryView: Send + Sync + 'static {
    /// Calls `read` with the registry.
    fn with_registry(&self, read: &mut dyn FnMut(&Registry));
}

impl RegistryView for Mutex<Registry> {
    fn with_registry(&self, read: &mut dyn FnMut(&Registry)) {
        read(&self.lock().unwrap_or_else(PoisonError::into_inner));
    }
}

/// Serves the HTTP discovery (`/msg_server`, `/health`) on `http` from `registry` until
/// `shutdown`; `epoch` is the clock the registry's inputs are given on.
pub async fn serve_discovery(
    config: LoginServerConfig,
    http: impl Into<Listeners>,
    registry: Arc<dyn RegistryView>,
    epoch: Epoch,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let http: Listeners = http.into();
    info!(http = ?http.local_addrs(), "login_server HTTP listening");
    serve_http(http, registry, config, epoch, shutdown).await;
    Ok(())
}

/// Serves HTTP discovery on `http` and msg_server links on `msg_servers` until `shutdown`.
pub async fn run(
    config: LoginServerConfig,
    http: impl Into<Listeners>,
    msg_servers: impl Into<Listeners>,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    let http: Listeners = http.into();
    let msg_servers: Listeners = msg_servers.into();
    info!(http = ?http.local_addrs(), msg_servers = ?msg_servers.local_addrs(), "login_server listening");
    let registry: SharedRegistry = Arc::default();
    let epoch = Epoch::start();
    let http_task = tokio::spawn(serve_http(
        http,
        registry.clone() as Arc<dyn RegistryView>,
        config.clone(),
        epoch,
        shutdown.clone(),
    ));
    // Heartbeats count as signs of life: a msg_server silent for 10 s is not offered.
    let mut link_config = config.link.clone();
    link_config.report_heartbeats = true;
    let (events_tx, mut events) = mpsc::channel::<LinkEvent<u64>>(1024);
    let mut next_id = 0u64;
    // The link task's id (given at accept) → the registry's id of the link.
    let mut links: HashMap<u64, (MsgServerLink, Outbox)> = HashMap::new();
    loop {
        let wake = registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .poll_timeout();
        let sleep = async {
            match wake {
                Some(ms) => tokio::time::sleep_until(epoch.instant_at(ms).into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            (stream, peer) = link::accept_link(&msg_servers) => {
                next_id += 1;
                link::spawn_serve("login", stream, peer, next_id, link_config.clone(), events_tx.clone(), shutdown.clone());
                continue;
            }
            Some(event) = events.recv() => {
                let now = epoch.now();
                let mut registry = registry.lock().unwrap_or_else(PoisonError::into_inner);
                match event {
                    LinkEvent::Opened(id, outbox) => {
                        links.insert(id, (registry.handle_link_opened(now), outbox));
                    }
                    LinkEvent::Frame(id, pdu) => {
                        if let Some((link, _)) = links.get(&id) {
                            registry.handle_frame(now, *link, &pdu);
                        }
                    }
                    LinkEvent::Closed(id) => {
                        if let Some((link, _)) = links.remove(&id) {
                            info!(id, %link, "msg_server link closed");
                            registry.handle_link_closed(now, link);
                        }
                    }
                }
            }
            () = sleep => {
                registry
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .handle_timeout(epoch.now());
            }
            _ = shutdown.wait() => break,
        }
        let mut registry = registry.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(event) = registry.poll_output() {
            match event {
                RegistryEvent::Registered(link, info) => {
                    info!(%link, ip1 = %info.ip1, port = info.port, cur = info.cur_conn_cnt, "msg_server registered");
                }
                RegistryEvent::Silent(link) => info!(%link, "msg_server silent, not offered"),
                RegistryEvent::Resumed(link) => info!(%link, "msg_server heard again, offered"),
                other => debug!(?other, "registry event"),
            }
        }
    }
    let _ = http_task.await;
    Ok(())
}

async fn serve_http(
    listener: Listeners,
    registry: Arc<dyn RegistryView>,
    config: LoginServerConfig,
    epoch: Epoch,
    mut shutdown: Shutdown,
) {
    let config = Arc::new(config);
    let timeouts = listener.http_timeouts();
    let mut builder = timeouts.builder();
    builder.keep_alive(false).max_buf_size(8192);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = link::accept(&listener) => accepted,
            _ = shutdown.wait() => return,
        };
        let (registry, config) = (registry.clone(), config.clone());
        let timeout = config.http_timeout;
        let respond = move |request: Request<Incoming>| {
            let answer = answer(&request, peer, &*registry, &config, epoch.now());
            async move { answer }
        };
        tokio::spawn(limits::serve_http(
            stream,
            peer,
            timeouts,
            builder.clone(),
            timeout,
            "login_server",
            respond,
        ));
    }
}

/// Any method on a URL starting with `/msg_server` gets the discovery JSON (as the original);
/// `GET /health` (ours) a JSON summary, 200 when a client would get a msg_server, else 503;
/// anything else a 404.
fn answer(
    request: &Request<Incoming>,
    peer: SocketAddr,
    registry: &dyn RegistryView,
    config: &LoginServerConfig,
    now: Now,
) -> Response<Full<Bytes>> {
    let path = request.uri().path_and_query().map_or("", |p| p.as_str());
    if request.uri().path() == "/health" {
        let mut health = (false, String::new());
        registry.with_registry(&mut |r| health = teamtalk_core::balance::health_json(r, now));
        let (healthy, body) = health;
        let mut response = Response::new(Full::new(Bytes::from(body)));
        if !healthy {
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        }
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
        return response;
    }
    if !path.starts_with("/msg_server") {
        let mut response = Response::new(Full::new(Bytes::from_static(b"not found\n")));
        *response.status_mut() = StatusCode::NOT_FOUND;
        return response;
    }
    let peer_is_ipv4 = match peer.ip() {
        std::net::IpAddr::V4(_) => true,
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some(),
    };
    let mut body = String::new();
    registry.with_registry(&mut |r| {
        body = discovery_json(r.pick(now), &config.msfs, &config.discovery, peer_is_ipv4);
    });
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/html;charset=utf-8"),
    );
    response
}
