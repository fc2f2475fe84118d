//! The request table: one row per request, in command order. Columns (see the types in
//! [`super`]): who sends it (`client(before_login | after_login)`, `msg_server()`), the field
//! forced to the authenticated user, where it goes (db_proxy range and attach layout …), the
//! answer and how it is routed, and the failure reply (body in `command::failures`) with the
//! situations that send it.

use bytes::Bytes;

use super::{
    failures, id, Answer, AnyMessage, AttachLayout, DbRange, Failure, Requester, Route, Rules,
    Sender,
};

requests! {
    // CID_LOGIN_REQ_USERLOGIN
    LoginReq {
        from: client(before_login),
        requester: not_forced("it names the account being logged in to"),
        to: login(),
        answer: built(LoginRes),
        failure: no_reply("the msg_server refuses a login with its own IMLoginRes codes (3/4/5: a server is missing, 6: not validated); db_proxy's failure is the IMValidateReq row"),
    }
    // CID_LOGIN_REQ_LOGINOUT (a mobile's device token is cleared by a write to db_proxy)
    LogoutReq {
        from: client(after_login),
        requester: not_forced("it has no user field: the connection's user is logged out"),
        to: local(),
        answer: local(LogoutRsp),
        failure: no_reply("answered at once with result 0, then the connection is closed"),
    }
    // CID_LOGIN_REQ_DEVICETOKEN (mobile clients only; a PC's request is ignored)
    DeviceTokenReq {
        from: client(after_login),
        requester: field(user_id),
        to: db_write(Other),
        answer: local(DeviceTokenRsp),
        failure: no_reply("answered before the write, which nobody waits for"),
    }
    // CID_LOGIN_REQ_KICKPCCLIENT (mobile clients only): kicks the user's PC clients everywhere
    KickPcClientReq {
        from: client(after_login),
        requester: field(user_id),
        to: local(),
        answer: local(KickPcClientRsp),
        failure: no_reply("answered at once; the kick goes out through the route master"),
    }
    // CID_LOGIN_REQ_PUSH_SHIELD
    PushShieldReq {
        from: client(after_login),
        requester: field(user_id),
        to: db(Other, Long),
        answer: routed(PushShieldRsp),
        failure: reply(push_shield, unreachable: false, storage_error: true),
    }
    // CID_LOGIN_REQ_QUERY_PUSH_SHIELD
    QueryPushShieldReq {
        from: client(after_login),
        requester: field(user_id),
        to: db(Other, Long),
        answer: routed(QueryPushShieldRsp),
        failure: reply(query_push_shield, unreachable: false, storage_error: true),
    }
    // CID_BUDDY_LIST_RECENT_CONTACT_SESSION_REQUEST
    RecentContactSessionReq {
        from: client(after_login),
        requester: field(user_id),
        to: db(Login, Short),
        answer: routed(RecentContactSessionRsp),
        failure: no_reply("the response has no result code: the client's request times out"),
    }
    // CID_BUDDY_LIST_USER_INFO_REQUEST
    UsersInfoReq {
        from: client(after_login),
        requester: field(user_id),
        to: db(Login, Short),
        answer: routed(UsersInfoRsp),
        failure: no_reply("the response has no result code: the client's request times out"),
    }
    // CID_BUDDY_LIST_REMOVE_SESSION_REQ (a single chat's removal is notified to the user's
    // other connections and the route master)
    RemoveSessionReq {
        from: client(after_login),
        requester: field(user_id),
        to: db(Other, Short),
        answer: routed(RemoveSessionRsp),
        failure: reply(remove_session, unreachable: false, storage_error: true),
    }
    // CID_BUDDY_LIST_ALL_USER_REQUEST
    AllUserReq {
        from: client(after_login),
        requester: field(user_id),
        to: db(Other, Short),
        answer: routed(AllUserRsp),
        failure: no_reply("the response has no result code: the client's request times out"),
    }
    // CID_BUDDY_LIST_USERS_STATUS_REQUEST
    UsersStatReq {
        from: client(after_login),
        requester: field(user_id),
        to: route_server(Long),
        answer: routed(UsersStatRsp),
        failure: no_reply("route_server answers from memory; without a route_server the request is dropped"),
    }
    // CID_BUDDY_LIST_CHANGE_AVATAR_REQUEST
    ChangeAvatarReq {
        from: client(after_login),
        requester: field(user_id),
        to: db(Other, Short),
        answer: every_connection(ChangeAvatarRsp),
        failure: no_reply("db_proxy has no handler for it, as the original: it is not answered"),
    }
    // CID_BUDDY_LIST_DEPARTMENT_REQUEST
    DepartmentReq {
        from: client(after_login),
        requester: field(user_id),
        to: db(Other, Short),
        answer: routed(DepartmentRsp),
        failure: no_reply("the response has no result code: the client's request times out"),
    }
    // CID_BUDDY_LIST_CHANGE_SIGN_INFO_REQUEST (a change is notified through the route master)
    ChangeSignInfoReq {
        from: client(after_login),
        requester: field(user_id),
        to: db(Other, Long),
        answer: routed(ChangeSignInfoRsp),
        failure: reply(change_sign_info, unreachable: false, storage_error: true),
    }
    // CID_MSG_DATA (rate limit, empty and self-addressed messages: MsgServer::client_message)
    MsgData {
        from: client(after_login),
        requester: field(from_user_id),
        to: message(Other, Short),
        answer: built(MsgDataAck),
        failure: reply(message, unreachable: false, storage_error: true),
    }
    // CID_MSG_DATA_ACK
    MsgDataAck {
        from: client(after_login),
        requester: not_forced("it is dropped: delivery acks only fed a statistic (Q-33)"),
        to: ignored(),
        answer: nothing("delivery acks are not answered"),
        failure: no_reply("nothing is done with it"),
    }
    // CID_MSG_READ_ACK (notified to the user's other connections and the route master)
    MsgDataReadAck {
        from: client(after_login),
        requester: field(user_id),
        to: db_write(Other),
        answer: nothing("read receipts are not answered"),
        failure: no_reply("not answered"),
    }
    // CID_MSG_TIME_REQUEST
    ClientTimeReq {
        from: client(after_login),
        requester: not_forced("it carries no field"),
        to: local(),
        answer: local(ClientTimeRsp),
        failure: no_reply("answered at once from the msg_server's clock"),
    }
    // CID_MSG_UNREAD_CNT_REQUEST
    UnreadMsgCntReq {
        from: client(after_login),
        requester: field(user_id),
        to: db(Login, Short),
        answer: routed(UnreadMsgCntRsp),
        failure: no_reply("the response has no result code: the client's request times out"),
    }
    // CID_MSG_LIST_REQUEST
    GetMsgListReq {
        from: client(after_login),
        requester: field(user_id),
        to: db(Login, Short),
        answer: routed(GetMsgListRsp),
        failure: no_reply("the response has no result code: the client's request times out"),
    }
    // CID_MSG_GET_LATEST_MSG_ID_REQ
    GetLatestMsgIdReq {
        from: client(after_login),
        requester: field(user_id),
        to: db(Other, Short),
        answer: routed(GetLatestMsgIdRsp),
        failure: no_reply("the response has no result code: the client's request times out"),
    }
    // CID_MSG_GET_BY_MSG_ID_REQ
    GetMsgByIdReq {
        from: client(after_login),
        requester: field(user_id),
        to: db(Login, Short),
        answer: routed(GetMsgByIdRsp),
        failure: no_reply("the response has no result code: the client's request times out"),
    }
    // CID_GROUP_NORMAL_LIST_REQUEST
    NormalGroupListReq {
        from: client(after_login),
        requester: field(user_id),
        to: db(Other, Short),
        answer: routed(NormalGroupListRsp),
        failure: reply(normal_groups, unreachable: true, storage_error: false),
    }
    // CID_GROUP_INFO_REQUEST
    GroupInfoListReq {
        from: client(after_login),
        requester: field(user_id),
        to: db(Other, Long),
        answer: routed(GroupInfoListRsp),
        failure: reply(group_info, unreachable: true, storage_error: false),
    }
    // CID_GROUP_CREATE_REQUEST (a fixed group is refused at once with the same body, Q-36)
    GroupCreateReq {
        from: client(after_login),
        requester: field(user_id),
        to: db(Other, Short),
        answer: routed(GroupCreateRsp),
        failure: reply(group_create, unreachable: true, storage_error: true),
    }
    // CID_GROUP_CHANGE_MEMBER_REQUEST (a change is notified to the members, Q-25)
    GroupChangeMemberReq {
        from: client(after_login),
        requester: field(user_id),
        to: db(Other, Short),
        answer: routed(GroupChangeMemberRsp),
        failure: reply(group_change_member, unreachable: true, storage_error: true),
    }
    // CID_GROUP_SHIELD_GROUP_REQUEST
    GroupShieldReq {
        from: client(after_login),
        requester: field(user_id),
        to: db(Other, Short),
        answer: routed(GroupShieldRsp),
        failure: reply(group_shield, unreachable: true, storage_error: true),
    }
    // CID_FILE_REQUEST (an online transfer asks the route master whether the receiver is
    // online first)
    FileReq {
        from: client(after_login),
        requester: field(from_user_id),
        to: file_server(),
        answer: built(FileRsp),
        failure: reply(file_request, unreachable: true, storage_error: false),
    }
    // CID_FILE_HAS_OFFLINE_REQ (the answer gets the file_server's addresses)
    FileHasOfflineReq {
        from: client(after_login),
        requester: field(user_id),
        to: db(Other, Short),
        answer: routed(FileHasOfflineRsp),
        failure: reply(offline_files, unreachable: true, storage_error: false),
    }
    // CID_FILE_ADD_OFFLINE_REQ (the receiver's PC clients are notified)
    FileAddOfflineReq {
        from: client(after_login),
        requester: field(from_user_id),
        to: db_write(Other),
        answer: nothing("the receiver is notified; the sender gets no answer"),
        failure: no_reply("not answered"),
    }
    // CID_FILE_DEL_OFFLINE_REQ
    FileDelOfflineReq {
        from: client(after_login),
        requester: not_forced("its from_user_id names the file's sender; the msg_server sends it on only when the requester is the sender or the receiver (Q-06)"),
        to: db_write(Other),
        answer: nothing("deletions are not answered"),
        failure: no_reply("not answered"),
    }
    // CID_SWITCH_P2P_CMD
    P2pCmdMsg {
        from: client(after_login),
        requester: field(from_user_id),
        to: relay(),
        answer: nothing("relayed to the receiver and the sender's other connections, not answered"),
        failure: no_reply("not answered"),
    }
    // CID_OTHER_HEARTBEAT
    HeartBeat {
        from: client(before_login),
        requester: not_forced("it carries no field"),
        to: local(),
        answer: local(HeartBeat),
        failure: no_reply("echoed at once"),
    }
    // CID_OTHER_VALIDATE_REQ: a client's login, checked by db_proxy
    ValidateReq {
        from: msg_server(),
        requester: not_forced("the msg_server builds it from the client's login"),
        to: db(Login, Validate),
        answer: consumed(ValidateRsp),
        failure: reply(validate, unreachable: false, storage_error: true),
    }
    // CID_OTHER_GET_DEVICE_TOKEN_REQ: the device tokens a push goes to
    GetDeviceTokenReq {
        from: msg_server(),
        requester: not_forced("the msg_server builds it for a push"),
        to: db(Other, Push),
        answer: consumed(GetDeviceTokenRsp),
        failure: no_reply("the push does not go out"),
    }
    // CID_OTHER_GET_SHIELD_REQ: which group members shield pushes
    GroupGetShieldReq {
        from: msg_server(),
        requester: not_forced("the msg_server builds it for a group message's push"),
        to: db(Other, Push),
        answer: consumed(GroupGetShieldRsp),
        failure: no_reply("the push does not go out"),
    }
}
