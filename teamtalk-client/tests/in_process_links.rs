//! `teamtalk serve` links its own roles in memory: with push_server, file_server and
//! http_msg_server started and used — a push for an offline phone, the file_server's address
//! in an offline-file answer, a message sent through the admin API — no TCP connection exists
//! on any of its internal ports (they are there for roles of other processes).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use teamtalk_client::{Client, ClientConfig, Event, Events};
use teamtalk_core::domain::{ClientType, Timestamp};
use teamtalk_core::proto::file::{ImFileHasOfflineReq, ImFileHasOfflineRsp};
use teamtalk_core::proto::login::ImDeviceTokenReq;
use teamtalk_core::store::{Credentials, NewUser, User, UserStore};
use teamtalk_core::AnyMessage;
use teamtalk_servers::serve::{self, Running, ServeConfig};
use teamtalk_store::MemoryStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);
const KEY: &str = "in-process-key";

/// A webhook that answers 200 to every POST and reports it.
async fn webhook() -> (String, mpsc::UnboundedReceiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/push", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut head = vec![0u8; 4096];
            let _ = stream.read(&mut head).await;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .await;
            let _ = tx.send(());
        }
    });
    (url, rx)
}

async fn connect(running: &Running, user: &str, client_type: ClientType) -> (Client, Events) {
    let url = format!("http://{}", running.http);
    let deadline = Instant::now() + WAIT;
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

async fn post(addr: SocketAddr, path: &str, body: &serde_json::Value) -> String {
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Api-Key: {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

/// The established TCP connections of the machine whose local port is one of `ports`
/// (Linux: /proc/net/tcp and tcp6; ports in hex, state 01 = ESTABLISHED).
fn established_on(ports: &HashSet<u16>) -> Vec<String> {
    let mut found = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(remote), Some(state)) =
                (fields.get(1), fields.get(2), fields.get(3))
            else {
                continue;
            };
            let port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if *state == "01" && port.is_some_and(|p| ports.contains(&p)) {
                found.push(format!("{table}: {local} <- {remote}"));
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_links_push_file_and_admin_roles_without_sockets() {
    if !std::path::Path::new("/proc/net/tcp").exists() {
        println!("skipped: no /proc/net/tcp to list connections (not Linux)");
        return;
    }
    let store = MemoryStore::new();
    for name in ["alice", "bob"] {
        let user = NewUser {
            profile: User {
                name: name.into(),
                nick: name.into(),
                ..Default::default()
            },
            credentials: Credentials::from_plain("pw", "7"),
        };
        store.add_user(&user, Timestamp(1)).await.unwrap();
    }
    let dir = std::env::temp_dir().join(format!("teamtalk-in-process-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (url, mut pushes) = webhook().await;
    let config = ServeConfig {
        push: teamtalk_servers::push::PushSettings::webhook(url),
        file_dir: Some(dir.join("offline_file")),
        http_api_key: Some(KEY.into()),
        ..ServeConfig::ephemeral(1)
    };
    let running = serve::start(config, store).await.unwrap();
    let internal: HashSet<u16> = [
        Some(running.login),
        Some(running.route),
        Some(running.db_proxy),
        running.push_server,
        running.file_server_links,
    ]
    .into_iter()
    .map(|addr| addr.expect("every internal role started").port())
    .collect();

    // push_server: bob's phone registers a token and goes offline; alice's message pushes.
    let (alice, mut alice_events) = connect(&running, "alice", ClientType::Windows).await;
    let (bob, bob_events) = connect(&running, "bob", ClientType::Android).await;
    let bob_id = bob.user_id();
    let token = ImDeviceTokenReq {
        user_id: bob_id,
        device_token: "token-bob".into(),
        client_type: None,
        attach_data: None,
    };
    bob.request(token).await.unwrap();
    drop((bob, bob_events));
    let deadline = Instant::now() + WAIT;
    loop {
        alice.send_text(bob_id, "are you there?").await.unwrap();
        match tokio::time::timeout(Duration::from_millis(500), pushes.recv()).await {
            Ok(Some(())) => break,
            _ => assert!(Instant::now() < deadline, "no push reached the webhook"),
        }
    }

    // file_server: the msg_server learnt its address over their link.
    let deadline = Instant::now() + WAIT;
    loop {
        let request = ImFileHasOfflineReq {
            user_id: alice.user_id(),
            attach_data: None,
        };
        let answer = alice.request(request).await.unwrap();
        let Some(AnyMessage::FileHasOfflineRsp(ImFileHasOfflineRsp { ip_addr_list, .. })) = answer
        else {
            panic!("not an offline-file answer: {answer:?}");
        };
        if !ip_addr_list.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "no file_server address");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // http_msg_server: a message through the admin API (db_proxy stores it, the route hub
    // delivers it).
    let send = json!({"from_user_id": bob_id, "to_id": alice.user_id(), "text": "from the API"});
    let answer = post(running.http_msg.unwrap(), "/query/SendMessage", &send).await;
    assert!(answer.contains("\"error_code\":0"), "{answer}");
    loop {
        let event = tokio::time::timeout(WAIT, alice_events.recv())
            .await
            .expect("the API's message in time")
            .expect("alice still connected");
        if let Event::Message(message) = event {
            if message.text.as_deref() == Some("from the API") {
                break;
            }
        }
    }

    let links = established_on(&internal);
    assert!(
        links.is_empty(),
        "connections on serve's internal ports: {links:#?}"
    );
    running.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
