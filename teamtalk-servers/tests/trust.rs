//! The internal ports are trusted only by configuration (docs/deploy.md "Trust model"): they
//! listen on loopback by default, and serve only the peers of their allow-list.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use teamtalk_core::domain::Timestamp;
use teamtalk_core::proto::server;
use teamtalk_core::service::{DbProxy, DbProxyConfig};
use teamtalk_core::store::{Credentials, NewUser, User, UserStore};
use teamtalk_core::{AnyMessage, CommandId, Pdu, PduDecoder};
use teamtalk_servers::clock::SystemClock;
use teamtalk_servers::db_proxy::{run, DbProxyServerConfig};
use teamtalk_servers::link::Listeners;
use teamtalk_servers::serve::{self, ServeConfig};
use teamtalk_servers::shutdown;
use teamtalk_servers::trust::{AllowedPeers, PeerGate};
use teamtalk_store::MemoryStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A raw TCP client from source address `from` (any 127.x.y.z works on Linux loopback).
async fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(IpAddr::V4(from), 0)).unwrap();
    socket.connect(to).await.unwrap()
}

/// The next PDU, or `None` when the server closed (or reset) the connection.
async fn recv(stream: &mut TcpStream, buf: &mut BytesMut) -> Option<Pdu> {
    let mut decoder = PduDecoder::default();
    loop {
        if let Some(pdu) = decoder.decode(buf).unwrap() {
            return Some(pdu);
        }
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_buf(buf))
            .await
            .expect("an answer or a close within 10 s");
        match read {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

fn validate() -> Pdu {
    AnyMessage::from(server::ImValidateReq {
        user_name: "alice".into(),
        password: teamtalk_core::password::client_password("123456"),
        attach_data: None,
    })
    .to_pdu(7)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_proxy_serves_allowed_peers_and_closes_the_others_at_once() {
    let store = MemoryStore::new();
    let user = NewUser {
        profile: User {
            name: "alice".into(),
            ..User::default()
        },
        credentials: Credentials::from_plain("123456", "42"),
    };
    store.add_user(&user, Timestamp(1)).await.unwrap();
    let proxy = Arc::new(DbProxy::new(store, SystemClock, DbProxyConfig::default()));
    let listener = Listeners::bind(&["127.0.0.1:0".parse().unwrap()])
        .await
        .unwrap()
        .guarded(PeerGate::new(
            "db_proxy_server",
            "127.0.0.1".parse::<AllowedPeers>().unwrap(),
        ));
    let addr = listener.local_addr().unwrap();
    let (trigger, watch) = shutdown::channel();
    let server = tokio::spawn(run(DbProxyServerConfig::default(), listener, proxy, watch));

    // A peer off the list (a raw client, as an attacker's would be) reads nothing: its
    // request is never answered, the connection is closed.
    let mut stranger = connect_from(Ipv4Addr::new(127, 0, 0, 2), addr).await;
    let _ = stranger.write_all(&validate().to_bytes()).await;
    let mut buf = BytesMut::new();
    assert!(
        recv(&mut stranger, &mut buf).await.is_none(),
        "closed without an answer"
    );

    // A listed peer (a C++ msg_server is just such a plain TCP peer) is served.
    let mut peer = connect_from(Ipv4Addr::LOCALHOST, addr).await;
    peer.write_all(&validate().to_bytes()).await.unwrap();
    let mut buf = BytesMut::new();
    let answer = recv(&mut peer, &mut buf).await.expect("an answer");
    assert_eq!(answer.command(), CommandId::OTHER_VALIDATE_RSP);
    let rsp = answer.decode_body::<server::ImValidateRsp>().unwrap();
    assert_eq!(rsp.result_code, 0);

    trigger.trigger();
    drop(peer);
    server.await.unwrap().unwrap();
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        stream.read_to_string(&mut response),
    )
    .await
    .unwrap()
    .unwrap();
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_keeps_internal_ports_on_loopback_whatever_the_client_address() {
    let data = std::env::temp_dir().join(format!("teamtalk-trust-{}", std::process::id()));
    let config = ServeConfig {
        listen: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        file_dir: Some(data.join("offline")),
        http_api_key: Some("k".into()),
        ..ServeConfig::ephemeral(1)
    };
    let running = serve::start(config, MemoryStore::new()).await.unwrap();
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    for (role, addr) in [
        ("login_server (msg_servers)", running.login),
        ("route_server", running.route),
        ("db_proxy_server", running.db_proxy),
        ("http_msg_server", running.http_msg.unwrap()),
    ] {
        assert_eq!(addr.ip(), loopback, "{role} on {addr}");
    }
    // A raw client from another address gets nothing from db_proxy_server, and the other
    // internal ports close such a connection at once too.
    let mut stranger = connect_from(Ipv4Addr::new(127, 0, 0, 2), running.db_proxy).await;
    let _ = stranger.write_all(&validate().to_bytes()).await;
    let mut buf = BytesMut::new();
    assert!(recv(&mut stranger, &mut buf).await.is_none(), "refused");
    for addr in [running.route, running.login] {
        let mut stranger = connect_from(Ipv4Addr::new(127, 0, 0, 2), addr).await;
        let mut buf = BytesMut::new();
        assert!(
            recv(&mut stranger, &mut buf).await.is_none(),
            "{addr} refused"
        );
    }
    // The client-facing ports follow `listen`.
    assert!(running.msg_servers[0].ip().is_unspecified());
    assert!(running.http.ip().is_unspecified());
    assert!(running.file_server.unwrap().ip().is_unspecified());

    // The in-process msg_server still reaches the guarded login_server: discovery becomes
    // healthy once it registered.
    let http = SocketAddr::new(loopback, running.http.port());
    let mut healthy = false;
    for _ in 0..100 {
        if http_get(http, "/health").await.starts_with("HTTP/1.1 200") {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(healthy, "the msg_server registered with the login_server");
    running.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_admits_configured_peers_on_internal_ports() {
    let config = ServeConfig {
        internal_listen: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        allowed_peers: "127.0.0.3".parse().unwrap(),
        ..ServeConfig::ephemeral(1)
    };
    let running = serve::start(config, MemoryStore::new()).await.unwrap();
    let db = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), running.db_proxy.port());
    let mut listed = connect_from(Ipv4Addr::new(127, 0, 0, 3), db).await;
    listed.write_all(&validate().to_bytes()).await.unwrap();
    let mut buf = BytesMut::new();
    let answer = recv(&mut listed, &mut buf).await.expect("an answer");
    assert_eq!(answer.command(), CommandId::OTHER_VALIDATE_RSP);
    drop(listed);
    let mut stranger = connect_from(Ipv4Addr::new(127, 0, 0, 2), db).await;
    let _ = stranger.write_all(&validate().to_bytes()).await;
    let mut buf = BytesMut::new();
    assert!(
        recv(&mut stranger, &mut buf).await.is_none(),
        "not on the list"
    );
    running.stop().await.unwrap();
}
