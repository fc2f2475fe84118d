//! Checks of hostile strings and of the `Handler` dispatch.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
// A check reports a broken rule by panicking with the assertion that failed, like a test.

use bytes::Bytes;
use teamtalk_core::domain::Timestamp;
use teamtalk_core::proto::{base_define as bd, buddy, file, group, login, message, server};
use teamtalk_core::service::Handler;
use teamtalk_core::store::{Credentials, NewDepartment, NewUser, Store, User};
use teamtalk_core::AnyMessage;

use super::fixture::{login_req, Fixture, PASSWORD, T0};

/// Strings with quotes, backslashes, NUL and 4-byte UTF-8 come back intact.
pub async fn strings_round_trip_intact<S: Store + 'static>(store: S) {
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
pub async fn every_string_field_round_trips<S: Store + 'static>(store: S) {
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

/// The `Handler` dispatches decoded requests to the entry points and answers with the response
/// commands db_proxy sends.
pub async fn handler_dispatches_and_answers_like_db_proxy<S: Store + 'static>(store: S) {
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
