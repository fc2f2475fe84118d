//! Pushes end to end: msg_server asks db_proxy for the receiver's tokens, builds the alert and
//! hands it to push_server, whose webhook backend POSTs it — for an offline Android user, and
//! not for one who muted the group.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::{Duration, Instant};

use serde_json::Value;
use teamtalk_client::{Client, ClientConfig, Events};
use teamtalk_core::domain::{ClientType, Timestamp};
use teamtalk_core::proto::login::ImDeviceTokenReq;
use teamtalk_core::store::{Credentials, NewUser, User, UserStore};
use teamtalk_servers::serve::{self, Running, ServeConfig};
use teamtalk_store::{SqliteConfig, SqliteStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// A local webhook receiver: every POSTed JSON body arrives on the channel.
async fn webhook() -> (String, mpsc::UnboundedReceiver<Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/push", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = stream.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    let Some((head, body)) = text.split_once("\r\n\r\n") else {
                        continue;
                    };
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if body.len() < length {
                        continue;
                    }
                    assert!(head.starts_with("POST /push HTTP/1.1"), "{head}");
                    let _ = tx.send(serde_json::from_str(body).unwrap());
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                        .await;
                    return;
                }
            });
        }
    });
    (url, rx)
}

async fn connect(running: &Running, user: &str, client_type: ClientType) -> (Client, Events) {
    let url = format!("http://{}", running.http);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut config = ClientConfig::login_url(&url, user, "pw");
        config.client_type = client_type;
        match Client::connect(config).await {
            Ok(connected) => return connected,
            Err(error) => assert!(Instant::now() < deadline, "{error}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn register_token(client: &Client, token: &str) {
    let request = ImDeviceTokenReq {
        user_id: client.user_id(),
        device_token: token.into(),
        client_type: None,
        attach_data: None,
    };
    client.request(request).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_phones_get_pushes_unless_muted() {
    let dir = std::env::temp_dir().join(format!("teamtalk-push-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = SqliteStore::open(&SqliteConfig::new(dir.join("teamtalk.db")))
        .await
        .unwrap();
    for name in ["alice", "bob", "carol"] {
        let user = NewUser {
            profile: User {
                name: name.into(),
                nick: format!("{name}!"),
                ..Default::default()
            },
            credentials: Credentials::from_plain("pw", "1"),
        };
        store.add_user(&user, Timestamp(1)).await.unwrap();
    }
    let (url, mut pushes) = webhook().await;
    let config = ServeConfig {
        push: teamtalk_servers::push::PushSettings::webhook(url),
        ..ServeConfig::ephemeral(1)
    };
    let running = serve::start(config, store).await.unwrap();

    // alice and carol register their phones' tokens, carol mutes the group, both go offline.
    let (bob, _bob_events) = connect(&running, "bob", ClientType::Windows).await;
    let (alice, alice_events) = connect(&running, "alice", ClientType::Android).await;
    let (carol, carol_events) = connect(&running, "carol", ClientType::Android).await;
    let (alice_id, carol_id) = (alice.user_id(), carol.user_id());
    register_token(&alice, "token-alice").await;
    register_token(&carol, "token-carol").await;
    let group = bob
        .create_group("team", vec![bob.user_id(), alice_id, carol_id])
        .await
        .unwrap();
    carol.shield_group(group, true).await.unwrap();
    for (client, events) in [(alice, alice_events), (carol, carol_events)] {
        drop(events);
        drop(client);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    bob.send_text(alice_id, "are you there?").await.unwrap();
    let push = tokio::time::timeout(Duration::from_secs(10), pushes.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(push["token"], "token-alice");
    assert_eq!(push["user_id"], alice_id);
    assert_eq!(push["client_type"], 18);
    assert_eq!(push["alert"], "bob!:are you there?");
    assert_eq!(push["push_type"], 1, "no PC of alice online: a normal push");
    assert_eq!(push["badge"], 1, "one unread message");
    assert_eq!(push["data"]["from_id"], bob.user_id());

    // A group message: alice is pushed, carol (muted) is not.
    bob.send_group_text(group, "lunch?").await.unwrap();
    let push = tokio::time::timeout(Duration::from_secs(10), pushes.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(push["token"], "token-alice");
    assert_eq!(push["data"]["group_id"], group);
    let more = tokio::time::timeout(Duration::from_millis(700), pushes.recv()).await;
    assert!(more.is_err(), "no push for the muted member: {more:?}");

    running.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
