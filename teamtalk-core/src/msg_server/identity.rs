//! Which field of a message names its user: forced to the authenticated user on the way in
//! (quirks.md ), and read with the attach data on the way back.

use bytes::Bytes;

use crate::command::AnyMessage;

macro_rules! requester_fields {
    ($message:expr, $user:expr; $($variant:ident . $field:ident),* $(,)?) => {
        match $message {
            $(AnyMessage::$variant(m) => {
                m.$field = $user;
                true
            })*
            _ => false,
        }
    };
}

/// Overwrites the requester field of a client request (`user_id`, or `from_user_id` of
/// messages, P2P commands and file requests) with `user`. `false` when the message has none.
///
/// `IMFileDelOfflineReq` is deliberately absent: its `from_user_id` names the file's sender,
/// who need not be the requester; the msg_server checks it instead.
pub fn set_requester(message: &mut AnyMessage, user: u32) -> bool {
    requester_fields!(message, user;
        DeviceTokenReq.user_id,
        KickPcClientReq.user_id,
        PushShieldReq.user_id,
        QueryPushShieldReq.user_id,
        RecentContactSessionReq.user_id,
        UsersInfoReq.user_id,
        RemoveSessionReq.user_id,
        AllUserReq.user_id,
        UsersStatReq.user_id,
        ChangeAvatarReq.user_id,
        DepartmentReq.user_id,
        ChangeSignInfoReq.user_id,
        MsgData.from_user_id,
        MsgDataReadAck.user_id,
        UnreadMsgCntReq.user_id,
        GetMsgListReq.user_id,
        GetLatestMsgIdReq.user_id,
        GetMsgByIdReq.user_id,
        NormalGroupListReq.user_id,
        GroupInfoListReq.user_id,
        GroupCreateReq.user_id,
        GroupChangeMemberReq.user_id,
        GroupShieldReq.user_id,
        FileReq.from_user_id,
        FileHasOfflineReq.user_id,
        FileAddOfflineReq.from_user_id,
        P2pCmdMsg.from_user_id,
    )
}

macro_rules! attach_fields {
    ($message:expr; $($variant:ident),* $(,)?) => {
        match $message {
            $(AnyMessage::$variant(m) => Some((m.user_id, &mut m.attach_data)),)*
            _ => None,
        }
    };
}

/// The user a response is for and its attach data field, for responses the msg_server routes
/// back to the requesting connection (spec/servers.md §3.4). `None` for other messages.
pub fn reply_route(message: &mut AnyMessage) -> Option<(u32, &mut Option<Bytes>)> {
    attach_fields!(message;
        PushShieldRsp,
        QueryPushShieldRsp,
        RecentContactSessionRsp,
        UsersInfoRsp,
        RemoveSessionRsp,
        AllUserRsp,
        UsersStatRsp,
        ChangeAvatarRsp,
        DepartmentRsp,
        ChangeSignInfoRsp,
        UnreadMsgCntRsp,
        GetMsgListRsp,
        GetLatestMsgIdRsp,
        GetMsgByIdRsp,
        NormalGroupListRsp,
        GroupInfoListRsp,
        GroupCreateRsp,
        GroupChangeMemberRsp,
        GroupShieldRsp,
        FileHasOfflineRsp,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{group, message, switch_service};

    #[test]
    fn requester_fields_are_overwritten() {
        let mut m = AnyMessage::from(message::ImMsgData {
            from_user_id: 666,
            ..Default::default()
        });
        assert!(set_requester(&mut m, 7));
        let AnyMessage::MsgData(data) = &m else {
            unreachable!()
        };
        assert_eq!(data.from_user_id, 7);

        let mut p2p = AnyMessage::from(switch_service::Imp2pCmdMsg {
            from_user_id: 666,
            to_user_id: 8,
            cmd_msg_data: String::new(),
        });
        assert!(set_requester(&mut p2p, 7));
        let AnyMessage::P2pCmdMsg(p) = &p2p else {
            unreachable!()
        };
        assert_eq!((p.from_user_id, p.to_user_id), (7, 8));

        let mut time = AnyMessage::from(message::ImClientTimeReq {});
        assert!(!set_requester(&mut time, 7));
    }

    #[test]
    fn replies_name_their_user_and_attach() {
        let mut rsp = AnyMessage::from(group::ImGroupShieldRsp {
            user_id: 9,
            attach_data: Some(Bytes::from_static(b"abc")),
            ..Default::default()
        });
        let (user, attach) = reply_route(&mut rsp).unwrap();
        assert_eq!(user, 9);
        assert_eq!(attach.take().as_deref(), Some(&b"abc"[..]));
        let mut req = AnyMessage::from(message::ImClientTimeReq {});
        assert!(reply_route(&mut req).is_none());
    }
}
