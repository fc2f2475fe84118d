//! A node driven with a fake time; the tests play db_proxy by answering its requests.

use super::*;
use crate::domain::{ClientType, MsgType, Timestamp, UserId};
use crate::ids::CommandId;
use crate::proto::{base_define as bd, login, message, server};
use crate::routing::STATUS_ONLINE;
use crate::PduMessage;

const UNIX: Timestamp = Timestamp(1_000);

fn at(ms: u64) -> Now {
    Now::new(ms, UNIX)
}

fn drain(node: &mut Node) -> Vec<LocalOutput> {
    std::iter::from_fn(|| node.poll_output()).collect()
}

fn db_requests(out: &[LocalOutput]) -> Vec<(DbRequest, Pdu)> {
    out.iter()
        .filter_map(|o| match o {
            LocalOutput::Db { request, pdu, .. } => Some((*request, pdu.clone())),
            _ => None,
        })
        .collect()
}

fn to_client(out: &[LocalOutput], server: ServerId, conn: ConnId) -> Vec<Pdu> {
    out.iter()
        .filter_map(|o| match o {
            LocalOutput::Msg(s, Action::ToClient(c, frame)) if *s == server && *c == conn => {
                Some(frame.pdu())
            }
            _ => None,
        })
        .collect()
}

fn answer<M: PduMessage>(
    node: &mut Node,
    request: DbRequest,
    message: &M,
    seq: u16,
) -> Vec<LocalOutput> {
    node.handle_db_answer(at(0), request, Some(Pdu::encode_message(message, seq)));
    drain(node)
}

/// Logs user `id` in on `server` with a PC client, playing db_proxy; returns the connection.
fn login(node: &mut Node, server: ServerId, id: u32) -> ConnId {
    let conn = node.handle_client_opened(at(0), server, None).unwrap();
    let request = login::ImLoginReq {
        user_name: format!("u{id}"),
        password: "md5".into(),
        online_status: 1,
        client_type: ClientType::Windows.to_wire(),
        client_version: None,
    };
    node.handle_client_frame(at(0), server, conn, Pdu::encode_message(&request, 3));
    let out = drain(node);
    let asked = db_requests(&out);
    assert_eq!(asked.len(), 1, "{out:?}");
    let (request, pdu) = asked[0].clone();
    let validate: server::ImValidateReq = pdu.decode_body().unwrap();
    let validated = server::ImValidateRsp {
        user_name: validate.user_name,
        result_code: 0,
        result_string: None,
        user_info: Some(bd::UserInfo {
            user_id: id,
            ..Default::default()
        }),
        attach_data: validate.attach_data,
    };
    let out = answer(node, request, &validated, pdu.seq_num());
    let res: login::ImLoginRes = to_client(&out, server, conn)[0].decode_body().unwrap();
    assert_eq!(res.result_code, 0, "logged in without any socket");
    conn
}

fn text(from: u32, to: u32) -> message::ImMsgData {
    message::ImMsgData {
        from_user_id: from,
        to_session_id: to,
        msg_id: 0,
        create_time: 0,
        msg_type: MsgType::SingleText.to_wire(),
        msg_data: bytes::Bytes::from_static(b"aGk="),
        attach_data: None,
    }
}

#[test]
fn a_login_needs_nothing_but_the_node() {
    let mut node = Node::new(NodeConfig::default());
    let server = node
        .add_msg_server(at(0), MsgServerConfig::default())
        .unwrap();
    let registered = drain(&mut node);
    assert!(
        registered
            .iter()
            .any(|o| matches!(o, LocalOutput::Registry(RegistryEvent::Registered(..)))),
        "the msg_server reported itself to the registry: {registered:?}"
    );
    login(&mut node, server, 5);
    assert_eq!(node.hub().presence().status(UserId(5)), STATUS_ONLINE);
    assert_eq!(node.registry().total_connections(), 1);
    assert_eq!(node.db_in_flight(), 0);
}

#[test]
fn messages_cross_msg_servers_through_the_hub_in_memory() {
    let mut node = Node::new(NodeConfig::default());
    let first = node
        .add_msg_server(at(0), MsgServerConfig::default())
        .unwrap();
    let second = node
        .add_msg_server(at(0), MsgServerConfig::default())
        .unwrap();
    drain(&mut node);
    let alice = login(&mut node, first, 1);
    let bob = login(&mut node, second, 2);
    node.handle_client_frame(at(0), first, alice, Pdu::encode_message(&text(1, 2), 9));
    let out = drain(&mut node);
    let (request, pdu) = db_requests(&out)[0].clone();
    let mut stored: message::ImMsgData = pdu.decode_body().unwrap();
    stored.msg_id = 40;
    let out = answer(&mut node, request, &stored, 9);
    let ack: message::ImMsgDataAck = to_client(&out, first, alice)[0].decode_body().unwrap();
    assert_eq!(ack.msg_id, 40);
    let delivered = to_client(&out, second, bob);
    assert_eq!(delivered.len(), 1, "{out:?}");
    let got: message::ImMsgData = delivered[0].decode_body().unwrap();
    assert_eq!((got.from_user_id, got.msg_id), (1, 40));
    assert!(
        !out.iter().any(|o| matches!(o, LocalOutput::Route(_))),
        "no frame leaves the process"
    );
}

#[test]
fn db_requests_in_flight_are_bounded_per_link_and_wait_in_order() {
    let config = NodeConfig {
        db_links: 1,
        db_in_flight: 1,
        ..NodeConfig::default()
    };
    let mut node = Node::new(config);
    let server = node
        .add_msg_server(at(0), MsgServerConfig::default())
        .unwrap();
    drain(&mut node);
    let (a, b) = (
        node.handle_client_opened(at(0), server, None).unwrap(),
        node.handle_client_opened(at(0), server, None).unwrap(),
    );
    for (conn, name) in [(a, "a"), (b, "b")] {
        let request = login::ImLoginReq {
            user_name: name.into(),
            password: "md5".into(),
            online_status: 1,
            client_type: ClientType::Windows.to_wire(),
            client_version: None,
        };
        node.handle_client_frame(at(0), server, conn, Pdu::encode_message(&request, 1));
    }
    let out = drain(&mut node);
    let asked = db_requests(&out);
    assert_eq!(asked.len(), 1, "one request in flight, the other waits");
    assert_eq!(node.db_in_flight(), 1);
    let first: server::ImValidateReq = asked[0].1.decode_body().unwrap();
    assert_eq!(first.user_name, "a");
    // No answer (as for a request db_proxy ignores) frees the slot all the same.
    node.handle_db_answer(at(0), asked[0].0, None);
    let out = drain(&mut node);
    let asked = db_requests(&out);
    assert_eq!(asked.len(), 1);
    let second: server::ImValidateReq = asked[0].1.decode_body().unwrap();
    assert_eq!(second.user_name, "b");
    // A repeated answer is ignored.
    node.handle_db_answer(at(0), asked[0].0, None);
    node.handle_db_answer(at(0), asked[0].0, None);
    assert_eq!(node.db_in_flight(), 0);
}

#[test]
fn a_db_request_beyond_the_queue_is_answered_as_a_storage_failure() {
    let config = NodeConfig {
        db_links: 1,
        db_in_flight: 1,
        db_queue: 1,
    };
    let mut node = Node::new(config);
    let server = node
        .add_msg_server(at(0), MsgServerConfig::default())
        .unwrap();
    drain(&mut node);
    // Three users, one request each (the msg_server's own per-connection budget stays out
    // of the way).
    let conns: Vec<ConnId> = (7..10).map(|id| login(&mut node, server, id)).collect();
    for (user, &conn) in (7..10).zip(&conns) {
        let request = login::ImPushShieldReq {
            user_id: user,
            shield_status: 1,
            attach_data: None,
        };
        node.handle_client_frame(at(0), server, conn, Pdu::encode_message(&request, 20));
    }
    let out = drain(&mut node);
    // One in flight, one waiting, and the third answered at once with db_proxy's failure
    // reply (not dropped: the client hears of it).
    assert_eq!(db_requests(&out).len(), 1);
    assert!(to_client(&out, server, conns[0]).is_empty());
    assert!(to_client(&out, server, conns[1]).is_empty());
    let answers = to_client(&out, server, conns[2]);
    assert_eq!(answers.len(), 1, "{out:#?}");
    assert_eq!(answers[0].seq_num(), 20);
    let refused: login::ImPushShieldRsp = answers[0].decode_body().unwrap();
    assert_eq!(refused.user_id, 9);
    assert_ne!(refused.result_code, 0, "a failure code");
}

#[test]
fn the_registry_keeps_offering_local_msg_servers() {
    let mut node = Node::new(NodeConfig::default());
    node.add_msg_server(at(0), MsgServerConfig::default())
        .unwrap();
    drain(&mut node);
    let mut now = 0;
    while now < 60_000 {
        now = node.poll_timeout().unwrap();
        node.handle_timeout(at(now));
        let out = drain(&mut node);
        assert!(
            !out.iter()
                .any(|o| matches!(o, LocalOutput::Registry(RegistryEvent::Silent(_)))),
            "never silent: {out:?}"
        );
        assert!(node.registry().pick(at(now)).is_ok());
    }
}

#[test]
fn msg_servers_of_other_processes_share_the_hub_and_the_registry() {
    let mut node = Node::new(NodeConfig::default());
    let server = node
        .add_msg_server(at(0), MsgServerConfig::default())
        .unwrap();
    drain(&mut node);
    let remote = node.handle_route_link_opened(at(0));
    let alice = login(&mut node, server, 1);
    // A message stored here is relayed to the other process's link as a frame.
    node.handle_client_frame(at(0), server, alice, Pdu::encode_message(&text(1, 2), 4));
    let out = drain(&mut node);
    let (request, pdu) = db_requests(&out)[0].clone();
    let mut stored: message::ImMsgData = pdu.decode_body().unwrap();
    stored.msg_id = 7;
    let out = answer(&mut node, request, &stored, 4);
    let relayed: Vec<Pdu> = out
        .iter()
        .filter_map(|o| match o {
            LocalOutput::Route(t) if t.link == remote => pdu_of_frame(&t.frame),
            _ => None,
        })
        .filter(|p| p.command() == CommandId::MSG_DATA)
        .collect();
    assert_eq!(relayed.len(), 1, "{out:?}");

    // A remote msg_server registers with the registry like a local one.
    let login_link = node.handle_login_link_opened(at(0));
    let info = server::ImMsgServInfo {
        ip1: "10.0.0.2".into(),
        ip2: "10.0.0.2".into(),
        port: 8000,
        max_conn_cnt: 10,
        cur_conn_cnt: 0,
        host_name: "remote".into(),
    };
    node.handle_login_frame(at(0), login_link, &Pdu::encode_message(&info, 0));
    assert_eq!(node.registry().servers().count(), 2);
    assert_eq!(
        node.registry().pick(at(0)).unwrap().ip1,
        "10.0.0.2",
        "the least loaded"
    );
    node.handle_login_link_closed(at(0), login_link);
    assert_eq!(node.registry().servers().count(), 1);
}

#[test]
fn a_frame_is_split_without_copying_and_bad_frames_are_refused() {
    let pdu = Pdu::encode_message(&text(1, 2), 5);
    let frame = pdu.to_bytes();
    let again = pdu_of_frame(&frame).unwrap();
    assert_eq!(again, pdu);
    assert_eq!(again.body.as_ptr(), frame[HEADER_LEN..].as_ptr());
    assert!(pdu_of_frame(&frame.slice(..HEADER_LEN - 1)).is_none());
    assert!(pdu_of_frame(&frame.slice(..frame.len() - 1)).is_none());
}
