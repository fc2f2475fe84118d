//! Checks of groups: creation, messages, membership, shields and the session sync.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
// A check reports a broken rule by panicking with the assertion that failed, like a test.

use bytes::Bytes;
use teamtalk_core::domain::{GroupId, Timestamp, UserId};
use teamtalk_core::proto::{base_define as bd, group, message, server};
use teamtalk_core::store::Store;

use super::fixture::Fixture;

/// Group creation, the normal group list and group info (members, versions, limits).
pub async fn group_creation_and_info<S: Store + 'static>(store: S) {
    let f = Fixture::new(store);
    let (a, b, c, outsider) = (
        f.user("a").await,
        f.user("b").await,
        f.user("c").await,
        f.user("x").await,
    );
    let create = |kind: i32, name: &str, members: Vec<u32>| group::ImGroupCreateReq {
        user_id: a.0,
        group_type: kind,
        group_name: name.into(),
        group_avatar: "http://a/v.png".into(),
        member_id_list: members,
        attach_data: Some(Bytes::from_static(b"h")),
    };
    assert!(
        f.proxy
            .create_group(create(7, "x", vec![b.0]))
            .await
            .unwrap()
            .is_none(),
        "invalid type: no answer"
    );
    assert_eq!(
        f.proxy
            .create_group(create(2, "", vec![b.0]))
            .await
            .unwrap()
            .unwrap()
            .result_code,
        1,
        "empty name"
    );
    assert_eq!(
        f.proxy
            .create_group(create(2, "x", vec![]))
            .await
            .unwrap()
            .unwrap()
            .result_code,
        1,
        "no members"
    );
    let too_many = create(2, "x", (1..=3000).collect());
    assert_eq!(
        f.proxy
            .create_group(too_many)
            .await
            .unwrap()
            .unwrap()
            .result_code,
        1,
        "too many members"
    );

    let name = "群 '); DELETE FROM IMGroup; --";
    let created = f
        .proxy
        .create_group(create(2, name, vec![a.0, c.0, b.0, c.0]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(created.result_code, 0);
    assert_eq!(
        created.user_id_list,
        vec![a.0, c.0, b.0],
        "de-duplicated, in request order"
    );
    assert_eq!(created.attach_data.as_deref(), Some(&b"h"[..]));
    let g = created.group_id.unwrap();

    let info = |user: UserId, version: u32| group::ImGroupInfoListReq {
        user_id: user.0,
        group_version_list: vec![
            bd::GroupVersionInfo {
                group_id: g,
                version,
            },
            bd::GroupVersionInfo {
                group_id: 99_999,
                version: 0,
            },
        ],
        attach_data: None,
    };
    let rsp = f.proxy.group_info(info(b, 0)).await.unwrap();
    assert_eq!(rsp.group_info_list.len(), 1);
    let gi = &rsp.group_info_list[0];
    assert_eq!(
        (
            gi.group_name.as_str(),
            gi.version,
            gi.group_creator_id,
            gi.group_type
        ),
        (name, 1, a.0, 2)
    );
    let mut members = vec![a.0, b.0, c.0];
    members.sort_by_key(|m| m.to_string());
    assert_eq!(gi.group_member_list, members);
    assert!(
        f.proxy
            .group_info(info(b, 1))
            .await
            .unwrap()
            .group_info_list
            .is_empty(),
        "client is up to date"
    );
    assert!(
        f.proxy
            .group_info(info(outsider, 0))
            .await
            .unwrap()
            .group_info_list
            .is_empty(),
        "members only (Q-07)"
    );
    let internal = group::ImGroupInfoListReq {
        attach_data: Some(Bytes::from_static(&[
            0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0,
        ])),
        ..info(outsider, 0)
    };
    assert_eq!(
        f.proxy
            .group_info(internal)
            .await
            .unwrap()
            .group_info_list
            .len(),
        1,
        "msg_server fan-out path"
    );

    let normal = f
        .create_group(UserId(0), bd::GroupType::Normal, &[a, b])
        .await;
    let list = f
        .proxy
        .normal_groups(group::ImNormalGroupListReq {
            user_id: b.0,
            attach_data: None,
        })
        .await
        .unwrap();
    let listed: Vec<(u32, u32)> = list
        .group_version_list
        .iter()
        .map(|v| (v.group_id, v.version))
        .collect();
    assert_eq!(listed, vec![(normal.0, 1)], "only normal groups");
}

/// Group messages: members only, unread counts per member, catching up, history from the join
/// time.
pub async fn group_messages_and_unread<S: Store + 'static>(store: S) {
    let f = Fixture::new(store);
    let (a, b, c, x) = (
        f.user("a").await,
        f.user("b").await,
        f.user("c").await,
        f.user("x").await,
    );
    let g = f.create_group(a, bd::GroupType::Tmp, &[a, b]).await;
    assert_eq!(
        f.group_text(x, g, "intruder").await,
        Some(0),
        "non-member: not stored, answered with msg_id 0 (Q-35)"
    );
    assert_eq!(
        f.group_text(a, GroupId(55_555), "x").await,
        Some(0),
        "unknown group"
    );
    assert_eq!(f.group_text(a, g, "1").await, Some(1));
    f.clock.advance(10);
    assert_eq!(f.group_text(b, g, "2").await, Some(2));
    assert_eq!(
        f.group_text(b, g, "").await,
        Some(0),
        "empty: refused, answered"
    );

    let unread_a = f.unread(a).await;
    assert_eq!(unread_a.total_cnt, 1, "a sent 1, b sent 1 after it");
    assert_eq!(unread_a.unreadinfo_list[0].session_type, 2);
    assert_eq!(unread_a.unreadinfo_list[0].latest_msg_from_user_id, b.0);
    assert_eq!(
        f.unread(b).await.total_cnt,
        0,
        "the sender caught up with its own message"
    );

    f.clock.advance(10);
    f.change(a, g, bd::GroupModifyType::Add, &[c]).await;
    assert_eq!(
        f.unread(c).await.total_cnt,
        0,
        "a new member starts caught up"
    );
    assert_eq!(f.group_text(a, g, "3").await, Some(3));
    assert_eq!(f.unread(c).await.total_cnt, 1);
    assert_eq!(
        f.history(c, bd::SessionType::Group, g.0, 0, 10).await,
        vec![3],
        "history from the join time on"
    );
    assert_eq!(
        f.history(b, bd::SessionType::Group, g.0, 0, 10).await,
        vec![3, 2, 1]
    );
    assert!(
        f.history(x, bd::SessionType::Group, g.0, 0, 10)
            .await
            .is_empty(),
        "members only"
    );
    let latest_x = f
        .proxy
        .latest_msg_id(message::ImGetLatestMsgIdReq {
            user_id: x.0,
            session_type: 2,
            session_id: g.0,
            attach_data: None,
        })
        .await
        .unwrap();
    assert_eq!(latest_x.latest_msg_id, 0, "members only (Q-07)");

    f.read_ack(a, bd::SessionType::Group, g.0).await;
    assert_eq!(f.unread(a).await.total_cnt, 0);
}

/// Adding and removing members: versions, the creator rule, removed members' sessions and
/// counters.
pub async fn group_membership_changes<S: Store + 'static>(store: S) {
    let f = Fixture::new(store);
    let (owner, m, n, x) = (
        f.user("owner").await,
        f.user("m").await,
        f.user("n").await,
        f.user("x").await,
    );
    let g = f.create_group(owner, bd::GroupType::Tmp, &[owner, m]).await;

    let denied = f.change(x, g, bd::GroupModifyType::Add, &[x]).await;
    assert_eq!(denied.result_code, 1, "non-members may not add (Q-08)");
    let added = f.change(m, g, bd::GroupModifyType::Add, &[n, m]).await;
    assert_eq!(added.result_code, 0, "members may add to a temporary group");
    assert_eq!(
        added.chg_user_id_list,
        vec![n.0],
        "already-present members are not added again"
    );
    assert_eq!(added.cur_user_id_list.len(), 3);
    assert_eq!(
        f.change(m, g, bd::GroupModifyType::Del, &[n])
            .await
            .result_code,
        1,
        "only the creator removes others"
    );

    f.group_text(n, g, "hi").await.unwrap();
    assert_eq!(f.sessions(n, 0).await, vec![(g.0, 2)]);
    let left = f.change(n, g, bd::GroupModifyType::Del, &[n]).await;
    assert_eq!(left.result_code, 0, "anyone may leave");
    assert_eq!(left.chg_user_id_list, vec![n.0]);
    assert!(
        f.sessions(n, 0).await.is_empty(),
        "a removed member's group session goes"
    );
    assert_eq!(
        f.group_text(n, g, "still here?").await,
        Some(0),
        "a former member cannot post"
    );

    let info = f
        .proxy
        .group_info(group::ImGroupInfoListReq {
            user_id: owner.0,
            group_version_list: vec![bd::GroupVersionInfo {
                group_id: g.0,
                version: 0,
            }],
            attach_data: None,
        })
        .await
        .unwrap();
    assert_eq!(
        info.group_info_list[0].version, 3,
        "+1 per membership change"
    );

    assert_eq!(
        f.change(owner, g, bd::GroupModifyType::Del, &[m])
            .await
            .result_code,
        0,
        "the creator may remove"
    );
    let invalid = f
        .proxy
        .change_members(group::ImGroupChangeMemberReq {
            user_id: owner.0,
            change_type: 9,
            group_id: g.0,
            member_id_list: vec![m.0],
            attach_data: None,
        })
        .await
        .unwrap();
    assert!(invalid.is_none(), "invalid change type: no answer");
    let unknown = f
        .proxy
        .change_members(group::ImGroupChangeMemberReq {
            user_id: owner.0,
            change_type: 1,
            group_id: 123_456,
            member_id_list: vec![m.0],
            attach_data: None,
        })
        .await
        .unwrap();
    assert!(unknown.is_none(), "unknown group: no answer");

    let fixed = f
        .create_group(UserId(0), bd::GroupType::Normal, &[owner, m])
        .await;
    assert_eq!(
        f.change(m, fixed, bd::GroupModifyType::Add, &[x])
            .await
            .result_code,
        1,
        "normal groups: creator only"
    );
    assert_eq!(
        f.change(m, fixed, bd::GroupModifyType::Del, &[m])
            .await
            .result_code,
        1
    );
    assert_eq!(
        f.change(UserId(0), fixed, bd::GroupModifyType::Add, &[x])
            .await
            .result_code,
        0,
        "administrator"
    );
}

/// Group push shields: set by members, read per user, refused for non-members.
pub async fn group_push_shields<S: Store + 'static>(store: S) {
    let f = Fixture::new(store);
    let (a, b, x) = (f.user("a").await, f.user("b").await, f.user("x").await);
    let g = f.create_group(a, bd::GroupType::Tmp, &[a, b]).await;
    let shield = |user: UserId, group: u32, on: u32| group::ImGroupShieldReq {
        user_id: user.0,
        group_id: group,
        shield_status: on,
        attach_data: None,
    };
    assert_eq!(
        f.proxy
            .set_group_shield(shield(b, g.0, 1))
            .await
            .unwrap()
            .unwrap()
            .result_code,
        0
    );
    assert_eq!(
        f.proxy
            .set_group_shield(shield(x, g.0, 1))
            .await
            .unwrap()
            .unwrap()
            .result_code,
        1,
        "not a member"
    );
    assert!(
        f.proxy
            .set_group_shield(shield(a, 999, 1))
            .await
            .unwrap()
            .is_none(),
        "invalid group: no answer"
    );

    let get = f
        .proxy
        .group_shields(server::ImGroupGetShieldReq {
            group_id: g.0,
            user_id: vec![a.0, b.0, x.0],
            attach_data: Some(Bytes::from_static(b"msg")),
        })
        .await
        .unwrap()
        .unwrap();
    let flags: Vec<(u32, u32)> = get
        .shield_status_list
        .iter()
        .map(|s| (s.user_id, s.shield_status))
        .collect();
    assert_eq!(flags, vec![(a.0, 0), (b.0, 1), (x.0, 0)]);
    assert_eq!(get.attach_data.as_deref(), Some(&b"msg"[..]));

    let info = f
        .proxy
        .group_info(group::ImGroupInfoListReq {
            user_id: b.0,
            group_version_list: vec![bd::GroupVersionInfo {
                group_id: g.0,
                version: 0,
            }],
            attach_data: None,
        })
        .await
        .unwrap();
    assert_eq!(
        info.group_info_list[0].shield_status, 1,
        "the requester's own shield (Q-58)"
    );
}

/// The group-session sync refreshes members' sessions to the last chat time and keeps hidden
/// sessions hidden.
pub async fn group_session_sync<S: Store + 'static>(store: S) {
    let f = Fixture::new(store);
    let (a, b, c) = (f.user("a").await, f.user("b").await, f.user("c").await);
    let g = f.create_group(a, bd::GroupType::Tmp, &[a, b, c]).await;
    let mark = f.proxy.sync_group_sessions(Timestamp(0)).await.unwrap();
    assert!(
        f.sessions(b, 0).await.is_empty(),
        "no messages, no sessions"
    );
    f.clock.advance(10);
    f.group_text(a, g, "news").await.unwrap();
    assert!(
        f.sessions(b, 0).await.is_empty(),
        "other members follow with the sync"
    );
    f.clock.advance(1);
    let next = f.proxy.sync_group_sessions(mark).await.unwrap();
    assert_eq!(f.sessions(b, 0).await, vec![(g.0, 2)]);
    assert!(next > mark);
}

// ---------------------------------------------------------------------------------------------
