//! http_msg_server (the admin API) in the in-process system: the API key, creating a group,
//! changing members and sending a message, seen by a logged-in client.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use teamtalk_client::{Client, ClientConfig, Event};
use teamtalk_core::domain::Timestamp;
use teamtalk_core::store::{Credentials, NewUser, User, UserStore};
use teamtalk_servers::serve::{self, ServeConfig};
use teamtalk_store::{SqliteConfig, SqliteStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEY: &str = "admin-key-123";

async fn post(addr: SocketAddr, path: &str, key: Option<&str>, body: &Value) -> (u16, Value) {
    let body = body.to_string();
    let key = key
        .map(|k| format!("X-Api-Key: {k}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{key}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8(response).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

async fn next_event(events: &mut teamtalk_client::Events, pick: impl Fn(&Event) -> bool) -> Event {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .unwrap()
            .unwrap();
        if pick(&event) {
            return event;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_acts_through_db_proxy_and_route_server() {
    let dir = std::env::temp_dir().join(format!("teamtalk-admin-api-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = SqliteStore::open(&SqliteConfig::new(dir.join("teamtalk.db")))
        .await
        .unwrap();
    let mut ids = Vec::new();
    for name in ["alice", "bob", "carol"] {
        let user = NewUser {
            profile: User {
                name: name.into(),
                nick: name.into(),
                ..Default::default()
            },
            credentials: Credentials::from_plain("pw", "5"),
        };
        ids.push(store.add_user(&user, Timestamp(1)).await.unwrap().0);
    }
    let (alice_id, bob_id, carol_id) = (ids[0], ids[1], ids[2]);
    let config = ServeConfig {
        http_api_key: Some(KEY.into()),
        ..ServeConfig::ephemeral(1)
    };
    let running = serve::start(config, store).await.unwrap();
    let api = running.http_msg.unwrap();
    let url = format!("http://{}", running.http);
    let deadline = Instant::now() + Duration::from_secs(10);
    let (alice, mut events) = loop {
        match Client::connect(ClientConfig::login_url(&url, "alice", "pw")).await {
            Ok(connected) => break connected,
            Err(error) => assert!(Instant::now() < deadline, "{error}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // The key is required, in the header or as the body's app_key.
    let create = json!({"req_user_id": 0, "group_name": "all hands", "group_type": 1,
                        "group_avatar": "", "user_id_list": [alice_id, bob_id]});
    let (status, body) = post(api, "/query/CreateGroup", None, &create).await;
    assert_eq!((status, body["error_code"].as_u64()), (401, Some(2)));
    let (status, _) = post(api, "/query/CreateGroup", Some("wrong"), &create).await;
    assert_eq!(status, 401);
    let mut with_app_key = create.clone();
    with_app_key["app_key"] = json!(KEY);
    let (status, body) = post(api, "/query/CreateGroup", None, &with_app_key).await;
    assert_eq!(
        (status, body["error_code"].as_u64()),
        (200, Some(0)),
        "{body}"
    );
    let group_id = u32::try_from(body["group_id"].as_u64().unwrap()).unwrap();
    assert!(group_id > 0);
    assert!(
        alice
            .groups()
            .await
            .unwrap()
            .iter()
            .any(|g| g.group_id == group_id),
        "a fixed group of alice"
    );

    // Parameter errors.
    let (_, body) = post(
        api,
        "/query/CreateGroup",
        Some(KEY),
        &json!({"group_name": "x", "group_type": 7, "user_id_list": []}),
    )
    .await;
    assert_eq!(body["error_code"], 1);
    let (_, body) = post(
        api,
        "/query/ChangeMembers",
        Some(KEY),
        &json!({"group_id": group_id, "modify_type": 1}),
    )
    .await;
    assert_eq!(body["error_code"], 1);

    // Adding carol: alice is told through route_server and her msg_server.
    let change = json!({"req_user_id": 0, "group_id": group_id, "modify_type": 1, "user_id_list": [carol_id]});
    let (_, body) = post(api, "/query/ChangeMembers", Some(KEY), &change).await;
    assert_eq!(body["error_code"], 0, "{body}");
    let event = next_event(&mut events, |e| matches!(e, Event::GroupMembers(_))).await;
    let Event::GroupMembers(notify) = event else {
        unreachable!()
    };
    assert_eq!(notify.group_id, group_id);
    assert_eq!(notify.chg_user_id_list, vec![carol_id]);
    let (_, body) = post(
        api,
        "/query/ChangeMembers",
        Some(KEY),
        &json!({"group_id": 999_999, "modify_type": 1, "user_id_list": [carol_id]}),
    )
    .await;
    assert_eq!(body["error_code"], 12);

    // A message sent by the API reaches the online receiver, stored with its id.
    let send =
        json!({"from_user_id": bob_id, "to_id": alice_id, "text": "hello from the admin API"});
    let (_, body) = post(api, "/query/SendMessage", Some(KEY), &send).await;
    assert_eq!(body["error_code"], 0, "{body}");
    let msg_id = u32::try_from(body["msg_id"].as_u64().unwrap()).unwrap();
    let event = next_event(&mut events, |e| matches!(e, Event::Message(_))).await;
    let Event::Message(message) = event else {
        unreachable!()
    };
    assert_eq!((message.from, message.msg_id), (bob_id, msg_id));
    assert_eq!(message.text.as_deref(), Some("hello from the admin API"));
    let (_, body) = post(
        api,
        "/query/SendMessage",
        Some(KEY),
        &json!({"from_user_id": bob_id, "to_id": group_id, "is_group": true, "text": "hi all"}),
    )
    .await;
    assert_eq!(body["error_code"], 0, "{body}");
    let event = next_event(
        &mut events,
        |e| matches!(e, Event::Message(m) if m.is_group()),
    )
    .await;
    let Event::Message(message) = event else {
        unreachable!()
    };
    assert_eq!(
        (message.to, message.text.as_deref()),
        (group_id, Some("hi all"))
    );

    // KickUser (ours): every connection of the user is kicked and closed, e.g. right after
    // `teamtalk user disable`.
    let kick = json!({"user_id": alice_id});
    let (_, body) = post(api, "/query/KickUser", None, &kick).await;
    assert_eq!(body["error_code"], 2, "the key is required");
    let (_, body) = post(api, "/query/KickUser", Some(KEY), &json!({"user_id": "x"})).await;
    assert_eq!(body["error_code"], 1);
    let (_, body) = post(api, "/query/KickUser", Some(KEY), &kick).await;
    assert_eq!(body["error_code"], 0, "{body}");
    let event = next_event(&mut events, |e| matches!(e, Event::Kicked { .. })).await;
    assert!(matches!(event, Event::Kicked { reason: 1 }), "{event:?}");
    drop(alice);

    running.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
