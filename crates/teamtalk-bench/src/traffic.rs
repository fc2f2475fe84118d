//! Senders and receivers of numbered messages: open-loop senders at a fixed rate, and
//! receivers that account for every message (latency, duplicates, order, loss).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use teamtalk_core::proto::message::{ImMsgData, ImMsgDataAck};
use teamtalk_core::proto::other::ImHeartBeat;
use teamtalk_core::{CommandId, Pdu};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::conn::{bench_body, parse_body, FrameReader, Session};
use crate::stats::{Latencies, SeqTracker};
use crate::BenchError;

/// How often a receiver sends a heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(30);

/// What a sender did.
#[derive(Debug, Default)]
pub struct Sent {
    /// Messages written.
    pub sent: u64,
    /// Message numbers the server acknowledged (stored).
    pub acked: Vec<u32>,
}

/// What a receiver saw, per sender index.
#[derive(Debug, Default)]
pub struct Received {
    /// Per sender index.
    pub senders: HashMap<u32, SeqTracker>,
    /// Send-to-receive latencies.
    pub latencies: Latencies,
}

/// Sends numbered messages from `session` to `to` (a user, or a group with `group`), one
/// every `period`, starting at `start`, until `stop_at`; then waits up to `drain` for the
/// remaining acknowledgements.
#[allow(clippy::too_many_arguments)]
pub async fn send(
    session: Session,
    run: u64,
    index: u32,
    to: u32,
    group: bool,
    epoch: Instant,
    start: Instant,
    period: Duration,
    stop_at: Instant,
    drain: Duration,
) -> Result<Sent, BenchError> {
    let Session {
        user_id,
        reader,
        mut writer,
    } = session;
    // pdu seq → message number of the message in flight with that seq.
    let in_flight: Arc<Mutex<Vec<u32>>> = Arc::new(Mutex::new(vec![0; 32_768]));
    let acks = tokio::spawn(collect_acks(reader, in_flight.clone()));
    let mut ticker = tokio::time::interval_at(start, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut seq: u32 = 0;
    let mut frame = bytes::BytesMut::new();
    while ticker.tick().await < stop_at {
        seq += 1;
        let pdu_seq = u16::try_from(seq % 32_766 + 1).unwrap_or(1);
        if let Some(slot) = in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(usize::from(pdu_seq))
        {
            *slot = seq;
        }
        let sent_ns = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let message = ImMsgData {
            from_user_id: user_id,
            to_session_id: to,
            msg_id: 0,
            create_time: 0,
            msg_type: if group { 17 } else { 1 },
            msg_data: bench_body(run, index, seq, sent_ns),
            attach_data: None,
        };
        frame.clear();
        Pdu::write_message(&message, pdu_seq, &mut frame);
        use tokio::io::AsyncWriteExt;
        writer
            .write_all(&frame)
            .await
            .map_err(|e| BenchError::Protocol(format!("sender {index}: {e}")))?;
    }
    tokio::time::sleep(drain).await;
    drop(writer); // closes the connection; the ack reader ends
    let acked = acks
        .await
        .map_err(|e| BenchError::Protocol(e.to_string()))?;
    Ok(Sent {
        sent: u64::from(seq),
        acked,
    })
}

async fn collect_acks(mut reader: FrameReader, in_flight: Arc<Mutex<Vec<u32>>>) -> Vec<u32> {
    let mut acked = Vec::new();
    while let Ok(Some(pdu)) = reader.next().await {
        if pdu.command() != CommandId::MSG_DATA_ACK || pdu.decode_body::<ImMsgDataAck>().is_err() {
            continue;
        }
        let number = in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(usize::from(pdu.seq_num()))
            .copied();
        if let Some(number) = number.filter(|n| *n != 0) {
            acked.push(number);
        }
    }
    acked
}

/// Waits for every sender: messages sent in all, and each sender's acknowledged numbers (in
/// sender order).
pub async fn join_senders(
    senders: Vec<tokio::task::JoinHandle<Result<Sent, BenchError>>>,
) -> Result<(u64, Vec<Vec<u32>>), BenchError> {
    let mut sent = 0u64;
    let mut acked = Vec::with_capacity(senders.len());
    for task in senders {
        let result = task
            .await
            .map_err(|e| BenchError::Protocol(e.to_string()))??;
        sent += result.sent;
        acked.push(result.acked);
    }
    Ok((sent, acked))
}

/// Receives numbered messages of run `run` on `session` until `stop` turns true.
pub async fn receive(
    session: Session,
    run: u64,
    epoch: Instant,
    mut stop: watch::Receiver<bool>,
) -> Result<Received, BenchError> {
    let Session {
        mut reader,
        mut writer,
        ..
    } = session;
    let mut received = Received::default();
    // Like real clients, receivers say they are alive (servers drop silent mobile clients
    // after 300 s, PC clients after 120 s).
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.tick().await;
    loop {
        let frame = tokio::select! {
            frame = reader.next() => frame?,
            () = stopped(&mut stop) => break,
            _ = heartbeat.tick() => {
                use tokio::io::AsyncWriteExt;
                let beat = Pdu::encode_message(&ImHeartBeat {}, 0).to_bytes();
                writer.write_all(&beat).await.map_err(|e| BenchError::Protocol(format!("heartbeat: {e}")))?;
                continue;
            }
        };
        let Some(pdu) = frame else { break };
        if pdu.command() != CommandId::MSG_DATA {
            continue;
        }
        let Ok(data) = pdu.decode_body::<ImMsgData>() else {
            continue;
        };
        let Some((sender, seq, sent_ns)) = parse_body(run, &data.msg_data) else {
            continue;
        };
        let now_ns = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        received
            .latencies
            .record(Duration::from_nanos(now_ns.saturating_sub(sent_ns)));
        received.senders.entry(sender).or_default().receive(seq);
    }
    drop(writer);
    Ok(received)
}

/// Resolves once `stop` is true (the borrow of the value ends inside).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}
