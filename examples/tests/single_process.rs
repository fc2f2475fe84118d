//! examples/single_process_server.rs as users run it: started as a program on an ephemeral
//! port (memory store, then SQLite), two users log in with teamtalk-client straight to its
//! address and use it: presence, 1:1 and group messages, history and unread counts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use teamtalk_client::{Client, ClientConfig, Event, Events, Message};
use teamtalk_core::domain::SessionKind;
use teamtalk_core::routing::{STATUS_OFFLINE, STATUS_ONLINE};

/// The server, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the example with `args` on a free port; returns it and its address.
fn start(args: &[&str]) -> (Server, String) {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path: PathBuf = dir.join("examples").join("single_process_server");
    assert!(path.exists(), "{} not built", path.display());
    let mut child = Command::new(path)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--user",
            "alice:pw",
            "--user",
            "bob:pw",
        ])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    // Whatever else it prints is read, so that it never writes to a closed pipe.
    std::thread::spawn(move || for _ in out.lines() {});
    let server = Server(child);
    let addr = first
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_owned();
    (server, addr)
}

async fn login(addr: &str, user: &str) -> (Client, Events) {
    Client::connect(ClientConfig::msg_server(addr, user, "pw"))
        .await
        .unwrap_or_else(|e| panic!("{user} cannot log in: {e}"))
}

async fn next_message(events: &mut Events) -> Message {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("no message within 10 s")
            .expect("events ended");
        if let Event::Message(message) = event {
            return message;
        }
    }
}

async fn status(client: &Client, user: u32) -> u32 {
    let stats = client.user_status(vec![user]).await.unwrap();
    u32::try_from(stats[0].status).unwrap()
}

/// Everything a chat needs, against the server at `addr`.
async fn chat(addr: &str) {
    let (alice, mut alice_events) = login(addr, "alice").await;
    let (bob, mut bob_events) = login(addr, "bob").await;
    let (alice_id, bob_id) = (alice.user_id(), bob.user_id());
    assert_ne!(alice_id, bob_id);
    assert_eq!(status(&bob, alice_id).await, STATUS_ONLINE);

    // 1:1, both ways, acknowledged with the conversation's ids.
    let first = alice.send_text(bob_id, "hello bob").await.unwrap();
    let got = next_message(&mut bob_events).await;
    assert_eq!((got.from, got.msg_id), (alice_id, first));
    assert_eq!(got.text.as_deref(), Some("hello bob"));
    let second = bob.send_text(alice_id, "hi alice").await.unwrap();
    assert_eq!(second, first + 1, "one conversation, ids in order");
    let got = next_message(&mut alice_events).await;
    assert_eq!(got.text.as_deref(), Some("hi alice"));

    // Unread, then read.
    let unread = alice.unread().await.unwrap();
    let from_bob = unread
        .unreadinfo_list
        .iter()
        .find(|u| u.session_id == bob_id)
        .expect("bob's conversation is unread");
    assert_eq!((from_bob.unread_cnt, from_bob.latest_msg_id), (1, second));
    alice
        .read_ack(SessionKind::Single, bob_id, second)
        .await
        .unwrap();
    // The ack has no answer and may take another db link than the next request: wait.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while alice.unread().await.unwrap().total_cnt != 0 {
        assert!(tokio::time::Instant::now() < deadline, "still unread");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // History, newest first.
    let history = bob
        .history(SessionKind::Single, alice_id, 0, 10)
        .await
        .unwrap();
    let ids: Vec<u32> = history.iter().map(|m| m.msg_id).collect();
    assert_eq!(ids, vec![second, first]);

    // A group: bob gets alice's group message, and its history holds it.
    let group = alice
        .create_group("team", vec![alice_id, bob_id])
        .await
        .unwrap();
    let sent = alice.send_group_text(group, "hello team").await.unwrap();
    let got = loop {
        let message = next_message(&mut bob_events).await;
        if message.is_group() {
            break message;
        }
    };
    assert_eq!((got.to, got.from, got.msg_id), (group, alice_id, sent));
    assert_eq!(got.text.as_deref(), Some("hello team"));
    let history = bob.history(SessionKind::Group, group, 0, 10).await.unwrap();
    assert!(history.iter().any(|m| m.msg_id == sent));

    // Presence: alice leaves, bob sees her offline.
    alice.logout().await.unwrap();
    drop((alice, alice_events));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while status(&bob, alice_id).await != STATUS_OFFLINE {
        assert!(tokio::time::Instant::now() < deadline, "alice still online");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_chat_on_the_memory_store() {
    let (_server, addr) = start(&[]);
    chat(&addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_store_keeps_users_and_history_across_restarts() {
    let dir = std::env::temp_dir().join(format!("teamtalk-single-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("teamtalk.db");
    let file = file.to_str().unwrap();
    let (server, addr) = start(&["--sqlite", file]);
    chat(&addr).await;
    drop(server);

    // Started again on the same file: the users exist once, the history is there.
    let (_server, addr) = start(&["--sqlite", file]);
    let (bob, _events) = login(&addr, "bob").await;
    let (alice, _alice_events) = login(&addr, "alice").await;
    let history = bob
        .history(SessionKind::Single, alice.user_id(), 0, 10)
        .await
        .unwrap();
    assert_eq!(history.len(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}
