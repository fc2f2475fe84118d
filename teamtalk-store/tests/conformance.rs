//! The conformance suite: every db_proxy service and every storage rule, checked through the
//! services against each backend. A backend is added by one line in `backends!` at the bottom.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;

use bytes::Bytes;
use teamtalk_core::domain::{GroupId, ManualClock, Timestamp, UserId};
use teamtalk_core::proto::{base_define as bd, buddy, file, group, login, message, server};
use teamtalk_core::service::{DbProxy, DbProxyConfig, Handler};
use teamtalk_core::store::{
    Credentials, NewDepartment, NewUser, ProfileChange, Store, StoreError, User, STATUS_ACTIVE,
    STATUS_RESIGNED,
};
use teamtalk_core::AnyMessage;

const T0: u32 = 1_700_000_000;
const PASSWORD: &str = "123456";

/// A db_proxy over a fresh store with a manual clock at `T0`.
struct Fixture<S> {
    proxy: Arc<DbProxy<S, Arc<ManualClock>>>,
    clock: Arc<ManualClock>,
}

impl<S: Store + 'static> Fixture<S> {
    fn new(store: S) -> Self {
        let clock = Arc::new(ManualClock::new(Timestamp(T0)));
        let proxy = Arc::new(DbProxy::new(store, clock.clone(), DbProxyConfig::default()));
        Fixture { proxy, clock }
    }

    fn store(&self) -> &S {
        self.proxy.store()
    }

    async fn user(&self, name: &str) -> UserId {
        self.user_with(name, 0).await
    }

    async fn user_with(&self, name: &str, status: u32) -> UserId {
        let user = NewUser {
            profile: User {
                name: name.to_owned(),
                nick: format!("~{name}"), // IMUser.nick is varchar(32)
                status,
                ..User::default()
            },
            credentials: Credentials::from_plain(PASSWORD, "4321"),
        };
        self.store()
            .add_user(&user, self.clock.now_ts())
            .await
            .unwrap()
    }

    async fn send(&self, from: UserId, to: u32, msg_type: bd::MsgType, text: &str) -> Option<u32> {
        let req = message::ImMsgData {
            from_user_id: from.0,
            to_session_id: to,
            msg_id: 0,
            create_time: self.clock.now_ts().0,
            msg_type: msg_type as i32,
            msg_data: Bytes::copy_from_slice(text.as_bytes()),
            attach_data: Some(Bytes::from_static(b"attach")),
        };
        self.proxy.send_message(req).await.unwrap().map(|m| {
            assert_eq!(
                m.attach_data.as_deref(),
                Some(&b"attach"[..]),
                "attach echoed"
            );
            m.msg_id
        })
    }

    async fn text(&self, from: UserId, to: UserId, text: &str) -> u32 {
        self.send(from, to.0, bd::MsgType::SingleText, text)
            .await
            .unwrap()
    }

    async fn group_text(&self, from: UserId, group: GroupId, text: &str) -> Option<u32> {
        self.send(from, group.0, bd::MsgType::GroupText, text).await
    }

    async fn create_group(
        &self,
        creator: UserId,
        kind: bd::GroupType,
        members: &[UserId],
    ) -> GroupId {
        let rsp = self
            .proxy
            .create_group(group::ImGroupCreateReq {
                user_id: creator.0,
                group_type: kind as i32,
                group_name: "team".into(),
                group_avatar: String::new(),
                member_id_list: members.iter().map(|u| u.0).collect(),
                attach_data: None,
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rsp.result_code, 0);
        GroupId(rsp.group_id.unwrap())
    }

    async fn change(
        &self,
        by: UserId,
        group: GroupId,
        kind: bd::GroupModifyType,
        users: &[UserId],
    ) -> group::ImGroupChangeMemberRsp {
        self.proxy
            .change_members(group::ImGroupChangeMemberReq {
                user_id: by.0,
                change_type: kind as i32,
                group_id: group.0,
                member_id_list: users.iter().map(|u| u.0).collect(),
                attach_data: None,
            })
            .await
            .unwrap()
            .unwrap()
    }

    async fn unread(&self, user: UserId) -> message::ImUnreadMsgCntRsp {
        self.proxy
            .unread_counts(message::ImUnreadMsgCntReq {
                user_id: user.0,
                attach_data: None,
            })
            .await
            .unwrap()
    }

    async fn history(
        &self,
        user: UserId,
        kind: bd::SessionType,
        peer: u32,
        begin: u32,
        count: u32,
    ) -> Vec<u32> {
        self.proxy
            .message_list(message::ImGetMsgListReq {
                user_id: user.0,
                session_type: kind as i32,
                session_id: peer,
                msg_id_begin: begin,
                msg_cnt: count,
                attach_data: None,
            })
            .await
            .unwrap()
            .msg_list
            .iter()
            .map(|m| m.msg_id)
            .collect()
    }

    async fn sessions(&self, user: UserId, since: u32) -> Vec<(u32, i32)> {
        self.proxy
            .recent_sessions(buddy::ImRecentContactSessionReq {
                user_id: user.0,
                latest_update_time: since,
                attach_data: None,
            })
            .await
            .unwrap()
            .contact_session_list
            .iter()
            .map(|s| (s.session_id, s.session_type))
            .collect()
    }

    async fn read_ack(&self, user: UserId, kind: bd::SessionType, peer: u32) {
        self.proxy
            .read_ack(message::ImMsgDataReadAck {
                user_id: user.0,
                session_id: peer,
                msg_id: 0,
                session_type: kind as i32,
            })
            .await
            .unwrap();
    }
}

trait NowTs {
    fn now_ts(&self) -> Timestamp;
}

impl NowTs for ManualClock {
    fn now_ts(&self) -> Timestamp {
        teamtalk_core::domain::Clock::now(self)
    }
}

fn login_req(name: &str, plain: &str) -> server::ImValidateReq {
    server::ImValidateReq {
        user_name: name.into(),
        password: teamtalk_core::password::client_password(plain),
        attach_data: Some(Bytes::from_static(&[0, 0, 0, 1, 0, 0, 0, 9, 0, 0, 0, 0])),
    }
}

// ---------------------------------------------------------------------------------------------
// Login, users, departments
// ---------------------------------------------------------------------------------------------

async fn login_checks_the_password_of_active_users<S: Store + 'static>(store: S) {
    let f = Fixture::new(store);
    let alice = f.user("alice").await;
    f.user_with("gone", 3).await;

    let ok = f
        .proxy
        .validate(login_req("alice", PASSWORD))
        .await
        .unwrap();
    assert_eq!(ok.result_code, 0);
    assert_eq!(ok.user_name, "alice");
    assert_eq!(ok.user_info.as_ref().unwrap().user_id, alice.0);
    assert_eq!(ok.user_info.as_ref().unwrap().status, 0);
    assert_eq!(
        ok.attach_data.as_deref().map(<[u8]>::len),
        Some(12),
        "attach echoed"
    );

    for (name, plain) in [
        ("alice", "wrong"),
        ("nobody", PASSWORD),
        ("gone", PASSWORD),
        ("Alice", PASSWORD),
        ("' OR '1'='1", PASSWORD),
    ] {
        let refused = f.proxy.validate(login_req(name, plain)).await.unwrap();
        assert_eq!(refused.result_code, 1, "{name}/{plain}");
        assert!(refused.user_info.is_none());
    }
}

async fn login_is_blocked_after_more_than_ten_failures<S: Store + 'static>(store: S) {
    let f = Fixture::new(store);
    f.user("bob").await;
    for _ in 0..11 {
        assert_eq!(
            f.proxy
                .validate(login_req("bob", "bad"))
                .await
                .unwrap()
                .result_code,
            1
        );
    }
    let blocked = f.proxy.validate(login_req("bob", PASSWORD)).await.unwrap();
    assert_eq!(
        blocked.result_code, 6,
        "even the right password is refused now"
    );
    f.clock.advance(30 * 60 + 1);
    assert_eq!(
        f.proxy
            .validate(login_req("bob", PASSWORD))
            .await
            .unwrap()
            .result_code,
        0
    );
}

/// The lockout counts per account, so every spelling the store takes for the same name shares
/// one counter (in MySQL `"d3 "` is `"d3"`), and per source, so a stranger's failures do not
/// lock the owner out.
async fn login_lockout_counts_per_account_and_source<S: Store + 'static>(store: S) {
    let f = Fixture::new(store);
    f.user("d3").await;
    for _ in 0..11 {
        let refused = f.proxy.validate(login_req("d3 ", "bad")).await.unwrap();
        assert_eq!(refused.result_code, 1);
    }
    for name in ["d3", "d3 "] {
        let blocked = f.proxy.validate(login_req(name, PASSWORD)).await.unwrap();
        assert_eq!(blocked.result_code, 6, "{name:?} shares the counter of d3");
    }
    // The owner, whose client our msg_server names by address, is not locked out.
    let mut owner = login_req("d3", PASSWORD);
    owner.attach_data = Some(
        teamtalk_core::ValidateAttach {
            head: teamtalk_core::DbAttach::new(teamtalk_core::AttachType::HANDLE, 9),
            client: Some("203.0.113.8".parse().unwrap()),
        }
        .to_bytes(),
    );
    assert_eq!(f.proxy.validate(owner).await.unwrap().result_code, 0);
}

fn named(name: &str) -> NewUser {
    NewUser {
        profile: User {
            name: name.to_owned(),
            nick: "n".into(),
            ..User::default()
        },
        credentials: Credentials::from_plain(PASSWORD, "4321"),
    }
}

/// `add_user` refuses a name that exists under the store's comparison (the same on every
/// backend: MySQL's utf8mb4_bin, case-sensitive, trailing spaces ignored), also for closed
/// accounts and under concurrent creation; lookups compare the same way.
async fn one_account_per_login_name<S: Store + 'static>(store: S) {
    let f = Fixture::new(store);
    let bob = f.user("bob").await;
    let gone = f.user_with("gone", STATUS_RESIGNED).await;
    for (name, existing) in [("bob", bob), ("bob ", bob), ("bob   ", bob), ("gone", gone)] {
        match f.store().add_user(&named(name), f.clock.now_ts()).await {
            Err(StoreError::NameTaken {
                name: taken,
                existing: id,
            }) => assert_eq!((taken.as_str(), id), (name, existing)),
            other => panic!("{name:?}: {other:?}"),
        }
    }
    let mut distinct = Vec::new();
    for name in ["Bob", "bob\t", " bob", "bo"] {
        distinct.push(
            f.store()
                .add_user(&named(name), f.clock.now_ts())
                .await
                .unwrap(),
        );
    }
    let all = f.store().users_changed_since(Timestamp(1)).await.unwrap();
    assert_eq!(all.len(), 6, "nothing added by the refused calls: {all:?}");
    assert_eq!(
        f.store().user_named("bob  ").await.unwrap().unwrap().id,
        bob
    );
    assert_eq!(
        f.store().user_named("Bob").await.unwrap().unwrap().id,
        distinct[0]
    );
    let (found, _) = f.store().login_candidate("bob ").await.unwrap().unwrap();
    assert_eq!(found.id, bob);

    // Concurrent creations of one name: exactly one succeeds.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let proxy = f.proxy.clone();
        let now = f.clock.now_ts();
        let name = if i % 2 == 0 { "race" } else { "race " };
        tasks.spawn(async move { proxy.store().add_user(&named(name), now).await });
    }
    let (mut created, mut refused) = (0, 0);
    while let Some(result) = tasks.join_next().await {
        match result.unwrap() {
            Ok(_) => created += 1,
            Err(StoreError::NameTaken { .. }) => refused += 1,
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!((created, refused), (1, 7));
}

async fn password_changes_and_closed_accounts<S: Store + 'static>(store: S) {
    let f = Fixture::new(store);
    let carol = f.user("carol").await;
    let code = |plain: &'static str| {
        let proxy = f.proxy.clone();
        async move {
            proxy
                .validate(login_req("carol", plain))
                .await
                .unwrap()
                .result_code
        }
    };
    assert_eq!(code(PASSWORD).await, 0);

    f.clock.advance(10);
    let changed_at = f.clock.now_ts();
    let new = Credentials::from_plain("n3w-secret", "77");
    assert!(f
        .store()
        .set_credentials(carol, &new, changed_at)
        .await
        .unwrap());
    assert_eq!(code(PASSWORD).await, 1, "the old password no longer works");
    assert_eq!(code("n3w-secret").await, 0);
    assert!(!f
        .store()
        .set_credentials(UserId(999_999), &new, changed_at)
        .await
        .unwrap());
    let synced = f.store().users_changed_since(changed_at).await.unwrap();
    assert_eq!(
        synced.iter().map(|u| u.id).collect::<Vec<_>>(),
        vec![carol],
        "a changed password moves `updated`"
    );

    f.clock.advance(10);
    let closed_at = f.clock.now_ts();
    assert!(f
        .store()
        .set_status(carol, STATUS_RESIGNED, closed_at)
        .await
        .unwrap());
    assert!(
        f.store()
            .set_status(carol, STATUS_RESIGNED, closed_at)
            .await
            .unwrap(),
        "setting the same status again still finds the user"
    );
    assert_eq!(
        code("n3w-secret").await,
        1,
        "a closed account cannot log in"
    );
    let found = f.store().user_named("carol").await.unwrap().unwrap();
    assert_eq!(
        (found.id, found.status),
        (carol, STATUS_RESIGNED),
        "administration still finds it by name"
    );
    assert!(f.store().user_named("Carol").await.unwrap().is_none());
    let synced = f.store().users_changed_since(closed_at).await.unwrap();
    assert_eq!(synced.len(), 1);
    assert_eq!(
        synced[0].status, STATUS_RESIGNED,
        "clients learn to hide the user"
    );
    assert!(
        f.store()
            .users_changed_since(Timestamp(0))
            .await
            .unwrap()
            .iter()
            .all(|u| u.id != carol),
        "nor is it in a first full sync"
    );
    assert!(!f
        .store()
        .set_status(UserId(999_999), STATUS_RESIGNED, closed_at)
        .await
        .unwrap());

    f.clock.advance(10);
    assert!(f
        .store()
        .set_status(carol, STATUS_ACTIVE, f.clock.now_ts())
        .await
        .unwrap());
    assert_eq!(code("n3w-secret").await, 0, "opened again");
}

async fn profile_changes<S: Store + 'static>(store: S) {
    let f = Fixture::new(store);
    let frank = f.user("frank").await;
    let before = f.store().users(&[frank]).await.unwrap().remove(0);
    f.clock.advance(10);
    let change = ProfileChange {
        nick: Some("弗兰克".into()),
        department: Some(teamtalk_core::domain::DepartmentId(7)),
        phone: Some("+86 10 1234".into()),
        ..ProfileChange::default()
    };
    assert!(f
        .store()
        .update_profile(frank, &change, f.clock.now_ts())
        .await
        .unwrap());
    let after = f.store().users(&[frank]).await.unwrap().remove(0);
    assert_eq!(
        (after.nick.as_str(), after.department, after.phone.as_str()),
        (
            "弗兰克",
            teamtalk_core::domain::DepartmentId(7),
            "+86 10 1234"
        )
    );
    assert_eq!(
        (after.name, after.email, after.avatar, after.gender),
        (before.name, before.email, before.avatar, before.gender),
        "fields not named stay"
    );
    assert_eq!(after.updated, f.clock.now_ts(), "clients sync the change");
    assert!(!f
        .store()
        .update_profile(UserId(999_999), &change, f.clock.now_ts())
        .await
        .unwrap());
}

async fn user_and_department_sync<S: Store + 'static>(store: S) {
    let f = Fixture::new(store);
    let a = f.user("a").await;
    f.clock.advance(10);
    let b = f.user("b").await;
    let resigned = f.user_with("resigned", 3).await;

    let all = f
        .proxy
        .changed_users(buddy::ImAllUserReq {
            user_id: a.0,
            latest_update_time: 0,
            attach_data: None,
        })
        .await
        .unwrap();
    let ids: Vec<u32> = all.user_list.iter().map(|u| u.user_id).collect();
    assert_eq!(ids, vec![a.0, b.0], "first sync leaves resigned users out");
    assert_eq!(all.latest_update_time, T0 + 10);

    let since = f
        .proxy
        .changed_users(buddy::ImAllUserReq {
            user_id: a.0,
            latest_update_time: T0 + 10,
            attach_data: None,
        })
        .await
        .unwrap();
    let ids: Vec<u32> = since.user_list.iter().map(|u| u.user_id).collect();
    assert_eq!(
        ids,
        vec![b.0, resigned.0],
        "updated >= latest, resigned included"
    );

    let info = f
        .proxy
        .users_info(buddy::ImUsersInfoReq {
            user_id: a.0,
            user_id_list: vec![resigned.0, 9999, b.0, b.0],
            attach_data: None,
        })
        .await
        .unwrap();
    let ids: Vec<u32> = info.user_info_list.iter().map(|u| u.user_id).collect();
    assert_eq!(
        ids,
        vec![b.0, resigned.0],
        "any status, unknown skipped, no duplicates"
    );
    let empty = f
        .proxy
        .users_info(buddy::ImUsersInfoReq {
            user_id: a.0,
            user_id_list: vec![],
            attach_data: None,
        })
        .await
        .unwrap();
    assert!(empty.user_info_list.is_empty());
    let huge = f
        .proxy
        .users_info(buddy::ImUsersInfoReq {
            user_id: a.0,
            user_id_list: (1..100_000).collect(),
            attach_data: None,
        })
        .await
        .unwrap();
    assert_eq!(
        huge.user_info_list.len(),
        3,
        "oversized lists are cut, not refused"
    );

    let d1 = f
        .store()
        .add_department(
            &NewDepartment {
                name: "R&D".into(),
                priority: 1,
                parent: Default::default(),
            },
            Timestamp(T0),
        )
        .await
        .unwrap();
    let d2 = f
        .store()
        .add_department(
            &NewDepartment {
                name: "Sales".into(),
                priority: 2,
                parent: d1,
            },
            Timestamp(T0 + 5),
        )
        .await
        .unwrap();
    let rsp = f
        .proxy
        .changed_departments(buddy::ImDepartmentReq {
            user_id: a.0,
            latest_update_time: T0,
            attach_data: None,
        })
        .await
        .unwrap();
    let ids: Vec<u32> = rsp.dept_list.iter().map(|d| d.dept_id).collect();
    assert_eq!(ids, vec![d2.0], "departments: updated > latest");
    assert_eq!(rsp.dept_list[0].parent_dept_id, d1.0);
    assert_eq!(rsp.latest_update_time, T0 + 5);
    let none = f
        .proxy
        .changed_departments(buddy::ImDepartmentReq {
            user_id: a.0,
            latest_update_time: T0 + 5,
            attach_data: None,
        })
        .await
        .unwrap();
    assert!(none.dept_list.is_empty());
    assert_eq!(none.latest_update_time, T0 + 5);
}

async fn sign_info_and_push_shield<S: Store + 'static>(store: S) {
    let f = Fixture::new(store);
    let a = f.user("a").await;
    f.clock.advance(100);
    let sign = "签名 ' \"; DROP TABLE IMUser; --";
    let ok = f
        .proxy
        .change_sign_info(buddy::ImChangeSignInfoReq {
            user_id: a.0,
            sign_info: sign.into(),
            attach_data: None,
        })
        .await
        .unwrap();
    assert_eq!((ok.result_code, ok.sign_info.as_deref()), (0, Some(sign)));
    let info = f
        .proxy
        .users_info(buddy::ImUsersInfoReq {
            user_id: a.0,
            user_id_list: vec![a.0],
            attach_data: None,
        })
        .await
        .unwrap();
    assert_eq!(info.user_info_list[0].sign_info.as_deref(), Some(sign));
    let changed = f
        .proxy
        .changed_users(buddy::ImAllUserReq {
            user_id: a.0,
            latest_update_time: T0 + 100,
            attach_data: None,
        })
        .await
        .unwrap();
    assert_eq!(
        changed.user_list.len(),
        1,
        "a signature change is an update"
    );

    let long = "x".repeat(129);
    let too_long = f
        .proxy
        .change_sign_info(buddy::ImChangeSignInfoReq {
            user_id: a.0,
            sign_info: long,
            attach_data: None,
        })
        .await
        .unwrap();
    assert_eq!(too_long.result_code, 1);
    let unknown = f
        .proxy
        .change_sign_info(buddy::ImChangeSignInfoReq {
            user_id: 777,
            sign_info: "x".into(),
            attach_data: None,
        })
        .await
        .unwrap();
    assert_eq!(unknown.result_code, 1);

    let query = |user: u32| login::ImQueryPushShieldReq {
        user_id: user,
        attach_data: None,
    };
    assert_eq!(
        f.proxy
            .query_push_shield(query(a.0))
            .await
            .unwrap()
            .shield_status,
        Some(0)
    );
    let set = f
        .proxy
        .set_push_shield(login::ImPushShieldReq {
            user_id: a.0,
            shield_status: 1,
            attach_data: None,
        })
        .await
        .unwrap();
    assert_eq!((set.result_code, set.shield_status), (0, Some(1)));
    let again = f
        .proxy
        .set_push_shield(login::ImPushShieldReq {
            user_id: a.0,
            shield_status: 1,
            attach_data: None,
        })
        .await
        .unwrap();
    assert_eq!(
        again.result_code, 0,
        "setting the same value again succeeds"
    );
    assert_eq!(
        f.proxy
            .query_push_shield(query(a.0))
            .await
            .unwrap()
            .shield_status,
        Some(1)
    );
    let missing = f.proxy.query_push_shield(query(999)).await.unwrap();
    assert_eq!((missing.result_code, missing.shield_status), (1, None));
}

// ---------------------------------------------------------------------------------------------
// Single messages, sessions, unread
// ---------------------------------------------------------------------------------------------

async fn single_message_ids_per_conversation<S: Store + 'static>(store: S) {
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

async fn concurrent_senders_get_distinct_consecutive_ids<S: Store + 'static>(store: S) {
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

async fn history_pages_by_id_and_latest<S: Store + 'static>(store: S) {
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

async fn sessions_and_unread_of_single_chats<S: Store + 'static>(store: S) {
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

async fn audio_messages<S: Store + 'static>(store: S) {
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

async fn recent_sessions_are_capped_at_100<S: Store + 'static>(store: S) {
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
// Groups
// ---------------------------------------------------------------------------------------------

async fn group_creation_and_info<S: Store + 'static>(store: S) {
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

async fn group_messages_and_unread<S: Store + 'static>(store: S) {
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

async fn group_membership_changes<S: Store + 'static>(store: S) {
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

async fn group_push_shields<S: Store + 'static>(store: S) {
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

async fn group_session_sync<S: Store + 'static>(store: S) {
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
// Devices and files
// ---------------------------------------------------------------------------------------------

async fn device_tokens<S: Store + 'static>(store: S) {
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

async fn offline_files<S: Store + 'static>(store: S) {
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
// Dispatch and hostile input
// ---------------------------------------------------------------------------------------------

async fn strings_round_trip_intact<S: Store + 'static>(store: S) {
    let f = Fixture::new(store);
    let weird = [
        "Robert'); DROP TABLE IMUser;--",
        "%_\\\"`",
        "张三 😀 ñ",
        "\u{0}nul",
    ];
    let mut ids = Vec::new();
    for name in weird {
        ids.push(f.user(name).await);
        assert_eq!(
            f.proxy
                .validate(login_req(name, PASSWORD))
                .await
                .unwrap()
                .result_code,
            0,
            "{name:?}"
        );
    }
    let info = f
        .proxy
        .users_info(buddy::ImUsersInfoReq {
            user_id: 1,
            user_id_list: ids.iter().map(|u| u.0).collect(),
            attach_data: None,
        })
        .await
        .unwrap();
    let names: Vec<&str> = info
        .user_info_list
        .iter()
        .map(|u| u.user_real_name.as_str())
        .collect();
    assert_eq!(names, weird);
    let body = "'; DELETE FROM IMMessage_0; -- 消息 😀";
    f.text(ids[0], ids[1], body).await;
    let history = f
        .proxy
        .message_list(message::ImGetMsgListReq {
            user_id: ids[1].0,
            session_type: 1,
            session_id: ids[0].0,
            msg_id_begin: 0,
            msg_cnt: 1,
            attach_data: None,
        })
        .await
        .unwrap();
    assert_eq!(&history.msg_list[0].msg_data[..], body.as_bytes());
}

/// Every string the stores keep, with quotes, SQL comment markers, LIKE wildcards,
/// backslashes, NUL and 4-byte UTF-8, within the original column widths.
async fn every_string_field_round_trips<S: Store + 'static>(store: S) {
    use teamtalk_core::domain::DepartmentId;
    let f = Fixture::new(store);
    let hostile = |i: usize| -> String {
        ["a'b\"c;--", "%_\\`x", "张三😀ñ", "x\u{0}y", "');DROP--"][i % 5].to_owned()
    };
    for i in 0..5 {
        let department = f
            .store()
            .add_department(
                &NewDepartment {
                    name: hostile(i),
                    priority: 1,
                    parent: DepartmentId(0),
                },
                Timestamp(T0 + 1),
            )
            .await
            .unwrap();
        let profile = User {
            name: format!("u{i}{}", hostile(i)),
            nick: hostile(i + 1),
            avatar: format!("http://h/{}", hostile(i + 2)),
            department,
            email: hostile(i + 3),
            phone: hostile(i + 4).chars().take(11).collect(),
            domain: hostile(i),
            sign_info: hostile(i + 1),
            ..User::default()
        };
        let user = NewUser {
            profile: profile.clone(),
            credentials: Credentials::from_plain(PASSWORD, "1"),
        };
        let id = f.store().add_user(&user, Timestamp(T0)).await.unwrap();

        let login = f
            .proxy
            .validate(login_req(&profile.name, PASSWORD))
            .await
            .unwrap();
        assert_eq!(login.result_code, 0, "login of {:?}", profile.name);
        let info = login.user_info.unwrap();
        assert_eq!(info.user_id, id.0);
        assert_eq!(
            (
                &info.user_real_name,
                &info.user_nick_name,
                &info.avatar_url,
                &info.email,
                &info.user_tel,
                &info.user_domain
            ),
            (
                &profile.name,
                &profile.nick,
                &profile.avatar,
                &profile.email,
                &profile.phone,
                &profile.domain
            )
        );
        assert_eq!(info.sign_info.as_deref(), Some(profile.sign_info.as_str()));
        let depts = f
            .proxy
            .changed_departments(buddy::ImDepartmentReq {
                user_id: id.0,
                latest_update_time: T0,
                attach_data: None,
            })
            .await
            .unwrap();
        assert!(depts
            .dept_list
            .iter()
            .any(|d| d.dept_id == department.0 && d.dept_name == hostile(i)));
    }

    let (a, b) = (f.user("plain-a").await, f.user("plain-b").await);
    for i in 0..5 {
        let created = f
            .proxy
            .create_group(group::ImGroupCreateReq {
                user_id: a.0,
                group_type: 2,
                group_name: hostile(i),
                group_avatar: hostile(i + 1),
                member_id_list: vec![a.0, b.0],
                attach_data: None,
            })
            .await
            .unwrap()
            .unwrap();
        let g = created.group_id.unwrap();
        let info = f
            .proxy
            .group_info(group::ImGroupInfoListReq {
                user_id: a.0,
                group_version_list: vec![bd::GroupVersionInfo {
                    group_id: g,
                    version: 0,
                }],
                attach_data: None,
            })
            .await
            .unwrap();
        assert_eq!(
            (
                &info.group_info_list[0].group_name,
                &info.group_info_list[0].group_avatar
            ),
            (&hostile(i), &hostile(i + 1))
        );

        let task = format!("task{i}{}", hostile(i));
        f.proxy
            .add_offline_file(file::ImFileAddOfflineReq {
                from_user_id: a.0,
                to_user_id: b.0,
                task_id: task.clone(),
                file_name: hostile(i + 2),
                file_size: 1,
            })
            .await
            .unwrap();
        let files = f
            .proxy
            .offline_files(file::ImFileHasOfflineReq {
                user_id: b.0,
                attach_data: None,
            })
            .await
            .unwrap();
        assert!(files
            .offline_file_list
            .iter()
            .any(|o| o.task_id == task && o.file_name == hostile(i + 2)));

        let token = format!("tok{i}{}", hostile(i));
        f.proxy
            .set_device_token(login::ImDeviceTokenReq {
                user_id: a.0,
                device_token: token.clone(),
                client_type: Some(bd::ClientType::Android as i32),
                attach_data: None,
            })
            .await
            .unwrap();
        let tokens = f
            .proxy
            .device_tokens(server::ImGetDeviceTokenReq {
                user_id: vec![a.0],
                attach_data: None,
            })
            .await
            .unwrap();
        assert_eq!(tokens.user_token_info[0].token, token);

        let body = format!("{}{}", hostile(i), hostile(i + 1));
        f.text(a, b, &body).await;
        let page = f
            .proxy
            .message_list(message::ImGetMsgListReq {
                user_id: b.0,
                session_type: 1,
                session_id: a.0,
                msg_id_begin: 0,
                msg_cnt: 1,
                attach_data: None,
            })
            .await
            .unwrap();
        assert_eq!(&page.msg_list[0].msg_data[..], body.as_bytes());
    }
}

async fn handler_dispatches_and_answers_like_db_proxy<S: Store + 'static>(store: S) {
    let f = Fixture::new(store);
    let (a, b) = (f.user("a").await, f.user("b").await);
    let answer = f
        .proxy
        .handle(login_req("a", PASSWORD).into())
        .await
        .unwrap();
    assert!(matches!(answer, AnyMessage::ValidateRsp(ref r) if r.result_code == 0));
    let data = message::ImMsgData {
        from_user_id: a.0,
        to_session_id: b.0,
        msg_type: 1,
        msg_data: Bytes::from_static(b"x"),
        ..Default::default()
    };
    let answer = f.proxy.handle(data.into()).await.unwrap();
    assert!(matches!(answer, AnyMessage::MsgData(ref m) if m.msg_id == 1));
    let ack = message::ImMsgDataReadAck {
        user_id: b.0,
        session_id: a.0,
        msg_id: 1,
        session_type: 1,
    };
    assert!(
        f.proxy.handle(ack.into()).await.is_none(),
        "read ack has no answer"
    );
    assert!(
        f.proxy
            .handle(teamtalk_core::proto::other::ImHeartBeat {}.into())
            .await
            .is_none(),
        "not a db_proxy command"
    );
    let info = f
        .proxy
        .handle(
            buddy::ImUsersInfoReq {
                user_id: a.0,
                user_id_list: vec![b.0],
                attach_data: None,
            }
            .into(),
        )
        .await
        .unwrap();
    assert_eq!(
        info.command(),
        teamtalk_core::CommandId::BUDDY_LIST_USER_INFO_RESPONSE
    );
}

macro_rules! backends {
    ($($backend:ident => $make:expr $(, also: [$($extra:ident),*])?;)*) => {$(
        mod $backend {
            $(backends!(@checks $make; $($extra,)*);)?
            backends!(@checks $make;
                login_checks_the_password_of_active_users,
                login_is_blocked_after_more_than_ten_failures,
                login_lockout_counts_per_account_and_source,
                one_account_per_login_name,
                password_changes_and_closed_accounts,
                profile_changes,
                user_and_department_sync,
                sign_info_and_push_shield,
                single_message_ids_per_conversation,
                concurrent_senders_get_distinct_consecutive_ids,
                history_pages_by_id_and_latest,
                sessions_and_unread_of_single_chats,
                recent_sessions_are_capped_at_100,
                group_creation_and_info,
                group_messages_and_unread,
                group_membership_changes,
                group_push_shields,
                group_session_sync,
                device_tokens,
                offline_files,
                strings_round_trip_intact,
                every_string_field_round_trips,
                handler_dispatches_and_answers_like_db_proxy,
            );
        }
    )*};
    (@checks $make:expr; $($check:ident,)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $check() {
            let Some((store, _cleanup)) = $make.await else {
                return; // the backend printed why it is skipped
            };
            super::$check(store).await;
        }
    )*};
}

/// Removes a test's scratch directory when dropped (also when the check panics).
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(backend: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("teamtalk-{backend}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn memory() -> Option<(teamtalk_store::MemoryStore, ())> {
    Some((teamtalk_store::MemoryStore::new(), ()))
}

async fn sqlite() -> Option<(teamtalk_store::SqliteStore, TempDir)> {
    let dir = TempDir::new("sqlite");
    let config = teamtalk_store::SqliteConfig::new(dir.0.join("teamtalk.db"));
    Some((
        teamtalk_store::SqliteStore::open(&config).await.unwrap(),
        dir,
    ))
}

/// A fresh database and Redis key prefix on the servers named by `TEAMTALK_TEST_MYSQL_URL`
/// (a server URL without database, e.g. `mysql://root@127.0.0.1:3306`) and
/// `TEAMTALK_TEST_REDIS_URL`; both are removed when the guard drops.
async fn mysql() -> Option<(teamtalk_store::MysqlRedisStore, MysqlGuard)> {
    let (Ok(server), Ok(redis)) = (
        std::env::var("TEAMTALK_TEST_MYSQL_URL"),
        std::env::var("TEAMTALK_TEST_REDIS_URL"),
    ) else {
        println!("skipped: set TEAMTALK_TEST_MYSQL_URL and TEAMTALK_TEST_REDIS_URL to run the MySQL + Redis conformance checks");
        return None;
    };
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("tt_conformance_{}_{n}", std::process::id());
    let server = server.trim_end_matches('/').to_owned();
    let admin = sqlx::MySqlPool::connect(&server).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE `{name}` CHARACTER SET utf8mb4"
    )))
    .execute(&admin)
    .await
    .unwrap();
    admin.close().await;
    let mut config = teamtalk_store::MysqlRedisConfig::new(&format!("{server}/{name}"), &redis);
    config.key_prefix = format!("{name}:");
    config.max_connections = 8;
    config.msfs_url = Some(fake_msfs().await);
    let guard = MysqlGuard {
        server,
        name,
        config: config.clone(),
    };
    let store = teamtalk_store::MysqlRedisStore::connect(&config)
        .await
        .unwrap();
    store.bootstrap().await.unwrap();
    Some((store, guard))
}

/// A stand-in msfs speaking the original protocol (docs/protocol.md § msfs): a multipart upload
/// answered with `{"error_code":0,…,"url":…}`, and a GET of that URL. Returns its base URL.
async fn fake_msfs() -> String {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
        haystack.windows(needle.len()).position(|w| w == needle)
    }
    fn answer(status: &str, body: &[u8]) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(body);
        out
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let files: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let files = files.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                let head_end = loop {
                    let n = stream.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = find(&buf, b"\r\n\r\n") {
                        break end;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                let header = |name: &str| {
                    head.lines().find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                    })
                };
                let length: usize = header("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                while buf.len() < head_end + 4 + length {
                    let n = stream.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let body = &buf[head_end + 4..head_end + 4 + length];
                let mut request = head.split_whitespace();
                let (method, path) = (request.next().unwrap_or(""), request.next().unwrap_or(""));
                let response = if method == "POST" {
                    let boundary = header("content-type")
                        .and_then(|v| v.split_once("boundary=").map(|(_, b)| b.to_owned()))
                        .unwrap();
                    let start = find(body, b"\r\n\r\n").unwrap() + 4;
                    let end = start
                        + find(&body[start..], format!("\r\n--{boundary}").as_bytes()).unwrap();
                    let mut files = files.lock().unwrap();
                    let name = format!("g0/000/000/{}_1.audio", files.len());
                    files.insert(format!("/{name}"), body[start..end].to_vec());
                    let json = format!(
                        r#"{{"error_code":0,"error_msg":"成功","path":"{name}","url":"http://{addr}/{name}"}}"#
                    );
                    answer("200 OK", json.as_bytes())
                } else {
                    match files.lock().unwrap().get(path) {
                        Some(data) => answer("200 OK", data),
                        None => answer("404 Not Found", b""),
                    }
                };
                let _ = stream.write_all(&response).await;
            });
        }
    });
    format!("http://{addr}/")
}

/// Drops a test's database and Redis keys (from its own thread and runtime, so it also works
/// while a failed test unwinds).
struct MysqlGuard {
    server: String,
    name: String,
    config: teamtalk_store::MysqlRedisConfig,
}

impl Drop for MysqlGuard {
    fn drop(&mut self) {
        let (server, name, config) = (self.server.clone(), self.name.clone(), self.config.clone());
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok(store) = teamtalk_store::MysqlRedisStore::connect(&config).await {
                    let _ = store.delete_prefixed_keys().await;
                }
                if let Ok(admin) = sqlx::MySqlPool::connect(&server).await {
                    let drop = format!("DROP DATABASE IF EXISTS `{name}`");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&admin).await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

backends! {
    memory => super::memory(), also: [audio_messages];
    sqlite => super::sqlite(), also: [audio_messages];    // Audio goes to msfs (a stand-in speaking the original protocol, see fake_msfs).
    mysql_redis => super::mysql(), also: [audio_messages];
}
