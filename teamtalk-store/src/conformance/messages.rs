//! Checks of single-chat messages, history, sessions and unread counters.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
// A check reports a broken rule by panicking with the assertion that failed, like a test.

use bytes::Bytes;
use teamtalk_core::domain::UserId;
use teamtalk_core::proto::{base_define as bd, buddy, message};
use teamtalk_core::store::Store;

use super::fixture::{Fixture, T0};

/// Single-chat message ids start at 1 per conversation and grow by one; invalid messages are
/// not stored.
pub async fn single_message_ids_per_conversation<S: Store + 'static>(store: S) {
    let f = Fixture::new(store);
    let (a, b, c) = (f.user("a").await, f.user("b").await, f.user("c").await);
    assert_eq!(f.text(a, b, "1").await, 1);
    assert_eq!(
        f.text(b, a, "2").await,
        2,
        "both directions share the pair's sequence"
    );
    assert_eq!(f.text(a, c, "1").await, 1, "another pair starts at 1");
    assert_eq!(f.text(a, b, "3").await, 3);

    assert_eq!(f.text(a, a, "self").await, 0, "no message to oneself");
    assert_eq!(
        f.send(a, 424_242, bd::MsgType::SingleText, "x").await,
        Some(0),
        "unknown receiver"
    );
    assert_eq!(
        f.send(a, b.0, bd::MsgType::SingleText, "").await,
        Some(0),
        "empty"
    );
    assert_eq!(
        f.send(a, b.0, bd::MsgType::SingleAudio, "1234").await,
        Some(0),
        "audio without data"
    );
    let mut bad_type = message::ImMsgData {
        from_user_id: a.0,
        to_session_id: b.0,
        msg_type: 99,
        msg_data: Bytes::from_static(b"x"),
        ..Default::default()
    };
    bad_type = f.proxy.send_message(bad_type).await.unwrap().unwrap();
    assert_eq!(bad_type.msg_id, 0, "unknown message type");
    assert_eq!(f.text(a, b, "4").await, 4, "failed sends consume no id");
}

/// Concurrent senders in one conversation get distinct, consecutive ids (1000 messages from 50
/// tasks; run it on a multi-threaded runtime).
pub async fn concurrent_senders_get_distinct_consecutive_ids<S: Store + 'static>(store: S) {
    let f = Fixture::new(store);
    let (a, b) = (f.user("a").await, f.user("b").await);
    let mut tasks = Vec::new();
    for task in 0..50 {
        let proxy = f.proxy.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..20 {
                let (from, to) = if (task + i) % 2 == 0 { (a, b) } else { (b, a) };
                let req = message::ImMsgData {
                    from_user_id: from.0,
                    to_session_id: to.0,
                    create_time: T0,
                    msg_type: bd::MsgType::SingleText as i32,
                    msg_data: Bytes::from(format!("{task}-{i}")),
                    ..Default::default()
                };
                ids.push(proxy.send_message(req).await.unwrap().unwrap().msg_id);
            }
            ids
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (1..=1000).collect::<Vec<u32>>());
    assert_eq!(
        f.history(a, bd::SessionType::Single, b.0, 0, 5).await.len(),
        5
    );
}

/// History pages, messages by id and the latest id of single and group conversations.
pub async fn history_pages_by_id_and_latest<S: Store + 'static>(store: S) {
    let f = Fixture::new(store);
    let (a, b, c) = (f.user("a").await, f.user("b").await, f.user("c").await);
    for i in 1..=150 {
        f.text(a, b, &format!("m{i}")).await;
        f.clock.advance(1);
    }
    assert_eq!(
        f.history(b, bd::SessionType::Single, a.0, 0, 3).await,
        vec![150, 149, 148],
        "newest first"
    );
    assert_eq!(
        f.history(b, bd::SessionType::Single, a.0, 10, 3).await,
        vec![10, 9, 8],
        "msg_id <= begin"
    );
    assert_eq!(
        f.history(b, bd::SessionType::Single, a.0, 0, 1000)
            .await
            .len(),
        100,
        "msg_cnt is clamped"
    );
    assert!(
        f.history(c, bd::SessionType::Single, a.0, 0, 10)
            .await
            .is_empty(),
        "no conversation"
    );
    assert!(f
        .history(a, bd::SessionType::Single, b.0, 0, 0)
        .await
        .is_empty());

    let page = f
        .proxy
        .message_list(message::ImGetMsgListReq {
            user_id: b.0,
            session_type: 1,
            session_id: a.0,
            msg_id_begin: 2,
            msg_cnt: 1,
            attach_data: None,
        })
        .await
        .unwrap();
    let m = &page.msg_list[0];
    assert_eq!(
        (
            m.msg_id,
            m.from_session_id,
            m.create_time,
            m.msg_type,
            &m.msg_data[..]
        ),
        (2, a.0, T0 + 1, 1, &b"m2"[..])
    );
    assert_eq!(
        (page.session_id, page.msg_id_begin, page.session_type),
        (a.0, 2, 1),
        "echoes"
    );

    let by_id = f
        .proxy
        .messages_by_id(message::ImGetMsgByIdReq {
            user_id: a.0,
            session_type: 1,
            session_id: b.0,
            msg_id_list: vec![5, 3, 9999, 3],
            attach_data: None,
        })
        .await
        .unwrap();
    let ids: Vec<u32> = by_id.msg_list.iter().map(|m| m.msg_id).collect();
    assert_eq!(ids, vec![5, 3]);
    let many = f
        .proxy
        .messages_by_id(message::ImGetMsgByIdReq {
            user_id: a.0,
            session_type: 1,
            session_id: b.0,
            msg_id_list: (1..=500).collect(),
            attach_data: None,
        })
        .await
        .unwrap();
    assert_eq!(many.msg_list.len(), 100, "at most 100");

    let latest = |user: UserId, peer: u32, kind: i32| message::ImGetLatestMsgIdReq {
        user_id: user.0,
        session_type: kind,
        session_id: peer,
        attach_data: None,
    };
    assert_eq!(
        f.proxy
            .latest_msg_id(latest(b, a.0, 1))
            .await
            .unwrap()
            .latest_msg_id,
        150
    );
    assert_eq!(
        f.proxy
            .latest_msg_id(latest(c, a.0, 1))
            .await
            .unwrap()
            .latest_msg_id,
        0
    );
    assert_eq!(
        f.proxy
            .latest_msg_id(latest(b, a.0, 7))
            .await
            .unwrap()
            .latest_msg_id,
        0,
        "invalid session type"
    );
}

/// Recent sessions and unread counters of single chats: creation, refresh, read acks, removal.
pub async fn sessions_and_unread_of_single_chats<S: Store + 'static>(store: S) {
    let f = Fixture::new(store);
    let (a, b, c) = (f.user("a").await, f.user("b").await, f.user("c").await);
    f.text(a, b, "hello").await;
    f.clock.advance(5);
    f.text(c, b, "hi").await;
    f.text(c, b, "there").await;

    assert_eq!(
        f.sessions(b, 0).await,
        vec![(c.0, 1), (a.0, 1)],
        "newest first"
    );
    assert_eq!(
        f.sessions(a, 0).await,
        vec![(b.0, 1)],
        "the sender's session exists too (Q-53)"
    );
    assert_eq!(
        f.sessions(b, T0).await,
        vec![(c.0, 1)],
        "updated > latest only"
    );

    let unread = f.unread(b).await;
    assert_eq!(unread.total_cnt, 3);
    let counts: Vec<(u32, u32, u32)> = unread
        .unreadinfo_list
        .iter()
        .map(|u| (u.session_id, u.unread_cnt, u.latest_msg_id))
        .collect();
    assert_eq!(counts, vec![(a.0, 1, 1), (c.0, 2, 2)]);
    assert_eq!(
        unread.unreadinfo_list[1].latest_msg_data,
        Bytes::from_static(b"there")
    );
    assert_eq!(unread.unreadinfo_list[1].latest_msg_from_user_id, c.0);
    assert_eq!(
        f.unread(a).await.total_cnt,
        0,
        "own messages are not unread"
    );

    f.read_ack(b, bd::SessionType::Single, c.0).await;
    assert_eq!(
        f.unread(b).await.total_cnt,
        1,
        "read ack clears the whole session"
    );

    let remove = |peer: u32, kind: i32| buddy::ImRemoveSessionReq {
        user_id: b.0,
        session_type: kind,
        session_id: peer,
        attach_data: None,
    };
    let removed = f.proxy.remove_session(remove(a.0, 1)).await.unwrap();
    assert_eq!(
        (
            removed.result_code,
            removed.session_id,
            removed.session_type
        ),
        (0, a.0, 1)
    );
    assert_eq!(
        f.unread(b).await.total_cnt,
        0,
        "removing a session marks it read"
    );
    assert_eq!(f.sessions(b, 0).await, vec![(c.0, 1)]);
    assert_eq!(
        f.proxy
            .remove_session(remove(a.0, 1))
            .await
            .unwrap()
            .result_code,
        1,
        "already removed"
    );
    assert_eq!(
        f.proxy
            .remove_session(remove(a.0, 9))
            .await
            .unwrap()
            .result_code,
        1,
        "invalid type"
    );

    f.clock.advance(5);
    f.text(a, b, "back").await;
    assert_eq!(
        f.sessions(b, 0).await,
        vec![(a.0, 1), (c.0, 1)],
        "a new message brings it back"
    );
}

/// Audio messages: stored and read back intact; shown as the encrypted "[语音]" preview in
/// session and unread lists.
pub async fn audio_messages<S: Store + 'static>(store: S) {
    let f = Fixture::new(store);
    let (a, b) = (f.user("a").await, f.user("b").await);
    f.text(a, b, "hi").await;
    let audio = f
        .send(a, b.0, bd::MsgType::SingleAudio, "\0\0\0\x05voice")
        .await;
    assert_eq!(audio, Some(2));
    let unread = f.unread(b).await;
    assert_eq!(
        unread.unreadinfo_list[0].latest_msg_data,
        Bytes::from_static(teamtalk_core::service::DEFAULT_AUDIO_PREVIEW),
        "audio shows as [语音] in latest-message fields"
    );
    let req = message::ImGetMsgListReq {
        user_id: b.0,
        session_type: 1,
        session_id: a.0,
        msg_id_begin: 0,
        msg_cnt: 1,
        attach_data: None,
    };
    let page = f.proxy.message_list(req).await.unwrap();
    assert_eq!(
        &page.msg_list[0].msg_data[..],
        b"\0\0\0\x05voice",
        "history returns duration + audio"
    );
    assert_eq!(page.msg_list[0].msg_type, bd::MsgType::SingleAudio as i32);
}

/// At most 100 recent sessions per answer.
pub async fn recent_sessions_are_capped_at_100<S: Store + 'static>(store: S) {
    let f = Fixture::new(store);
    let me = f.user("me").await;
    for i in 0..120 {
        let peer = f.user(&format!("peer{i}")).await;
        f.text(peer, me, "x").await;
        f.clock.advance(1);
    }
    let sessions = f.sessions(me, 0).await;
    assert_eq!(sessions.len(), 100);
    assert_eq!(sessions[0].0, me.0 + 120, "the newest first");
}

// ---------------------------------------------------------------------------------------------
