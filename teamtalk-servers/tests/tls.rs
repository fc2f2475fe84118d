//! Mutual TLS between our roles (cargo feature `tls`): a link with a certificate of the
//! deployment's CA is served; one without a certificate, with another CA's, or in plain TCP
//! is not. Fixtures: tests/fixtures/tls/README.md.

#![cfg(feature = "tls")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use teamtalk_core::domain::Timestamp;
use teamtalk_core::proto::server;
use teamtalk_core::service::{DbProxy, DbProxyConfig};
use teamtalk_core::store::{Credentials, NewUser, User, UserStore};
use teamtalk_core::{AnyMessage, CommandId, Pdu, PduDecoder};
use teamtalk_servers::clock::SystemClock;
use teamtalk_servers::db_proxy::{run, DbProxyServerConfig};
use teamtalk_servers::link::{self, Backoff, LinkConfig, LinkEvent, Listeners};
use teamtalk_servers::shutdown;
use teamtalk_servers::tls::TlsFiles;
use teamtalk_store::MemoryStore;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

fn files(ca: &str, leaf: &str) -> TlsFiles {
    TlsFiles {
        ca_file: fixture(ca),
        cert_file: fixture(&format!("{leaf}.pem")),
        key_file: fixture(&format!("{leaf}.key")),
        server_name: None,
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

/// A db_proxy_server whose port requires TLS with a client certificate of `ca.pem`.
async fn start() -> (SocketAddr, shutdown::ShutdownTrigger) {
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
    let acceptor = files("ca.pem", "node").acceptor().unwrap();
    let listener = Listeners::bind(&["127.0.0.1:0".parse().unwrap()])
        .await
        .unwrap()
        .with_tls(acceptor);
    let addr = listener.local_addr().unwrap();
    let (trigger, watch) = shutdown::channel();
    tokio::spawn(run(DbProxyServerConfig::default(), listener, proxy, watch));
    (addr, trigger)
}

/// Sends a validate request on `stream` and returns the first PDU back, `None` when the
/// server closed, reset or failed the stream first (or sent something that is no frame).
async fn ask<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) -> Option<Pdu> {
    if stream.write_all(&validate().to_bytes()).await.is_err() {
        return None;
    }
    let _ = stream.flush().await;
    let mut buf = BytesMut::new();
    let mut decoder = PduDecoder::default();
    loop {
        match decoder.decode(&mut buf) {
            Ok(Some(pdu)) => return Some(pdu),
            Ok(None) => {}
            Err(_) => return None, // not a frame: a TLS alert to a plain client
        }
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_buf(&mut buf))
            .await
            .expect("an answer or a close within 10 s");
        match read {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

async fn next(events: &mut tokio::sync::mpsc::Receiver<LinkEvent<u32>>) -> LinkEvent<u32> {
    tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("an event within 10 s")
        .expect("the link task lives")
}

/// A raw TLS client trusting `ca.pem`, presenting `client` (`None`: no certificate).
async fn raw_tls(
    addr: SocketAddr,
    client: Option<&str>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(fixture("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some(leaf) => {
            let certs = CertificateDer::pem_file_iter(fixture(&format!("{leaf}.pem")))
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_file(fixture(&format!("{leaf}.key"))).unwrap();
            builder.with_client_auth_cert(certs, key).unwrap()
        }
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::IpAddress(addr.ip().into());
    connector.connect(name, tcp).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_with_a_certificate_of_the_ca_is_served() {
    let (addr, trigger) = start().await;
    let (events_tx, mut events) = tokio::sync::mpsc::channel(16);
    let (_dial_trigger, dial_watch) = shutdown::channel();
    let config = LinkConfig {
        tls: Some(files("ca.pem", "node").connector().unwrap()),
        ..LinkConfig::default()
    };
    tokio::spawn(link::dial(
        addr,
        1u32,
        config,
        Backoff::new(Duration::from_millis(100), 1),
        events_tx,
        dial_watch,
    ));
    let LinkEvent::Opened(_, outbox) = next(&mut events).await else {
        panic!("the link opens first");
    };
    outbox.send_pdu(&validate()).unwrap();
    let LinkEvent::Frame(_, answer) = next(&mut events).await else {
        panic!("an answer");
    };
    assert_eq!(answer.command(), CommandId::OTHER_VALIDATE_RSP);
    assert_eq!(
        answer
            .decode_body::<server::ImValidateRsp>()
            .unwrap()
            .result_code,
        0
    );

    // The same through a raw TLS client with the certificate (what the link does by hand).
    let mut raw = raw_tls(addr, Some("node")).await.unwrap();
    let answer = ask(&mut raw).await.expect("served");
    assert_eq!(answer.command(), CommandId::OTHER_VALIDATE_RSP);
    trigger.trigger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_certificate_another_ca_or_plain_tcp_is_refused() {
    let (addr, trigger) = start().await;
    // No client certificate: the server ends the handshake, nothing is answered.
    if let Ok(mut stream) = raw_tls(addr, None).await {
        assert!(ask(&mut stream).await.is_none(), "no certificate: refused");
    }
    // A certificate of another CA.
    if let Ok(mut stream) = raw_tls(addr, Some("other")).await {
        assert!(ask(&mut stream).await.is_none(), "another CA: refused");
    }
    // Plain TCP (what a C++ role speaks) on a TLS port.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    assert!(ask(&mut plain).await.is_none(), "plain TCP: refused");
    // Still serving the right ones.
    let mut good = raw_tls(addr, Some("node")).await.unwrap();
    assert!(ask(&mut good).await.is_some());
    trigger.trigger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialing_role_refuses_a_server_of_another_ca() {
    // The server presents other.pem; the dialing role trusts ca.pem only.
    let acceptor = TlsFiles {
        ca_file: fixture("ca.pem"),
        ..files("other-ca.pem", "other")
    }
    .acceptor()
    .unwrap();
    let listener = Listeners::bind(&["127.0.0.1:0".parse().unwrap()])
        .await
        .unwrap()
        .with_tls(acceptor);
    let addr = listener.local_addr().unwrap();
    let (trigger, watch) = shutdown::channel();
    let proxy = Arc::new(DbProxy::new(
        MemoryStore::new(),
        SystemClock,
        DbProxyConfig::default(),
    ));
    tokio::spawn(run(DbProxyServerConfig::default(), listener, proxy, watch));
    let connector = files("ca.pem", "node").connector().unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let result = teamtalk_servers::link::LinkStream::connect_tls(tcp, addr.ip(), &connector).await;
    assert!(result.is_err(), "the server's certificate is not of our CA");
    trigger.trigger();
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        stream.read_to_string(&mut response),
    )
    .await
    .unwrap();
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_its_internal_links_over_tls() {
    let config = teamtalk_servers::serve::ServeConfig {
        tls: Some(files("ca.pem", "node")),
        ..teamtalk_servers::serve::ServeConfig::ephemeral(1)
    };
    let running = teamtalk_servers::serve::start(config, MemoryStore::new())
        .await
        .unwrap();
    // The msg_server registers with the login_server over TLS: discovery becomes healthy.
    let mut healthy = false;
    for _ in 0..100 {
        if http_get(running.http, "/health")
            .await
            .starts_with("HTTP/1.1 200")
        {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        healthy,
        "the msg_server's TLS link to the login_server is up"
    );
    // A plain peer on db_proxy's port gets nothing; one with a certificate is served.
    let mut plain = TcpStream::connect(running.db_proxy).await.unwrap();
    assert!(ask(&mut plain).await.is_none());
    let mut good = raw_tls(running.db_proxy, Some("node")).await.unwrap();
    assert_eq!(
        ask(&mut good).await.expect("served").command(),
        CommandId::OTHER_VALIDATE_RSP
    );
    running.stop().await.unwrap();
}
