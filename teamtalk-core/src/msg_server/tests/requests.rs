//! Requests routed through db_proxy and the request budgets.

use std::collections::VecDeque;

use super::*;

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
    out.extend(h.tick(budget::REQUEST_TIMEOUT_MS + 1));
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
