//! `group`: one group of M members, S of them posting; fan-out deliveries per second and
//! latency from a post to each member's copy.

use std::time::Duration;

use teamtalk_core::proto::group::{ImGroupCreateReq, ImGroupCreateRsp};
use teamtalk_core::{CommandId, Pdu};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::stats::{CpuMeter, Latencies};
use crate::{round2, traffic, BenchError, Report, Target, Users};

/// Settings of a group run.
#[derive(Clone, Debug)]
pub struct GroupOptions {
    /// The deployment.
    pub target: Target,
    /// Members are the first `members` users; the first `senders` of them post.
    pub users: Users,
    /// Group size.
    pub members: u32,
    /// Members that post.
    pub senders: u32,
    /// Posts per second over all senders.
    pub rate: f64,
    /// How long to post.
    pub duration: Duration,
    /// Wait for stragglers after the last post.
    pub drain: Duration,
}

/// Runs the group mode.
pub async fn run(options: &GroupOptions) -> Result<Report, BenchError> {
    if options.members < 2
        || options.members > options.users.count
        || options.senders == 0
        || options.senders > options.members
    {
        return Err(BenchError::Usage(format!(
            "need 2 ≤ --members ≤ --count ({}) and 1 ≤ --senders ≤ --members",
            options.users.count
        )));
    }
    let addr = options.target.resolve().await?;
    let mut sessions = crate::login_all(addr, &options.users, 0..options.members, &[], 64).await?;
    let members: Vec<u32> = sessions.iter().map(|s| s.user_id).collect();
    let group_id = create_group(
        sessions
            .first_mut()
            .ok_or_else(|| BenchError::Usage("no members".into()))?,
        &members,
    )
    .await?;

    // Posters get a second connection of their own (PC and phone may coexist), so their
    // receiving connection sees every post including their own device copy.
    let other_class = if options.users.client_type & 0x10 != 0 {
        1
    } else {
        18
    };
    let mut posters = Vec::new();
    for i in 0..options.senders {
        let name = options.users.name(i);
        let mut session =
            crate::conn::login(addr, None, &name, &options.users.password, other_class).await?;
        session.user_id = members.get(i as usize).copied().unwrap_or(session.user_id);
        posters.push(session);
    }
    let period = Duration::from_secs_f64(f64::from(options.senders) / options.rate);
    let run = crate::conn::new_run_id();
    let epoch = Instant::now();
    let start = epoch + Duration::from_millis(200);
    let stop_at = start + options.duration;
    let (stop_tx, stop_rx) = watch::channel(false);
    let cpu = CpuMeter::start();
    let receivers: Vec<_> = sessions
        .into_iter()
        .map(|s| tokio::spawn(traffic::receive(s, None, run, epoch, stop_rx.clone())))
        .collect();
    let mut senders = Vec::new();
    for (i, poster) in posters.into_iter().enumerate() {
        let i = u32::try_from(i).unwrap_or(u32::MAX);
        let offset = period.mul_f64(f64::from(i) / f64::from(options.senders));
        senders.push(tokio::spawn(traffic::send(
            poster,
            None,
            run,
            i,
            group_id,
            true,
            epoch,
            start + offset,
            period,
            stop_at,
            options.drain,
        )));
    }
    let (sent, acked, _) = traffic::join_senders(senders).await?;
    let cpu_pct = cpu.percent();
    let _ = stop_tx.send(true);
    let mut latencies = Latencies::default();
    let (mut deliveries, mut lost, mut duplicated, mut out_of_order) = (0u64, 0u64, 0u64, 0u64);
    for task in receivers {
        let received = task
            .await
            .map_err(|e| BenchError::Protocol(e.to_string()))??;
        for (sender, acked_seqs) in acked.iter().enumerate() {
            let tracker = received
                .senders
                .get(&u32::try_from(sender).unwrap_or(u32::MAX))
                .cloned()
                .unwrap_or_default();
            lost += acked_seqs.iter().filter(|seq| !tracker.has(**seq)).count() as u64;
            deliveries += tracker.unique;
            duplicated += tracker.duplicated;
            out_of_order += tracker.out_of_order;
        }
        latencies.merge(received.latencies);
    }
    let acked_total: u64 = acked.iter().map(|a| a.len() as u64).sum();
    let secs = options.duration.as_secs_f64().max(1e-9);
    let mut report = Report::new("group");
    report.set("members", options.members);
    report.set("senders", options.senders);
    report.set("offered_posts_per_s", round2(options.rate));
    report.set("sent", sent);
    report.set("acked", acked_total);
    report.set("deliveries", deliveries);
    report.set(
        "expected_deliveries",
        acked_total * u64::from(options.members),
    );
    report.set("deliveries_per_s", round2(deliveries as f64 / secs));
    report.set("lost", lost);
    report.set("unacked", sent.saturating_sub(acked_total));
    report.set("duplicated", duplicated);
    report.set("out_of_order", out_of_order);
    report.set("p50_ms", round2(latencies.percentile_ms(50.0)));
    report.set("p99_ms", round2(latencies.percentile_ms(99.0)));
    report.set("max_ms", round2(latencies.max_ms()));
    report.set("client_cpu_pct", round2(cpu_pct));
    Ok(report)
}

async fn create_group(
    session: &mut crate::conn::Session,
    members: &[u32],
) -> Result<u32, BenchError> {
    let request = ImGroupCreateReq {
        user_id: session.user_id,
        group_type: 2,
        group_name: "bench".to_owned(),
        group_avatar: String::new(),
        member_id_list: members.to_vec(),
        attach_data: None,
    };
    session
        .writer
        .write_all(&Pdu::encode_message(&request, 2).to_bytes())
        .await
        .map_err(|e| BenchError::Setup(e.to_string()))?;
    let answer = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match session.reader.next().await? {
                None => return Err(BenchError::Setup("closed while creating the group".into())),
                Some(pdu) if pdu.command() == CommandId::GROUP_CREATE_RESPONSE => {
                    return pdu
                        .decode_body::<ImGroupCreateRsp>()
                        .map_err(|e| BenchError::Protocol(e.to_string()));
                }
                Some(_) => {}
            }
        }
    })
    .await
    .map_err(|_| BenchError::Setup("no answer to the group creation".into()))??;
    match (answer.result_code, answer.group_id) {
        (0, Some(id)) => Ok(id),
        (code, _) => Err(BenchError::Setup(format!("group creation failed ({code})"))),
    }
}
