//! The examples as users run them, against the whole system started in-process
//! (`teamtalk_servers::serve`, SQLite, ephemeral ports): echo_bot answers, and `tt` is driven
//! through its stdin and stdout.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use teamtalk_client::{Client, ClientConfig, Event};
use teamtalk_core::domain::{SessionKind, Timestamp};
use teamtalk_core::store::{Credentials, NewUser, User, UserStore};
use teamtalk_servers::serve::{self, Running, ServeConfig};
use teamtalk_store::{SqliteConfig, SqliteStore};

/// An example binary; `cargo test` builds the examples next to the test binaries.
fn example(name: &str) -> Command {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path: PathBuf = dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} not built (cargo test builds examples)",
        path.display()
    );
    Command::new(path)
}

async fn system(name: &str, users: &[&str]) -> (Running, PathBuf) {
    let dir = std::env::temp_dir().join(format!("teamtalk-examples-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = SqliteStore::open(&SqliteConfig::new(dir.join("teamtalk.db")))
        .await
        .unwrap();
    for user in users {
        let new = NewUser {
            profile: User {
                name: (*user).into(),
                nick: (*user).into(),
                ..Default::default()
            },
            credentials: Credentials::from_plain("pw", "77"),
        };
        store.add_user(&new, Timestamp(1)).await.unwrap();
    }
    let running = serve::start(ServeConfig::ephemeral(1), store)
        .await
        .unwrap();
    (running, dir)
}

/// Connects, retrying while the msg_server is still wiring its upstreams.
async fn connect(running: &Running, user: &str) -> (Client, teamtalk_client::Events) {
    let url = format!("http://{}", running.http);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Client::connect(ClientConfig::login_url(&url, user, "pw")).await {
            Ok(connected) => return connected,
            Err(error) => {
                assert!(Instant::now() < deadline, "{user} cannot connect: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Lines of a child's stdout, read on a thread.
fn lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a line containing `needle`; returns it.
async fn wait_line(rx: &mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match rx.try_recv() {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(mpsc::TryRecvError::Empty) => {
                assert!(Instant::now() < deadline, "no line containing {needle:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(mpsc::TryRecvError::Disconnected) => panic!("output ended before {needle:?}"),
        }
    }
}

async fn next_message(events: &mut teamtalk_client::Events) -> teamtalk_client::Message {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .unwrap()
            .unwrap();
        if let Event::Message(message) = event {
            return message;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_bot_answers_with_the_same_text() {
    let (running, dir) = system("echo", &["alice", "bot"]).await;
    let (alice, mut events) = connect(&running, "alice").await;
    let mut bot = example("echo_bot")
        .args([
            "--login-url",
            &format!("http://{}", running.http),
            "--user",
            "bot",
            "--password",
            "pw",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = lines(&mut bot);
    let hello = wait_line(&out, "logged in as").await;
    let bot_id: u32 = hello
        .rsplit("id ")
        .next()
        .unwrap()
        .trim_end_matches(')')
        .parse()
        .unwrap();

    for text in ["ping", "二 pong"] {
        let sent = alice.send_text(bot_id, text).await.unwrap();
        let reply = next_message(&mut events).await;
        assert_eq!(reply.from, bot_id, "the reply comes from the bot");
        assert_eq!(reply.text.as_deref(), Some(text));
        assert_eq!(reply.msg_id, sent + 1, "the next id of the conversation");
    }
    let history = alice
        .history(SessionKind::Single, bot_id, 0, 10)
        .await
        .unwrap();
    assert_eq!(history.len(), 4);

    bot.kill().unwrap();
    let _ = bot.wait();
    running.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tt_is_a_usable_terminal_client() {
    let (running, dir) = system("tt", &["alice", "bob"]).await;
    let (bob, mut bob_events) = connect(&running, "bob").await;
    let mut tt = example("tt")
        .args([
            "--login-url",
            &format!("http://{}", running.http),
            "--user",
            "alice",
            "--password",
            "pw",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = lines(&mut tt);
    let mut stdin = tt.stdin.take().unwrap();
    let hello = wait_line(&out, "logged in as alice").await;
    let alice_id: u32 = hello
        .split("(id ")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap()
        .parse()
        .unwrap();

    bob.send_text(alice_id, "hi alice").await.unwrap();
    wait_line(&out, "[bob] bob: hi alice (unread 1)").await;
    writeln!(stdin, "/contacts").unwrap();
    wait_line(&out, "bob [online] unread 1").await;
    writeln!(stdin, "/open bob").unwrap();
    wait_line(&out, "-- bob --").await;
    wait_line(&out, "bob: hi alice").await;
    writeln!(stdin, "hello bob").unwrap();
    let got = next_message(&mut bob_events).await;
    assert_eq!(
        (got.from, got.text.as_deref()),
        (alice_id, Some("hello bob"))
    );
    wait_line(&out, "me: hello bob").await;
    // Live messages of the open conversation show up and are marked read.
    bob.send_text(alice_id, "how are you").await.unwrap();
    wait_line(&out, "bob: how are you").await;
    writeln!(stdin, "/contacts").unwrap();
    wait_line(&out, "bob [online] unread 0").await;
    writeln!(stdin, "/quit").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = tt.try_wait().unwrap() {
            assert!(status.success());
            break;
        }
        assert!(Instant::now() < deadline, "tt did not quit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
