//! `chat` across a restart of the whole system on the same ports: the run completes (senders
//! and receivers log in again through discovery) and every acknowledged message is found,
//! live or in the receiver's history.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::Duration;

use teamtalk_bench::{chat, login, Target, Users};
use teamtalk_core::domain::Timestamp;
use teamtalk_core::store::{Credentials, NewUser, User, UserStore};
use teamtalk_servers::serve::{self, Running, ServeConfig};
use teamtalk_store::{SqliteConfig, SqliteStore};

fn users(count: u32) -> Users {
    Users {
        pattern: "u{}".into(),
        first: 1,
        count,
        password: "123456".into(),
        client_type: 18,
    }
}

async fn start(config: ServeConfig, db: &std::path::Path) -> Running {
    let store = SqliteStore::open(&SqliteConfig::new(db)).await.unwrap();
    serve::start(config, store).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_survives_a_restart_and_counts_nothing_lost() {
    let dir = std::env::temp_dir().join(format!("teamtalk-bench-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("teamtalk.db");
    {
        let store = SqliteStore::open(&SqliteConfig::new(&db)).await.unwrap();
        for i in 1..=8 {
            let user = NewUser {
                profile: User {
                    name: format!("u{i}"),
                    ..Default::default()
                },
                credentials: Credentials::from_plain("123456", "12"),
            };
            store.add_user(&user, Timestamp(1)).await.unwrap();
        }
    }
    let mut config = ServeConfig::ephemeral(1);
    config.msg.max_msgs_per_sec = 1000;
    let running = start(config.clone(), &db).await;
    // The restart binds the same ports.
    config.http_port = running.http.port();
    config.login_port = running.login.port();
    config.route_port = running.route.port();
    config.db_proxy_port = running.db_proxy.port();
    config.msg_ports = running.msg_servers.iter().map(|a| a.port()).collect();
    let url = Target::LoginUrl(format!("http://{}", running.http));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let probe = login::run(&login::LoginOptions {
            target: url.clone(),
            users: users(1),
            logins: 1,
            parallel: 1,
        })
        .await;
        if probe.is_ok_and(|r| r.number("failures") == 0.0) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "system not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let options = chat::ChatOptions {
        target: url.clone(),
        users: users(8),
        rate: 60.0,
        duration: Duration::from_secs(6),
        per_conn_rate: 20.0,
        drain: Duration::from_secs(3),
    };
    let run = tokio::spawn(async move { chat::run(&options).await });
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    running.stop().await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let running = start(config, &db).await;

    let report = run.await.unwrap().unwrap();
    println!("{}", report.table());
    assert!(report.number("reconnects") > 0.0, "{}", report.table());
    assert!(report.number("acked") > 0.0, "{}", report.table());
    assert_eq!(report.number("lost"), 0.0, "{}", report.table());
    running.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
