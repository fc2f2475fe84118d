use super::*;

const U: UserId = UserId(7);

#[test]
fn pc_presence_is_announced_mobile_is_not() {
    let mut p = Presence::new();
    let n = p.update(1, U, STATUS_ONLINE, ClientType::Android);
    assert_eq!(n, Notices::default(), "mobile alone: nothing to announce");
    assert_eq!(p.status(U), STATUS_OFFLINE, "mobile-only users are OFFLINE");

    let n = p.update(1, U, STATUS_ONLINE, ClientType::Windows);
    assert_eq!(n.status, Some((U, STATUS_ONLINE)));
    assert_eq!(
        n.login_status,
        Some((U, 1)),
        "the user's phone learns about the PC"
    );
    assert_eq!(p.status(U), STATUS_ONLINE);

    let n = p.update(1, U, STATUS_OFFLINE, ClientType::Windows);
    assert_eq!(n.status, Some((U, STATUS_OFFLINE)));
    assert_eq!(n.login_status, Some((U, 0)));
    assert_eq!(p.status(U), STATUS_OFFLINE);
}

#[test]
fn a_second_pc_keeps_the_user_online() {
    let mut p = Presence::new();
    p.update(1, U, STATUS_ONLINE, ClientType::Windows);
    p.update(2, U, STATUS_ONLINE, ClientType::Mac);
    let n = p.update(1, U, STATUS_OFFLINE, ClientType::Windows);
    assert_eq!(n, Notices::default(), "still online through the Mac");
    assert_eq!(p.status(U), STATUS_ONLINE);
}

#[test]
fn offline_from_another_link_is_ignored() {
    let mut p = Presence::new();
    p.update(1, U, STATUS_ONLINE, ClientType::Windows);
    p.update(2, U, STATUS_OFFLINE, ClientType::Windows);
    assert_eq!(
        p.status(U),
        STATUS_ONLINE,
        "link 2 never had that connection"
    );
}

#[test]
fn a_closed_link_takes_its_connections_along() {
    let mut p = Presence::new();
    p.load(
        1,
        [
            (U, STATUS_ONLINE, ClientType::Windows),
            (UserId(8), STATUS_ONLINE, ClientType::Ios),
        ],
    );
    p.update(2, U, STATUS_ONLINE, ClientType::Android);
    assert_eq!(p.online_users(), 2);
    let notices = p.link_closed(1);
    assert_eq!(
        notices,
        vec![Notices {
            login_status: Some((U, 0)),
            status: Some((U, STATUS_OFFLINE))
        }],
        "U lost its PC and is announced offline; user 8 (mobile only) silently gone"
    );
    assert_eq!(p.status(U), STATUS_OFFLINE);
    assert_eq!(
        p.online_users(),
        1,
        "U is still connected by phone, user 8 is gone (Q-69)"
    );
}

#[test]
fn relay_scopes() {
    assert_eq!(
        relay_scope(CommandId::MSG_DATA),
        Some(RelayScope::AllButSource)
    );
    assert_eq!(
        relay_scope(CommandId::BUDDY_LIST_SIGN_INFO_CHANGED_NOTIFY),
        Some(RelayScope::All)
    );
    assert_eq!(relay_scope(CommandId::OTHER_USER_STATUS_UPDATE), None);
}

fn drain(hub: &mut RouteHub) -> Vec<Transmit> {
    std::iter::from_fn(|| hub.poll_output()).collect()
}

#[test]
fn hub_answers_status_queries_and_relays() {
    let now = Now::from_ms(0);
    let mut hub = RouteHub::new();
    let (one, two) = (hub.handle_link_opened(now), hub.handle_link_opened(now));
    let login = server::ImUserStatusUpdate {
        user_status: STATUS_ONLINE,
        user_id: 7,
        client_type: ClientType::Windows.to_wire(),
    };
    hub.handle_frame(now, one, &Pdu::encode_message(&login, 0));
    let out = drain(&mut hub);
    assert_eq!(out.len(), 2 * 2, "login status and status notify");
    let links: Vec<_> = out.iter().map(|t| t.link).collect();
    assert_eq!(links, vec![one, two, one, two], "both to every link");

    let query = buddy::ImUsersStatReq {
        user_id: 9,
        user_id_list: vec![7, 8],
        attach_data: Some(bytes::Bytes::from_static(b"handle")),
    };
    hub.handle_frame(now, two, &Pdu::encode_message(&query, 33));
    let out = drain(&mut hub);
    let [Transmit { link, frame }] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(*link, two);
    let mut frame = bytes::BytesMut::from(&frame[..]);
    let pdu = crate::PduDecoder::default()
        .decode(&mut frame)
        .unwrap()
        .unwrap();
    assert_eq!(pdu.seq_num(), 33, "the request's seq is echoed");
    let answer: buddy::ImUsersStatRsp = pdu.decode_body().unwrap();
    assert_eq!(answer.attach_data.as_deref(), Some(&b"handle"[..]));
    let statuses: Vec<_> = answer
        .user_stat_list
        .iter()
        .map(|s| (s.user_id, s.status))
        .collect();
    assert_eq!(statuses, vec![(7, 1), (8, 2)]);

    let data = crate::proto::message::ImMsgData {
        from_user_id: 7,
        to_session_id: 8,
        ..Default::default()
    };
    let frame = Pdu::encode_message(&data, 5);
    hub.handle_frame(now, one, &frame);
    assert_eq!(
        drain(&mut hub),
        vec![Transmit {
            link: two,
            frame: frame.to_bytes()
        }],
        "relayed unchanged"
    );

    hub.handle_link_closed(now, one);
    assert_eq!(
        drain(&mut hub).len(),
        1,
        "user 7 announced offline (no login-status: no client left)"
    );
    assert_eq!(hub.presence().status(UserId(7)), STATUS_OFFLINE);
    assert_eq!(hub.poll_timeout(), None, "the hub arms no timer");
}

#[test]
fn fan_out_encodes_once_and_shares_the_frame() {
    let now = Now::from_ms(0);
    let mut hub = RouteHub::new();
    let links: Vec<_> = (0..4).map(|_| hub.handle_link_opened(now)).collect();
    let data = crate::proto::message::ImMsgData {
        from_user_id: 7,
        to_session_id: 8,
        ..Default::default()
    };
    hub.handle_frame(now, links[0], &Pdu::encode_message(&data, 5));
    let out = drain(&mut hub);
    assert_eq!(
        out.iter().map(|t| t.link).collect::<Vec<_>>(),
        links[1..].to_vec(),
        "every link but the source"
    );
    assert!(
        out.iter()
            .all(|t| t.frame.as_ptr() == out[0].frame.as_ptr()),
        "one buffer for every recipient"
    );

    let sign = buddy::ImSignInfoChangedNotify {
        changed_user_id: 7,
        sign_info: "hi".into(),
    };
    hub.handle_frame(now, links[0], &Pdu::encode_message(&sign, 0));
    let out = drain(&mut hub);
    assert_eq!(out.len(), 4, "sign info goes to the source too");
    assert!(out
        .iter()
        .all(|t| t.frame.as_ptr() == out[0].frame.as_ptr()));
}

#[test]
fn a_closed_link_gets_nothing_more() {
    let now = Now::from_ms(0);
    let mut hub = RouteHub::new();
    let (one, two) = (hub.handle_link_opened(now), hub.handle_link_opened(now));
    let data = crate::proto::message::ImMsgData::default();
    hub.handle_frame(now, one, &Pdu::encode_message(&data, 1));
    hub.handle_link_closed(now, two);
    assert_eq!(
        drain(&mut hub),
        vec![],
        "the frame queued for it is dropped"
    );
    hub.handle_frame(now, two, &Pdu::encode_message(&data, 1));
    assert_eq!(drain(&mut hub), vec![], "its late frames are ignored");
    assert_eq!(hub.links(), 1);
}

/// Found by the state-machine properties (teamtalk-store/tests/state_machines): a client
/// logged in with online status OFFLINE (2) is counted by its login's status update (sent as
/// ONLINE), so the list its msg_server sends when the route link comes back must count it
/// too, or the user vanishes from presence while connected (docs/compatibility.md Q-73).
#[test]
fn online_user_info_counts_connections_whatever_their_chosen_status() {
    let now = Now::from_ms(0);
    let mut hub = RouteHub::new();
    let link = hub.handle_link_opened(now);
    let info = server::ImOnlineUserInfo {
        user_stat_list: vec![
            base_define::ServerUserStat {
                user_id: 7,
                status: STATUS_OFFLINE as i32,
                client_type: ClientType::Windows.to_wire(),
            },
            base_define::ServerUserStat {
                user_id: 8,
                status: 3, // LEAVE
                client_type: ClientType::Mac.to_wire(),
            },
        ],
    };
    hub.handle_frame(now, link, &Pdu::encode_message(&info, 0));
    assert!(
        hub.presence().has_pc(UserId(7)),
        "an invisible PC client is connected"
    );
    assert!(hub.presence().has_pc(UserId(8)));
    assert_eq!(hub.presence().online_users(), 2);
    let offline = server::ImUserStatusUpdate {
        user_status: STATUS_OFFLINE,
        user_id: 7,
        client_type: ClientType::Windows.to_wire(),
    };
    hub.handle_frame(now, link, &Pdu::encode_message(&offline, 0));
    assert!(
        !hub.presence().has_pc(UserId(7)),
        "and its logout takes it away"
    );
    assert_eq!(hub.presence().online_users(), 1);
}
