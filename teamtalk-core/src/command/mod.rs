//! The command table of docs/protocol.md: every command id, its original name, the protobuf
//! message it carries and which server a client sends it to, written once; and, in
//! [`requests`], the rules of every request a msg_server or db_proxy serves.
//!
//! The table expands to the [`CommandId`] constants, [`CommandId::ALL`], [`CommandId::name`],
//! [`CommandId::client_link`], the [`AnyMessage`] enum with its dispatching `decode`, and the
//! [`PduMessage`] impl of every message type, so they can never disagree.
//!
//! Layering (no cycle): [`crate::ids`] → [`crate::message`] (the typed path and body errors) →
//! this module (the table, [`AnyMessage`]) → [`crate::pdu`] (frames carrying them).

pub(crate) mod failures;
pub mod requests;

use bytes::{Buf, BufMut};
use prost::{Message, Name};
use teamtalk_proto::{buddy, file, group, login, message, other, server, switch_service};

use crate::ids::CommandId;
use crate::message::{decode_as, DecodeError, PduMessage};

/// The server a client sends a command to (the command table's last column); commands only
/// servers send have none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClientLink {
    /// The client's msg_server connection: every such command has a row in
    /// [`requests::TABLE`].
    MsgServer,
    /// A file_server connection (transfers).
    FileServer,
    /// A login_server (the PDU form of the msg_server query; clients use HTTP today).
    LoginServer,
}

macro_rules! client_link {
    (msg_server) => {
        Some(ClientLink::MsgServer)
    };
    (file_server) => {
        Some(ClientLink::FileServer)
    };
    (login_server) => {
        Some(ClientLink::LoginServer)
    };
    (servers) => {
        None
    };
}

macro_rules! command_table {
    ($( $konst:ident = $value:literal, $variant:ident($module:ident :: $ty:ident), $link:ident; )*) => {
        impl CommandId {
            $(
                #[doc = concat!(
                    "`CID_", stringify!($konst), "` (", stringify!($value), "), body [`",
                    stringify!($module), "::", stringify!($ty), "`]."
                )]
                pub const $konst: CommandId = CommandId($value);
            )*

            /// Every command id the original protocol defines, in ascending order.
            pub const ALL: &'static [CommandId] = &[$(CommandId::$konst),*];

            /// The original name (`CID_MSG_DATA`), or `None` for a value the protocol does not
            /// define.
            pub const fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some(concat!("CID_", stringify!($konst))),)*
                    _ => None,
                }
            }

            /// The server a client sends this command to; `None` for commands only servers
            /// send, and for values the protocol does not define.
            pub const fn client_link(self) -> Option<ClientLink> {
                match self.0 {
                    $($value => client_link!($link),)*
                    _ => None,
                }
            }
        }

        /// The command id of each [`AnyMessage`] variant, under the variant's name, for
        /// tables keyed by variant ([`requests`]); the tables use some of them.
        #[allow(non_upper_case_globals, dead_code)]
        pub(crate) mod variant_command {
            use crate::ids::CommandId;
            $(
                #[doc = concat!("`CID_", stringify!($konst), "`.")]
                pub(crate) const $variant: CommandId = CommandId($value);
            )*
        }

        /// Any message that travels as a PDU body: one variant per command of the table.
        ///
        /// Built by [`AnyMessage::decode`] from a command id and a body, or from a typed message
        /// with `From`. Its `Debug` never shows passwords or message contents.
        #[derive(Clone, PartialEq, Debug)]
        #[non_exhaustive]
        pub enum AnyMessage {
            $(
                #[doc = concat!(
                    "Carried by `CID_", stringify!($konst), "` (", stringify!($value), ")."
                )]
                $variant($module::$ty),
            )*
        }

        impl AnyMessage {
            /// Decodes `body` as the message carried by `command`.
            ///
            /// Decoding is lenient as protobuf-lite's is not: a missing required field takes its
            /// default. It fails with [`DecodeError::UnknownCommand`] for a command without a
            /// message and [`DecodeError::Malformed`] for bytes that are not that message. It
            /// never panics. Passing a [`bytes::Bytes`] body makes `bytes` fields slices of it.
            pub fn decode(command: CommandId, body: impl Buf) -> Result<AnyMessage, DecodeError> {
                match command.0 {
                    $($value => decode_as::<$module::$ty>(body).map(AnyMessage::$variant),)*
                    _ => Err(DecodeError::UnknownCommand { command }),
                }
            }

            /// The command this message is sent under.
            pub const fn command(&self) -> CommandId {
                match self {
                    $(AnyMessage::$variant(_) => CommandId::$konst,)*
                }
            }

            /// The protobuf message name of the original (`IMMsgData`).
            pub fn message_name(&self) -> &'static str {
                match self {
                    $(AnyMessage::$variant(_) => <$module::$ty as Name>::NAME,)*
                }
            }

            /// The fully qualified protobuf name (`IM.Message.IMMsgData`).
            pub fn full_name(&self) -> String {
                match self {
                    $(AnyMessage::$variant(_) => <$module::$ty as Name>::full_name(),)*
                }
            }

            /// Appends the protobuf encoding of the message (the PDU body) to `buf`.
            pub fn encode(&self, buf: &mut impl BufMut) {
                match self {
                    $(AnyMessage::$variant(message) => message.encode_raw(buf),)*
                }
            }

            /// Length in bytes of the protobuf encoding.
            pub fn encoded_len(&self) -> usize {
                match self {
                    $(AnyMessage::$variant(message) => message.encoded_len(),)*
                }
            }

            /// The protobuf encoding of the message (the PDU body) as a new vector.
            pub fn encode_to_vec(&self) -> Vec<u8> {
                let mut buf = Vec::with_capacity(self.encoded_len());
                self.encode(&mut buf);
                buf
            }
        }

        $(
            impl PduMessage for $module::$ty {
                const COMMAND: CommandId = CommandId::$konst;
            }

            impl From<$module::$ty> for AnyMessage {
                fn from(message: $module::$ty) -> Self {
                    AnyMessage::$variant(message)
                }
            }
        )*
    };
}

command_table! {
    // CID name = value, AnyMessage variant(protobuf message), the server a client sends it to
    // (`servers`: only servers send it);
    LOGIN_REQ_MSGSERVER = 0x0101, MsgServReq(login::ImMsgServReq), login_server;
    LOGIN_RES_MSGSERVER = 0x0102, MsgServRsp(login::ImMsgServRsp), servers;
    LOGIN_REQ_USERLOGIN = 0x0103, LoginReq(login::ImLoginReq), msg_server;
    LOGIN_RES_USERLOGIN = 0x0104, LoginRes(login::ImLoginRes), servers;
    LOGIN_REQ_LOGINOUT = 0x0105, LogoutReq(login::ImLogoutReq), msg_server;
    LOGIN_RES_LOGINOUT = 0x0106, LogoutRsp(login::ImLogoutRsp), servers;
    LOGIN_KICK_USER = 0x0107, KickUser(login::ImKickUser), servers;
    LOGIN_REQ_DEVICETOKEN = 0x0108, DeviceTokenReq(login::ImDeviceTokenReq), msg_server;
    LOGIN_RES_DEVICETOKEN = 0x0109, DeviceTokenRsp(login::ImDeviceTokenRsp), servers;
    LOGIN_REQ_KICKPCCLIENT = 0x010a, KickPcClientReq(login::ImKickPcClientReq), msg_server;
    LOGIN_RES_KICKPCCLIENT = 0x010b, KickPcClientRsp(login::ImKickPcClientRsp), servers;
    LOGIN_REQ_PUSH_SHIELD = 0x010c, PushShieldReq(login::ImPushShieldReq), msg_server;
    LOGIN_RES_PUSH_SHIELD = 0x010d, PushShieldRsp(login::ImPushShieldRsp), servers;
    LOGIN_REQ_QUERY_PUSH_SHIELD = 0x010e, QueryPushShieldReq(login::ImQueryPushShieldReq), msg_server;
    LOGIN_RES_QUERY_PUSH_SHIELD = 0x010f, QueryPushShieldRsp(login::ImQueryPushShieldRsp), servers;
    BUDDY_LIST_RECENT_CONTACT_SESSION_REQUEST = 0x0201, RecentContactSessionReq(buddy::ImRecentContactSessionReq), msg_server;
    BUDDY_LIST_RECENT_CONTACT_SESSION_RESPONSE = 0x0202, RecentContactSessionRsp(buddy::ImRecentContactSessionRsp), servers;
    BUDDY_LIST_STATUS_NOTIFY = 0x0203, UserStatNotify(buddy::ImUserStatNotify), servers;
    BUDDY_LIST_USER_INFO_REQUEST = 0x0204, UsersInfoReq(buddy::ImUsersInfoReq), msg_server;
    BUDDY_LIST_USER_INFO_RESPONSE = 0x0205, UsersInfoRsp(buddy::ImUsersInfoRsp), servers;
    BUDDY_LIST_REMOVE_SESSION_REQ = 0x0206, RemoveSessionReq(buddy::ImRemoveSessionReq), msg_server;
    BUDDY_LIST_REMOVE_SESSION_RES = 0x0207, RemoveSessionRsp(buddy::ImRemoveSessionRsp), servers;
    BUDDY_LIST_ALL_USER_REQUEST = 0x0208, AllUserReq(buddy::ImAllUserReq), msg_server;
    BUDDY_LIST_ALL_USER_RESPONSE = 0x0209, AllUserRsp(buddy::ImAllUserRsp), servers;
    BUDDY_LIST_USERS_STATUS_REQUEST = 0x020a, UsersStatReq(buddy::ImUsersStatReq), msg_server;
    BUDDY_LIST_USERS_STATUS_RESPONSE = 0x020b, UsersStatRsp(buddy::ImUsersStatRsp), servers;
    BUDDY_LIST_CHANGE_AVATAR_REQUEST = 0x020c, ChangeAvatarReq(buddy::ImChangeAvatarReq), msg_server;
    BUDDY_LIST_CHANGE_AVATAR_RESPONSE = 0x020d, ChangeAvatarRsp(buddy::ImChangeAvatarRsp), servers;
    BUDDY_LIST_PC_LOGIN_STATUS_NOTIFY = 0x020e, PcLoginStatusNotify(buddy::ImpcLoginStatusNotify), servers;
    BUDDY_LIST_REMOVE_SESSION_NOTIFY = 0x020f, RemoveSessionNotify(buddy::ImRemoveSessionNotify), servers;
    BUDDY_LIST_DEPARTMENT_REQUEST = 0x0210, DepartmentReq(buddy::ImDepartmentReq), msg_server;
    BUDDY_LIST_DEPARTMENT_RESPONSE = 0x0211, DepartmentRsp(buddy::ImDepartmentRsp), servers;
    BUDDY_LIST_AVATAR_CHANGED_NOTIFY = 0x0212, AvatarChangedNotify(buddy::ImAvatarChangedNotify), servers;
    BUDDY_LIST_CHANGE_SIGN_INFO_REQUEST = 0x0213, ChangeSignInfoReq(buddy::ImChangeSignInfoReq), msg_server;
    BUDDY_LIST_CHANGE_SIGN_INFO_RESPONSE = 0x0214, ChangeSignInfoRsp(buddy::ImChangeSignInfoRsp), servers;
    BUDDY_LIST_SIGN_INFO_CHANGED_NOTIFY = 0x0215, SignInfoChangedNotify(buddy::ImSignInfoChangedNotify), servers;
    MSG_DATA = 0x0301, MsgData(message::ImMsgData), msg_server;
    MSG_DATA_ACK = 0x0302, MsgDataAck(message::ImMsgDataAck), msg_server;
    MSG_READ_ACK = 0x0303, MsgDataReadAck(message::ImMsgDataReadAck), msg_server;
    MSG_READ_NOTIFY = 0x0304, MsgDataReadNotify(message::ImMsgDataReadNotify), servers;
    MSG_TIME_REQUEST = 0x0305, ClientTimeReq(message::ImClientTimeReq), msg_server;
    MSG_TIME_RESPONSE = 0x0306, ClientTimeRsp(message::ImClientTimeRsp), servers;
    MSG_UNREAD_CNT_REQUEST = 0x0307, UnreadMsgCntReq(message::ImUnreadMsgCntReq), msg_server;
    MSG_UNREAD_CNT_RESPONSE = 0x0308, UnreadMsgCntRsp(message::ImUnreadMsgCntRsp), servers;
    MSG_LIST_REQUEST = 0x0309, GetMsgListReq(message::ImGetMsgListReq), msg_server;
    MSG_LIST_RESPONSE = 0x030a, GetMsgListRsp(message::ImGetMsgListRsp), servers;
    MSG_GET_LATEST_MSG_ID_REQ = 0x030b, GetLatestMsgIdReq(message::ImGetLatestMsgIdReq), msg_server;
    MSG_GET_LATEST_MSG_ID_RSP = 0x030c, GetLatestMsgIdRsp(message::ImGetLatestMsgIdRsp), servers;
    MSG_GET_BY_MSG_ID_REQ = 0x030d, GetMsgByIdReq(message::ImGetMsgByIdReq), msg_server;
    MSG_GET_BY_MSG_ID_RES = 0x030e, GetMsgByIdRsp(message::ImGetMsgByIdRsp), servers;
    GROUP_NORMAL_LIST_REQUEST = 0x0401, NormalGroupListReq(group::ImNormalGroupListReq), msg_server;
    GROUP_NORMAL_LIST_RESPONSE = 0x0402, NormalGroupListRsp(group::ImNormalGroupListRsp), servers;
    GROUP_INFO_REQUEST = 0x0403, GroupInfoListReq(group::ImGroupInfoListReq), msg_server;
    GROUP_INFO_RESPONSE = 0x0404, GroupInfoListRsp(group::ImGroupInfoListRsp), servers;
    GROUP_CREATE_REQUEST = 0x0405, GroupCreateReq(group::ImGroupCreateReq), msg_server;
    GROUP_CREATE_RESPONSE = 0x0406, GroupCreateRsp(group::ImGroupCreateRsp), servers;
    GROUP_CHANGE_MEMBER_REQUEST = 0x0407, GroupChangeMemberReq(group::ImGroupChangeMemberReq), msg_server;
    GROUP_CHANGE_MEMBER_RESPONSE = 0x0408, GroupChangeMemberRsp(group::ImGroupChangeMemberRsp), servers;
    GROUP_SHIELD_GROUP_REQUEST = 0x0409, GroupShieldReq(group::ImGroupShieldReq), msg_server;
    GROUP_SHIELD_GROUP_RESPONSE = 0x040a, GroupShieldRsp(group::ImGroupShieldRsp), servers;
    GROUP_CHANGE_MEMBER_NOTIFY = 0x040b, GroupChangeMemberNotify(group::ImGroupChangeMemberNotify), servers;
    FILE_LOGIN_REQ = 0x0501, FileLoginReq(file::ImFileLoginReq), file_server;
    FILE_LOGIN_RES = 0x0502, FileLoginRsp(file::ImFileLoginRsp), servers;
    FILE_STATE = 0x0503, FileState(file::ImFileState), file_server;
    FILE_PULL_DATA_REQ = 0x0504, FilePullDataReq(file::ImFilePullDataReq), file_server;
    FILE_PULL_DATA_RSP = 0x0505, FilePullDataRsp(file::ImFilePullDataRsp), file_server;
    FILE_REQUEST = 0x0506, FileReq(file::ImFileReq), msg_server;
    FILE_RESPONSE = 0x0507, FileRsp(file::ImFileRsp), servers;
    FILE_NOTIFY = 0x0508, FileNotify(file::ImFileNotify), servers;
    FILE_HAS_OFFLINE_REQ = 0x0509, FileHasOfflineReq(file::ImFileHasOfflineReq), msg_server;
    FILE_HAS_OFFLINE_RES = 0x050a, FileHasOfflineRsp(file::ImFileHasOfflineRsp), servers;
    FILE_ADD_OFFLINE_REQ = 0x050b, FileAddOfflineReq(file::ImFileAddOfflineReq), msg_server;
    FILE_DEL_OFFLINE_REQ = 0x050c, FileDelOfflineReq(file::ImFileDelOfflineReq), msg_server;
    SWITCH_P2P_CMD = 0x0601, P2pCmdMsg(switch_service::Imp2pCmdMsg), msg_server;
    OTHER_HEARTBEAT = 0x0701, HeartBeat(other::ImHeartBeat), msg_server;
    OTHER_STOP_RECV_PACKET = 0x0702, StopReceivePacket(server::ImStopReceivePacket), servers;
    OTHER_VALIDATE_REQ = 0x0703, ValidateReq(server::ImValidateReq), servers;
    OTHER_VALIDATE_RSP = 0x0704, ValidateRsp(server::ImValidateRsp), servers;
    OTHER_GET_DEVICE_TOKEN_REQ = 0x0705, GetDeviceTokenReq(server::ImGetDeviceTokenReq), servers;
    OTHER_GET_DEVICE_TOKEN_RSP = 0x0706, GetDeviceTokenRsp(server::ImGetDeviceTokenRsp), servers;
    OTHER_ROLE_SET = 0x0707, RoleSet(server::ImRoleSet), servers;
    OTHER_ONLINE_USER_INFO = 0x0708, OnlineUserInfo(server::ImOnlineUserInfo), servers;
    OTHER_MSG_SERV_INFO = 0x0709, MsgServInfo(server::ImMsgServInfo), servers;
    OTHER_USER_STATUS_UPDATE = 0x070a, UserStatusUpdate(server::ImUserStatusUpdate), servers;
    OTHER_USER_CNT_UPDATE = 0x070b, UserCntUpdate(server::ImUserCntUpdate), servers;
    OTHER_SERVER_KICK_USER = 0x070d, ServerKickUser(server::ImServerKickUser), servers;
    OTHER_LOGIN_STATUS_NOTIFY = 0x070e, ServerPcLoginStatusNotify(server::ImServerPcLoginStatusNotify), servers;
    OTHER_PUSH_TO_USER_REQ = 0x070f, PushToUserReq(server::ImPushToUserReq), servers;
    OTHER_PUSH_TO_USER_RSP = 0x0710, PushToUserRsp(server::ImPushToUserRsp), servers;
    OTHER_GET_SHIELD_REQ = 0x0711, GroupGetShieldReq(server::ImGroupGetShieldReq), servers;
    OTHER_GET_SHIELD_RSP = 0x0712, GroupGetShieldRsp(server::ImGroupGetShieldRsp), servers;
    OTHER_FILE_TRANSFER_REQ = 0x0731, FileTransferReq(server::ImFileTransferReq), servers;
    OTHER_FILE_TRANSFER_RSP = 0x0732, FileTransferRsp(server::ImFileTransferRsp), servers;
    OTHER_FILE_SERVER_IP_REQ = 0x0733, FileServerIpReq(server::ImFileServerIpReq), servers;
    OTHER_FILE_SERVER_IP_RSP = 0x0734, FileServerIpRsp(server::ImFileServerIpRsp), servers;
}
