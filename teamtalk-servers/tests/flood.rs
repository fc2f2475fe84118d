//! Heavy clients cannot starve the others: several logged-in clients flood
//! `CID_BUDDY_LIST_ALL_USER_REQUEST` (with many users stored, so every answer is large) while
//! other users log in and exchange messages; everything is served and the system stops.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use teamtalk_core::domain::{ClientType, Timestamp};
use teamtalk_core::password::client_password;
use teamtalk_core::proto::{base_define as bd, buddy, login, message};
use teamtalk_core::store::{Credentials, NewUser, User, UserStore};
use teamtalk_core::{AnyMessage, Pdu, PduDecoder, PduMessage};
use teamtalk_servers::serve::{self, ServeConfig};
use teamtalk_store::MemoryStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(30);

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
                client_version: Some("flood".into()),
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
}

async fn users(store: &MemoryStore, count: usize) {
    for i in 0..count {
        let user = NewUser {
            profile: User {
                name: format!("user{i}"),
                nick: format!("a rather long nick name for user number {i}"),
                sign_info: "x".repeat(100),
                department: teamtalk_core::domain::DepartmentId(1),
                ..Default::default()
            },
            credentials: Credentials::from_plain("secret", "4321"),
        };
        store.add_user(&user, Timestamp(1)).await.unwrap();
    }
}

/// Sends 50 ALL_USER requests every half second and reads what comes back (slowly).
async fn flood(c: Client, rounds: u32) {
    let request = buddy::ImAllUserReq {
        user_id: 0,
        latest_update_time: 0,
        attach_data: None,
    };
    let frame = AnyMessage::from(request).to_pdu(0).to_bytes();
    let mut burst = Vec::new();
    for _ in 0..50 {
        burst.extend_from_slice(&frame);
    }
    let (mut read, mut write) = c.stream.into_split();
    let reader = tokio::spawn(async move {
        let mut chunk = vec![0u8; 4096];
        loop {
            match read.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => tokio::time::sleep(Duration::from_micros(100)).await,
            }
        }
    });
    for _ in 0..rounds {
        if write.write_all(&burst).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    reader.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flooding_clients_do_not_starve_logins_and_messages() {
    let store = MemoryStore::new();
    users(&store, 3000).await;
    let running = serve::start(ServeConfig::ephemeral(1), store)
        .await
        .unwrap();
    let addr = running.msg_servers[0];
    let mut floods = Vec::new();
    for i in 0..3 {
        let c = Client::login(addr, &format!("user{i}")).await;
        floods.push(tokio::spawn(flood(c, 10)));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Meanwhile others log in and talk.
    for round in 0..5u32 {
        let mut alice = Client::login(addr, &format!("user{}", 100 + round)).await;
        let mut bob = Client::login(addr, &format!("user{}", 200 + round)).await;
        let text = message::ImMsgData {
            from_user_id: 0,
            to_session_id: bob.user_id,
            msg_id: 0,
            create_time: 0,
            msg_type: bd::MsgType::SingleText as i32,
            msg_data: Bytes::from_static(b"hello under load"),
            attach_data: None,
        };
        alice.send(text, 2).await;
        let ack: message::ImMsgDataAck = alice.expect().await;
        assert_eq!(ack.session_id, bob.user_id);
        let got: message::ImMsgData = bob.expect().await;
        assert_eq!(got.from_user_id, alice.user_id);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Stopped while the flood goes on.
    tokio::time::timeout(Duration::from_secs(60), running.stop())
        .await
        .expect("the system stops while flooded")
        .unwrap();
    for f in floods {
        f.abort();
    }
}
