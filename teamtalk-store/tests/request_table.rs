//! db_proxy serves exactly the requests the request table sends it
//! (`teamtalk_core::command::requests`, column `db_proxy`): a walk over the table sends every
//! row routed to db_proxy as it is through `Handler::handle` on the memory store. A row db_proxy
//! serves gets the answer its `answer` column names, a stored message, or — for a write nobody
//! waits for — a change another request shows; a row marked `no_handler` gets nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;

use bytes::Bytes;
use teamtalk_core::command::requests::{self, Answer, DbHandler, Route, TABLE};
use teamtalk_core::domain::{ManualClock, Timestamp, UserId};
use teamtalk_core::proto::{base_define as bd, file, group, login, message, server};
use teamtalk_core::service::{DbProxy, DbProxyConfig, Handler};
use teamtalk_core::store::{Credentials, NewUser, User, UserStore};
use teamtalk_core::{AnyMessage, CommandId};
use teamtalk_store::MemoryStore;

const T0: u32 = 1_700_000_000;

type Proxy = DbProxy<Arc<MemoryStore>, ManualClock>;

/// Two users, a group of alice's and the last message stored, for the requests that need them.
struct Fixture {
    proxy: Proxy,
    alice: u32,
    bob: u32,
    group: u32,
    last_msg_id: u32,
}

async fn add_user(store: &MemoryStore, name: &str) -> UserId {
    let user = NewUser {
        profile: User {
            name: name.into(),
            nick: name.into(),
            ..User::default()
        },
        credentials: Credentials::from_plain("s3cret", "17"),
    };
    store.add_user(&user, Timestamp(T0)).await.unwrap()
}

impl Fixture {
    async fn new() -> Fixture {
        let store = Arc::new(MemoryStore::new());
        let alice = add_user(&store, "alice").await.0;
        let bob = add_user(&store, "bob").await.0;
        let proxy = DbProxy::new(
            store,
            ManualClock::new(Timestamp(T0)),
            DbProxyConfig::default(),
        );
        let mut fixture = Fixture {
            proxy,
            alice,
            bob,
            group: 0,
            last_msg_id: 0,
        };
        let created = fixture
            .proxy
            .handle(fixture.create_group().into())
            .await
            .unwrap();
        let AnyMessage::GroupCreateRsp(created) = created else {
            panic!("{created:?}")
        };
        fixture.group = created.group_id.unwrap();
        fixture
    }

    fn create_group(&self) -> group::ImGroupCreateReq {
        group::ImGroupCreateReq {
            user_id: self.alice,
            group_type: bd::GroupType::Tmp as i32,
            group_name: "walk".into(),
            group_avatar: String::new(),
            member_id_list: vec![self.alice, self.bob],
            attach_data: None,
        }
    }

    /// The request of `command` with a body db_proxy can serve, its requester forced as the
    /// msg_server forces it.
    fn request(&self, command: CommandId) -> AnyMessage {
        let mut request = match command {
            CommandId::MSG_DATA => message::ImMsgData {
                from_user_id: self.alice,
                to_session_id: self.bob,
                msg_id: 0,
                create_time: T0,
                msg_type: bd::MsgType::SingleText as i32,
                msg_data: Bytes::from_static(b"hello"),
                attach_data: None,
            }
            .into(),
            CommandId::MSG_READ_ACK => {
                let ack = message::ImMsgDataReadAck {
                    user_id: self.bob,
                    session_id: self.alice,
                    msg_id: self.last_msg_id,
                    session_type: bd::SessionType::Single as i32,
                };
                return ack.into();
            }
            CommandId::LOGIN_REQ_DEVICETOKEN => login::ImDeviceTokenReq {
                user_id: self.alice,
                device_token: "token-1".into(),
                client_type: Some(bd::ClientType::Ios as i32),
                attach_data: None,
            }
            .into(),
            CommandId::GROUP_CREATE_REQUEST => self.create_group().into(),
            CommandId::GROUP_CHANGE_MEMBER_REQUEST => group::ImGroupChangeMemberReq {
                user_id: self.alice,
                change_type: bd::GroupModifyType::Del as i32,
                group_id: self.group,
                member_id_list: vec![self.bob],
                attach_data: None,
            }
            .into(),
            CommandId::GROUP_SHIELD_GROUP_REQUEST => group::ImGroupShieldReq {
                user_id: self.alice,
                group_id: self.group,
                shield_status: 1,
                attach_data: None,
            }
            .into(),
            CommandId::OTHER_GET_SHIELD_REQ => server::ImGroupGetShieldReq {
                group_id: self.group,
                user_id: vec![self.alice],
                attach_data: None,
            }
            .into(),
            CommandId::OTHER_GET_DEVICE_TOKEN_REQ => server::ImGetDeviceTokenReq {
                user_id: vec![self.alice],
                attach_data: None,
            }
            .into(),
            CommandId::FILE_ADD_OFFLINE_REQ => file::ImFileAddOfflineReq {
                from_user_id: self.alice,
                to_user_id: self.bob,
                task_id: "task-1".into(),
                file_name: "a.txt".into(),
                file_size: 3,
            }
            .into(),
            CommandId::FILE_DEL_OFFLINE_REQ => {
                return file::ImFileDelOfflineReq {
                    from_user_id: self.alice,
                    to_user_id: self.bob,
                    task_id: "task-1".into(),
                }
                .into();
            }
            other => AnyMessage::decode(other, &[][..]).unwrap(),
        };
        requests::set_requester(&mut request, self.alice);
        request
    }

    /// What another request shows of a write's effect: bob's unread messages, his offline
    /// files, alice's device tokens.
    async fn effect(&self, command: CommandId) -> Option<AnyMessage> {
        let probe: AnyMessage = match command {
            CommandId::MSG_READ_ACK => message::ImUnreadMsgCntReq {
                user_id: self.bob,
                attach_data: None,
            }
            .into(),
            CommandId::FILE_ADD_OFFLINE_REQ | CommandId::FILE_DEL_OFFLINE_REQ => {
                file::ImFileHasOfflineReq {
                    user_id: self.bob,
                    attach_data: None,
                }
                .into()
            }
            CommandId::LOGIN_REQ_DEVICETOKEN => server::ImGetDeviceTokenReq {
                user_id: vec![self.alice],
                attach_data: None,
            }
            .into(),
            _ => return None,
        };
        self.proxy.handle(probe).await
    }
}

#[tokio::test]
async fn db_proxy_serves_exactly_the_table_rows_routed_to_it() {
    let mut fixture = Fixture::new().await;
    let mut walked = Vec::new();
    for rules in TABLE.iter().filter(|r| r.db_proxy != DbHandler::NotSent) {
        let command = rules.command;
        walked.push(command);
        let before = fixture.effect(command).await;
        let answer = fixture.proxy.handle(fixture.request(command)).await;
        let after = fixture.effect(command).await;
        match (rules.db_proxy, rules.route, rules.answer) {
            (DbHandler::NoHandler(_), _, _) => {
                assert_eq!(answer, None, "{command} has no handler");
                assert_eq!(before, after, "{command} has no handler");
            }
            (_, _, Answer::Routed(rsp) | Answer::EveryConnection(rsp) | Answer::Consumed(rsp)) => {
                let answered = answer.as_ref().map(AnyMessage::command);
                assert_eq!(answered, Some(rsp), "{command}: {answer:?}");
            }
            (_, Route::Message { .. }, _) => {
                let Some(AnyMessage::MsgData(stored)) = answer else {
                    panic!("{command}: {answer:?}")
                };
                assert_ne!(stored.msg_id, 0, "{command} stored");
                fixture.last_msg_id = stored.msg_id;
            }
            (_, Route::DbWrite { .. }, _) => {
                assert!(after.is_some(), "{command}: its effect shows");
                assert_ne!(before, after, "{command} changed nothing");
            }
            other => panic!("{command}: no expectation for {other:?}"),
        }
    }
    // The walk met the rows of every kind: answered, stored, written, and not served.
    for command in [
        CommandId::BUDDY_LIST_USER_INFO_REQUEST,
        CommandId::MSG_DATA,
        CommandId::MSG_READ_ACK,
        CommandId::FILE_DEL_OFFLINE_REQ,
        CommandId::OTHER_VALIDATE_REQ,
        CommandId::BUDDY_LIST_CHANGE_AVATAR_REQUEST,
    ] {
        assert!(walked.contains(&command), "{command} walked");
    }
}
