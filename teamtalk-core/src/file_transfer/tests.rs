use super::*;

const T0: Now = Now::from_ms(0);

fn request(mode: i32, size: u32) -> ImFileTransferReq {
    ImFileTransferReq {
        from_user_id: 1,
        to_user_id: 2,
        file_name: "a.bin".into(),
        file_size: size,
        trans_mode: mode,
        attach_data: None,
    }
}

fn login(task: &str, user: u32, role: i32) -> Pdu {
    Pdu::encode_message(
        &ImFileLoginReq {
            user_id: user,
            task_id: task.into(),
            file_role: role,
        },
        7,
    )
}

/// Appends everything the machine has to do to `out`.
fn drain(t: &mut FileTasks, out: &mut Vec<FileAction>) {
    out.extend(std::iter::from_fn(|| t.poll_output()));
}

/// Feeds a frame of `conn` at time 0 and drains into `out`.
fn frame(t: &mut FileTasks, conn: FileConn, pdu: &Pdu, out: &mut Vec<FileAction>) {
    t.handle_frame(T0, conn, pdu);
    drain(t, out);
}

fn sent(out: &[FileAction], to: FileConn) -> Vec<Pdu> {
    out.iter()
        .filter_map(|a| match a {
            FileAction::Send(c, p) if *c == to => Some(p.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn online_transfer_relays_blocks_between_the_two_sides() {
    let mut t = FileTasks::new(FileLimits::default());
    let rsp = t.handle_transfer_request(T0, request(ONLINE, 40_000), "T1".into());
    assert_eq!((rsp.result_code, rsp.task_id.as_deref()), (0, Some("T1")));
    let (c1, c2) = (t.handle_conn_opened(T0), t.handle_conn_opened(T0));
    let mut out = Vec::new();
    frame(&mut t, c1, &login("T1", 1, SENDER), &mut out);
    frame(&mut t, c2, &login("T1", 2, RECEIVER), &mut out);
    let ready: ImFileState = sent(&out, c2).last().unwrap().decode_body().unwrap();
    assert_eq!(ready.state, PEER_READY);
    out.clear();
    let pull = ImFilePullDataReq {
        task_id: "T1".into(),
        user_id: 2,
        trans_mode: ONLINE,
        offset: 0,
        data_size: BLOCK,
    };
    frame(&mut t, c2, &Pdu::encode_message(&pull, 9), &mut out);
    assert_eq!(
        sent(&out, c1)[0].command(),
        CommandId::FILE_PULL_DATA_REQ,
        "relayed to the sender"
    );
    out.clear();
    let block = ImFilePullDataRsp {
        result_code: 0,
        task_id: "T1".into(),
        user_id: 1,
        offset: 0,
        file_data: Bytes::from(vec![5; 100]),
    };
    frame(&mut t, c1, &Pdu::encode_message(&block, 0), &mut out);
    let relayed = &sent(&out, c2)[0];
    assert_eq!(relayed.seq_num(), 9, "answered with the receiver's seq");
    out.clear();
    t.handle_conn_closed(T0, c1);
    drain(&mut t, &mut out);
    assert!(out.contains(&FileAction::Close(c2)) && out.contains(&FileAction::Forget("T1".into())));
    assert!(t.is_empty());
}

#[test]
fn logins_must_match_the_task_users_and_roles() {
    let mut t = FileTasks::new(FileLimits::default());
    t.handle_transfer_request(T0, request(ONLINE, 10), "T".into());
    for (user, role) in [(3, SENDER), (1, RECEIVER), (1, UPLOADER), (2, DOWNLOADER)] {
        let conn = t.handle_conn_opened(T0);
        let mut out = Vec::new();
        frame(&mut t, conn, &login("T", user, role), &mut out);
        assert!(
            out.contains(&FileAction::Close(conn)),
            "user {user} role {role} refused (Q-10)"
        );
    }
    let conn = t.handle_conn_opened(T0);
    let mut out = Vec::new();
    frame(&mut t, conn, &login("unknown", 1, SENDER), &mut out);
    assert!(out.contains(&FileAction::Close(conn)));
    assert_eq!(
        t.handle_transfer_request(T0, request(ONLINE, 0), "X".into())
            .result_code,
        1,
        "empty file"
    );
    let big = FileLimits {
        max_size: 5,
        ..FileLimits::default()
    };
    assert_eq!(
        FileTasks::new(big)
            .handle_transfer_request(T0, request(OFFLINE, 6), "Y".into())
            .result_code,
        1
    );
}

#[test]
fn a_connection_asked_to_close_is_heard_no_more() {
    let mut t = FileTasks::new(FileLimits::default());
    t.handle_transfer_request(T0, request(ONLINE, 10), "T".into());
    let conn = t.handle_conn_opened(T0);
    let mut out = Vec::new();
    frame(&mut t, conn, &login("T", 3, SENDER), &mut out);
    assert!(out.contains(&FileAction::Close(conn)));
    out.clear();
    frame(&mut t, conn, &login("T", 1, SENDER), &mut out);
    assert_eq!(out, vec![], "frames after Close are ignored");
    t.handle_conn_closed(T0, conn);
    let next = t.handle_conn_opened(T0);
    assert_ne!(next, conn, "ids are never reused");
    frame(&mut t, next, &login("T", 1, SENDER), &mut out);
    assert!(!out.contains(&FileAction::Close(next)), "the sender joins");
}

#[test]
fn offline_upload_then_download() {
    let mut t = FileTasks::new(FileLimits::default());
    t.handle_transfer_request(T0, request(OFFLINE, BLOCK + 10), "T".into());
    let (c1, c2) = (t.handle_conn_opened(T0), t.handle_conn_opened(T0));
    let mut out = Vec::new();
    frame(&mut t, c1, &login("T", 1, UPLOADER), &mut out);
    let ask: ImFilePullDataReq = sent(&out, c1)[1].decode_body().unwrap();
    assert_eq!((ask.offset, ask.data_size), (0, BLOCK));
    out.clear();
    let first = ImFilePullDataRsp {
        result_code: 0,
        task_id: "T".into(),
        user_id: 1,
        offset: 0,
        file_data: Bytes::from(vec![1; BLOCK as usize]),
    };
    frame(&mut t, c1, &Pdu::encode_message(&first, 0), &mut out);
    assert!(matches!(&out[0], FileAction::Store { offset: 0, .. }));
    let ask: ImFilePullDataReq = sent(&out, c1)[0].decode_body().unwrap();
    assert_eq!((ask.offset, ask.data_size), (BLOCK, 10));
    out.clear();
    let wrong = ImFilePullDataRsp {
        offset: 5,
        ..first.clone()
    };
    let mut bad = Vec::new();
    frame(
        &mut t.clone(),
        c1,
        &Pdu::encode_message(&wrong, 0),
        &mut bad,
    );
    assert!(
        bad.contains(&FileAction::Close(c1)),
        "blocks must come in order"
    );
    let last = ImFilePullDataRsp {
        offset: BLOCK,
        file_data: Bytes::from(vec![2; 10]),
        ..first
    };
    frame(&mut t, c1, &Pdu::encode_message(&last, 0), &mut out);
    let done: ImFileState = sent(&out, c1).last().unwrap().decode_body().unwrap();
    assert_eq!(done.state, DONE);
    out.clear();
    t.handle_conn_closed(T0, c1);
    drain(&mut t, &mut out);
    assert_eq!(t.len(), 1, "a finished offline file stays for the receiver");

    frame(&mut t, c2, &login("T", 2, DOWNLOADER), &mut out);
    out.clear();
    let pull = ImFilePullDataReq {
        task_id: "T".into(),
        user_id: 2,
        trans_mode: OFFLINE,
        offset: BLOCK,
        data_size: BLOCK,
    };
    frame(&mut t, c2, &Pdu::encode_message(&pull, 4), &mut out);
    assert_eq!(
        out,
        vec![FileAction::Load {
            conn: c2,
            task: "T".into(),
            offset: BLOCK,
            len: 10,
            seq: 4
        }]
    );
    out.clear();
    t.handle_loaded(T0, c2, "T", BLOCK, Bytes::from(vec![2; 10]), 4);
    drain(&mut t, &mut out);
    let done: ImFileState = sent(&out, c2).last().unwrap().decode_body().unwrap();
    assert_eq!(done.state, DONE, "after the last block");
}

#[test]
fn idle_tasks_and_old_offline_files_expire() {
    let limits = FileLimits {
        idle_ms: 1_000,
        offline_retention_ms: 10_000,
        ..FileLimits::default()
    };
    let mut t = FileTasks::new(limits);
    t.handle_transfer_request(T0, request(ONLINE, 10), "never-joined".into());
    t.handle_offline_restored(T0, "stored".into(), 1, 2, 10);
    assert_eq!(t.poll_timeout(), Some(1_000), "woken for the idle task");
    let mut out = Vec::new();
    t.handle_timeout(Now::from_ms(999));
    drain(&mut t, &mut out);
    assert_eq!(out, vec![], "not yet");
    t.handle_timeout(Now::from_ms(1_000));
    drain(&mut t, &mut out);
    assert_eq!(out, vec![FileAction::Forget("never-joined".into())], "Q-72");
    assert_eq!(t.poll_timeout(), Some(10_000), "then for the stored file");
    out.clear();
    t.handle_timeout(Now::from_ms(10_000));
    drain(&mut t, &mut out);
    assert_eq!(out, vec![FileAction::Forget("stored".into())]);
    assert_eq!(t.poll_timeout(), None, "nothing left to expire");
}

#[test]
fn a_task_being_worked_on_arms_no_timer() {
    let limits = FileLimits {
        idle_ms: 1_000,
        ..FileLimits::default()
    };
    let mut t = FileTasks::new(limits);
    t.handle_transfer_request(T0, request(ONLINE, 10), "T".into());
    let conn = t.handle_conn_opened(T0);
    t.handle_frame(Now::from_ms(500), conn, &login("T", 1, SENDER));
    assert_eq!(t.poll_timeout(), None, "its sender is connected");
    t.handle_conn_closed(Now::from_ms(700), conn);
    let mut out = Vec::new();
    drain(&mut t, &mut out);
    assert!(
        out.contains(&FileAction::Forget("T".into())),
        "an online task ends with its side"
    );
}

#[test]
fn cancel_is_told_to_the_peer() {
    let mut t = FileTasks::new(FileLimits::default());
    t.handle_transfer_request(T0, request(ONLINE, 10), "T".into());
    let (c1, c2) = (t.handle_conn_opened(T0), t.handle_conn_opened(T0));
    let mut out = Vec::new();
    frame(&mut t, c1, &login("T", 1, SENDER), &mut out);
    frame(&mut t, c2, &login("T", 2, RECEIVER), &mut out);
    out.clear();
    let refuse = ImFileState {
        state: 2,
        task_id: "T".into(),
        user_id: 2,
    };
    frame(&mut t, c2, &Pdu::encode_message(&refuse, 0), &mut out);
    assert_eq!(sent(&out, c1)[0].command(), CommandId::FILE_STATE);
    assert!(out.contains(&FileAction::Close(c2)));
}
