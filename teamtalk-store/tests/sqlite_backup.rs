//! Online backups of the embedded store: a consistent copy taken while messages are written.

#![cfg(feature = "sqlite")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use bytes::Bytes;
use teamtalk_core::domain::{MsgType, Timestamp};
use teamtalk_core::store::{
    Credentials, MessageQuery, MessageStore, NewMessage, NewUser, SessionStore, User, UserStore,
};
use teamtalk_store::{SqliteConfig, SqliteStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_writing_is_a_consistent_copy() {
    let dir = std::env::temp_dir().join(format!("teamtalk-backup-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = SqliteStore::open(&SqliteConfig::new(dir.join("teamtalk.db")))
        .await
        .unwrap();
    let mut users = Vec::new();
    for name in ["alice", "bob"] {
        let user = NewUser {
            profile: User {
                name: name.into(),
                ..User::default()
            },
            credentials: Credentials::from_plain("pw", "1"),
        };
        users.push(store.add_user(&user, Timestamp(1)).await.unwrap());
    }
    let relation = store
        .relation(users[0], users[1], true)
        .await
        .unwrap()
        .unwrap();
    let (from, to) = (users[0], users[1]);
    let message = move |i: u32| NewMessage {
        from,
        msg_type: MsgType::SingleText,
        content: Bytes::from(format!("m{i}")),
        created: Timestamp(1_700_000_000),
    };
    for i in 0..100 {
        store
            .append_single(relation, to, &message(i))
            .await
            .unwrap();
    }

    // Writes go on while the backup is taken.
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 100..600 {
                store
                    .append_single(relation, to, &message(i))
                    .await
                    .unwrap();
            }
        })
    };
    let backup = dir.join("backup.db");
    store.backup_to(&backup).await.unwrap();
    writer.await.unwrap();
    let error = store.backup_to(&backup).await.unwrap_err();
    assert!(error.to_string().contains("already exists"), "{error}");

    let copy = SqliteStore::open(&SqliteConfig::new(&backup))
        .await
        .unwrap();
    let names: Vec<String> = copy
        .users(&users)
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["alice", "bob"]);
    let latest = copy
        .single_messages(
            relation,
            &MessageQuery::Page {
                up_to: None,
                since: Timestamp(0),
                limit: 1,
            },
        )
        .await
        .unwrap();
    let newest = latest[0].id.0;
    assert!(
        (100..=600).contains(&newest),
        "everything written before the backup started, maybe more: {newest}"
    );
    let all = copy
        .single_messages(
            relation,
            &MessageQuery::Page {
                up_to: None,
                since: Timestamp(0),
                limit: 1000,
            },
        )
        .await
        .unwrap();
    assert_eq!(all.len() as u32, newest, "no gap: a snapshot of one commit");
    let _ = std::fs::remove_dir_all(&dir);
}
