//! Group commit in the SQLite store: concurrent writes share transactions, yet each write
//! succeeds or fails on its own.

#![cfg(feature = "sqlite")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use bytes::Bytes;
use teamtalk_core::domain::{MsgType, RelationId, Timestamp, UserId};
use teamtalk_core::store::{
    MessageStore, NewMessage, RecordMessage, SessionStore, StoreError, UnreadStore,
};
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
    }; // Half plain appends, half full records (append + unread + sessions); every other write
       // targets a relation that does not exist and must fail alone, leaving no trace.
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (store, message) = (store.clone(), message.clone());
        let (relation, to) = if i % 2 == 0 {
            (good, UserId(2))
        } else {
            (RelationId(999_999), UserId(3))
        };
        tasks.push(tokio::spawn(async move {
            if i % 4 < 2 {
                store.append_single(relation, to, &message).await
            } else {
                store
                    .record_single(relation, to, &message, Timestamp(5))
                    .await
            }
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
    assert_eq!(
        store.unread_counts(UserId(2)).await.unwrap(),
        vec![(UserId(1), 50)],
        "one unread per good record"
    );
    assert!(
        store.unread_counts(UserId(3)).await.unwrap().is_empty(),
        "failed records leave no unread count"
    );
    assert!(
        store
            .recent_sessions(UserId(3), Timestamp(0), 10)
            .await
            .unwrap()
            .is_empty(),
        "nor sessions"
    );
    assert_eq!(
        store
            .recent_sessions(UserId(1), Timestamp(0), 10)
            .await
            .unwrap()
            .len(),
        1
    );

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
