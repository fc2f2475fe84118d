//! `flood`: N clients each send 50 `CID_BUDDY_LIST_ALL_USER_REQUEST` every half second and
//! read the (large) answers, while probe users log in and exchange messages; reports the
//! probes' login and message latency, i.e. whether heavy clients slow anybody but
//! themselves (docs/benchmarks.md, "Heavy clients").

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use teamtalk_core::proto::{base_define as bd, buddy, message};
use teamtalk_core::{CommandId, Pdu};

use crate::stats::Latencies;
use crate::{conn, round2, BenchError, Report, Target, Users};

/// Settings of a flood run.
#[derive(Clone, Debug)]
pub struct FloodOptions {
    /// The deployment.
    pub target: Target,
    /// Users: the first `flooders` flood, the next two probe.
    pub users: Users,
    /// Flooding clients.
    pub flooders: u32,
    /// How long the probes run.
    pub duration: Duration,
}

/// Runs the flood mode.
pub async fn run(options: &FloodOptions) -> Result<Report, BenchError> {
    if options.users.count < options.flooders + 2 {
        return Err(BenchError::Usage(
            "need --count ≥ --flooders + 2 (two probe users)".into(),
        ));
    }
    let addr = options.target.resolve().await?;
    let (u, pw, ct) = (
        &options.users,
        &options.users.password,
        options.users.client_type,
    );
    let mut floods = Vec::new();
    let answers = Arc::new(AtomicU64::new(0));
    for i in 0..options.flooders {
        let session = conn::login(addr, None, &u.name(i), pw, ct).await?;
        floods.push(tokio::spawn(flood(session, answers.clone())));
    }
    let flood_started = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (alice, bob) = (u.name(options.flooders), u.name(options.flooders + 1));
    let mut logins = Latencies::default();
    let mut messages = Latencies::default();
    let mut failures = 0u32;
    let mut first_error = None;
    let end = Instant::now() + options.duration;
    let mut seq = 0u16;
    while Instant::now() < end {
        seq = seq.wrapping_add(1).max(2);
        let probe = async {
            let t0 = Instant::now();
            let mut a = conn::login(addr, None, &alice, pw, ct).await?;
            logins.record(t0.elapsed());
            let t0 = Instant::now();
            let mut b = conn::login(addr, None, &bob, pw, ct).await?;
            logins.record(t0.elapsed());
            let text = message::ImMsgData {
                from_user_id: 0,
                to_session_id: b.user_id,
                msg_id: 0,
                create_time: 0,
                msg_type: bd::MsgType::SingleText as i32,
                msg_data: Bytes::from_static(b"flood probe"),
                attach_data: None,
            };
            let t0 = Instant::now();
            a.send(&Pdu::encode_message(&text, seq).to_bytes()).await?;
            let got = tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    match b.reader.next().await? {
                        None => return Err(BenchError::Protocol("probe closed".into())),
                        Some(pdu) if pdu.command() == CommandId::MSG_DATA => return Ok(()),
                        Some(_) => {}
                    }
                }
            })
            .await;
            match got {
                Ok(Ok(())) => messages.record(t0.elapsed()),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(BenchError::Protocol("message not delivered in 10 s".into())),
            }
            Ok::<(), BenchError>(())
        };
        if let Err(error) = probe.await {
            failures += 1;
            first_error.get_or_insert(error.to_string());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answers = answers.load(Ordering::Relaxed);
    let flood_secs = flood_started.elapsed().as_secs_f64().max(1e-9);
    for f in floods {
        f.abort();
    }
    let mut report = Report::new("flood");
    report.set("flooders", options.flooders);
    report.set("probe_logins", logins.len() as u64);
    report.set("probe_messages", messages.len() as u64);
    report.set("probe_failures", failures);
    report.set("login_p50_ms", round2(logins.percentile_ms(50.0)));
    report.set("login_p99_ms", round2(logins.percentile_ms(99.0)));
    report.set("msg_p50_ms", round2(messages.percentile_ms(50.0)));
    report.set("msg_p99_ms", round2(messages.percentile_ms(99.0)));
    report.set("flood_answers_per_s", round2(answers as f64 / flood_secs));
    if let Some(error) = first_error {
        report.set("first_error", error);
    }
    Ok(report)
}

/// 50 ALL_USER requests every 500 ms, answers read as they come and counted in `answers`.
async fn flood(session: conn::Session, answers: Arc<AtomicU64>) {
    let conn::Session {
        mut reader,
        mut writer,
        ..
    } = session;
    let request = buddy::ImAllUserReq {
        user_id: 0,
        latest_update_time: 0,
        attach_data: None,
    };
    let frame = Pdu::encode_message(&request, 1).to_bytes();
    let burst: Vec<u8> = frame
        .iter()
        .copied()
        .cycle()
        .take(frame.len() * 50)
        .collect();
    let reading = tokio::spawn(async move {
        while let Ok(Some(pdu)) = reader.next().await {
            if pdu.command() == CommandId::BUDDY_LIST_ALL_USER_RESPONSE {
                answers.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    loop {
        use tokio::io::AsyncWriteExt;
        if writer.write_all(&burst).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    reading.abort();
}
