//! `teamtalk serve` links its roles in memory, yet a msg_server of another process still
//! joins it through its route, login and db_proxy ports: users of both msg_servers see each
//! other and talk, and the login_server's discovery offers both.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use teamtalk_core::domain::{ClientType, Timestamp};
use teamtalk_core::password::client_password;
use teamtalk_core::proto::{base_define as bd, login, message};
use teamtalk_core::store::{Credentials, NewUser, User, UserStore};
use teamtalk_core::{AnyMessage, Pdu, PduDecoder, PduMessage};
use teamtalk_servers::serve::{self, ServeConfig};
use teamtalk_servers::{msg_server, shutdown};
use teamtalk_store::MemoryStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(10);

struct Client {
    stream: TcpStream,
    buf: BytesMut,
    decoder: PduDecoder,
    user_id: u32,
}

impl Client {
    async fn send(&mut self, message: impl Into<AnyMessage>, seq: u16) {
        let frame = message.into().to_pdu(seq).to_bytes();
        self.stream.write_all(&frame).await.unwrap();
    }

    async fn recv(&mut self) -> Pdu {
        loop {
            if let Some(pdu) = self.decoder.decode(&mut self.buf).unwrap() {
                return pdu;
            }
            let n = tokio::time::timeout(WAIT, self.stream.read_buf(&mut self.buf))
                .await
                .expect("an answer in time")
                .unwrap();
            assert!(n > 0, "user {} was disconnected", self.user_id);
        }
    }

    async fn expect<M: PduMessage>(&mut self) -> M {
        loop {
            let pdu = self.recv().await;
            if pdu.command() == M::COMMAND {
                return pdu.decode_body().unwrap();
            }
        }
    }

    /// Logs in, retrying while the msg_server still wires its links.
    async fn login(addr: SocketAddr, name: &str) -> Client {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let mut c = Client {
                stream: TcpStream::connect(addr).await.unwrap(),
                buf: BytesMut::new(),
                decoder: PduDecoder::default(),
                user_id: 0,
            };
            let request = login::ImLoginReq {
                user_name: name.into(),
                password: client_password("secret"),
                online_status: 1,
                client_type: ClientType::Mac.to_wire(),
                client_version: Some("one_process".into()),
            };
            c.send(request, 1).await;
            let res: login::ImLoginRes = c.expect().await;
            if res.result_code == 0 {
                c.user_id = res.user_info.map_or(0, |u| u.user_id);
                return c;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "login of {name} refused: {res:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn text(&mut self, to: u32, text: &'static [u8]) -> u32 {
        let data = message::ImMsgData {
            from_user_id: 0,
            to_session_id: to,
            msg_id: 0,
            create_time: 0,
            msg_type: bd::MsgType::SingleText as i32,
            msg_data: Bytes::from_static(text),
            attach_data: None,
        };
        self.send(data, 2).await;
        let ack: message::ImMsgDataAck = self.expect().await;
        ack.msg_id
    }
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_msg_server_of_another_process_joins_serve_through_its_ports() {
    let store = MemoryStore::new();
    for name in ["alice", "bob"] {
        let user = NewUser {
            profile: User {
                name: name.into(),
                nick: name.into(),
                ..Default::default()
            },
            credentials: Credentials::from_plain("secret", "4321"),
        };
        store.add_user(&user, Timestamp(1)).await.unwrap();
    }
    let running = serve::start(ServeConfig::ephemeral(1), store)
        .await
        .unwrap();

    // The other process: a msg_server dialling serve's internal ports over TCP.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let remote = listener.local_addr().unwrap();
    let mut settings = msg_server::MsgServerSettings {
        db_servers: vec![running.db_proxy],
        route_servers: vec![running.route],
        login_servers: vec![running.login],
        reconnect_delay: Duration::from_millis(100),
        ..Default::default()
    };
    settings.core.port = u32::from(remote.port());
    settings.core.ip1 = "10.9.9.9".into();
    let (stop_remote, remote_shutdown) = shutdown::channel();
    let remote_task = tokio::spawn(msg_server::run(settings, listener, remote_shutdown));

    let mut alice = Client::login(running.msg_servers[0], "alice").await;
    let mut bob = Client::login(remote, "bob").await;

    // Both ways across the processes, through serve's route hub.
    let sent = alice.text(bob.user_id, b"hello from serve").await;
    let got: message::ImMsgData = bob.expect().await;
    assert_eq!((got.from_user_id, got.msg_id), (alice.user_id, sent));
    let reply = bob.text(alice.user_id, b"hello from elsewhere").await;
    assert_eq!(reply, sent + 1, "one conversation, stored by serve's store");
    let got: message::ImMsgData = alice.expect().await;
    assert_eq!(got.from_user_id, bob.user_id);

    // The discovery knows both msg_servers: the remote one registered with serve's registry.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let health = http_get(running.http, "/health").await;
        if health.contains("\"msg_servers\":2") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the remote msg_server never registered: {health}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    stop_remote.trigger();
    remote_task.await.unwrap().unwrap();
    running.stop().await.unwrap();
}
