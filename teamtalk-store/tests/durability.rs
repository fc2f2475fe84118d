//! The embedded store keeps what it reported as done when the process is killed (`kill -9`).
//!
//! The test re-runs this test binary as a child (the ignored `child_writer` test) that appends
//! messages and prints each id once `append_single` returned; the parent kills it with SIGKILL
//! in mid-stream, reopens the database and checks that every reported id is there.

#![cfg(feature = "sqlite")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use bytes::Bytes;
use teamtalk_core::domain::{MsgId, MsgType, Timestamp, UserId};
use teamtalk_core::store::{MessageQuery, MessageStore, NewMessage, SessionStore};
use teamtalk_store::{SqliteConfig, SqliteStore};

const DB_ENV: &str = "TEAMTALK_DURABILITY_DB";

/// Child: appends messages forever, printing each id after the store reported it stored.
#[tokio::test]
#[ignore = "run by reported_messages_survive_kill_9 as a child process"]
async fn child_writer() {
    let path = std::env::var(DB_ENV).expect("run by the parent test");
    let store = SqliteStore::open(&SqliteConfig::new(path)).await.unwrap();
    let relation = store
        .relation(UserId(1), UserId(2), true)
        .await
        .unwrap()
        .unwrap();
    println!("relation {}", relation.0);
    for i in 0u64.. {
        let message = NewMessage {
            from: UserId(1),
            msg_type: MsgType::SingleText,
            content: Bytes::from(format!("message {i}")),
            created: Timestamp(1_700_000_000),
        };
        let id = store
            .append_single(relation, UserId(2), &message)
            .await
            .unwrap();
        println!("stored {}", id.0);
    }
}

#[tokio::test]
async fn reported_messages_survive_kill_9() {
    let dir = std::env::temp_dir().join(format!("teamtalk-durability-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("teamtalk.db");

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "child_writer",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DB_ENV, &db)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut relation = None;
    let mut last_reported = 0u32;
    while last_reported < 300 {
        let line = lines.next().expect("child output").unwrap();
        // The harness may print "test child_writer ... " in front of the first line.
        if let Some((_, id)) = line.split_once("relation ") {
            relation = Some(id.trim().parse::<u32>().unwrap());
        } else if let Some(id) = line.strip_prefix("stored ") {
            last_reported = id.parse().unwrap();
        }
    }
    child.kill().unwrap(); // SIGKILL: no destructors, no checkpoint
    child.wait().unwrap();

    let store = SqliteStore::open(&SqliteConfig::new(&db)).await.unwrap();
    let relation = teamtalk_core::domain::RelationId(relation.unwrap());
    let ids: Vec<MsgId> = (1..=last_reported).map(MsgId).collect();
    let query = MessageQuery::Ids {
        ids,
        since: Timestamp(0),
        limit: usize::MAX,
    };
    let found = store.single_messages(relation, &query).await.unwrap();
    assert_eq!(
        found.len(),
        last_reported as usize,
        "every reported message survived"
    );

    // ids continue after the crash without reuse
    let next = NewMessage {
        from: UserId(2),
        msg_type: MsgType::SingleText,
        content: Bytes::from_static(b"after"),
        created: Timestamp(1_700_000_001),
    };
    let id = store
        .append_single(relation, UserId(1), &next)
        .await
        .unwrap();
    assert!(id.0 > last_reported);
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}
