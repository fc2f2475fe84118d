//! The client against a scripted msg_server: the test plays the server frame by frame, to
//! check seq matching, events, timeouts, failure of pending requests and reconnecting.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use teamtalk_client::{Client, ClientConfig, Error, Event};
use teamtalk_core::proto::{base_define::UserInfo, login, message};
use teamtalk_core::{Pdu, PduDecoder, PduMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Peer {
    stream: TcpStream,
    buf: BytesMut,
    decoder: PduDecoder,
}

impl Peer {
    async fn accept(listener: &TcpListener) -> Peer {
        let (stream, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
            .await
            .unwrap()
            .unwrap();
        Peer {
            stream,
            buf: BytesMut::new(),
            decoder: PduDecoder::default(),
        }
    }

    async fn recv(&mut self) -> Pdu {
        loop {
            if let Some(pdu) = self.decoder.decode(&mut self.buf).unwrap() {
                return pdu;
            }
            let n =
                tokio::time::timeout(Duration::from_secs(10), self.stream.read_buf(&mut self.buf))
                    .await
                    .unwrap()
                    .unwrap();
            assert!(n > 0, "client closed");
        }
    }

    /// The next frame that is not a heartbeat.
    async fn request(&mut self) -> Pdu {
        loop {
            let pdu = self.recv().await;
            if pdu.command() != teamtalk_core::CommandId::OTHER_HEARTBEAT {
                return pdu;
            }
        }
    }

    async fn send<M: PduMessage>(&mut self, message: &M, seq: u16) {
        self.stream
            .write_all(&Pdu::encode_message(message, seq).to_bytes())
            .await
            .unwrap();
    }

    /// Answers the login that opens every connection.
    async fn accept_login(&mut self, user_id: u32) {
        let pdu = self.request().await;
        let request: login::ImLoginReq = pdu.decode_body().unwrap();
        assert_eq!(request.password.len(), 32, "md5 hex of the password");
        let answer = login::ImLoginRes {
            server_time: 1,
            result_code: 0,
            result_string: None,
            online_status: Some(1),
            user_info: Some(UserInfo {
                user_id,
                ..Default::default()
            }),
        };
        self.send(&answer, pdu.seq_num()).await;
    }
}

fn config(addr: std::net::SocketAddr) -> ClientConfig {
    let mut config = ClientConfig::msg_server(&addr.to_string(), "alice", "pw");
    config.request_timeout = Duration::from_millis(500);
    config.reconnect_delay = Duration::from_millis(50);
    config
}

#[tokio::test]
async fn answers_events_timeouts_and_reconnect() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = async {
        let mut peer = Peer::accept(&listener).await;
        peer.accept_login(7).await;
        peer
    };
    let (connected, mut peer) = tokio::join!(Client::connect(config(addr)), server);
    let (client, mut events) = connected.unwrap();
    assert_eq!(client.user_id(), 7);

    // A relayed message carrying the request's seq is an event; the real answer follows.
    let ask = tokio::spawn({
        let client = client.clone();
        async move { client.server_time().await }
    });
    let request = peer.request().await;
    assert_eq!(
        request.command(),
        teamtalk_core::CommandId::MSG_TIME_REQUEST
    );
    let seq = request.seq_num();
    assert_ne!(seq, 0);
    let key = teamtalk_core::crypt::MessageKey::default_key();
    let relayed = message::ImMsgData {
        from_user_id: 8,
        to_session_id: 7,
        msg_id: 3,
        create_time: 1,
        msg_type: 1,
        msg_data: Bytes::from(key.encrypt(b"hello")),
        attach_data: None,
    };
    peer.send(&relayed, seq).await;
    peer.send(&message::ImClientTimeRsp { server_time: 4242 }, seq)
        .await;
    assert_eq!(ask.await.unwrap().unwrap(), 4242);
    match events.recv().await.unwrap() {
        Event::Message(m) => {
            assert_eq!((m.from, m.msg_id, m.text.as_deref()), (8, 3, Some("hello")));
        }
        other => panic!("{other:?}"),
    }

    // No answer in time: Timeout; the late answer is ignored.
    let late = tokio::spawn({
        let client = client.clone();
        async move { client.unread().await }
    });
    let request = peer.request().await;
    assert!(matches!(late.await.unwrap(), Err(Error::Timeout)));
    let answer = message::ImUnreadMsgCntRsp {
        user_id: 7,
        total_cnt: 1,
        unreadinfo_list: vec![],
        attach_data: None,
    };
    peer.send(&answer, request.seq_num()).await;

    // The connection drops with a request in flight: it fails, then the client reconnects.
    let pending = tokio::spawn({
        let client = client.clone();
        async move { client.server_time().await }
    });
    let _ = peer.request().await;
    drop(peer);
    assert!(matches!(pending.await.unwrap(), Err(Error::Disconnected)));
    assert_eq!(events.recv().await.unwrap(), Event::Disconnected);
    let mut peer = Peer::accept(&listener).await;
    peer.accept_login(7).await;
    assert_eq!(events.recv().await.unwrap(), Event::Reconnected);
    let ask = tokio::spawn({
        let client = client.clone();
        async move { client.server_time().await }
    });
    let request = peer.request().await;
    peer.send(
        &message::ImClientTimeRsp { server_time: 5 },
        request.seq_num(),
    )
    .await;
    assert_eq!(ask.await.unwrap().unwrap(), 5);

    // A kick ends the session: no reconnect (it would kick the other device back).
    peer.send(
        &login::ImKickUser {
            user_id: 7,
            kick_reason: 1,
        },
        0,
    )
    .await;
    assert_eq!(events.recv().await.unwrap(), Event::Kicked { reason: 1 });
    assert!(matches!(events.recv().await.unwrap(), Event::Closed(_)));
    assert!(matches!(client.server_time().await, Err(Error::Closed)));
}

#[tokio::test]
async fn a_refused_login_is_an_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = async {
        let mut peer = Peer::accept(&listener).await;
        let pdu = peer.request().await;
        let answer = login::ImLoginRes {
            server_time: 1,
            result_code: 6,
            result_string: Some("用户名/密码错误".into()),
            online_status: None,
            user_info: None,
        };
        peer.send(&answer, pdu.seq_num()).await;
        peer
    };
    let (connected, _peer) = tokio::join!(Client::connect(config(addr)), server);
    match connected {
        Err(Error::Refused { code: 6, reason }) => assert!(!reason.is_empty()),
        other => panic!("{:?}", other.map(|_| ())),
    }
    // Garbage instead of a msg_server: a clear error, no panic.
    let garbage = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = garbage.local_addr().unwrap();
    let server = async {
        let (mut stream, _) = garbage.accept().await.unwrap();
        stream
            .write_all(&[0, 0, 0, 3, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
            .await
            .unwrap();
        stream
    };
    let (connected, _stream) = tokio::join!(Client::connect(config(addr)), server);
    assert!(
        matches!(connected, Err(Error::Protocol(_))),
        "{:?}",
        connected.map(|_| ())
    );
}
