//! Checks of push tokens and offline files.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
// A check reports a broken rule by panicking with the assertion that failed, like a test.

use bytes::Bytes;
use teamtalk_core::domain::UserId;
use teamtalk_core::proto::{base_define as bd, file, login, server};
use teamtalk_core::store::Store;

use super::fixture::Fixture;

/// Push tokens: registration, moving a token to another user, unregistering, badges and quiet
/// hours.
pub async fn device_tokens<S: Store + 'static>(store: S) {
    let f = Fixture::new(store);
    let (a, b, c) = (f.user("a").await, f.user("b").await, f.user("c").await);
    let set = |user: UserId, kind: Option<bd::ClientType>, token: &str| login::ImDeviceTokenReq {
        user_id: user.0,
        device_token: token.into(),
        client_type: kind.map(|k| k as i32),
        attach_data: Some(Bytes::from_static(b"t")),
    };
    let rsp = f
        .proxy
        .set_device_token(set(a, Some(bd::ClientType::Ios), "tok-a"))
        .await
        .unwrap();
    assert_eq!(
        (rsp.user_id, rsp.attach_data.as_deref()),
        (a.0, Some(&b"t"[..]))
    );
    f.proxy
        .set_device_token(set(b, Some(bd::ClientType::Android), "tok-b"))
        .await
        .unwrap();
    f.proxy
        .set_device_token(set(c, Some(bd::ClientType::Windows), "tok-c"))
        .await
        .unwrap();
    f.text(b, a, "ping").await;

    let get = |users: Vec<u32>| server::ImGetDeviceTokenReq {
        user_id: users,
        attach_data: None,
    };
    // T0 = 2023-11-14 22:13 UTC: quiet hours
    let tokens = f
        .proxy
        .device_tokens(get(vec![a.0, b.0, c.0, 999]))
        .await
        .unwrap();
    let got: Vec<(u32, i32, &str, u32, u32)> = tokens
        .user_token_info
        .iter()
        .map(|t| {
            (
                t.user_id,
                t.user_type,
                t.token.as_str(),
                t.push_count,
                t.push_type,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![(a.0, 0x11, "tok-a", 1, 1), (b.0, 0x12, "tok-b", 0, 1)],
        "PC tokens and unknown users left out; badge = unread"
    );

    f.proxy
        .set_push_shield(login::ImPushShieldReq {
            user_id: a.0,
            shield_status: 1,
            attach_data: None,
        })
        .await
        .unwrap();
    let quiet = f.proxy.device_tokens(get(vec![a.0])).await.unwrap();
    assert!(
        quiet.user_token_info.is_empty(),
        "do-not-disturb during quiet hours"
    );
    f.clock.advance(12 * 3600);
    assert_eq!(
        f.proxy
            .device_tokens(get(vec![a.0]))
            .await
            .unwrap()
            .user_token_info
            .len(),
        1,
        "daytime"
    );

    f.proxy
        .set_device_token(set(c, Some(bd::ClientType::Ios), "tok-a"))
        .await
        .unwrap();
    let moved = f.proxy.device_tokens(get(vec![a.0, c.0])).await.unwrap();
    let owners: Vec<u32> = moved.user_token_info.iter().map(|t| t.user_id).collect();
    assert_eq!(owners, vec![c.0], "a token belongs to one user");

    f.proxy.set_device_token(set(b, None, "")).await.unwrap();
    assert!(
        f.proxy
            .device_tokens(get(vec![b.0]))
            .await
            .unwrap()
            .user_token_info
            .is_empty(),
        "logout clears"
    );
}

/// Offline file records: added, listed oldest first, removed once.
pub async fn offline_files<S: Store + 'static>(store: S) {
    let f = Fixture::new(store);
    let (a, b) = (f.user("a").await, f.user("b").await);
    let add = |task: &str, name: &str| file::ImFileAddOfflineReq {
        from_user_id: a.0,
        to_user_id: b.0,
        task_id: task.into(),
        file_name: name.into(),
        file_size: 1234,
    };
    f.proxy
        .add_offline_file(add("task-1", "报告 'final'.pdf"))
        .await
        .unwrap();
    f.clock.advance(1);
    f.proxy
        .add_offline_file(add("task-2", "b.txt"))
        .await
        .unwrap();
    let has = f
        .proxy
        .offline_files(file::ImFileHasOfflineReq {
            user_id: b.0,
            attach_data: None,
        })
        .await
        .unwrap();
    let files: Vec<(&str, &str, u32, u32)> = has
        .offline_file_list
        .iter()
        .map(|f| {
            (
                f.task_id.as_str(),
                f.file_name.as_str(),
                f.file_size,
                f.from_user_id,
            )
        })
        .collect();
    assert_eq!(
        files,
        vec![
            ("task-1", "报告 'final'.pdf", 1234, a.0),
            ("task-2", "b.txt", 1234, a.0)
        ]
    );
    f.proxy
        .remove_offline_file(file::ImFileDelOfflineReq {
            from_user_id: a.0,
            to_user_id: b.0,
            task_id: "task-1".into(),
        })
        .await
        .unwrap();
    f.proxy
        .remove_offline_file(file::ImFileDelOfflineReq {
            from_user_id: a.0,
            to_user_id: b.0,
            task_id: "' OR 1=1 --".into(),
        })
        .await
        .unwrap();
    let has = f
        .proxy
        .offline_files(file::ImFileHasOfflineReq {
            user_id: b.0,
            attach_data: None,
        })
        .await
        .unwrap();
    assert_eq!(has.offline_file_list.len(), 1);
    assert!(f
        .proxy
        .offline_files(file::ImFileHasOfflineReq {
            user_id: a.0,
            attach_data: None
        })
        .await
        .unwrap()
        .offline_file_list
        .is_empty());
}

// ---------------------------------------------------------------------------------------------
