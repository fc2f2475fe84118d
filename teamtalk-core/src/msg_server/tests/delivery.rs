//! Messages: storage, acks, delivery, rate limits and holding while db_proxy is away.

use super::*;

#[test]
fn a_message_is_acked_after_storage_and_delivered_everywhere() {
    let mut h = Harness::new();
    let a_pc = h.login(1, ClientType::Windows);
    let a_phone = h.login(1, ClientType::Ios);
    let b_pc = h.login(2, ClientType::Mac);
    let out = h.client(a_pc, &text(666, 2, crate::domain::MsgType::SingleText), 9);
    let request = only_upstream(&out, DB);
    assert_eq!(request.seq_num(), 9);
    let mut stored: message::ImMsgData = request.decode_body().unwrap();
    assert_eq!(
        stored.from_user_id, 1,
        "Q-05: the sender is the authenticated user"
    );
    assert_eq!(stored.create_time, 1_000);
    stored.msg_id = 77;
    let out = h.db(&stored, 9);
    let ack = &to_client(&out, a_pc)[0];
    assert_eq!(ack.seq_num(), 9);
    let ack: message::ImMsgDataAck = ack.decode_body().unwrap();
    assert_eq!((ack.msg_id, ack.session_id), (77, 2));
    for conn in [a_phone, b_pc] {
        let copy = &to_client(&out, conn)[0];
        assert_eq!(copy.seq_num(), 0, "Q-23");
        let copy: message::ImMsgData = copy.decode_body().unwrap();
        assert_eq!((copy.msg_id, copy.attach_data), (77, None));
    }
    let relay = only_upstream(&out, RS);
    assert_eq!((relay.command(), relay.seq_num()), (CommandId::MSG_DATA, 0));

    // The same message arriving from another msg_server reaches everyone here.
    let out = h.route(&stored, 9);
    assert_eq!(to_client(&out, b_pc)[0].seq_num(), 0);
    assert_eq!(to_client(&out, a_pc).len(), 1);
}

#[test]
fn rate_limit_self_send_and_empty_messages_are_dropped() {
    let mut h = Harness::new();
    let a = h.login(1, ClientType::Windows);
    let out = h.client(a, &text(1, 1, crate::domain::MsgType::SingleText), 1);
    assert!(out.is_empty(), "self-addressed");
    let mut empty = text(1, 2, crate::domain::MsgType::SingleText);
    empty.msg_data = Bytes::new();
    assert!(h.client(a, &empty, 1).is_empty());
    let mut stored = Vec::new();
    for seq in 1..=25 {
        stored.extend(upstream(
            &h.client(a, &text(1, 2, crate::domain::MsgType::SingleText), seq),
            DB,
            CommandId::MSG_DATA,
        ));
    }
    assert_eq!(
        stored.len(),
        1,
        "one message in flight per connection, the others wait"
    );
    // db_proxy stores them one by one; each answer releases the next, in order.
    let mut seqs = Vec::new();
    while let Some(pdu) = stored.pop() {
        seqs.push(pdu.seq_num());
        let mut data: message::ImMsgData = pdu.decode_body().unwrap();
        data.msg_id = u32::from(pdu.seq_num());
        stored.extend(upstream(
            &h.db(&data, pdu.seq_num()),
            DB,
            CommandId::MSG_DATA,
        ));
    }
    assert_eq!(
        seqs,
        (1..=18).collect::<Vec<u16>>(),
        "20 per second (the dropped ones counted too), in order"
    );
    h.now_ms += 1_000;
    assert!(!h
        .client(a, &text(1, 2, crate::domain::MsgType::SingleText), 1)
        .is_empty());
}

#[test]
fn read_acks_notify_the_readers_other_devices() {
    let mut h = Harness::new();
    let pc = h.login(1, ClientType::Windows);
    let phone = h.login(1, ClientType::Ios);
    let ack = message::ImMsgDataReadAck {
        user_id: 9,
        session_id: 2,
        msg_id: 5,
        session_type: 1,
    };
    let out = h.client(pc, &ack, 3);
    let stored: message::ImMsgDataReadAck = only_upstream(&out, DB).decode_body().unwrap();
    assert_eq!(stored.user_id, 1);
    assert!(to_client(&out, pc).is_empty());
    assert_eq!(
        to_client(&out, phone)[0].command(),
        CommandId::MSG_READ_NOTIFY
    );
    assert_eq!(upstream(&out, RS, CommandId::MSG_READ_NOTIFY).len(), 1);
}

/// Messages sent to db_proxy links (not the relays to route_server).
fn messages(out: &[Action]) -> Vec<(LinkId, u16)> {
    out.iter()
        .filter_map(|x| match x {
            Action::ToUpstream(l, p) if *l != RS && p.command() == CommandId::MSG_DATA => {
                Some((*l, p.pdu().seq_num()))
            }
            _ => None,
        })
        .collect()
}

/// db_proxy's answer to a stored message, on `link`.
fn store_on(h: &mut Harness, link: LinkId, request: &Pdu, msg_id: u32) -> Vec<Action> {
    let mut stored: message::ImMsgData = request.decode_body().unwrap();
    stored.msg_id = msg_id;
    let mut out = Vec::new();
    out.extend(h.frame_on(link, Pdu::encode_message(&stored, request.seq_num())));
    out
}

fn acked_seqs(out: &[Action], conn: ConnId) -> Vec<u16> {
    to_client(out, conn)
        .iter()
        .filter(|p| p.command() == CommandId::MSG_DATA_ACK)
        .map(Pdu::seq_num)
        .collect()
}

#[test]
fn a_message_sent_without_db_link_is_acked_once_a_link_is_back() {
    let mut h = Harness::new();
    let a = h.login(1, ClientType::Windows);
    let b = h.login(2, ClientType::Mac);
    let mut out = Vec::new();
    out.extend(h.link_closed(DB));
    h.now_ms += 300;
    let out = h.client(a, &text(1, 2, crate::domain::MsgType::SingleText), 5);
    assert!(messages(&out).is_empty(), "no link: held, not sent");
    assert!(!closes(&out, a));
    let mut out = Vec::new();
    out.extend(h.tick(h.now_ms + 1_000));
    assert!(!closes(&out, a), "held within the bound");
    let mut out = Vec::new();
    let back = h.link_opened(Upstream::Db(DbRange::Other), &mut out);
    assert_eq!(messages(&out), vec![(back, 5)], "sent once a link is up");
    let request = upstream(&out, back, CommandId::MSG_DATA)[0].clone();
    let out = store_on(&mut h, back, &request, 31);
    assert_eq!(acked_seqs(&out, a), vec![5]);
    assert_eq!(to_client(&out, b).len(), 1, "delivered");
}

#[test]
fn a_message_in_flight_on_a_lost_link_is_sent_again_in_order() {
    let mut h = Harness::new();
    let a = h.login(1, ClientType::Windows);
    let first = h.client(a, &text(1, 2, crate::domain::MsgType::SingleText), 1);
    assert_eq!(messages(&first), vec![(DB, 1)]);
    let second = h.client(a, &text(1, 2, crate::domain::MsgType::SingleText), 2);
    assert!(messages(&second).is_empty(), "waits behind the first");
    let mut out = Vec::new();
    out.extend(h.link_closed(DB));
    assert!(messages(&out).is_empty());
    let mut out = Vec::new();
    let back = h.link_opened(Upstream::Db(DbRange::Other), &mut out);
    assert_eq!(messages(&out), vec![(back, 1)], "the lost one first");
    let request = upstream(&out, back, CommandId::MSG_DATA)[0].clone();
    let out = store_on(&mut h, back, &request, 40);
    assert_eq!(acked_seqs(&out, a), vec![1]);
    assert_eq!(messages(&out), vec![(back, 2)], "then the next");
}

#[test]
fn a_message_lost_with_its_db_link_goes_to_the_remaining_link() {
    let mut h = Harness::new();
    let mut out = Vec::new();
    let second = h.link_opened(Upstream::Db(DbRange::Other), &mut out);
    let a = h.login(1, ClientType::Windows);
    let first = h.client(a, &text(1, 2, crate::domain::MsgType::SingleText), 1);
    let [(link, 1)] = messages(&first)[..] else {
        panic!("{first:?}")
    };
    let mut out = Vec::new();
    out.extend(h.link_closed(link));
    let other = if link == DB { second } else { DB };
    assert_eq!(messages(&out), vec![(other, 1)], "sent again on the other");
}

#[test]
fn a_message_not_stored_in_time_closes_the_connection() {
    let mut h = Harness::new();
    let a = h.login(1, ClientType::Windows);
    let mut out = Vec::new();
    out.extend(h.link_closed(DB));
    h.now_ms = 2_000;
    let out = h.client(a, &text(1, 2, crate::domain::MsgType::SingleText), 5);
    assert!(!closes(&out, a));
    let mut out = Vec::new();
    out.extend(h.tick(2_000 + hold::HOLD_MS - 1));
    assert!(!closes(&out, a));
    out.extend(h.tick(2_000 + hold::HOLD_MS));
    assert!(closes(&out, a), "refused visibly: {out:?}");
    assert!(acked_seqs(&out, a).is_empty());
    // A link coming back later does not store what the client was told failed.
    let mut out = Vec::new();
    h.link_opened(Upstream::Db(DbRange::Other), &mut out);
    assert!(messages(&out).is_empty(), "{out:?}");

    // The same holds for a db_proxy that takes the message and never answers.
    let mut h = Harness::new();
    let a = h.login(1, ClientType::Windows);
    let out = h.client(a, &text(1, 2, crate::domain::MsgType::SingleText), 5);
    assert_eq!(messages(&out).len(), 1);
    let mut out = Vec::new();
    out.extend(h.tick(hold::HOLD_MS));
    assert!(closes(&out, a));
}

#[test]
fn too_many_waiting_messages_close_the_connection() {
    let mut h = Harness::new();
    h.ms.config.max_msgs_per_sec = 10_000;
    let a = h.login(1, ClientType::Windows);
    let mut out = Vec::new();
    out.extend(h.link_closed(DB));
    for seq in 1..=u16::try_from(hold::MAX_HELD).unwrap() {
        let out = h.client(a, &text(1, 2, crate::domain::MsgType::SingleText), seq);
        assert!(!closes(&out, a), "message {seq} is held");
    }
    let out = h.client(a, &text(1, 2, crate::domain::MsgType::SingleText), 999);
    assert!(closes(&out, a), "the one over the bound is refused visibly");
}
