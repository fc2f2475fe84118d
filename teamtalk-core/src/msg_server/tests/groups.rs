//! Group fan-out.

use super::*;

#[test]
fn group_messages_fan_out_to_members_except_the_origin() {
    let mut h = Harness::new();
    let a_pc = h.login(1, ClientType::Windows);
    let a_phone = h.login(1, ClientType::Android);
    let b = h.login(2, ClientType::Windows);
    let c = h.login(3, ClientType::Windows);
    let out = h.client(a_pc, &text(1, 50, crate::domain::MsgType::GroupText), 4);
    let mut stored: message::ImMsgData = only_upstream(&out, DB).decode_body().unwrap();
    stored.msg_id = 8;
    let out = h.db(&stored, 4);
    let ack: message::ImMsgDataAck = to_client(&out, a_pc)[0].decode_body().unwrap();
    assert_eq!((ack.msg_id, ack.session_type), (8, 2));
    let lookup: group::ImGroupInfoListReq = upstream(&out, DB, CommandId::GROUP_INFO_REQUEST)[0]
        .decode_body()
        .unwrap();
    let info = |members: Vec<u32>| group::ImGroupInfoListRsp {
        user_id: 1,
        group_info_list: vec![bd::GroupInfo {
            group_id: 50,
            group_member_list: members,
            ..Default::default()
        }],
        attach_data: lookup.attach_data.clone(),
    };
    let out = h.db(&info(vec![1, 2]), 0);
    assert!(to_client(&out, a_pc).is_empty(), "not back to the origin");
    assert_eq!(
        to_client(&out, a_phone).len(),
        1,
        "the sender's other device"
    );
    assert_eq!(to_client(&out, b)[0].seq_num(), 0);
    assert!(to_client(&out, c).is_empty(), "members only");
    assert!(
        h.db(&info(vec![2, 3]), 0).is_empty(),
        "a non-member's message is not delivered"
    );
}
