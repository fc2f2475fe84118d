use std::collections::BTreeSet;

use bytes::Bytes;

use super::*;
use crate::command::ClientLink;
use crate::ids::CommandId as C;

/// The default message of `command`.
fn message(command: CommandId) -> AnyMessage {
    match AnyMessage::decode(command, &[][..]) {
        Ok(message) => message,
        Err(error) => panic!("{command}: {error}"),
    }
}

/// The commands whose rules satisfy `pick`.
fn commands(pick: impl Fn(&Rules) -> bool) -> BTreeSet<CommandId> {
    TABLE
        .iter()
        .filter(|r| pick(r))
        .map(|r| r.command)
        .collect()
}

fn set(commands: &[CommandId]) -> BTreeSet<CommandId> {
    commands.iter().copied().collect()
}

#[test]
fn the_table_is_in_command_order_without_duplicates() {
    for pair in TABLE.windows(2) {
        let [a, b] = pair else { unreachable!() };
        assert!(a.command < b.command, "{} before {}", a.command, b.command);
    }
    for rules in TABLE {
        assert_eq!(super::rules(rules.command), Some(rules));
    }
}

#[test]
fn every_client_command_has_a_requester_rule_and_a_failure_decision() {
    for &command in C::ALL {
        let client = command.client_link() == Some(ClientLink::MsgServer);
        let Some(rules) = super::rules(command) else {
            assert!(!client, "{command} is sent by clients but has no row");
            continue;
        };
        assert_eq!(
            matches!(rules.sender, Sender::Client { .. }),
            client,
            "{command}: the row's sender and the command table disagree"
        );
        let mut m = message(command);
        match rules.requester {
            Requester::Field(field) => {
                assert!(!field.is_empty(), "{command}");
                assert!(set_requester(&mut m, 7), "{command}: {field} not forced");
                assert_ne!(m, message(command), "{command}: {field} not written");
            }
            Requester::NotForced(why) => {
                assert!(!why.is_empty(), "{command}: say why nothing is forced");
                assert!(!set_requester(&mut m, 7), "{command}");
            }
        }
        match rules.failure {
            Failure::Reply { .. } => {
                let Some(answer) = failure_answer(&message(command)) else {
                    panic!("{command}: a failure reply without a body");
                };
                let expected = match rules.answer {
                    Answer::Routed(c)
                    | Answer::EveryConnection(c)
                    | Answer::Built(c)
                    | Answer::Consumed(c) => c,
                    Answer::Local(_) | Answer::Nothing(_) => {
                        panic!("{command}: a failure reply for a request answered locally or not at all")
                    }
                };
                // A message's failure is the message itself (msg_id 0), answered where the
                // msg_server builds the ack.
                if command != C::MSG_DATA {
                    assert_eq!(answer.command(), expected, "{command}");
                }
            }
            Failure::NoReply(why) => {
                assert!(
                    !why.is_empty(),
                    "{command}: say why there is no failure reply"
                );
                assert!(failure_answer(&message(command)).is_none(), "{command}");
            }
        }
    }
}

#[test]
fn only_heartbeat_and_login_before_login() {
    assert_eq!(
        commands(|r| matches!(r.sender, Sender::Client { before_login: true })),
        set(&[C::LOGIN_REQ_USERLOGIN, C::OTHER_HEARTBEAT])
    );
    assert!(allowed_before_login(C::OTHER_HEARTBEAT));
    assert!(!allowed_before_login(C::MSG_DATA));
    assert!(!allowed_before_login(C::OTHER_VALIDATE_REQ));
}

#[test]
fn requester_fields_are_the_ones_forced_today() {
    let user_id = [
        C::LOGIN_REQ_DEVICETOKEN,
        C::LOGIN_REQ_KICKPCCLIENT,
        C::LOGIN_REQ_PUSH_SHIELD,
        C::LOGIN_REQ_QUERY_PUSH_SHIELD,
        C::BUDDY_LIST_RECENT_CONTACT_SESSION_REQUEST,
        C::BUDDY_LIST_USER_INFO_REQUEST,
        C::BUDDY_LIST_REMOVE_SESSION_REQ,
        C::BUDDY_LIST_ALL_USER_REQUEST,
        C::BUDDY_LIST_USERS_STATUS_REQUEST,
        C::BUDDY_LIST_CHANGE_AVATAR_REQUEST,
        C::BUDDY_LIST_DEPARTMENT_REQUEST,
        C::BUDDY_LIST_CHANGE_SIGN_INFO_REQUEST,
        C::MSG_READ_ACK,
        C::MSG_UNREAD_CNT_REQUEST,
        C::MSG_LIST_REQUEST,
        C::MSG_GET_LATEST_MSG_ID_REQ,
        C::MSG_GET_BY_MSG_ID_REQ,
        C::GROUP_NORMAL_LIST_REQUEST,
        C::GROUP_INFO_REQUEST,
        C::GROUP_CREATE_REQUEST,
        C::GROUP_CHANGE_MEMBER_REQUEST,
        C::GROUP_SHIELD_GROUP_REQUEST,
        C::FILE_HAS_OFFLINE_REQ,
    ];
    let from_user_id = [
        C::MSG_DATA,
        C::FILE_REQUEST,
        C::FILE_ADD_OFFLINE_REQ,
        C::SWITCH_P2P_CMD,
    ];
    assert_eq!(
        commands(|r| r.requester == Requester::Field("user_id")),
        set(&user_id)
    );
    assert_eq!(
        commands(|r| r.requester == Requester::Field("from_user_id")),
        set(&from_user_id)
    );
    // The sender of an offline file need not be the requester: not forced.
    let mut del = message(C::FILE_DEL_OFFLINE_REQ);
    assert!(!set_requester(&mut del, 7));
}

#[test]
fn db_ranges_and_attach_layouts_are_todays() {
    let route_of = |c: CommandId| super::rules(c).map(|r| r.route);
    let db = |range, attach| Some(Route::Db { range, attach });
    use AttachLayout::{Long, Short};
    use DbRange::{Login, Other};
    for c in [
        C::LOGIN_REQ_PUSH_SHIELD,
        C::LOGIN_REQ_QUERY_PUSH_SHIELD,
        C::BUDDY_LIST_CHANGE_SIGN_INFO_REQUEST,
        C::GROUP_INFO_REQUEST,
    ] {
        assert_eq!(route_of(c), db(Other, Long), "{c}");
    }
    for c in [
        C::MSG_LIST_REQUEST,
        C::MSG_GET_BY_MSG_ID_REQ,
        C::MSG_UNREAD_CNT_REQUEST,
        C::BUDDY_LIST_RECENT_CONTACT_SESSION_REQUEST,
        C::BUDDY_LIST_USER_INFO_REQUEST,
    ] {
        assert_eq!(route_of(c), db(Login, Short), "{c}");
    }
    for c in [
        C::MSG_GET_LATEST_MSG_ID_REQ,
        C::BUDDY_LIST_ALL_USER_REQUEST,
        C::BUDDY_LIST_DEPARTMENT_REQUEST,
        C::BUDDY_LIST_CHANGE_AVATAR_REQUEST,
        C::BUDDY_LIST_REMOVE_SESSION_REQ,
        C::GROUP_NORMAL_LIST_REQUEST,
        C::GROUP_CREATE_REQUEST,
        C::GROUP_CHANGE_MEMBER_REQUEST,
        C::GROUP_SHIELD_GROUP_REQUEST,
        C::FILE_HAS_OFFLINE_REQ,
    ] {
        assert_eq!(route_of(c), db(Other, Short), "{c}");
    }
    assert_eq!(
        commands(|r| matches!(r.route, Route::Db { .. })).len(),
        19 + 3
    );
    assert_eq!(
        route_of(C::BUDDY_LIST_USERS_STATUS_REQUEST),
        Some(Route::RouteServer { attach: Long })
    );
    assert_eq!(
        route_of(C::MSG_DATA),
        Some(Route::Message {
            range: Other,
            attach: Short
        })
    );
    assert_eq!(
        commands(|r| matches!(r.route, Route::DbWrite { range: Other })),
        set(&[
            C::LOGIN_REQ_DEVICETOKEN,
            C::MSG_READ_ACK,
            C::FILE_ADD_OFFLINE_REQ,
            C::FILE_DEL_OFFLINE_REQ
        ])
    );
    assert_eq!(route_of(C::LOGIN_REQ_USERLOGIN), Some(Route::Login));
    assert_eq!(route(&message(C::MSG_DATA_ACK)), Route::Ignored);
    assert_eq!(
        route(&message(C::BUDDY_LIST_USER_INFO_RESPONSE)),
        Route::Ignored
    );
}

#[test]
fn attach_handle_writes_the_layout_of_the_route() {
    let mut long = message(C::GROUP_INFO_REQUEST);
    assert!(attach_handle(&mut long, 9));
    let AnyMessage::GroupInfoListReq(long) = long else {
        unreachable!()
    };
    let attach = long.attach_data.unwrap_or_default();
    assert_eq!(attach.len(), PduAttach::HEAD_LEN);
    assert_eq!(
        PduAttach::decode(&attach).map(|a| a.head.handle).ok(),
        Some(9)
    );

    let mut short = message(C::MSG_LIST_REQUEST);
    assert!(attach_handle(&mut short, 9));
    let AnyMessage::GetMsgListReq(short) = short else {
        unreachable!()
    };
    let attach = short.attach_data.unwrap_or_default();
    assert_eq!(attach.len(), DbAttach::LEN);
    assert_eq!(DbAttach::decode(&attach).map(|a| a.handle).ok(), Some(9));

    // The validate attach carries the client's address too: the msg_server builds it.
    assert!(!attach_handle(&mut message(C::OTHER_VALIDATE_REQ), 9));
    assert!(!attach_handle(&mut message(C::MSG_TIME_REQUEST), 9));
}

#[test]
fn the_budget_counts_requests_answered_by_attach() {
    let expected = set(&[
        C::LOGIN_REQ_PUSH_SHIELD,
        C::LOGIN_REQ_QUERY_PUSH_SHIELD,
        C::BUDDY_LIST_RECENT_CONTACT_SESSION_REQUEST,
        C::BUDDY_LIST_USER_INFO_REQUEST,
        C::BUDDY_LIST_REMOVE_SESSION_REQ,
        C::BUDDY_LIST_ALL_USER_REQUEST,
        C::BUDDY_LIST_USERS_STATUS_REQUEST,
        C::BUDDY_LIST_CHANGE_AVATAR_REQUEST,
        C::BUDDY_LIST_DEPARTMENT_REQUEST,
        C::BUDDY_LIST_CHANGE_SIGN_INFO_REQUEST,
        C::MSG_UNREAD_CNT_REQUEST,
        C::MSG_LIST_REQUEST,
        C::MSG_GET_LATEST_MSG_ID_REQ,
        C::MSG_GET_BY_MSG_ID_REQ,
        C::GROUP_NORMAL_LIST_REQUEST,
        C::GROUP_INFO_REQUEST,
        C::GROUP_CREATE_REQUEST,
        C::GROUP_CHANGE_MEMBER_REQUEST,
        C::GROUP_SHIELD_GROUP_REQUEST,
        C::FILE_HAS_OFFLINE_REQ,
    ]);
    let counted: BTreeSet<CommandId> = C::ALL.iter().copied().filter(|&c| counts(c)).collect();
    assert_eq!(counted, expected);
}

#[test]
fn reply_routes_are_the_responses_of_routed_requests() {
    let routed: BTreeSet<CommandId> = C::ALL
        .iter()
        .copied()
        .filter(|&c| reply_route(&mut message(c)).is_some())
        .collect();
    let expected = set(&[
        C::LOGIN_RES_PUSH_SHIELD,
        C::LOGIN_RES_QUERY_PUSH_SHIELD,
        C::BUDDY_LIST_RECENT_CONTACT_SESSION_RESPONSE,
        C::BUDDY_LIST_USER_INFO_RESPONSE,
        C::BUDDY_LIST_REMOVE_SESSION_RES,
        C::BUDDY_LIST_ALL_USER_RESPONSE,
        C::BUDDY_LIST_USERS_STATUS_RESPONSE,
        C::BUDDY_LIST_CHANGE_AVATAR_RESPONSE,
        C::BUDDY_LIST_DEPARTMENT_RESPONSE,
        C::BUDDY_LIST_CHANGE_SIGN_INFO_RESPONSE,
        C::MSG_UNREAD_CNT_RESPONSE,
        C::MSG_LIST_RESPONSE,
        C::MSG_GET_LATEST_MSG_ID_RSP,
        C::MSG_GET_BY_MSG_ID_RES,
        C::GROUP_NORMAL_LIST_RESPONSE,
        C::GROUP_INFO_RESPONSE,
        C::GROUP_CREATE_RESPONSE,
        C::GROUP_CHANGE_MEMBER_RESPONSE,
        C::GROUP_SHIELD_GROUP_RESPONSE,
        C::FILE_HAS_OFFLINE_RES,
    ]);
    assert_eq!(routed, expected);
}

#[test]
fn offline_and_storage_failure_answers_are_todays_subsets() {
    let answered = |f: fn(&AnyMessage) -> Option<AnyMessage>| -> BTreeSet<CommandId> {
        C::ALL
            .iter()
            .copied()
            .filter(|&c| AnyMessage::decode(c, &[][..]).is_ok_and(|m| f(&m).is_some()))
            .collect()
    };
    let groups_and_files = [
        C::GROUP_NORMAL_LIST_REQUEST,
        C::GROUP_INFO_REQUEST,
        C::GROUP_CREATE_REQUEST,
        C::GROUP_CHANGE_MEMBER_REQUEST,
        C::GROUP_SHIELD_GROUP_REQUEST,
        C::FILE_HAS_OFFLINE_REQ,
    ];
    assert_eq!(answered(offline_answer), set(&groups_and_files));
    let mut unreachable = set(&groups_and_files);
    unreachable.insert(C::FILE_REQUEST);
    assert_eq!(answered(unreachable_answer), unreachable);
    assert_eq!(
        answered(failure_reply),
        set(&[
            C::LOGIN_REQ_PUSH_SHIELD,
            C::LOGIN_REQ_QUERY_PUSH_SHIELD,
            C::BUDDY_LIST_REMOVE_SESSION_REQ,
            C::BUDDY_LIST_CHANGE_SIGN_INFO_REQUEST,
            C::MSG_DATA,
            C::GROUP_CREATE_REQUEST,
            C::GROUP_CHANGE_MEMBER_REQUEST,
            C::GROUP_SHIELD_GROUP_REQUEST,
            C::OTHER_VALIDATE_REQ,
        ])
    );
}

#[test]
fn failure_bodies_echo_the_request_and_the_situation_decides_the_attach() {
    let mut request = message(C::GROUP_CREATE_REQUEST);
    set_requester(&mut request, 5);
    set_attach(&mut request, Bytes::from_static(b"0123456789ab"));
    let Some(AnyMessage::GroupCreateRsp(stored)) = failure_reply(&request) else {
        panic!("no storage failure answer");
    };
    assert_eq!((stored.user_id, stored.result_code), (5, 1));
    assert_eq!(stored.attach_data.as_deref(), Some(&b"0123456789ab"[..]));
    let Some(AnyMessage::GroupCreateRsp(offline)) = offline_answer(&request) else {
        panic!("no offline answer");
    };
    assert_eq!((offline.user_id, offline.result_code), (5, 1));
    assert_eq!(offline.attach_data, None);

    let mut data = message(C::MSG_DATA);
    if let AnyMessage::MsgData(d) = &mut data {
        d.msg_id = 44;
        d.msg_data = Bytes::from_static(b"hi");
    }
    let Some(AnyMessage::MsgData(failed)) = failure_reply(&data) else {
        panic!("no failure answer for a message");
    };
    assert_eq!((failed.msg_id, &failed.msg_data[..]), (0, &b"hi"[..]));
    assert!(
        offline_answer(&data).is_none(),
        "messages are held, not answered"
    );
}
