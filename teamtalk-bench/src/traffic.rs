//! Senders and receivers of numbered messages: open-loop senders at a fixed rate, and
//! receivers that account for every message (latency, duplicates, order, loss).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use teamtalk_core::proto::message::{ImGetMsgListReq, ImGetMsgListRsp, ImMsgData, ImMsgDataAck};
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
    /// Times the connection was lost and logged in again.
    pub reconnects: u64,
}

/// What a receiver saw, per sender index.
#[derive(Debug, Default)]
pub struct Received {
    /// Per sender index.
    pub senders: HashMap<u32, SeqTracker>,
    /// Send-to-receive latencies.
    pub latencies: Latencies,
    /// Times the connection was lost and logged in again.
    pub reconnects: u64,
}

/// How a sender or receiver logs in again after its connection is lost (a server restart
/// or a refusal): through the target (discovery per attempt for a login_server).
#[derive(Clone, Debug)]
pub struct Relogin {
    /// The deployment.
    pub target: crate::Target,
    /// The user's name.
    pub name: String,
    /// The user's password.
    pub password: String,
    /// The client type.
    pub client_type: i32,
}

impl Relogin {
    /// One attempt: discovery (if any), connect, log in.
    pub async fn connect(&self) -> Result<Session, BenchError> {
        let attempt = async {
            let addr = self.target.resolve().await?;
            crate::conn::login(addr, None, &self.name, &self.password, self.client_type).await
        };
        tokio::time::timeout(Duration::from_secs(5), attempt)
            .await
            .map_err(|_| BenchError::Setup(format!("{}: login timed out", self.name)))?
    }
}

/// Sends numbered messages from `session` to `to` (a user, or a group with `group`), one
/// every `period`, starting at `start`, until `stop_at`; then waits up to `drain` for the
/// remaining acknowledgements. With `relogin`, a lost connection is logged in again and the
/// run goes on (the ticks while it is down send nothing); without, it ends the run.
#[allow(clippy::too_many_arguments)]
pub async fn send(
    session: Session,
    relogin: Option<Relogin>,
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
        writer,
    } = session;
    // pdu seq → message number of the message in flight with that seq (shared by the
    // connections of the run: acks arrive on the connection that sent).
    let in_flight: Arc<Mutex<Vec<u32>>> = Arc::new(Mutex::new(vec![0; 32_768]));
    let acked: Arc<Mutex<Vec<u32>>> = Arc::default();
    let mut ack_tasks = Vec::new();
    let mut closed = Arc::new(AtomicBool::new(false));
    ack_tasks.push(tokio::spawn(collect_acks(
        reader,
        in_flight.clone(),
        acked.clone(),
        closed.clone(),
    )));
    let mut writer = Some(writer);
    let mut reconnects = 0u64;
    let mut ticker = tokio::time::interval_at(start, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut seq: u32 = 0;
    let mut frame = bytes::BytesMut::new();
    while ticker.tick().await < stop_at {
        if closed.load(Ordering::Relaxed) {
            writer = None;
        }
        if writer.is_none() {
            let Some(relogin) = &relogin else {
                return Err(BenchError::Protocol(format!(
                    "sender {index}: connection lost"
                )));
            };
            match relogin.connect().await {
                Ok(session) => {
                    reconnects += 1;
                    closed = Arc::new(AtomicBool::new(false));
                    ack_tasks.push(tokio::spawn(collect_acks(
                        session.reader,
                        in_flight.clone(),
                        acked.clone(),
                        closed.clone(),
                    )));
                    writer = Some(session.writer);
                    ticker.reset();
                }
                Err(error) => {
                    tracing::debug!(index, %error, "sender: login again failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let Some(w) = writer.as_mut() else {
            continue;
        };
        let next = seq + 1;
        let pdu_seq = u16::try_from(next % 32_766 + 1).unwrap_or(1);
        if let Some(slot) = in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(usize::from(pdu_seq))
        {
            *slot = next;
        }
        let sent_ns = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let message = ImMsgData {
            from_user_id: user_id,
            to_session_id: to,
            msg_id: 0,
            create_time: 0,
            msg_type: if group { 17 } else { 1 },
            msg_data: bench_body(run, index, next, sent_ns),
            attach_data: None,
        };
        frame.clear();
        Pdu::write_message(&message, pdu_seq, &mut frame);
        use tokio::io::AsyncWriteExt;
        match w.write_all(&frame).await {
            Ok(()) => seq = next,
            Err(error) => {
                if relogin.is_none() {
                    return Err(BenchError::Protocol(format!("sender {index}: {error}")));
                }
                tracing::debug!(index, %error, "sender: connection lost");
                writer = None;
            }
        }
    }
    tokio::time::sleep(drain).await;
    drop(writer); // closes the connection; the ack reader ends
    for task in ack_tasks {
        task.await
            .map_err(|e| BenchError::Protocol(e.to_string()))?;
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap_or_else(PoisonError::into_inner));
    Ok(Sent {
        sent: u64::from(seq),
        acked,
        reconnects,
    })
}

async fn collect_acks(
    mut reader: FrameReader,
    in_flight: Arc<Mutex<Vec<u32>>>,
    acked: Arc<Mutex<Vec<u32>>>,
    closed: Arc<AtomicBool>,
) {
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
            acked
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(number);
        }
    }
    closed.store(true, Ordering::Relaxed);
}

/// Waits for every sender: messages sent in all, and each sender's acknowledged numbers (in
/// sender order), and the reconnections of all.
pub async fn join_senders(
    senders: Vec<tokio::task::JoinHandle<Result<Sent, BenchError>>>,
) -> Result<(u64, Vec<Vec<u32>>, u64), BenchError> {
    let mut sent = 0u64;
    let mut reconnects = 0u64;
    let mut acked = Vec::with_capacity(senders.len());
    for task in senders {
        let result = task
            .await
            .map_err(|e| BenchError::Protocol(e.to_string()))??;
        sent += result.sent;
        reconnects += result.reconnects;
        acked.push(result.acked);
    }
    Ok((sent, acked, reconnects))
}

/// Receives numbered messages of run `run` on `session` until `stop` turns true. With
/// `relogin`, a lost connection is logged in again (messages stored meanwhile are not
/// delivered live; the caller looks for them in the history).
pub async fn receive(
    session: Session,
    relogin: Option<Relogin>,
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
                // A failed write shows up as the end of the reader.
                let _ = writer.write_all(&beat).await;
                continue;
            }
        };
        let Some(pdu) = frame else {
            let Some(relogin) = &relogin else { break };
            // Logs in again until it works or the run stops.
            loop {
                if *stop.borrow() {
                    drop(writer);
                    return Ok(received);
                }
                match relogin.connect().await {
                    Ok(session) => {
                        received.reconnects += 1;
                        reader = session.reader;
                        writer = session.writer;
                        break;
                    }
                    Err(error) => {
                        tracing::debug!(%error, "receiver: login again failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            continue;
        };
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

/// The numbers of run `run`'s messages from sender index `index` (user `from`) in the
/// history of `session`'s conversation with `from`, each with how often it is stored: the
/// newest `at_most` messages, read page by page (a server answers at most one page, 100
/// messages in ours, per request).
pub async fn history(
    session: &mut Session,
    run: u64,
    index: u32,
    from: u32,
    at_most: u32,
) -> Result<HashMap<u32, u32>, BenchError> {
    const PAGE: u32 = 100;
    let mut found = HashMap::new();
    let mut begin = 0; // 0: from the newest
    let mut read = 0u32;
    while read < at_most {
        let page = history_page(session, from, begin, PAGE.min(at_most - read)).await?;
        let Some(oldest) = page.iter().map(|m| m.msg_id).min() else {
            break;
        };
        read = read.saturating_add(u32::try_from(page.len()).unwrap_or(u32::MAX));
        for message in page {
            if let Some((sender, seq, _)) = parse_body(run, &message.msg_data) {
                if sender == index {
                    *found.entry(seq).or_insert(0) += 1;
                }
            }
        }
        if oldest <= 1 {
            break;
        }
        begin = oldest - 1;
    }
    Ok(found)
}

/// One history page of the conversation with `from`: messages with id ≤ `begin` (0: from the
/// newest), at most `count`.
async fn history_page(
    session: &mut Session,
    from: u32,
    begin: u32,
    count: u32,
) -> Result<Vec<teamtalk_core::proto::base_define::MsgInfo>, BenchError> {
    let request = ImGetMsgListReq {
        user_id: session.user_id,
        session_type: 1,
        session_id: from,
        msg_id_begin: begin,
        msg_cnt: count,
        attach_data: None,
    };
    session
        .send(&Pdu::encode_message(&request, 77).to_bytes())
        .await?;
    let answer = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match session.reader.next().await? {
                None => return Err(BenchError::Protocol("closed during history".into())),
                Some(pdu) if pdu.command() == CommandId::MSG_LIST_RESPONSE => {
                    return pdu
                        .decode_body::<ImGetMsgListRsp>()
                        .map_err(|e| BenchError::Protocol(e.to_string()));
                }
                Some(_) => {}
            }
        }
    })
    .await
    .map_err(|_| BenchError::Protocol("no history answer".into()))??;
    Ok(answer.msg_list)
}

/// Resolves once `stop` is true (the borrow of the value ends inside).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}
