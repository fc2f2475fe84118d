//! db_proxy_server over real sockets (loopback, ephemeral port), on the memory store.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use teamtalk_core::domain::Timestamp;
use teamtalk_core::proto::{buddy, server};
use teamtalk_core::service::{DbProxy, DbProxyConfig};
use teamtalk_core::store::{Credentials, NewUser, User, UserStore};
use teamtalk_core::{AnyMessage, CommandId, Pdu, PduDecoder};
use teamtalk_servers::clock::SystemClock;
use teamtalk_servers::db_proxy::{run, DbProxyServerConfig};
use teamtalk_servers::shutdown;
use teamtalk_store::MemoryStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Client {
    stream: TcpStream,
    buf: BytesMut,
    decoder: PduDecoder,
}

impl Client {
    async fn connect(addr: std::net::SocketAddr) -> Client {
        Client {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
            decoder: PduDecoder::default(),
        }
    }

    async fn send(&mut self, message: impl Into<AnyMessage>, seq: u16) {
        self.stream
            .write_all(&message.into().to_pdu(seq).to_bytes())
            .await
            .unwrap();
    }

    /// The next PDU, or `None` when the server closed the connection.
    async fn recv(&mut self) -> Option<Pdu> {
        loop {
            if let Some(pdu) = self.decoder.decode(&mut self.buf).unwrap() {
                return Some(pdu);
            }
            let read =
                tokio::time::timeout(Duration::from_secs(10), self.stream.read_buf(&mut self.buf))
                    .await
                    .expect("an answer within 10 s")
                    .unwrap();
            if read == 0 {
                return None;
            }
        }
    }
}

async fn start() -> (
    std::net::SocketAddr,
    shutdown::ShutdownTrigger,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
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
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (trigger, watch) = shutdown::channel();
    let server = tokio::spawn(run(DbProxyServerConfig::default(), listener, proxy, watch));
    (addr, trigger, server)
}

fn login(seq_attach: &[u8]) -> server::ImValidateReq {
    server::ImValidateReq {
        user_name: "alice".into(),
        password: teamtalk_core::password::client_password("123456"),
        attach_data: Some(Bytes::copy_from_slice(seq_attach)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_echo_seq_and_attach_and_many_requests_fly_at_once() {
    let (addr, trigger, server) = start().await;
    let mut client = Client::connect(addr).await;

    let attach = [0, 0, 0, 1, 0, 0, 0, 77, 0, 0, 0, 0];
    client.send(login(&attach), 42).await;
    let answer = client.recv().await.unwrap();
    assert_eq!(
        (answer.command(), answer.seq_num()),
        (CommandId::OTHER_VALIDATE_RSP, 42)
    );
    assert_eq!(
        answer.header.service_id,
        CommandId::OTHER_VALIDATE_RSP.service()
    );
    let rsp = answer.decode_body::<server::ImValidateRsp>().unwrap();
    assert_eq!(rsp.result_code, 0);
    assert_eq!(
        rsp.attach_data.as_deref(),
        Some(&attach[..]),
        "attach_data echoed"
    );

    // 200 pipelined requests: every one answered once, matched by seq.
    for seq in 1..=200u16 {
        let req = buddy::ImUsersInfoReq {
            user_id: 1,
            user_id_list: vec![1],
            attach_data: None,
        };
        client.send(req, seq).await;
    }
    let mut seen = HashSet::new();
    while seen.len() < 200 {
        let pdu = client.recv().await.unwrap();
        if pdu.command() == CommandId::OTHER_HEARTBEAT {
            continue;
        }
        assert_eq!(pdu.command(), CommandId::BUDDY_LIST_USER_INFO_RESPONSE);
        assert!(
            seen.insert(pdu.seq_num()),
            "seq {} answered twice",
            pdu.seq_num()
        );
    }

    // A body that is not the command's message fails that request only.
    client
        .stream
        .write_all(
            &Pdu::new(
                CommandId::BUDDY_LIST_USER_INFO_REQUEST,
                9,
                Bytes::from_static(&[0x0a, 0x05]),
            )
            .to_bytes(),
        )
        .await
        .unwrap();
    client.send(login(&attach), 43).await;
    let answer = client.recv().await.unwrap();
    assert_eq!(answer.seq_num(), 43, "the link survived the bad body");

    trigger.trigger();
    let stop = client.recv().await.unwrap();
    assert_eq!(
        stop.command(),
        CommandId::OTHER_STOP_RECV_PACKET,
        "peers are told before the server stops"
    );
    assert!(client.recv().await.is_none(), "then the link closes");
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_framing_error_closes_only_that_link() {
    let (addr, trigger, server) = start().await;
    let mut bad = Client::connect(addr).await;
    let mut good = Client::connect(addr).await;
    bad.stream
        .write_all(&[0xff, 0xff, 0xff, 0xff, 0, 1, 0, 0, 0, 7, 7, 1, 0, 0, 0, 0])
        .await
        .unwrap();
    assert!(
        bad.recv().await.is_none(),
        "an oversized frame closes the link"
    );
    good.send(login(&[]), 5).await;
    assert_eq!(
        good.recv().await.unwrap().seq_num(),
        5,
        "other links are unaffected"
    );
    trigger.trigger();
    server.await.unwrap().unwrap();
}

/// Answers every request after a pause, to have requests in flight at shutdown.
struct Slow;

impl teamtalk_core::service::Handler for Slow {
    async fn handle(&self, request: AnyMessage) -> Option<AnyMessage> {
        tokio::time::sleep(Duration::from_millis(300)).await;
        match request {
            AnyMessage::ValidateReq(req) => Some(
                server::ImValidateRsp {
                    user_name: req.user_name,
                    result_code: 1,
                    result_string: None,
                    user_info: None,
                    attach_data: req.attach_data,
                }
                .into(),
            ),
            _ => None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_requests_in_flight() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (trigger, watch) = shutdown::channel();
    let server = tokio::spawn(run(
        DbProxyServerConfig::default(),
        listener,
        Arc::new(Slow),
        watch,
    ));
    let mut client = Client::connect(addr).await;
    client.send(login(&[]), 1).await;
    client.send(login(&[]), 2).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    trigger.trigger();
    let stop = client.recv().await.unwrap();
    assert_eq!(stop.command(), CommandId::OTHER_STOP_RECV_PACKET);
    let mut answered: Vec<u16> = vec![
        client.recv().await.unwrap().seq_num(),
        client.recv().await.unwrap().seq_num(),
    ];
    answered.sort_unstable();
    assert_eq!(
        answered,
        vec![1, 2],
        "both requests in flight are answered after the stop notice"
    );
    assert!(client.recv().await.is_none(), "then the link closes");
    server.await.unwrap().unwrap();
}

/// The original waits 4 s after the stop notice before it exits; a C++ msg_server that reads
/// the notice and the close in one read never notices the close, so the link must stay open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_link_stays_open_after_the_stop_notice_then_closes() {
    let (addr, trigger, server) = start().await;
    let mut client = Client::connect(addr).await;
    client.send(login(&[]), 1).await;
    assert_eq!(client.recv().await.unwrap().seq_num(), 1);
    trigger.trigger();
    let stop = client.recv().await.unwrap();
    assert_eq!(stop.command(), CommandId::OTHER_STOP_RECV_PACKET);
    let noticed = std::time::Instant::now();
    // Still answering in the pause.
    client.send(login(&[]), 2).await;
    assert_eq!(client.recv().await.unwrap().seq_num(), 2);
    while let Some(pdu) = client.recv().await {
        assert_eq!(pdu.command(), CommandId::OTHER_HEARTBEAT);
    }
    let open_for = noticed.elapsed();
    assert!(
        open_for >= Duration::from_millis(3500),
        "the link closed {open_for:?} after the stop notice"
    );
    server.await.unwrap().unwrap();
}

/// Many requests written before any answer is read, answers read slowly: the link keeps
/// answering (its reading pauses at the in-flight budget, its writing does not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_requests_read_slowly_is_answered_in_full() {
    let (addr, trigger, server) = start().await;
    let client = Client::connect(addr).await;
    let Client {
        stream,
        mut buf,
        mut decoder,
    } = client;
    let (mut read, mut write) = stream.into_split();
    const REQUESTS: u16 = 20_000;
    let writer = tokio::spawn(async move {
        for seq in 1..=REQUESTS {
            let frame = AnyMessage::from(login(&[])).to_pdu(seq).to_bytes();
            write.write_all(&frame).await.unwrap();
        }
        write
    });
    let reading = async {
        let mut answers = 0u32;
        while answers < u32::from(REQUESTS) {
            while let Some(pdu) = decoder.decode(&mut buf).unwrap() {
                if pdu.command() != CommandId::OTHER_HEARTBEAT {
                    answers += 1;
                }
            }
            if answers % 1000 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let n = read.read_buf(&mut buf).await.unwrap();
            assert!(n > 0, "the link closed after {answers} answers");
        }
    };
    tokio::time::timeout(Duration::from_secs(120), reading)
        .await
        .expect("every request answered");
    let _write = writer.await.unwrap();
    trigger.trigger();
    server.await.unwrap().unwrap();
}
