//! Data written the way the original C++ servers write it (raw SQL and Redis commands, NULLs
//! where the original schema allows them) is read and continued by our services unchanged.
//! Runs when `TEAMTALK_TEST_MYSQL_URL` and `TEAMTALK_TEST_REDIS_URL` are set.

#![cfg(feature = "mysql")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;

use bytes::Bytes;
use fred::interfaces::{ClientLike, HashesInterface, KeysInterface};
use teamtalk_core::domain::{ManualClock, Timestamp};
use teamtalk_core::password::{client_password, stored_password};
use teamtalk_core::proto::{buddy, file, group, message, server};
use teamtalk_core::service::{DbProxy, DbProxyConfig};
use teamtalk_store::{MysqlRedisConfig, MysqlRedisStore};

const T: u32 = 1_600_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn original_data_is_served_and_continued() {
    let (Ok(server_url), Ok(redis_url)) = (
        std::env::var("TEAMTALK_TEST_MYSQL_URL"),
        std::env::var("TEAMTALK_TEST_REDIS_URL"),
    ) else {
        println!("skipped: set TEAMTALK_TEST_MYSQL_URL and TEAMTALK_TEST_REDIS_URL");
        return;
    };
    let name = format!("tt_original_{}", std::process::id());
    let server_url = server_url.trim_end_matches('/').to_owned();
    let admin = sqlx::MySqlPool::connect(&server_url).await.unwrap();
    let create = format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4");
    sqlx::query(sqlx::AssertSqlSafe(create))
        .execute(&admin)
        .await
        .unwrap();

    let mut config = MysqlRedisConfig::new(&format!("{server_url}/{name}"), &redis_url);
    config.key_prefix = format!("{name}:");
    let _cleanup = Cleanup {
        server: server_url,
        name,
        config: config.clone(),
    };
    let store = MysqlRedisStore::connect(&config).await.unwrap();
    store.bootstrap().await.unwrap();
    run(&config, store).await;
}

/// Names stored twice by the original (no unique key on IMUser.name; `"x "` equals `"x"` in
/// its collation): a login takes the highest active id, administration the highest id of any
/// status, and creating the name once more is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_names_of_an_original_database() {
    use teamtalk_core::store::{Credentials, NewUser, StoreError, User, UserStore};
    let (Ok(server_url), Ok(redis_url)) = (
        std::env::var("TEAMTALK_TEST_MYSQL_URL"),
        std::env::var("TEAMTALK_TEST_REDIS_URL"),
    ) else {
        println!("skipped: set TEAMTALK_TEST_MYSQL_URL and TEAMTALK_TEST_REDIS_URL");
        return;
    };
    let name = format!("tt_dupnames_{}", std::process::id());
    let server_url = server_url.trim_end_matches('/').to_owned();
    let admin = sqlx::MySqlPool::connect(&server_url).await.unwrap();
    let create = format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4");
    sqlx::query(sqlx::AssertSqlSafe(create))
        .execute(&admin)
        .await
        .unwrap();
    let mut config = MysqlRedisConfig::new(&format!("{server_url}/{name}"), &redis_url);
    config.key_prefix = format!("{name}:");
    let _cleanup = Cleanup {
        server: server_url,
        name,
        config: config.clone(),
    };
    let store = MysqlRedisStore::connect(&config).await.unwrap();
    store.bootstrap().await.unwrap();
    let db = sqlx::MySqlPool::connect(&config.master_url).await.unwrap();
    for (id, user_name, password, status) in [
        (1, "dup", "first", 0),
        (2, "dup ", "second", 0),
        (3, "dup", "closed", 3),
    ] {
        sqlx::query(
            "INSERT INTO IMUser (id, name, nick, password, salt, departId, status, created, updated) \
             VALUES (?, ?, 'n', ?, '7', 1, ?, ?, ?)",
        )
        .bind(id)
        .bind(user_name)
        .bind(stored_password(&client_password(password), "7"))
        .bind(status)
        .bind(T)
        .bind(T)
        .execute(&db)
        .await
        .unwrap();
    }
    let proxy = DbProxy::new(
        store.clone(),
        Arc::new(ManualClock::new(Timestamp(T))),
        DbProxyConfig::default(),
    );
    let login = |password: &str| server::ImValidateReq {
        user_name: "dup".into(),
        password: client_password(password),
        attach_data: None,
    };
    let ok = proxy.validate(login("second")).await.unwrap();
    assert_eq!(ok.result_code, 0);
    assert_eq!(ok.user_info.unwrap().user_id, 2, "the highest active id");
    assert_eq!(proxy.validate(login("first")).await.unwrap().result_code, 1);
    assert_eq!(
        proxy.validate(login("closed")).await.unwrap().result_code,
        1
    );
    assert_eq!(store.user_named("dup").await.unwrap().unwrap().id.0, 3);
    let again = NewUser {
        profile: User {
            name: "dup  ".into(),
            ..User::default()
        },
        credentials: Credentials::from_plain("x", "1"),
    };
    match store.add_user(&again, Timestamp(T)).await {
        Err(StoreError::NameTaken { existing, .. }) => assert_eq!(existing.0, 3),
        other => panic!("{other:?}"),
    }
}

/// Drops the test database and keys, also when an assertion failed (own thread and runtime).
struct Cleanup {
    server: String,
    name: String,
    config: MysqlRedisConfig,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (server, name, config) = (self.server.clone(), self.name.clone(), self.config.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok(store) = MysqlRedisStore::connect(&config).await {
                    let _ = store.delete_prefixed_keys().await;
                }
                if let Ok(admin) = sqlx::MySqlPool::connect(&server).await {
                    let drop = format!("DROP DATABASE IF EXISTS `{name}`");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&admin).await;
                }
            });
        })
        .join();
    }
}

async fn run(config: &MysqlRedisConfig, store: MysqlRedisStore) {
    let db = sqlx::MySqlPool::connect(&config.master_url).await.unwrap();
    let redis = fred::prelude::Builder::from_config(
        fred::prelude::Config::from_url(&config.redis.unread).unwrap(),
    )
    .build()
    .unwrap();
    redis.init().await.unwrap();
    let key = |k: &str| format!("{}{k}", config.key_prefix);

    // --- what the original servers and the PHP admin leave behind ---------------------------
    let hash = stored_password(&client_password("123456"), "1234");
    for (id, user_name, avatar) in [(1, "alice", None), (2, "bob", Some("http://a/b.png"))] {
        sqlx::query(
            "INSERT INTO IMUser (id, sex, name, domain, nick, password, salt, phone, email, avatar, \
             departId, status, created, updated, push_shield_status, sign_info) \
             VALUES (?, 1, ?, 'py', ?, ?, '1234', '138', 'x@y', ?, 1, 0, ?, ?, 0, '')",
        )
        .bind(id).bind(user_name).bind(format!("N{user_name}")).bind(hash.clone()).bind(avatar).bind(T).bind(T)
        .execute(&db).await.unwrap();
    }
    sqlx::query("INSERT INTO IMDepart (id, departName, priority, parentId, status, created, updated) VALUES (1, '研发', 0, 0, 0, ?, ?)")
        .bind(T).bind(T).execute(&db).await.unwrap();
    // relation 9 (shard 1): two messages; sessions with NULL status as the DDL allows
    sqlx::query("INSERT INTO IMRelationShip (id, smallId, bigId, status, created, updated) VALUES (9, 1, 2, NULL, ?, ?)")
        .bind(T).bind(T).execute(&db).await.unwrap();
    for (msg_id, from, to, text) in [(1, 1, 2, "aGk="), (2, 2, 1, "eW8=")] {
        sqlx::query("INSERT INTO IMMessage_1 (relateId, fromId, toId, msgId, content, type, status, updated, created) VALUES (9, ?, ?, ?, ?, 1, 0, ?, ?)")
            .bind(from).bind(to).bind(msg_id).bind(text).bind(T + msg_id).bind(T + msg_id)
            .execute(&db).await.unwrap();
    }
    let _: () = redis
        .set(key("msg_id_9"), "2", None, None, false)
        .await
        .unwrap();
    let _: i64 = redis.hincrby(key("unread_1"), "2", 1).await.unwrap();
    for (owner, peer) in [(1, 2), (2, 1)] {
        sqlx::query("INSERT INTO IMRecentSession (userId, peerId, type, status, created, updated) VALUES (?, ?, 1, 0, ?, ?)")
            .bind(owner).bind(peer).bind(T).bind(T + 2).execute(&db).await.unwrap();
    }
    // temporary group 13 (shard 5) with both users, three messages, alice caught up at 1
    sqlx::query("INSERT INTO IMGroup (id, name, avatar, creator, type, userCnt, status, version, lastChated, updated, created) VALUES (13, '群', '', 1, 2, 4, 0, 3, ?, ?, ?)")
        .bind(T + 5).bind(T).bind(T).execute(&db).await.unwrap();
    for user in [1, 2] {
        sqlx::query("INSERT INTO IMGroupMember (groupId, userId, status, created, updated) VALUES (13, ?, 0, ?, ?)")
            .bind(user).bind(T).bind(T).execute(&db).await.unwrap();
        let member_key = format!("{}group_member_13", config.key_prefix);
        let member_redis = fred::prelude::Builder::from_config(
            fred::prelude::Config::from_url(&config.redis.group_member).unwrap(),
        )
        .build()
        .unwrap();
        member_redis.init().await.unwrap();
        let _: i64 = member_redis
            .hset(member_key, (user.to_string(), T.to_string()))
            .await
            .unwrap();
    }
    for msg_id in 1..=3u32 {
        sqlx::query("INSERT INTO IMGroupMessage_5 (groupId, userId, msgId, content, type, status, updated, created) VALUES (13, 2, ?, 'Zw==', 17, 0, ?, ?)")
            .bind(msg_id).bind(T + msg_id).bind(T + msg_id).execute(&db).await.unwrap();
    }
    let _: () = redis
        .set(key("group_msg_id_13"), "3", None, None, false)
        .await
        .unwrap();
    let _: i64 = redis
        .hset(key("13_im_group_msg"), ("count", "3"))
        .await
        .unwrap();
    let _: i64 = redis
        .hset(key("1_13_im_user_group"), ("count", "1"))
        .await
        .unwrap();
    sqlx::query("INSERT INTO IMTransmitFile (fromId, toId, fileName, size, taskId, status, created, updated) VALUES (2, 1, 'a.pdf', 10, 'uuid-1', 0, ?, ?)")
        .bind(T).bind(T).execute(&db).await.unwrap();

    // --- our services on that data ------------------------------------------------------------
    let clock = Arc::new(ManualClock::new(Timestamp(T + 100)));
    let proxy = DbProxy::new(store, clock, DbProxyConfig::default());

    let login = proxy
        .validate(server::ImValidateReq {
            user_name: "alice".into(),
            password: client_password("123456"),
            attach_data: None,
        })
        .await
        .unwrap();
    assert_eq!(
        login.result_code, 0,
        "the PHP admin's md5(md5(pw).salt) is accepted"
    );
    let alice = login.user_info.unwrap();
    assert_eq!(
        (
            alice.user_id,
            alice.avatar_url.as_str(),
            alice.user_nick_name.as_str()
        ),
        (1, "", "Nalice"),
        "NULL avatar reads as empty"
    );

    let depts = proxy
        .changed_departments(buddy::ImDepartmentReq {
            user_id: 1,
            latest_update_time: 0,
            attach_data: None,
        })
        .await
        .unwrap();
    assert_eq!(depts.dept_list[0].dept_name, "研发");

    let sessions = proxy
        .recent_sessions(buddy::ImRecentContactSessionReq {
            user_id: 1,
            latest_update_time: 0,
            attach_data: None,
        })
        .await
        .unwrap();
    let listed: Vec<(u32, i32, u32)> = sessions
        .contact_session_list
        .iter()
        .map(|s| (s.session_id, s.session_type, s.latest_msg_id))
        .collect();
    assert!(listed.contains(&(2, 1, 2)), "{listed:?}");

    let unread = proxy
        .unread_counts(message::ImUnreadMsgCntReq {
            user_id: 1,
            attach_data: None,
        })
        .await
        .unwrap();
    let counts: Vec<(u32, i32, u32)> = unread
        .unreadinfo_list
        .iter()
        .map(|u| (u.session_id, u.session_type, u.unread_cnt))
        .collect();
    assert_eq!(
        counts,
        vec![(2, 1, 1), (13, 2, 2)],
        "single from unread_1, group from the two count hashes"
    );

    let history = proxy
        .message_list(message::ImGetMsgListReq {
            user_id: 1,
            session_type: 1,
            session_id: 2,
            msg_id_begin: 0,
            msg_cnt: 10,
            attach_data: None,
        })
        .await
        .unwrap();
    let ids: Vec<u32> = history.msg_list.iter().map(|m| m.msg_id).collect();
    assert_eq!(ids, vec![2, 1]);
    assert_eq!(&history.msg_list[0].msg_data[..], b"eW8=");

    let sent = proxy
        .send_message(message::ImMsgData {
            from_user_id: 1,
            to_session_id: 2,
            create_time: T + 100,
            msg_type: 1,
            msg_data: Bytes::from_static(b"bmV3"),
            ..Default::default()
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sent.msg_id, 3, "the relation's Redis counter continues");
    let stored: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM IMMessage_1 WHERE relateId = 9 AND msgId = 3")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(stored, 1, "stored in the original shard table");
    let sessions: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM IMRecentSession WHERE userId = 1 AND peerId = 2")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(
        sessions, 1,
        "the existing session row is reused, not duplicated"
    );

    let group_sent = proxy
        .send_message(message::ImMsgData {
            from_user_id: 1,
            to_session_id: 13,
            create_time: T + 101,
            msg_type: 17,
            msg_data: Bytes::from_static(b"Zw=="),
            ..Default::default()
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(group_sent.msg_id, 4);
    let info = proxy
        .group_info(group::ImGroupInfoListReq {
            user_id: 1,
            group_version_list: vec![teamtalk_core::proto::base_define::GroupVersionInfo {
                group_id: 13,
                version: 0,
            }],
            attach_data: None,
        })
        .await
        .unwrap();
    assert_eq!(
        (
            info.group_info_list[0].version,
            info.group_info_list[0].group_member_list.clone()
        ),
        (3, vec![1, 2])
    );

    // Redis lost the group's member hash: the group is invalid, as in the original,
    // until it is rebuilt from IMGroupMember.
    let member_redis = fred::prelude::Builder::from_config(
        fred::prelude::Config::from_url(&config.redis.group_member).unwrap(),
    )
    .build()
    .unwrap();
    member_redis.init().await.unwrap();
    let _: i64 = member_redis.del(key("group_member_13")).await.unwrap();
    use teamtalk_core::store::GroupStore;
    assert!(proxy
        .store()
        .members(teamtalk_core::domain::GroupId(13))
        .await
        .unwrap()
        .is_none());
    let rebuilt = proxy
        .store()
        .rebuild_group_members(teamtalk_core::domain::GroupId(13))
        .await
        .unwrap();
    assert_eq!(rebuilt, 2);
    let members = proxy
        .store()
        .members(teamtalk_core::domain::GroupId(13))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        members.iter().map(|m| m.user.0).collect::<Vec<_>>(),
        vec![1, 2]
    );

    let files = proxy
        .offline_files(file::ImFileHasOfflineReq {
            user_id: 1,
            attach_data: None,
        })
        .await
        .unwrap();
    assert_eq!(files.offline_file_list[0].task_id, "uuid-1");

    // Session rows deleted behind the store's back (an operator, another tool): the next
    // message creates them again instead of updating rows that are gone.
    sqlx::query("DELETE FROM IMRecentSession WHERE type = 1")
        .execute(&db)
        .await
        .unwrap();
    // Concurrent messages in both directions, committed together by the message writer.
    let proxy = Arc::new(proxy);
    let mut sends = Vec::new();
    for i in 0..40u32 {
        let proxy = proxy.clone();
        let (from, to) = if i % 2 == 0 { (1, 2) } else { (2, 1) };
        sends.push(tokio::spawn(async move {
            proxy
                .send_message(message::ImMsgData {
                    from_user_id: from,
                    to_session_id: to,
                    create_time: T + 200,
                    msg_type: 1,
                    msg_data: Bytes::from(format!("burst {i}")),
                    ..Default::default()
                })
                .await
                .unwrap()
                .unwrap()
                .msg_id
        }));
    }
    let mut ids = Vec::new();
    for send in sends {
        ids.push(send.await.unwrap());
    }
    ids.sort_unstable();
    assert_eq!(ids, (4..44).collect::<Vec<u32>>());
    let stored: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM IMMessage_1 WHERE relateId = 9 AND msgId BETWEEN 4 AND 43",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(stored, 40, "every acknowledged message is stored");
    let rows: Vec<(u32, u32, i64)> = sqlx::query_as(
        "SELECT userId, peerId, COUNT(*) FROM IMRecentSession WHERE type = 1 \
         AND status = 0 GROUP BY userId, peerId ORDER BY userId",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(rows, vec![(1, 2, 1), (2, 1, 1)], "one visible session each");
}
