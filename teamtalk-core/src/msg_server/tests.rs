use super::*;
use crate::domain::{ManualClock, Timestamp};
use crate::PduMessage;
use std::collections::VecDeque;

const DB: LinkId = LinkId(1);
const RS: LinkId = LinkId(2);
const LS: LinkId = LinkId(3);

struct Harness {
    ms: MsgServer<ManualClock>,
    now_ms: u64,
}

impl Harness {
    fn new() -> Harness {
        let mut ms = MsgServer::new(
            MsgServerConfig::default(),
            ManualClock::new(Timestamp(1_000)),
        );
        let mut out = Vec::new();
        ms.upstream_opened(DB, Upstream::Db(DbRange::Login), &mut out);
        ms.upstream_opened(RS, Upstream::Route, &mut out);
        ms.upstream_opened(LS, Upstream::Login, &mut out);
        Harness { ms, now_ms: 0 }
    }

    fn client<M: PduMessage>(&mut self, conn: ConnId, message: &M, seq: u16) -> Vec<Action> {
        let mut out = Vec::new();
        self.ms.client_frame(
            conn,
            Pdu::encode_message(message, seq),
            self.now_ms,
            &mut out,
        );
        out
    }

    fn db<M: PduMessage>(&mut self, message: &M, seq: u16) -> Vec<Action> {
        let mut out = Vec::new();
        self.ms.upstream_frame(
            DB,
            Upstream::Db(DbRange::Login),
            Pdu::encode_message(message, seq),
            &mut out,
        );
        out
    }

    fn route<M: PduMessage>(&mut self, message: &M, seq: u16) -> Vec<Action> {
        let mut out = Vec::new();
        self.ms.upstream_frame(
            RS,
            Upstream::Route,
            Pdu::encode_message(message, seq),
            &mut out,
        );
        out
    }

    /// Connects and logs in `name` (user id `id`) with `client`; returns the connection.
    fn login(&mut self, id: u32, client: ClientType) -> ConnId {
        let conn = self.ms.client_opened(self.now_ms);
        let request = login::ImLoginReq {
            user_name: format!("u{id}"),
            password: "md5".into(),
            online_status: 1,
            client_type: client.to_wire(),
            client_version: None,
        };
        let out = self.client(conn, &request, 7);
        let validate: server::ImValidateReq = only_upstream(&out, DB).decode_body().unwrap();
        let answer = server::ImValidateRsp {
            user_name: validate.user_name,
            result_code: 0,
            result_string: None,
            user_info: Some(bd::UserInfo {
                user_id: id,
                ..Default::default()
            }),
            attach_data: validate.attach_data,
        };
        let out = self.db(&answer, 7);
        let res: login::ImLoginRes = to_client(&out, conn)[0].decode_body().unwrap();
        assert_eq!(res.result_code, 0);
        conn
    }
}

fn only_upstream(out: &[Action], link: LinkId) -> Pdu {
    let found: Vec<&Pdu> = out
        .iter()
        .filter_map(|a| match a {
            Action::ToUpstream(l, pdu) if *l == link => Some(pdu),
            _ => None,
        })
        .collect();
    assert_eq!(found.len(), 1, "{out:?}");
    found[0].clone()
}

fn upstream(out: &[Action], link: LinkId, command: CommandId) -> Vec<Pdu> {
    out.iter()
        .filter_map(|a| match a {
            Action::ToUpstream(l, pdu) if *l == link && pdu.command() == command => {
                Some(pdu.clone())
            }
            _ => None,
        })
        .collect()
}

fn to_client(out: &[Action], conn: ConnId) -> Vec<Pdu> {
    out.iter()
        .filter_map(|a| match a {
            Action::ToClient(c, pdu) if *c == conn => Some(pdu.clone()),
            _ => None,
        })
        .collect()
}

fn closes(out: &[Action], conn: ConnId) -> bool {
    out.contains(&Action::Close(conn))
}

fn text(from: u32, to: u32, kind: crate::domain::MsgType) -> message::ImMsgData {
    message::ImMsgData {
        from_user_id: from,
        to_session_id: to,
        msg_id: 90_000_000,
        create_time: 1,
        msg_type: kind.to_wire(),
        msg_data: Bytes::from_static(b"aGk="),
        attach_data: None,
    }
}

#[test]
fn only_heartbeat_and_login_before_login() {
    let mut h = Harness::new();
    let conn = h.ms.client_opened(0);
    let out = h.client(conn, &crate::proto::other::ImHeartBeat {}, 3);
    assert_eq!(to_client(&out, conn).len(), 1, "heartbeat echoed");
    let out = h.client(conn, &text(5, 6, crate::domain::MsgType::SingleText), 4);
    assert!(closes(&out, conn), "Q-02: refused and closed");
    assert!(upstream(&out, DB, CommandId::MSG_DATA).is_empty());
}

#[test]
fn login_reports_to_every_server_and_answers_with_the_seq() {
    let mut h = Harness::new();
    let conn = h.ms.client_opened(0);
    let request = login::ImLoginReq {
        user_name: "alice".into(),
        password: "x".into(),
        online_status: 1,
        client_type: ClientType::Windows.to_wire(),
        client_version: None,
    };
    let out = h.client(conn, &request, 41);
    let validate = only_upstream(&out, DB);
    assert_eq!(validate.seq_num(), 41);
    let validate: server::ImValidateReq = validate.decode_body().unwrap();
    let second = h.client(conn, &request, 42);
    assert!(second.is_empty(), "one login per connection");
    let answer = server::ImValidateRsp {
        user_name: "alice".into(),
        result_code: 0,
        result_string: None,
        user_info: Some(bd::UserInfo {
            user_id: 11,
            status: 3,
            ..Default::default()
        }),
        attach_data: validate.attach_data,
    };
    let out = h.db(&answer, 41);
    let res = &to_client(&out, conn)[0];
    assert_eq!(res.seq_num(), 41);
    let res: login::ImLoginRes = res.decode_body().unwrap();
    assert_eq!((res.result_code, res.server_time), (0, 1_000));
    assert_eq!(res.user_info.unwrap().status, 0);
    let count: server::ImUserCntUpdate = only_upstream(&out, LS).decode_body().unwrap();
    assert_eq!((count.user_action, count.user_id), (1, 11));
    assert_eq!(
        upstream(&out, RS, CommandId::OTHER_USER_STATUS_UPDATE).len(),
        1
    );
    assert_eq!(
        upstream(&out, RS, CommandId::OTHER_SERVER_KICK_USER).len(),
        1
    );
    assert_eq!(h.ms.logged_in(), 1);

    let mut out = Vec::new();
    h.ms.client_closed(conn, &mut out);
    let gone: server::ImUserStatusUpdate = upstream(&out, RS, CommandId::OTHER_USER_STATUS_UPDATE)
        [0]
    .decode_body()
    .unwrap();
    assert_eq!((gone.user_status, gone.user_id), (STATUS_OFFLINE, 11));
    assert_eq!(h.ms.logged_in(), 0);
}

#[test]
fn the_login_check_names_the_clients_address_and_its_answer_still_routes() {
    let mut h = Harness::new();
    let ip: std::net::IpAddr = "198.51.100.23".parse().unwrap();
    let conn = h.ms.client_opened_from(0, Some(ip));
    let request = login::ImLoginReq {
        user_name: "alice".into(),
        password: "x".into(),
        online_status: 1,
        client_type: ClientType::Windows.to_wire(),
        client_version: None,
    };
    let out = h.client(conn, &request, 5);
    let validate: server::ImValidateReq = only_upstream(&out, DB).decode_body().unwrap();
    let attach = validate.attach_data.clone().unwrap();
    let decoded = crate::attach::ValidateAttach::decode(&attach).unwrap();
    assert_eq!(decoded.client, Some(ip));
    assert_eq!(decoded.head, DbAttach::new(AttachType::HANDLE, conn.0));
    // Any db_proxy echoes the whole blob; the answer reaches the client.
    let answer = server::ImValidateRsp {
        user_name: "alice".into(),
        result_code: 0,
        result_string: None,
        user_info: Some(bd::UserInfo {
            user_id: 12,
            ..Default::default()
        }),
        attach_data: Some(attach),
    };
    let out = h.db(&answer, 5);
    let res: login::ImLoginRes = to_client(&out, conn)[0].decode_body().unwrap();
    assert_eq!(res.result_code, 0);
    // Without an address (client_opened), the attach data is the original's 12 bytes.
    let other = h.ms.client_opened(0);
    let out = h.client(other, &request, 6);
    let validate: server::ImValidateReq = only_upstream(&out, DB).decode_body().unwrap();
    assert_eq!(validate.attach_data.unwrap().len(), 12);
}

#[test]
fn bad_password_and_missing_servers_are_refused() {
    let mut h = Harness::new();
    let conn = h.ms.client_opened(0);
    let request = login::ImLoginReq {
        user_name: "alice".into(),
        password: "x".into(),
        online_status: 1,
        client_type: 1,
        client_version: None,
    };
    let out = h.client(conn, &request, 1);
    let validate: server::ImValidateReq = only_upstream(&out, DB).decode_body().unwrap();
    let answer = server::ImValidateRsp {
        user_name: "alice".into(),
        result_code: 1,
        result_string: Some("用户名/密码错误".into()),
        user_info: None,
        attach_data: validate.attach_data,
    };
    let out = h.db(&answer, 1);
    let res: login::ImLoginRes = to_client(&out, conn)[0].decode_body().unwrap();
    assert_eq!(res.result_code, 6);
    assert!(closes(&out, conn));

    let mut out = Vec::new();
    h.ms.upstream_closed(RS, &mut out);
    let conn = h.ms.client_opened(0);
    let out = h.client(conn, &request, 2);
    let res: login::ImLoginRes = to_client(&out, conn)[0].decode_body().unwrap();
    assert_eq!(
        res.result_code,
        bd::ResultType::RefuseReasonNoRouteServer as i32
    );
    assert!(closes(&out, conn));

    let mut out = Vec::new();
    h.ms.upstream_frame(
        DB,
        Upstream::Db(DbRange::Login),
        Pdu::encode_message(&server::ImStopReceivePacket { result: 0 }, 0),
        &mut out,
    );
    let conn = h.ms.client_opened(0);
    let out = h.client(conn, &request, 3);
    let res: login::ImLoginRes = to_client(&out, conn)[0].decode_body().unwrap();
    assert_eq!(
        res.result_code,
        bd::ResultType::RefuseReasonNoDbServer as i32,
        "a stopping db_proxy is not used"
    );
}

#[test]
fn a_second_login_of_the_same_class_kicks_and_closes_the_first() {
    let mut h = Harness::new();
    let pc = h.login(5, ClientType::Windows);
    let phone = h.login(5, ClientType::Android);
    let conn = h.ms.client_opened(0);
    let request = login::ImLoginReq {
        user_name: "u5".into(),
        password: "x".into(),
        online_status: 1,
        client_type: ClientType::Mac.to_wire(),
        client_version: None,
    };
    let out = h.client(conn, &request, 1);
    let validate: server::ImValidateReq = only_upstream(&out, DB).decode_body().unwrap();
    let answer = server::ImValidateRsp {
        user_name: "u5".into(),
        result_code: 0,
        result_string: None,
        user_info: Some(bd::UserInfo {
            user_id: 5,
            ..Default::default()
        }),
        attach_data: validate.attach_data,
    };
    let out = h.db(&answer, 1);
    let kick = &to_client(&out, pc)[0];
    assert_eq!(kick.seq_num(), 0);
    let kick: login::ImKickUser = kick.decode_body().unwrap();
    assert_eq!(kick.kick_reason, KICK_REASON_DUPLICATE_USER);
    assert!(closes(&out, pc), "Q-03: the kicked connection is closed");
    assert!(to_client(&out, phone).is_empty(), "PC and phone coexist");

    // The same rule across msg_servers, through route_server.
    let out = h.route(
        &server::ImServerKickUser {
            user_id: 5,
            client_type: ClientType::Ios.to_wire(),
            reason: 1,
        },
        0,
    );
    assert!(closes(&out, phone));
    assert!(!closes(&out, conn));
}

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
fn answers_go_back_to_the_requesting_connection_only() {
    let mut h = Harness::new();
    let a = h.login(1, ClientType::Windows);
    let b = h.login(2, ClientType::Windows);
    let request = message::ImUnreadMsgCntReq {
        user_id: 2,
        attach_data: None,
    };
    let out = h.client(a, &request, 17);
    let forwarded: message::ImUnreadMsgCntReq = only_upstream(&out, DB).decode_body().unwrap();
    assert_eq!(forwarded.user_id, 1, "identity forced");
    let answer = message::ImUnreadMsgCntRsp {
        user_id: 1,
        total_cnt: 3,
        unreadinfo_list: Vec::new(),
        attach_data: forwarded.attach_data.clone(),
    };
    let out = h.db(&answer, 17);
    let back = &to_client(&out, a)[0];
    assert_eq!(back.seq_num(), 17);
    let back: message::ImUnreadMsgCntRsp = back.decode_body().unwrap();
    assert_eq!((back.total_cnt, back.attach_data), (3, None));
    assert!(to_client(&out, b).is_empty());

    // An answer naming another user than the connection's is dropped; so is a short attach.
    let forged = message::ImUnreadMsgCntRsp {
        user_id: 2,
        ..answer.clone()
    };
    assert!(h.db(&forged, 17).is_empty());
    let short = message::ImUnreadMsgCntRsp {
        attach_data: Some(Bytes::from_static(b"xy")),
        ..answer
    };
    assert!(h.db(&short, 17).is_empty(), "Q-42: dropped alone");
}

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

#[test]
fn timeouts_depend_on_login_and_device() {
    let mut h = Harness::new();
    let lurker = h.ms.client_opened(0);
    let pc = h.login(1, ClientType::Windows);
    let phone = h.login(1, ClientType::Android);
    let mut out = Vec::new();
    h.ms.tick(14_999, &mut out);
    assert!(out.is_empty());
    h.ms.tick(15_000, &mut out);
    assert_eq!(out, vec![Action::Close(lurker)]);
    out.clear();
    h.ms.tick(120_000, &mut out);
    assert!(closes(&out, pc) && !closes(&out, phone));
    out.clear();
    h.ms.tick(300_000, &mut out);
    assert!(closes(&out, phone));
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

#[test]
fn route_links_get_the_online_users_and_a_master() {
    let mut h = Harness::new();
    h.login(1, ClientType::Windows);
    let mut out = Vec::new();
    h.ms.upstream_opened(LinkId(9), Upstream::Route, &mut out);
    let info: server::ImOnlineUserInfo =
        upstream(&out, LinkId(9), CommandId::OTHER_ONLINE_USER_INFO)[0]
            .decode_body()
            .unwrap();
    assert_eq!(info.user_stat_list.len(), 1);
    assert!(
        upstream(&out, LinkId(9), CommandId::OTHER_ROLE_SET).is_empty(),
        "RS is still the master"
    );
    out.clear();
    h.ms.upstream_closed(RS, &mut out);
    assert_eq!(
        upstream(&out, LinkId(9), CommandId::OTHER_ROLE_SET).len(),
        1,
        "re-elected"
    );
}

#[test]
fn a_login_lost_with_its_db_link_is_refused() {
    let mut h = Harness::new();
    let conn = h.ms.client_opened(0);
    let request = login::ImLoginReq {
        user_name: "alice".into(),
        password: "x".into(),
        online_status: 1,
        client_type: 1,
        client_version: None,
    };
    let out = h.client(conn, &request, 12);
    only_upstream(&out, DB);
    let mut out = Vec::new();
    h.ms.upstream_closed(DB, &mut out);
    let res = &to_client(&out, conn)[0];
    assert_eq!(res.seq_num(), 12);
    let res: login::ImLoginRes = res.decode_body().unwrap();
    assert_eq!(
        res.result_code,
        bd::ResultType::RefuseReasonNoDbServer as i32
    );
    assert!(closes(&out, conn));
}

/// Messages sent to db_proxy links (not the relays to route_server).
fn messages(out: &[Action]) -> Vec<(LinkId, u16)> {
    out.iter()
        .filter_map(|x| match x {
            Action::ToUpstream(l, p) if *l != RS && p.command() == CommandId::MSG_DATA => {
                Some((*l, p.seq_num()))
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
    h.ms.upstream_frame(
        link,
        Upstream::Db(DbRange::Other),
        Pdu::encode_message(&stored, request.seq_num()),
        &mut out,
    );
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
    h.ms.upstream_closed(DB, &mut out);
    h.now_ms += 300;
    let out = h.client(a, &text(1, 2, crate::domain::MsgType::SingleText), 5);
    assert!(messages(&out).is_empty(), "no link: held, not sent");
    assert!(!closes(&out, a));
    let mut out = Vec::new();
    h.ms.tick(h.now_ms + 1_000, &mut out);
    assert!(!closes(&out, a), "held within the bound");
    let back = LinkId(9);
    let mut out = Vec::new();
    h.ms.upstream_opened(back, Upstream::Db(DbRange::Other), &mut out);
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
    h.ms.upstream_closed(DB, &mut out);
    assert!(messages(&out).is_empty());
    let back = LinkId(9);
    let mut out = Vec::new();
    h.ms.upstream_opened(back, Upstream::Db(DbRange::Other), &mut out);
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
    h.ms.upstream_opened(LinkId(8), Upstream::Db(DbRange::Other), &mut out);
    let a = h.login(1, ClientType::Windows);
    let first = h.client(a, &text(1, 2, crate::domain::MsgType::SingleText), 1);
    let [(link, 1)] = messages(&first)[..] else {
        panic!("{first:?}")
    };
    let mut out = Vec::new();
    h.ms.upstream_closed(link, &mut out);
    let other = if link == DB { LinkId(8) } else { DB };
    assert_eq!(messages(&out), vec![(other, 1)], "sent again on the other");
}

#[test]
fn a_message_not_stored_in_time_closes_the_connection() {
    let mut h = Harness::new();
    let a = h.login(1, ClientType::Windows);
    let mut out = Vec::new();
    h.ms.upstream_closed(DB, &mut out);
    h.now_ms = 2_000;
    let out = h.client(a, &text(1, 2, crate::domain::MsgType::SingleText), 5);
    assert!(!closes(&out, a));
    let mut out = Vec::new();
    h.ms.tick(2_000 + hold::HOLD_MS - 1, &mut out);
    assert!(!closes(&out, a));
    h.ms.tick(2_000 + hold::HOLD_MS, &mut out);
    assert!(closes(&out, a), "refused visibly: {out:?}");
    assert!(acked_seqs(&out, a).is_empty());
    // A link coming back later does not store what the client was told failed.
    let mut out = Vec::new();
    h.ms.upstream_opened(LinkId(9), Upstream::Db(DbRange::Other), &mut out);
    assert!(messages(&out).is_empty(), "{out:?}");

    // The same holds for a db_proxy that takes the message and never answers.
    let mut h = Harness::new();
    let a = h.login(1, ClientType::Windows);
    let out = h.client(a, &text(1, 2, crate::domain::MsgType::SingleText), 5);
    assert_eq!(messages(&out).len(), 1);
    let mut out = Vec::new();
    h.ms.tick(hold::HOLD_MS, &mut out);
    assert!(closes(&out, a));
}

#[test]
fn too_many_waiting_messages_close_the_connection() {
    let mut h = Harness::new();
    h.ms.config.max_msgs_per_sec = 10_000;
    let a = h.login(1, ClientType::Windows);
    let mut out = Vec::new();
    h.ms.upstream_closed(DB, &mut out);
    for seq in 1..=u16::try_from(hold::MAX_HELD).unwrap() {
        let out = h.client(a, &text(1, 2, crate::domain::MsgType::SingleText), seq);
        assert!(!closes(&out, a), "message {seq} is held");
    }
    let out = h.client(a, &text(1, 2, crate::domain::MsgType::SingleText), 999);
    assert!(closes(&out, a), "the one over the bound is refused visibly");
}

/// A client past its budget of requests in flight waits behind its own requests (and is
/// paused), while another client's request goes straight to db_proxy; answers release the
/// waiting requests in order, and reading resumes when none is left.
#[test]
fn a_heavy_client_waits_behind_its_own_requests_and_nobody_else() {
    let mut h = Harness::new();
    let max = h.ms.config().max_requests_in_flight;
    let heavy = h.login(10, ClientType::Mac);
    let other = h.login(11, ClientType::Mac);
    let all = buddy::ImAllUserReq {
        user_id: 0,
        latest_update_time: 0,
        attach_data: None,
    };
    let mut sent = Vec::new();
    let mut paused = 0;
    for seq in 1..=(max as u16 + 3) {
        let out = h.client(heavy, &all, seq);
        sent.extend(upstream(&out, DB, CommandId::BUDDY_LIST_ALL_USER_REQUEST));
        paused += out
            .iter()
            .filter(|a| **a == Action::PauseReading(heavy))
            .count();
    }
    assert_eq!(sent.len(), max, "only the budget goes upstream");
    assert_eq!(paused, 1, "paused once");
    let out = h.client(other, &all, 1);
    assert_eq!(
        upstream(&out, DB, CommandId::BUDDY_LIST_ALL_USER_REQUEST).len(),
        1,
        "another client is not held up"
    );
    let answer = |pdu: &Pdu| {
        let request: buddy::ImAllUserReq = pdu.decode_body().unwrap();
        buddy::ImAllUserRsp {
            user_id: 10,
            latest_update_time: 0,
            user_list: Vec::new(),
            attach_data: request.attach_data,
        }
    };
    let mut released = Vec::new();
    let mut resumed = false;
    let mut pending: VecDeque<Pdu> = sent.into_iter().collect();
    let mut answered = 0;
    while let Some(pdu) = pending.pop_front() {
        let out = h.db(&answer(&pdu), pdu.seq_num());
        answered += 1;
        assert_eq!(to_client(&out, heavy).len(), 1);
        let next = upstream(&out, DB, CommandId::BUDDY_LIST_ALL_USER_REQUEST);
        released.extend(next.iter().map(Pdu::seq_num));
        pending.extend(next);
        if out.contains(&Action::ResumeReading(heavy)) {
            assert_eq!(answered, 3, "resumed when the last waiting request went");
            resumed = true;
        }
    }
    assert_eq!(
        released,
        vec![max as u16 + 1, max as u16 + 2, max as u16 + 3]
    );
    assert!(resumed);
}

/// Answers that never come (a lost link) stop counting after a while.
#[test]
fn unanswered_requests_stop_counting_after_the_timeout() {
    let mut h = Harness::new();
    let max = h.ms.config().max_requests_in_flight;
    let conn = h.login(10, ClientType::Mac);
    let all = buddy::ImAllUserReq {
        user_id: 0,
        latest_update_time: 0,
        attach_data: None,
    };
    for seq in 0..=max as u16 {
        h.client(conn, &all, seq);
    }
    let mut out = Vec::new();
    h.ms.tick(budget::REQUEST_TIMEOUT_MS + 1, &mut out);
    assert_eq!(
        upstream(&out, DB, CommandId::BUDDY_LIST_ALL_USER_REQUEST).len(),
        1,
        "the waiting request goes"
    );
    assert!(out.contains(&Action::ResumeReading(conn)));
}

/// With the total budget used up by heavy clients, a newcomer's request gets the next free
/// slot: connections take turns, and one at its own budget gives its turn away.
#[test]
fn a_newcomer_gets_the_next_slot_when_heavy_clients_fill_the_total() {
    let mut h = Harness::new();
    let per = h.ms.config().max_requests_in_flight;
    let total = h.ms.config().max_requests_in_flight_total;
    let all = buddy::ImAllUserReq {
        user_id: 0,
        latest_update_time: 0,
        attach_data: None,
    };
    let mut sent = Vec::new();
    let heavies: Vec<ConnId> = (0..total / per)
        .map(|i| h.login(10 + i as u32, ClientType::Mac))
        .collect();
    let light = h.login(99, ClientType::Mac);
    for &conn in &heavies {
        for seq in 1..=(per as u16 + 2) {
            let out = h.client(conn, &all, seq);
            sent.extend(upstream(&out, DB, CommandId::BUDDY_LIST_ALL_USER_REQUEST));
        }
    }
    assert_eq!(sent.len(), total, "the total budget is used up");
    let out = h.client(light, &all, 7);
    assert!(upstream(&out, DB, CommandId::BUDDY_LIST_ALL_USER_REQUEST).is_empty());
    assert!(out.contains(&Action::PauseReading(light)));
    // One answer frees one slot: the newcomer's turn comes before the heavy clients' next.
    let request: buddy::ImAllUserReq = sent[0].decode_body().unwrap();
    let answer = buddy::ImAllUserRsp {
        user_id: 10,
        latest_update_time: 0,
        user_list: Vec::new(),
        attach_data: request.attach_data,
    };
    let out = h.db(&answer, sent[0].seq_num());
    let next = upstream(&out, DB, CommandId::BUDDY_LIST_ALL_USER_REQUEST);
    assert_eq!(next.len(), 1, "{out:?}");
    let next: buddy::ImAllUserReq = next[0].decode_body().unwrap();
    assert_eq!(next.user_id, 99, "the newcomer goes first");
    assert!(out.contains(&Action::ResumeReading(light)));
}

/// An avatar change is answered to every connection of the user; its answer still gives the
/// request's slot back, so avatar changes cannot hold the total budget.
#[test]
fn an_avatar_answer_gives_its_request_slot_back() {
    let mut h = Harness::new();
    let total = h.ms.config().max_requests_in_flight_total;
    let users: Vec<ConnId> = (0..total as u32)
        .map(|i| h.login(20 + i, ClientType::Mac))
        .collect();
    for (i, &conn) in users.iter().enumerate() {
        let change = buddy::ImChangeAvatarReq {
            user_id: 0,
            avatar_url: format!("http://example.com/{i}.png"),
            attach_data: None,
        };
        let out = h.client(conn, &change, 1);
        let sent = upstream(&out, DB, CommandId::BUDDY_LIST_CHANGE_AVATAR_REQUEST);
        assert_eq!(sent.len(), 1);
        let request: buddy::ImChangeAvatarReq = sent[0].decode_body().unwrap();
        let answer = buddy::ImChangeAvatarRsp {
            user_id: 20 + i as u32,
            result_code: 0,
            attach_data: request.attach_data,
        };
        h.db(&answer, 1);
    }
    let other = h.login(99, ClientType::Mac);
    let all = buddy::ImAllUserReq {
        user_id: 0,
        latest_update_time: 0,
        attach_data: None,
    };
    let out = h.client(other, &all, 1);
    assert_eq!(
        upstream(&out, DB, CommandId::BUDDY_LIST_ALL_USER_REQUEST).len(),
        1,
        "answered avatar changes hold no slot"
    );
}
