//! The fixture the checks share: a db_proxy over the store under test with a manual clock.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;

use bytes::Bytes;
use teamtalk_core::domain::{GroupId, ManualClock, Timestamp, UserId};
use teamtalk_core::proto::{base_define as bd, buddy, group, message, server};
use teamtalk_core::service::{DbProxy, DbProxyConfig};
use teamtalk_core::store::{Credentials, NewUser, Store, User};

pub(super) const T0: u32 = 1_700_000_000;
pub(super) const PASSWORD: &str = "123456";

/// A db_proxy over a fresh store with a manual clock at `T0`.
pub(super) struct Fixture<S> {
    pub(super) proxy: Arc<DbProxy<S, Arc<ManualClock>>>,
    pub(super) clock: Arc<ManualClock>,
}

impl<S: Store + 'static> Fixture<S> {
    pub(super) fn new(store: S) -> Self {
        let clock = Arc::new(ManualClock::new(Timestamp(T0)));
        let proxy = Arc::new(DbProxy::new(store, clock.clone(), DbProxyConfig::default()));
        Fixture { proxy, clock }
    }

    pub(super) fn store(&self) -> &S {
        self.proxy.store()
    }

    pub(super) async fn user(&self, name: &str) -> UserId {
        self.user_with(name, 0).await
    }

    pub(super) async fn user_with(&self, name: &str, status: u32) -> UserId {
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

    pub(super) async fn send(
        &self,
        from: UserId,
        to: u32,
        msg_type: bd::MsgType,
        text: &str,
    ) -> Option<u32> {
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

    pub(super) async fn text(&self, from: UserId, to: UserId, text: &str) -> u32 {
        self.send(from, to.0, bd::MsgType::SingleText, text)
            .await
            .unwrap()
    }

    pub(super) async fn group_text(&self, from: UserId, group: GroupId, text: &str) -> Option<u32> {
        self.send(from, group.0, bd::MsgType::GroupText, text).await
    }

    pub(super) async fn create_group(
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

    pub(super) async fn change(
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

    pub(super) async fn unread(&self, user: UserId) -> message::ImUnreadMsgCntRsp {
        self.proxy
            .unread_counts(message::ImUnreadMsgCntReq {
                user_id: user.0,
                attach_data: None,
            })
            .await
            .unwrap()
    }

    pub(super) async fn history(
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

    pub(super) async fn sessions(&self, user: UserId, since: u32) -> Vec<(u32, i32)> {
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

    pub(super) async fn read_ack(&self, user: UserId, kind: bd::SessionType, peer: u32) {
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

pub(super) trait NowTs {
    fn now_ts(&self) -> Timestamp;
}

impl NowTs for ManualClock {
    fn now_ts(&self) -> Timestamp {
        teamtalk_core::domain::Clock::now(self)
    }
}

pub(super) fn login_req(name: &str, plain: &str) -> server::ImValidateReq {
    server::ImValidateReq {
        user_name: name.into(),
        password: teamtalk_core::password::client_password(plain),
        attach_data: Some(Bytes::from_static(&[0, 0, 0, 1, 0, 0, 0, 9, 0, 0, 0, 0])),
    }
}

// ---------------------------------------------------------------------------------------------

pub(super) fn named(name: &str) -> NewUser {
    NewUser {
        profile: User {
            name: name.to_owned(),
            nick: "n".into(),
            ..User::default()
        },
        credentials: Credentials::from_plain(PASSWORD, "4321"),
    }
}
