//! The periodic group-session sync of db_proxy runs one last pass on shutdown: a group that
//! chatted after the last pass still gets its members' sessions, so a successor db_proxy (the
//! C++ one starts its sync from the time it starts) misses nothing. Runs on the memory and
//! SQLite stores, and on MySQL + Redis when `TEAMTALK_TEST_MYSQL_URL` and
//! `TEAMTALK_TEST_REDIS_URL` are set.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use teamtalk_core::domain::{Clock, UserId};
use teamtalk_core::proto::{base_define as bd, buddy, group, message};
use teamtalk_core::service::DbProxy;
use teamtalk_core::store::{Credentials, NewUser, Store, User};
use teamtalk_servers::clock::SystemClock;
use teamtalk_servers::{serve, shutdown};

async fn sessions<S: Store>(proxy: &DbProxy<S, SystemClock>, user: UserId) -> Vec<(u32, i32)> {
    proxy
        .recent_sessions(buddy::ImRecentContactSessionReq {
            user_id: user.0,
            latest_update_time: 0,
            attach_data: None,
        })
        .await
        .unwrap()
        .contact_session_list
        .iter()
        .map(|s| (s.session_id, s.session_type))
        .collect()
}

async fn last_pass_on_shutdown<S: Store + 'static>(store: S) {
    let proxy = Arc::new(DbProxy::new(store, SystemClock, Default::default()));
    let (trigger, shutdown) = shutdown::channel();
    // A period far longer than the test: no regular pass happens.
    let sync = tokio::spawn(serve::sync_groups(
        proxy.clone(),
        Duration::from_secs(3600),
        shutdown,
    ));

    let mut users = Vec::new();
    for name in ["ann", "bob", "cid"] {
        let user = NewUser {
            profile: User {
                name: name.to_owned(),
                nick: name.to_owned(),
                ..User::default()
            },
            credentials: Credentials::from_plain("123456", "4321"),
        };
        users.push(
            proxy
                .store()
                .add_user(&user, SystemClock.now())
                .await
                .unwrap(),
        );
    }
    let created = proxy
        .create_group(group::ImGroupCreateReq {
            user_id: users[0].0,
            group_type: bd::GroupType::Tmp as i32,
            group_name: "just made".into(),
            group_avatar: String::new(),
            member_id_list: users.iter().map(|u| u.0).collect(),
            attach_data: None,
        })
        .await
        .unwrap()
        .unwrap();
    let group_id = created.group_id.unwrap();
    let sent = proxy
        .send_message(message::ImMsgData {
            from_user_id: users[0].0,
            to_session_id: group_id,
            msg_id: 0,
            create_time: SystemClock.now().0,
            msg_type: bd::MsgType::GroupText as i32,
            msg_data: Bytes::from_static(b"hello"),
            attach_data: None,
        })
        .await
        .unwrap()
        .unwrap();
    assert_ne!(sent.msg_id, 0);
    assert!(
        sessions(&proxy, users[1]).await.is_empty(),
        "other members get the session from the sync"
    );

    trigger.trigger();
    tokio::time::timeout(Duration::from_secs(30), sync)
        .await
        .expect("the sync task ends on shutdown")
        .unwrap()
        .unwrap();
    let group = (group_id, bd::SessionType::Group as i32);
    for member in &users[1..] {
        assert_eq!(
            sessions(&proxy, *member).await,
            vec![group],
            "the last pass on shutdown gave {member:?} the group's session"
        );
    }
}

#[tokio::test]
async fn last_pass_on_shutdown_memory() {
    last_pass_on_shutdown(teamtalk_store::MemoryStore::new()).await;
}

#[tokio::test]
async fn last_pass_on_shutdown_sqlite() {
    let dir = std::env::temp_dir().join(format!("teamtalk-group-sync-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = teamtalk_store::SqliteStore::open(&teamtalk_store::SqliteConfig::new(
        dir.join("teamtalk.db"),
    ))
    .await
    .unwrap();
    last_pass_on_shutdown(store).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_pass_on_shutdown_mysql_and_redis() {
    let (Ok(server), Ok(redis)) = (
        std::env::var("TEAMTALK_TEST_MYSQL_URL"),
        std::env::var("TEAMTALK_TEST_REDIS_URL"),
    ) else {
        println!("skipped: set TEAMTALK_TEST_MYSQL_URL and TEAMTALK_TEST_REDIS_URL to run the group sync test on MySQL + Redis");
        return;
    };
    let name = format!("tt_group_sync_{}", std::process::id());
    let server = server.trim_end_matches('/').to_owned();
    let admin = sqlx::MySqlPool::connect(&server).await.unwrap();
    let create = format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4");
    sqlx::query(sqlx::AssertSqlSafe(create))
        .execute(&admin)
        .await
        .unwrap();
    let mut config = teamtalk_store::MysqlRedisConfig::new(&format!("{server}/{name}"), &redis);
    config.key_prefix = format!("{name}:");
    let store = teamtalk_store::MysqlRedisStore::connect(&config)
        .await
        .unwrap();
    store.bootstrap().await.unwrap();
    let cleanup = store.clone();
    let outcome = tokio::spawn(last_pass_on_shutdown(store)).await;
    let _ = cleanup.delete_prefixed_keys().await;
    let drop = format!("DROP DATABASE IF EXISTS `{name}`");
    let _ = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&admin).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic.into_panic());
    }
}
