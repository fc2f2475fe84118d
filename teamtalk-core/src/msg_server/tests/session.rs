//! Login, refusals, kicks and timeouts.

use super::*;

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
