//! Group commit in the SQLite store: concurrent writes share transactions, yet each write
//! succeeds or fails on its own.

#![cfg(feature = "sqlite")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use bytes::Bytes;
use teamtalk_core::domain::{MsgType, RelationId, Timestamp, UserId};
use teamtalk_core::store::{MessageStore, NewMessage, SessionStore, StoreError};
use teamtalk_store::{SqliteConfig, SqliteStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_writes_do_not_fail_their_batch() {
    let dir = std::env::temp_dir().join(format!("teamtalk-batching-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = SqliteStore::open(&SqliteConfig::new(dir.join("t.db")))
        .await
        .unwrap();
    let good = store
        .relation(UserId(1), UserId(2), true)
        .await
        .unwrap()
        .unwrap();
    let message = NewMessage {
        from: UserId(1),
        msg_type: MsgType::SingleText,
        content: Bytes::from_static(b"\x00\xffbinary"),
        created: Timestamp(1),
    };

    let mut tasks = Vec::new();
    for i in 0..200 {
        let (store, message) = (store.clone(), message.clone());
        let relation = if i % 2 == 0 {
            good
        } else {
            RelationId(999_999)
        };
        tasks.push(tokio::spawn(async move {
            store.append_single(relation, UserId(2), &message).await
        }));
    }
    let mut ids = Vec::new();
    let mut failures = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(id) => ids.push(id.0),
            Err(StoreError::Inconsistent(_)) => failures += 1,
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    ids.sort_unstable();
    assert_eq!(
        ids,
        (1..=100).collect::<Vec<u32>>(),
        "consecutive ids for the good writes"
    );
    assert_eq!(failures, 100, "each bad write failed alone");

    let stored = store
        .single_messages(
            good,
            &teamtalk_core::store::MessageQuery::Page {
                up_to: None,
                since: Timestamp(0),
                limit: 1,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        &stored[0].content[..],
        b"\x00\xffbinary",
        "binary content round-trips"
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}
