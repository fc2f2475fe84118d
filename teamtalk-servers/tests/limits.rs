//! Connection limits over loopback: msg_server's `MaxConnCnt`, a per-address cap on
//! login_server's HTTP port, HTTP header and keep-alive idle timeouts, and the listen
//! backlog (docs/deploy.md, "Connection limits").

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use teamtalk_servers::link::{ListenConfig, Listeners};
use teamtalk_servers::shutdown::{self, ShutdownTrigger};
use teamtalk_servers::{login_server, msfs, msg_server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const WAIT: Duration = Duration::from_secs(10);
const LOCALHOST: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// Whether the server closes `stream` within `wait` (bytes it sends first are skipped).
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

/// A connection to `addr` from source address `from`.
async fn connect_from(from: Ipv4Addr, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(IpAddr::V4(from), 0)).unwrap();
    socket.connect(addr).await.unwrap()
}

/// `GET path` on `stream` (keep-alive): the status code, after reading the whole response.
async fn get(stream: &mut TcpStream, path: &str) -> u16 {
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed before the response");
        response.extend_from_slice(buf.get(..n).unwrap());
        let text = String::from_utf8_lossy(&response).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if body.len() >= length {
                return head.split_whitespace().nth(1).unwrap().parse().unwrap();
            }
        }
    }
}

fn spawn<F>(run: impl FnOnce(shutdown::Shutdown) -> F) -> ShutdownTrigger
where
    F: std::future::Future<Output = std::io::Result<()>> + Send + 'static,
{
    let (trigger, shutdown) = shutdown::channel();
    tokio::spawn(run(shutdown));
    trigger
}

#[tokio::test]
async fn msg_server_holds_at_most_max_conn_cnt_clients() {
    let listener = Listeners::bind(&[LOCALHOST]).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut settings = msg_server::MsgServerSettings::default();
    settings.core.max_conn_cnt = 2;
    let _stop = spawn(move |s| msg_server::run(settings, listener, s));

    let mut first = TcpStream::connect(addr).await.unwrap();
    let mut second = TcpStream::connect(addr).await.unwrap();
    assert!(!closed_within(&mut first, Duration::from_millis(300)).await);
    assert!(!closed_within(&mut second, Duration::from_millis(300)).await);
    let mut third = TcpStream::connect(addr).await.unwrap();
    assert!(
        closed_within(&mut third, WAIT).await,
        "the connection over MaxConnCnt is closed at once"
    );
    // A closed client gives its slot back.
    drop(first);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut again = TcpStream::connect(addr).await.unwrap();
        if !closed_within(&mut again, Duration::from_millis(300)).await {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot never came back"
        );
    }
}

#[tokio::test]
async fn login_server_caps_http_connections_per_source_address() {
    let config = ListenConfig {
        http: teamtalk_servers::link::HttpTimeouts {
            header: Duration::from_secs(120),
            idle: Duration::from_secs(120),
        },
        ..ListenConfig::capped(0, 2)
    };
    let http = Listeners::bind_with(&[LOCALHOST], &config).await.unwrap();
    let addr = http.local_addr().unwrap();
    let links = Listeners::bind(&[LOCALHOST]).await.unwrap();
    let _stop = spawn(move |s| login_server::run(Default::default(), http, links, s));

    let here = Ipv4Addr::LOCALHOST;
    let mut held = vec![
        connect_from(here, addr).await,
        connect_from(here, addr).await,
    ];
    for stream in &mut held {
        assert!(!closed_within(stream, Duration::from_millis(300)).await);
    }
    let mut over = connect_from(here, addr).await;
    assert!(
        closed_within(&mut over, WAIT).await,
        "a third idle connection from one address is closed at once"
    );
    // Another address is not affected.
    let mut other = connect_from(Ipv4Addr::new(127, 0, 0, 2), addr).await;
    assert_eq!(get(&mut other, "/health").await, 503);
    // A closed connection frees its address's slot.
    held.pop();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut again = connect_from(here, addr).await;
        if !closed_within(&mut again, Duration::from_millis(300)).await {
            assert_eq!(get(&mut again, "/health").await, 503);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot never came back"
        );
    }
}

#[tokio::test]
async fn a_slow_http_header_is_cut_off_after_the_header_timeout() {
    let config = ListenConfig {
        http: teamtalk_servers::link::HttpTimeouts {
            header: Duration::from_secs(1),
            idle: Duration::from_secs(120),
        },
        ..ListenConfig::default()
    };
    let http = Listeners::bind_with(&[LOCALHOST], &config).await.unwrap();
    let addr = http.local_addr().unwrap();
    let links = Listeners::bind(&[LOCALHOST]).await.unwrap();
    let _stop = spawn(move |s| login_server::run(Default::default(), http, links, s));

    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /msg_server HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert!(
        closed_within(&mut slow, WAIT).await,
        "a header never finished is closed after the header timeout"
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let dir = std::env::temp_dir().join(format!("teamtalk-limits-msfs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = ListenConfig {
        http: teamtalk_servers::link::HttpTimeouts {
            header: Duration::from_secs(120),
            idle: Duration::from_secs(1),
        },
        ..ListenConfig::default()
    };
    let listener = Listeners::bind_with(&[LOCALHOST], &config).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let msfs_config = msfs::MsfsConfig::new(&dir);
    let _stop = spawn(move |s| msfs::run(msfs_config, listener, s));

    let mut stream = TcpStream::connect(addr).await.unwrap();
    // Two requests on one connection: keep-alive works, then the connection sits idle.
    assert_eq!(get(&mut stream, "/g0/000/000/none.png").await, 404);
    assert_eq!(get(&mut stream, "/g0/000/000/none.png").await, 404);
    assert!(
        closed_within(&mut stream, WAIT).await,
        "an idle keep-alive connection is closed after the idle timeout"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_burst_of_connects_fits_in_the_default_backlog() {
    // Nothing accepts: every connect that completes sits in the backlog.
    let listener = Listeners::bind(&[LOCALHOST]).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut connects = tokio::task::JoinSet::new();
    for _ in 0..600 {
        connects.spawn(tokio::time::timeout(WAIT, TcpStream::connect(addr)));
    }
    let mut connected = Vec::new();
    while let Some(joined) = connects.join_next().await {
        if let Ok(Ok(stream)) = joined.unwrap() {
            connected.push(stream);
        }
    }
    assert_eq!(
        connected.len(),
        600,
        "a backlog of at least 1024 queues every connect"
    );
    drop(listener);
}
