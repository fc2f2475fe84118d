//! login_server over real sockets: a msg_server whose link stays open but that sends nothing
//! (a frozen process) stops being offered to clients, while one that keeps sending
//! heartbeats is offered (docs/compatibility.md, "login_server skips silent msg_servers").

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::time::Duration;

use teamtalk_core::proto::{other, server};
use teamtalk_core::Pdu;
use teamtalk_servers::link::LinkConfig;
use teamtalk_servers::login_server::{self, LoginServerConfig};
use teamtalk_servers::shutdown;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8(response).unwrap()
}

/// A fake msg_server link: registers with `ip1` and `cur` connections.
async fn register(login: SocketAddr, ip1: &str, cur: u32) -> TcpStream {
    let mut stream = TcpStream::connect(login).await.unwrap();
    let info = server::ImMsgServInfo {
        ip1: ip1.to_owned(),
        ip2: ip1.to_owned(),
        port: 8000,
        max_conn_cnt: 100,
        cur_conn_cnt: cur,
        host_name: "fake".to_owned(),
    };
    stream
        .write_all(&Pdu::encode_message(&info, 0).to_bytes())
        .await
        .unwrap();
    stream
}

#[tokio::test]
async fn a_silent_msg_server_is_not_offered_while_its_link_stays_open() {
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let links = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (http_addr, links_addr) = (http.local_addr().unwrap(), links.local_addr().unwrap());
    let config = LoginServerConfig {
        // The link timeout is far away: only the 10 s rule can stop offering the frozen one.
        link: LinkConfig {
            timeout: Some(Duration::from_secs(600)),
            ..LinkConfig::default()
        },
        ..LoginServerConfig::default()
    };
    let (trigger, shutdown) = shutdown::channel();
    let task = tokio::spawn(login_server::run(config, http, links, shutdown));

    // "frozen" has fewer connections, so it wins while both are alive.
    let _frozen = register(links_addr, "10.0.0.1", 0).await;
    let mut alive = register(links_addr, "10.0.0.2", 5).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if http_get(http_addr, "/msg_server")
            .await
            .contains("10.0.0.1")
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never registered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // "alive" sends a heartbeat every second; "frozen" sends nothing (and reads nothing).
    let beat = Pdu::encode_message(&other::ImHeartBeat {}, 0).to_bytes();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        alive.write_all(&beat).await.unwrap();
        let answer = http_get(http_addr, "/msg_server").await;
        if answer.contains("10.0.0.2") {
            break;
        }
        assert!(answer.contains("10.0.0.1"), "{answer}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the silent msg_server is still offered: {answer}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let health = http_get(http_addr, "/health").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    trigger.trigger();
    let _ = task.await;
}
