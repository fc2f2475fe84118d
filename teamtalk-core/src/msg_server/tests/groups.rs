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

/// The wire bytes of the frames `out` sends to clients with `command`, by recipient.
fn client_wires(out: &[Action], command: CommandId) -> Vec<(ConnId, Bytes)> {
    out.iter()
        .filter_map(|a| match a {
            Action::ToClient(c, frame) if frame.command() == command => {
                Some((*c, frame.wire().clone()))
            }
            _ => None,
        })
        .collect()
}

/// Every recipient's frame is the same allocation: encoded once, shared as `Bytes`.
fn one_allocation(wires: &[Bytes]) -> bool {
    wires
        .windows(2)
        .all(|w| w[0].as_ptr() == w[1].as_ptr() && w[0].len() == w[1].len())
}

#[test]
fn a_frame_for_many_recipients_is_encoded_once() {
    let mut h = Harness::new();
    let a_pc = h.login(1, ClientType::Windows);
    let a_phone = h.login(1, ClientType::Android);
    let b = h.login(2, ClientType::Windows);
    let c = h.login(3, ClientType::Windows);

    // Group fan-out.
    let out = h.client(a_pc, &text(1, 50, crate::domain::MsgType::GroupText), 4);
    let mut stored: message::ImMsgData = only_upstream(&out, DB).decode_body().unwrap();
    stored.msg_id = 8;
    let out = h.db(&stored, 4);
    let lookup: group::ImGroupInfoListReq = upstream(&out, DB, CommandId::GROUP_INFO_REQUEST)[0]
        .decode_body()
        .unwrap();
    let info = group::ImGroupInfoListRsp {
        user_id: 1,
        group_info_list: vec![bd::GroupInfo {
            group_id: 50,
            group_member_list: vec![1, 2, 3],
            ..Default::default()
        }],
        attach_data: lookup.attach_data,
    };
    let out = h.db(&info, 0);
    let wires = client_wires(&out, CommandId::MSG_DATA);
    let recipients: Vec<ConnId> = wires.iter().map(|(c, _)| *c).collect();
    assert_eq!(recipients, vec![a_phone, b, c]);
    let wires: Vec<Bytes> = wires.into_iter().map(|(_, w)| w).collect();
    assert!(one_allocation(&wires), "one encoding for every member");
    let relayed: message::ImMsgData = to_client(&out, b)[0].decode_body().unwrap();
    assert_eq!(relayed.msg_id, 8);

    // To everyone (PC clients) from route_server.
    let out = h.route(&buddy::ImUserStatNotify::default(), 0);
    let wires = client_wires(&out, CommandId::BUDDY_LIST_STATUS_NOTIFY);
    assert_eq!(wires.len(), 3, "{out:?}");
    let wires: Vec<Bytes> = wires.into_iter().map(|(_, w)| w).collect();
    assert!(one_allocation(&wires));

    // A broadcast to every route_server link.
    let mut out = Vec::new();
    let second = h.link_opened(Upstream::Route, &mut out);
    h.login(4, ClientType::Windows);
    let out = h.client_closed(c);
    let wires: Vec<Bytes> = out
        .iter()
        .filter_map(|a| match a {
            Action::ToUpstream(l, frame)
                if (*l == RS || *l == second)
                    && frame.command() == CommandId::OTHER_USER_STATUS_UPDATE =>
            {
                Some(frame.wire().clone())
            }
            _ => None,
        })
        .collect();
    assert_eq!(wires.len(), 2, "{out:?}");
    assert!(one_allocation(&wires));
}
