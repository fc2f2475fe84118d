#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::Duration;

use bytes::Bytes;
use teamtalk_core::proto::other::ImHeartBeat;
use teamtalk_core::proto::server::ImPushToUserReq;
use teamtalk_core::Pdu;
use tokio::sync::mpsc;

use super::*;
use crate::link::{self, Backoff, LinkConfig, LinkEvent, Listeners, SendError};
use crate::shutdown;

const WAIT: Duration = Duration::from_secs(5);

async fn next<Id: fmt::Debug>(events: &mut mpsc::Receiver<LinkEvent<Id>>) -> LinkEvent<Id> {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("an event in time")
        .expect("the link reports")
}

async fn opened(events: &mut mpsc::Receiver<LinkEvent<u8>>) -> Outbox {
    match next(events).await {
        LinkEvent::Opened(_, outbox) => outbox,
        other => panic!("expected Opened, got {other:?}"),
    }
}

async fn frame(events: &mut mpsc::Receiver<LinkEvent<u8>>) -> Pdu {
    match next(events).await {
        LinkEvent::Frame(_, pdu) => pdu,
        other => panic!("expected a frame, got {other:?}"),
    }
}

fn request(seq: u16, data: &str) -> Pdu {
    Pdu::encode_message(
        &ImPushToUserReq {
            flash: "hello".into(),
            data: data.into(),
            user_token_list: Vec::new(),
        },
        seq,
    )
}

/// Both ends served, with their events.
fn serve_pair(
    config: LinkConfig,
    events: usize,
) -> (
    mpsc::Receiver<LinkEvent<u8>>,
    mpsc::Receiver<LinkEvent<u8>>,
    shutdown::ShutdownTrigger,
) {
    let (a, b) = pair();
    let (trigger, stop) = shutdown::channel();
    let (a_tx, a_rx) = mpsc::channel(events);
    let (b_tx, b_rx) = mpsc::channel(events);
    tokio::spawn(link::serve(a, 1u8, config.clone(), a_tx, stop.clone()));
    tokio::spawn(link::serve(b, 2u8, config, b_tx, stop));
    (a_rx, b_rx, trigger)
}

#[tokio::test]
async fn frames_cross_in_order_both_ways_sharing_their_memory() {
    let (mut a, mut b, _stop) = serve_pair(LinkConfig::default(), 16);
    let (a_out, b_out) = (opened(&mut a).await, opened(&mut b).await);
    let big = Bytes::from(vec![7u8; 64 * 1024]);
    let big_frame = Pdu::new(teamtalk_core::CommandId::OTHER_PUSH_TO_USER_REQ, 9, big).to_bytes();
    for seq in 0..100u16 {
        a_out.send_pdu(&request(seq, "x")).unwrap();
        if seq == 50 {
            a_out.send(big_frame.clone()).unwrap();
        }
    }
    b_out.send_pdu(&request(1000, "back")).unwrap();
    for seq in 0..100u16 {
        let pdu = frame(&mut b).await;
        assert_eq!(pdu.seq_num(), seq);
        assert_eq!(pdu, request(seq, "x"));
        if seq == 50 {
            let pdu = frame(&mut b).await;
            assert_eq!(pdu.seq_num(), 9);
            // The body is the queued frame's own memory: nothing was copied on the way.
            assert_eq!(pdu.body.as_ptr(), big_frame[16..].as_ptr());
        }
    }
    assert_eq!(frame(&mut a).await, request(1000, "back"));
}

#[tokio::test]
async fn heartbeats_are_swallowed_unless_reported() {
    let (mut a, mut b, _stop) = serve_pair(LinkConfig::default(), 16);
    let a_out = opened(&mut a).await;
    let _b_out = opened(&mut b).await;
    a_out
        .send_pdu(&Pdu::encode_message(&ImHeartBeat {}, 0))
        .unwrap();
    a_out.send_pdu(&request(5, "after")).unwrap();
    assert_eq!(frame(&mut b).await.seq_num(), 5);

    let (mut a, mut b, _stop) = serve_pair(LinkConfig::client(), 16);
    let a_out = opened(&mut a).await;
    let _b_out = opened(&mut b).await;
    a_out
        .send_pdu(&Pdu::encode_message(&ImHeartBeat {}, 0))
        .unwrap();
    assert_eq!(
        frame(&mut b).await.command(),
        teamtalk_core::CommandId::OTHER_HEARTBEAT
    );
}

#[tokio::test]
async fn dropping_an_outbox_closes_both_ends_after_the_queued_frames() {
    let (mut a, mut b, _stop) = serve_pair(LinkConfig::default(), 16);
    let (a_out, _b_out) = (opened(&mut a).await, opened(&mut b).await);
    a_out.send_pdu(&request(1, "last words")).unwrap();
    drop(a_out);
    assert_eq!(frame(&mut b).await.seq_num(), 1);
    assert!(matches!(next(&mut b).await, LinkEvent::Closed(2)));
    assert!(matches!(next(&mut a).await, LinkEvent::Closed(1)));
}

#[tokio::test]
async fn an_owner_that_stops_reading_fills_the_senders_outbox_as_over_tcp() {
    let config = LinkConfig {
        outbox: 8,
        ..LinkConfig::default()
    };
    let (mut a, mut b, _stop) = serve_pair(config, 16);
    let (a_out, b_out) = (opened(&mut a).await, opened(&mut b).await);
    b_out.pause_reading(true);
    tokio::time::sleep(Duration::from_millis(50)).await;
    // What is in flight between the ends plus the sender's outbox, then Full.
    let mut sent = 0u16;
    let full = loop {
        match a_out.send_pdu(&request(sent, "x")) {
            Ok(()) => sent += 1,
            Err(error) => break error,
        }
        if sent > 1000 {
            panic!("a paused peer takes frames without bound");
        }
        if sent % 8 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    assert_eq!(full, SendError::Full);
    assert!(usize::from(sent) <= 8 + IN_FLIGHT + 8, "sent {sent}");
    // Resumed, every accepted frame arrives, in order.
    b_out.pause_reading(false);
    for seq in 0..sent {
        assert_eq!(frame(&mut b).await.seq_num(), seq);
    }
}

#[tokio::test]
async fn a_frame_over_the_receivers_limit_closes_the_link() {
    let (a, b) = pair();
    let (_trigger, stop) = shutdown::channel();
    let (a_tx, mut a_rx) = mpsc::channel(16);
    let (b_tx, mut b_rx) = mpsc::channel(16);
    tokio::spawn(link::serve(
        a,
        1u8,
        LinkConfig::default(),
        a_tx,
        stop.clone(),
    ));
    let small = LinkConfig {
        max_frame_len: 64,
        ..LinkConfig::default()
    };
    tokio::spawn(link::serve(b, 2u8, small, b_tx, stop));
    let a_out = opened(&mut a_rx).await;
    let _b_out = opened(&mut b_rx).await;
    a_out.send_pdu(&request(1, &"y".repeat(100))).unwrap();
    assert!(matches!(next(&mut b_rx).await, LinkEvent::Closed(2)));
    assert!(matches!(next(&mut a_rx).await, LinkEvent::Closed(1)));
}

#[tokio::test]
async fn shutdown_flushes_what_is_queued_then_closes() {
    let (mut a, mut b, stop) = serve_pair(LinkConfig::default(), 16);
    let (a_out, _b_out) = (opened(&mut a).await, opened(&mut b).await);
    for seq in 0..10 {
        a_out.send_pdu(&request(seq, "x")).unwrap();
    }
    stop.trigger();
    let mut seen = 0;
    loop {
        match next(&mut b).await {
            LinkEvent::Frame(_, pdu) => {
                assert_eq!(pdu.seq_num(), seen);
                seen += 1;
            }
            LinkEvent::Closed(_) => break,
            LinkEvent::Opened(..) => panic!("opened twice"),
        }
    }
    // b stops reading on shutdown too: whatever a queued before it saw the signal may or
    // may not have crossed, but in order and never twice.
    assert!(seen <= 10);
    assert!(matches!(next(&mut a).await, LinkEvent::Closed(1)));
}

#[tokio::test]
async fn a_listener_takes_in_process_links_and_dial_keeps_one_up() {
    let listener = Listeners::bind(&["127.0.0.1:0".parse().unwrap()])
        .await
        .unwrap();
    let connector = listener.connector();
    let (_trigger, stop) = shutdown::channel();
    let (up_tx, mut up) = mpsc::channel(16);
    tokio::spawn(link::dial(
        connector.clone(),
        1u8,
        LinkConfig::default(),
        Backoff::new(Duration::from_millis(20), 1),
        up_tx,
        stop.clone(),
    ));
    let (down_tx, mut down) = mpsc::channel(16);
    for round in 0..2u16 {
        let (accepted, peer) = tokio::time::timeout(WAIT, link::accept_link(&listener))
            .await
            .expect("the dialled link at the door");
        assert_eq!(peer, IN_PROCESS);
        tokio::spawn(link::serve(
            accepted.into_parts().0,
            2u8,
            LinkConfig::default(),
            down_tx.clone(),
            stop.clone(),
        ));
        let up_out = opened(&mut up).await;
        let down_out = opened(&mut down).await;
        up_out.send_pdu(&request(round, "up")).unwrap();
        assert_eq!(frame(&mut down).await.seq_num(), round);
        // The accepting side closes; the dialler hears it and dials again.
        drop(down_out);
        assert!(matches!(next(&mut down).await, LinkEvent::Closed(2)));
        assert!(matches!(next(&mut up).await, LinkEvent::Closed(1)));
        drop(up_out);
    }
    drop(listener);
    let refused = connector.connect().await.unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
}
