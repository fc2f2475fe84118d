//! Checks of logins, accounts, profiles, departments, signatures and push shields.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
// A check reports a broken rule by panicking with the assertion that failed, like a test.

use teamtalk_core::domain::{Timestamp, UserId};
use teamtalk_core::proto::{buddy, login};
use teamtalk_core::store::{
    Credentials, NewDepartment, ProfileChange, Store, StoreError, STATUS_ACTIVE, STATUS_RESIGNED,
};

use super::fixture::{login_req, named, Fixture, NowTs, PASSWORD, T0};

/// Login: the right password of an active user succeeds (attach data echoed); a wrong password,
/// an unknown, resigned or differently cased name, and SQL in the name are refused.
pub async fn login_checks_the_password_of_active_users<S: Store + 'static>(store: S) {
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

/// Login: after more than ten failures an account is blocked, even for the right password.
pub async fn login_is_blocked_after_more_than_ten_failures<S: Store + 'static>(store: S) {
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
pub async fn login_lockout_counts_per_account_and_source<S: Store + 'static>(store: S) {
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

/// `add_user` refuses a name that exists under the store's comparison (the same on every
/// backend: MySQL's utf8mb4_bin, case-sensitive, trailing spaces ignored), also for closed
/// accounts and under concurrent creation; lookups compare the same way.
pub async fn one_account_per_login_name<S: Store + 'static>(store: S) {
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

/// Credentials and status: a new password replaces the old one; a closed account cannot log in
/// until it is opened again.
pub async fn password_changes_and_closed_accounts<S: Store + 'static>(store: S) {
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

/// Profile changes: the fields named change, the others stay, and `updated` moves.
pub async fn profile_changes<S: Store + 'static>(store: S) {
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

/// Incremental sync of users and departments: the first full sync leaves resigned users out,
/// later ones include every change since the watermark.
pub async fn user_and_department_sync<S: Store + 'static>(store: S) {
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

/// Signature and do-not-disturb flag: set, read back, length limit, unknown users.
pub async fn sign_info_and_push_shield<S: Store + 'static>(store: S) {
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
