//! Login, refusals, kicks and timeouts.

use super::*;

#[test]
fn only_heartbeat_and_login_before_login() {
    let mut h = Harness::new();
    let conn = h.open_client(None);
    let out = h.client(conn, &crate::proto::other::ImHeartBeat {}, 3);
    assert_eq!(to_client(&out, conn).len(), 1, "heartbeat echoed");
    let out = h.client(conn, &text(5, 6, crate::domain::MsgType::SingleText), 4);
    assert!(closes(&out, conn), "Q-02: refused and closed");
    assert!(upstream(&out, DB, CommandId::MSG_DATA).is_empty());
}

#[test]
fn login_reports_to_every_server_and_answers_with_the_seq() {
    let mut h = Harness::new();
    let conn = h.open_client(None);
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
    out.extend(h.client_closed(conn));
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
    let conn = h.open_client(Some(ip));
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
    let other = h.open_client(None);
    let out = h.client(other, &request, 6);
    let validate: server::ImValidateReq = only_upstream(&out, DB).decode_body().unwrap();
    assert_eq!(validate.attach_data.unwrap().len(), 12);
}

#[test]
fn bad_password_and_missing_servers_are_refused() {
    let mut h = Harness::new();
    let conn = h.open_client(None);
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
    out.extend(h.link_closed(RS));
    let conn = h.open_client(None);
    let out = h.client(conn, &request, 2);
    let res: login::ImLoginRes = to_client(&out, conn)[0].decode_body().unwrap();
    assert_eq!(
        res.result_code,
        bd::ResultType::RefuseReasonNoRouteServer as i32
    );
    assert!(closes(&out, conn));

    let mut out = Vec::new();
    out.extend(h.frame_on(
        DB,
        Pdu::encode_message(&server::ImStopReceivePacket { result: 0 }, 0),
    ));
    let conn = h.open_client(None);
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
    let conn = h.open_client(None);
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
    let lurker = h.open_client(None);
    let pc = h.login(1, ClientType::Windows);
    let phone = h.login(1, ClientType::Android);
    let mut out = Vec::new();
    out.extend(h.tick(14_999));
    assert!(out.is_empty());
    out.extend(h.tick(15_000));
    assert_eq!(out, vec![Action::Close(lurker)]);
    out.clear();
    out.extend(h.tick(120_000));
    assert!(closes(&out, pc) && !closes(&out, phone));
    out.clear();
    out.extend(h.tick(300_000));
    assert!(closes(&out, phone));
}

#[test]
fn a_login_lost_with_its_db_link_is_refused() {
    let mut h = Harness::new();
    let conn = h.open_client(None);
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
    out.extend(h.link_closed(DB));
    let res = &to_client(&out, conn)[0];
    assert_eq!(res.seq_num(), 12);
    let res: login::ImLoginRes = res.decode_body().unwrap();
    assert_eq!(
        res.result_code,
        bd::ResultType::RefuseReasonNoDbServer as i32
    );
    assert!(closes(&out, conn));
}

#[test]
fn the_next_wake_up_is_the_earliest_deadline_and_idle_time_restarts_with_each_frame() {
    let mut h = Harness::new();
    assert_eq!(h.ms.poll_timeout(), None, "no connection, no timer");
    h.now_ms = 500;
    let lurker = h.open_client(None);
    assert_eq!(h.ms.poll_timeout(), Some(15_500), "the login deadline");
    assert!(h.tick(15_499).is_empty());
    assert_eq!(h.tick(15_500), vec![Action::Close(lurker)]);
    assert_eq!(h.ms.poll_timeout(), None);

    h.now_ms = 20_000;
    let pc = h.login(1, ClientType::Windows);
    assert_eq!(
        h.ms.poll_timeout(),
        Some(35_000),
        "its login deadline, now moot"
    );
    assert!(h.tick(35_000).is_empty(), "an early wake-up does nothing");
    assert_eq!(h.ms.poll_timeout(), Some(140_000), "the idle deadline");
    h.now_ms = 100_000;
    h.client(pc, &crate::proto::other::ImHeartBeat {}, 1);
    assert!(h.tick(140_000).is_empty(), "heard from since");
    assert_eq!(h.ms.poll_timeout(), Some(220_000));
    assert!(closes(&h.tick(220_000), pc));
}

#[test]
fn a_msg_server_without_a_login_server_accepts_logins_only_when_configured_so() {
    let request = login::ImLoginReq {
        user_name: "alice".into(),
        password: "x".into(),
        online_status: 1,
        client_type: 1,
        client_version: None,
    };
    for required in [true, false] {
        let mut h = Harness::new();
        h.ms = MsgServer::new(MsgServerConfig {
            require_login_server: required,
            ..MsgServerConfig::default()
        });
        let mut out = Vec::new();
        let db = h.link_opened(Upstream::Db(DbRange::Login), &mut out);
        h.link_opened(Upstream::Route, &mut out);
        let conn = h.open_client(None);
        let out = h.client(conn, &request, 1);
        if required {
            let res: login::ImLoginRes = to_client(&out, conn)[0].decode_body().unwrap();
            assert_eq!(
                res.result_code,
                bd::ResultType::RefuseReasonNoLoginServer as i32
            );
            assert!(closes(&out, conn));
        } else {
            let validate: server::ImValidateReq = only_upstream(&out, db).decode_body().unwrap();
            assert_eq!(
                validate.user_name, "alice",
                "checked with db_proxy, not refused"
            );
        }
    }
}
