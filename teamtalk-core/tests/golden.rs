//! Golden byte vectors, derived by hand from the `.proto` files of teamtalk-proto (field tags and
//! labels) and docs/protocol.md § Framing (header layout), checked in both directions: our encoding
//! produces exactly these bytes, and these bytes decode to the expected message.
//!
//! Key byte = (tag << 3) | wire type (0 varint, 2 length-delimited). Varints are little-endian
//! base-128: 300 = `ac 02`, 1700000000 = `80 e2 cf aa 06`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use bytes::{Bytes, BytesMut};
use prost::Message;
use teamtalk_core::proto::{base_define, group, login, message};
use teamtalk_core::{AnyMessage, CommandId, Pdu, PduDecoder, PduHeader, ServiceId};

/// Encodes `msg`, compares with `golden`, decodes `golden` back and compares with `msg`;
/// also goes through `AnyMessage` under `command`.
fn check<M: Message + Default + PartialEq + std::fmt::Debug + Into<AnyMessage> + Clone>(
    msg: M,
    command: CommandId,
    golden: &[u8],
) {
    assert_eq!(msg.encode_to_vec(), golden, "encoding of {msg:?}");
    assert_eq!(M::decode(golden).unwrap(), msg, "decoding");
    let any = AnyMessage::decode(command, Bytes::copy_from_slice(golden)).unwrap();
    assert_eq!(any, msg.clone().into());
    assert_eq!(any.command(), command);
    assert_eq!(any.encode_to_vec(), golden);
}

#[test]
fn header_is_16_big_endian_bytes() {
    let pdu = Pdu::new(
        CommandId::MSG_DATA,
        0x1234,
        Bytes::from_static(&[0x08, 0x01]),
    );
    let golden = [
        0x00, 0x00, 0x00, 0x12, // length 18 = 16 + 2, header included
        0x00, 0x01, // version 1
        0x00, 0x00, // flag
        0x00, 0x03, // service_id SID_MSG
        0x03, 0x01, // command_id CID_MSG_DATA
        0x12, 0x34, // seq_num
        0x00, 0x00, // reserved
        0x08, 0x01, // body
    ];
    assert_eq!(&pdu.to_bytes()[..], &golden);

    let mut buf = BytesMut::from(&golden[..]);
    let decoded = PduDecoder::default().decode(&mut buf).unwrap().unwrap();
    assert_eq!(decoded, pdu);
}

#[test]
fn header_fields_of_other_clients_are_kept() {
    // Android: version 6, reserved 0x0030 ('0'); an empty heartbeat body.
    let wire = [0, 0, 0, 16, 0, 6, 0, 0, 0, 7, 0x07, 0x01, 0, 9, 0x00, 0x30];
    let (length, header) = PduHeader::decode(&wire);
    assert_eq!(length, 16);
    assert_eq!(
        header,
        PduHeader {
            version: 6,
            flag: 0,
            service_id: ServiceId::OTHER,
            command_id: CommandId::OTHER_HEARTBEAT,
            seq_num: 9,
            reserved: 0x30,
        }
    );
    let mut out = Vec::new();
    header.encode(length, &mut out);
    assert_eq!(out, wire);
}

#[test]
fn login_req() {
    let msg = login::ImLoginReq {
        user_name: "alice".into(),
        password: "e10adc3949ba59abbe56e057f20f883e".into(),
        online_status: base_define::UserStatType::UserStatusOnline as i32,
        client_type: base_define::ClientType::Android as i32,
        client_version: Some("android/1".into()),
    };
    let golden = [
        &[0x0a, 0x05][..],
        b"alice", // 1 user_name
        &[0x12, 0x20],
        b"e10adc3949ba59abbe56e057f20f883e", // 2 password (32 hex chars)
        &[0x18, 0x01],                       // 3 online_status USER_STATUS_ONLINE
        &[0x20, 0x12],                       // 4 client_type CLIENT_TYPE_ANDROID (0x12)
        &[0x2a, 0x09],
        b"android/1", // 5 client_version
    ]
    .concat();
    check(msg, CommandId::LOGIN_REQ_USERLOGIN, &golden);
}

#[test]
fn login_res_with_nested_user_info() {
    let user = base_define::UserInfo {
        user_id: 1,
        user_gender: 2,
        user_nick_name: "Al".into(),
        avatar_url: String::new(),
        department_id: 3,
        email: "a@b".into(),
        user_real_name: "alice".into(),
        user_tel: String::new(),
        user_domain: "al".into(),
        status: 0,
        sign_info: None,
    };
    let user_bytes = [
        &[0x08, 0x01][..], // 1 user_id
        &[0x10, 0x02],     // 2 user_gender
        &[0x1a, 0x02],
        b"Al",         // 3 user_nick_name
        &[0x22, 0x00], // 4 avatar_url: required, emitted although empty
        &[0x28, 0x03], // 5 department_id
        &[0x32, 0x03],
        b"a@b", // 6 email
        &[0x3a, 0x05],
        b"alice",      // 7 user_real_name
        &[0x42, 0x00], // 8 user_tel: required, empty
        &[0x4a, 0x02],
        b"al", // 9 user_domain
        &[0x50, 0x00], // 10 status: required, 0
               // 11 sign_info: optional, absent
    ]
    .concat();
    assert_eq!(user_bytes.len(), 32);

    let msg = login::ImLoginRes {
        server_time: 1_700_000_000,
        result_code: base_define::ResultType::RefuseReasonNone as i32,
        result_string: Some("成功".into()),
        online_status: Some(base_define::UserStatType::UserStatusOnline as i32),
        user_info: Some(user),
    };
    let golden = [
        &[0x08, 0x80, 0xe2, 0xcf, 0xaa, 0x06][..], // 1 server_time
        &[0x10, 0x00],                             // 2 result_code: required, 0
        &[0x1a, 0x06, 0xe6, 0x88, 0x90, 0xe5, 0x8a, 0x9f], // 3 result_string "成功"
        &[0x20, 0x01],                             // 4 online_status
        &[0x2a, 32],                               // 5 user_info, 32 bytes
        &user_bytes,
    ]
    .concat();
    check(msg, CommandId::LOGIN_RES_USERLOGIN, &golden);
}

#[test]
fn msg_data() {
    let msg = message::ImMsgData {
        from_user_id: 1,
        to_session_id: 2,
        msg_id: 300,
        create_time: 1_700_000_000,
        msg_type: base_define::MsgType::SingleText as i32,
        msg_data: Bytes::from_static(b"aGk="),
        attach_data: None,
    };
    let golden = [
        &[0x08, 0x01][..],                     // 1 from_user_id
        &[0x10, 0x02],                         // 2 to_session_id
        &[0x18, 0xac, 0x02],                   // 3 msg_id 300
        &[0x20, 0x80, 0xe2, 0xcf, 0xaa, 0x06], // 4 create_time
        &[0x28, 0x01],                         // 5 msg_type MSG_TYPE_SINGLE_TEXT
        &[0x32, 0x04],
        b"aGk=", // 6 msg_data
    ]
    .concat();
    check(msg, CommandId::MSG_DATA, &golden);
}

#[test]
fn group_info_list_rsp_with_repeated_nested_groups() {
    let group = |id: u32, members: Vec<u32>| base_define::GroupInfo {
        group_id: id,
        version: 1,
        group_name: "g".into(),
        group_avatar: String::new(),
        group_creator_id: 5,
        group_type: base_define::GroupType::Tmp as i32,
        shield_status: 0,
        group_member_list: members,
    };
    let msg = group::ImGroupInfoListRsp {
        user_id: 5,
        group_info_list: vec![group(1, vec![10, 2]), group(2, vec![])],
        attach_data: None,
    };
    let first = [
        0x08, 0x01, // 1 group_id
        0x10, 0x01, // 2 version
        0x1a, 0x01, b'g', // 3 group_name
        0x22, 0x00, // 4 group_avatar: required, empty
        0x28, 0x05, // 5 group_creator_id
        0x30, 0x02, // 6 group_type GROUP_TYPE_TMP
        0x38, 0x00, // 7 shield_status: required, 0
        0x40, 0x0a, // 8 group_member_list: unpacked (proto2), one key per element
        0x40, 0x02,
    ];
    let second = [
        0x08, 0x02, 0x10, 0x01, 0x1a, 0x01, b'g', 0x22, 0x00, 0x28, 0x05, 0x30, 0x02, 0x38, 0x00,
    ];
    let golden = [
        &[0x08, 0x05][..], // 1 user_id
        &[0x12, 19],       // 2 group_info_list[0], 19 bytes
        &first,
        &[0x12, 15], // 2 group_info_list[1], 15 bytes
        &second,
    ]
    .concat();
    check(msg, CommandId::GROUP_INFO_RESPONSE, &golden);
}

#[test]
fn unread_msg_cnt_rsp() {
    let msg = message::ImUnreadMsgCntRsp {
        user_id: 5,
        total_cnt: 3,
        unreadinfo_list: vec![base_define::UnreadInfo {
            session_id: 7,
            session_type: base_define::SessionType::Single as i32,
            unread_cnt: 3,
            latest_msg_id: 9,
            latest_msg_data: Bytes::from_static(b"x"),
            latest_msg_type: base_define::MsgType::SingleText as i32,
            latest_msg_from_user_id: 7,
        }],
        attach_data: None,
    };
    let info = [
        0x08, 0x07, // 1 session_id
        0x10, 0x01, // 2 session_type SESSION_TYPE_SINGLE
        0x18, 0x03, // 3 unread_cnt
        0x20, 0x09, // 4 latest_msg_id
        0x2a, 0x01, b'x', // 5 latest_msg_data
        0x30, 0x01, // 6 latest_msg_type
        0x38, 0x07, // 7 latest_msg_from_user_id
    ];
    let golden = [&[0x08, 0x05, 0x10, 0x03, 0x1a, 15][..], &info].concat();
    check(msg, CommandId::MSG_UNREAD_CNT_RESPONSE, &golden);
}

#[test]
fn a_whole_msg_data_frame() {
    let msg = message::ImMsgData {
        from_user_id: 1,
        to_session_id: 2,
        msg_type: 1,
        msg_data: Bytes::from_static(b"hi"),
        ..Default::default()
    };
    let mut wire = Vec::new();
    Pdu::write_message(&msg, 3, &mut wire);
    let body = [
        0x08, 0x01, 0x10, 0x02, 0x18, 0x00, 0x20, 0x00, 0x28, 0x01, 0x32, 0x02, b'h', b'i',
    ];
    let header = [0, 0, 0, 30, 0, 1, 0, 0, 0, 3, 3, 1, 0, 3, 0, 0];
    assert_eq!(wire, [&header[..], &body].concat());
    assert_eq!(Pdu::encode_message(&msg, 3).to_bytes(), wire);
}
