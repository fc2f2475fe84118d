//! A short run of every mode against the whole system in-process (and of `chat` against the
//! relay), asserting correctness (nothing lost, duplicated or refused), never a speed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::Duration;

use teamtalk_bench::{chat, group, idle, login, relay, Target, Users};
use teamtalk_core::domain::Timestamp;
use teamtalk_core::store::{Credentials, NewUser, User, UserStore};
use teamtalk_servers::serve::{self, ServeConfig};
use teamtalk_store::{SqliteConfig, SqliteStore};

const SMOKE: Duration = Duration::from_secs(5);

fn users(count: u32) -> Users {
    Users {
        pattern: "u{}".into(),
        first: 1,
        count,
        password: "123456".into(),
        client_type: 18,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mode_runs_clean() {
    let dir = std::env::temp_dir().join(format!("teamtalk-bench-smoke-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = SqliteStore::open(&SqliteConfig::new(dir.join("teamtalk.db")))
        .await
        .unwrap();
    for i in 1..=40 {
        let user = NewUser {
            profile: User {
                name: format!("u{i}"),
                ..Default::default()
            },
            credentials: Credentials::from_plain("123456", "12"),
        };
        store.add_user(&user, Timestamp(1)).await.unwrap();
    }
    let running = serve::start(ServeConfig::ephemeral(1), store)
        .await
        .unwrap();
    let url = Target::LoginUrl(format!("http://{}", running.http));
    // Wait until the msg_server is registered and wired.
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

    let report = login::run(&login::LoginOptions {
        target: url.clone(),
        users: users(40),
        logins: 200,
        parallel: 8,
    })
    .await
    .unwrap();
    assert_eq!(
        (report.number("logins"), report.number("failures")),
        (200.0, 0.0),
        "{}",
        report.table()
    );

    let options = chat::ChatOptions {
        target: url.clone(),
        users: users(40),
        rate: 100.0,
        duration: SMOKE,
        per_conn_rate: 10.0,
        drain: Duration::from_secs(2),
    };
    let report = chat::run(&options).await.unwrap();
    println!("{}", report.table());
    assert!(report.number("sent") >= 450.0, "{}", report.table());
    for key in ["lost", "duplicated", "out_of_order", "unacked"] {
        assert_eq!(report.number(key), 0.0, "{key}: {}", report.table());
    }
    assert_eq!(report.number("delivered"), report.number("sent"));
    assert!(report.get("client_cpu_pct").is_some() && report.get("p99_ms").is_some());

    let options = group::GroupOptions {
        target: url.clone(),
        users: users(40),
        members: 12,
        senders: 2,
        rate: 10.0,
        duration: SMOKE,
        drain: Duration::from_secs(2),
    };
    let report = group::run(&options).await.unwrap();
    println!("{}", report.table());
    assert_eq!(report.number("lost"), 0.0, "{}", report.table());
    assert_eq!(report.number("duplicated"), 0.0);
    assert_eq!(
        report.number("deliveries"),
        report.number("expected_deliveries")
    );
    assert!(report.number("deliveries") >= 12.0 * 45.0);

    let options = idle::IdleOptions {
        target: url.clone(),
        users: users(40),
        server_pid: Some(std::process::id()),
        sources: vec![[127, 0, 0, 1].into(), [127, 0, 0, 2].into()],
        hold: SMOKE,
    };
    let report = idle::run(&options).await.unwrap();
    assert_eq!(report.number("connections"), 40.0);
    assert!(report.get("server_rss_per_connection_bytes").is_some());
    running.stop().await.unwrap();

    // The relay ceiling with the same chat mode.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(relay::serve(listener));
    let options = chat::ChatOptions {
        target: Target::MsgServer(addr.to_string()),
        users: users(40),
        rate: 200.0,
        duration: SMOKE,
        per_conn_rate: 20.0,
        drain: Duration::from_secs(1),
    };
    let report = chat::run(&options).await.unwrap();
    for key in ["lost", "duplicated", "out_of_order", "unacked"] {
        assert_eq!(report.number(key), 0.0, "relay {key}: {}", report.table());
    }
    // The ramp steps up until the users run out (40 users: 20 pairs at 18/s each).
    let ramp = chat::RampOptions {
        base: chat::ChatOptions {
            rate: 90.0,
            duration: Duration::from_secs(1),
            drain: Duration::from_millis(500),
            ..options
        },
        factor: 2.0,
        max_p99_ms: 1000.0,
    };
    let report = chat::ramp(&ramp).await.unwrap();
    assert_eq!(
        report.number("max_sustained_per_s"),
        360.0,
        "{}",
        report.table()
    );
    assert_eq!(report.number("lost"), 0.0);
    let _ = std::fs::remove_dir_all(&dir);
}
