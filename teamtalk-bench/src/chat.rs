//! `chat`: P sender→receiver pairs at a total rate; delivered messages per second, latency
//! sender→receiver, and exact counts of lost (acknowledged but never delivered), duplicated
//! and out-of-order messages.
//!
//! A connection lost mid-run (a server restart, a refusal) is logged in again through the
//! target, discovery included, and the run goes on. Messages acknowledged but not seen live
//! (the receiver was logging in again when they were stored) are looked up in the
//! receiver's history after the run: only what is in neither counts as lost.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::stats::{CpuMeter, Latencies};
use crate::{round2, traffic, BenchError, Report, Target, Users};

/// Settings of a chat run.
#[derive(Clone, Debug)]
pub struct ChatOptions {
    /// The deployment.
    pub target: Target,
    /// Users: senders are the even-numbered ones, each sending to the next.
    pub users: Users,
    /// Total messages per second over all pairs.
    pub rate: f64,
    /// How long to send.
    pub duration: Duration,
    /// The server's per-connection send limit; pairs are added until each sends at most 90 %
    /// of it (the server counts per wall-clock second, so a sender exactly at the limit
    /// sometimes lands one message over it).
    pub per_conn_rate: f64,
    /// Wait for stragglers after the last send.
    pub drain: Duration,
}

/// Runs the chat mode.
pub async fn run(options: &ChatOptions) -> Result<Report, BenchError> {
    let pairs_needed = (options.rate / (options.per_conn_rate * 0.9))
        .ceil()
        .max(1.0) as u32;
    let pairs_available = options.users.count / 2;
    if pairs_needed > pairs_available {
        return Err(BenchError::Usage(format!(
            "{} msgs/s at {} per connection needs {pairs_needed} pairs = {} users; --count is {}",
            options.rate,
            options.per_conn_rate,
            pairs_needed * 2,
            options.users.count
        )));
    }
    let pairs = pairs_needed;
    let addr = options.target.resolve().await?;
    let mut sessions = crate::login_all(addr, &options.users, 0..pairs * 2, &[], 64).await?;
    let period = Duration::from_secs_f64(f64::from(pairs) / options.rate);
    let run = crate::conn::new_run_id();
    let epoch = Instant::now();
    let start = epoch + Duration::from_millis(200);
    let stop_at = start + options.duration;
    let (stop_tx, stop_rx) = watch::channel(false);
    let cpu = CpuMeter::start();
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    let mut sender_ids = Vec::new();
    let relogin = |i: u32| traffic::Relogin {
        target: options.target.clone(),
        name: options.users.name(i),
        password: options.users.password.clone(),
        client_type: options.users.client_type,
    };
    // Sessions come in user order: (sender, receiver), (sender, receiver), …
    let mut pair = 0u32;
    while !sessions.is_empty() {
        let sender = sessions.remove(0);
        let receiver = sessions.remove(0);
        let to = receiver.user_id;
        sender_ids.push(sender.user_id);
        // Stagger the pairs over one period so the load is smooth.
        let offset = period.mul_f64(f64::from(pair) / f64::from(pairs));
        senders.push(tokio::spawn(traffic::send(
            sender,
            Some(relogin(pair * 2)),
            run,
            pair,
            to,
            false,
            epoch,
            start + offset,
            period,
            stop_at,
            options.drain,
        )));
        receivers.push(tokio::spawn(traffic::receive(
            receiver,
            Some(relogin(pair * 2 + 1)),
            run,
            epoch,
            stop_rx.clone(),
        )));
        pair += 1;
    }
    let (sent, acked_by_pair, mut reconnects) = traffic::join_senders(senders).await?;
    let wall = epoch.elapsed().saturating_sub(Duration::from_millis(200));
    let cpu_pct = cpu.percent();
    let _ = stop_tx.send(true);
    let mut latencies = Latencies::default();
    let (mut delivered, mut duplicated, mut out_of_order, mut lost, mut acked) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut in_history = 0u64;
    for (pair, task) in receivers.into_iter().enumerate() {
        let received = task
            .await
            .map_err(|e| BenchError::Protocol(e.to_string()))??;
        reconnects += received.reconnects;
        let pair = u32::try_from(pair).unwrap_or(u32::MAX);
        let tracker = received.senders.get(&pair).cloned().unwrap_or_default();
        let acked_here = acked_by_pair
            .get(pair as usize)
            .cloned()
            .unwrap_or_default();
        acked += acked_here.len() as u64;
        let missing: Vec<u32> = acked_here
            .iter()
            .copied()
            .filter(|seq| !tracker.has(*seq))
            .collect();
        if !missing.is_empty() {
            let from = sender_ids.get(pair as usize).copied().unwrap_or(0);
            let at_most = u32::try_from(acked_here.len() * 2 + 100).unwrap_or(u32::MAX);
            let mut session = relogin(pair * 2 + 1).connect().await?;
            let stored = traffic::history(&mut session, run, pair, from, at_most).await?;
            for seq in &missing {
                match stored.get(seq) {
                    Some(&copies) => {
                        in_history += 1;
                        delivered += 1;
                        duplicated += u64::from(copies.saturating_sub(1));
                    }
                    None => lost += 1,
                }
            }
        }
        delivered += tracker.unique;
        duplicated += tracker.duplicated;
        out_of_order += tracker.out_of_order;
        latencies.merge(received.latencies);
    }
    let send_secs = options.duration.as_secs_f64().max(1e-9);
    let mut report = Report::new("chat");
    report.set("pairs", pairs);
    report.set("offered_per_s", round2(options.rate));
    report.set("duration_s", round2(send_secs));
    report.set("sent", sent);
    report.set("acked", acked);
    report.set("delivered", delivered);
    report.set("delivered_per_s", round2(delivered as f64 / send_secs));
    report.set("lost", lost);
    report.set("unacked", sent.saturating_sub(acked));
    report.set("duplicated", duplicated);
    report.set("out_of_order", out_of_order);
    report.set("delivered_from_history", in_history);
    report.set("reconnects", reconnects);
    report.set("p50_ms", round2(latencies.percentile_ms(50.0)));
    report.set("p95_ms", round2(latencies.percentile_ms(95.0)));
    report.set("p99_ms", round2(latencies.percentile_ms(99.0)));
    report.set("max_ms", round2(latencies.max_ms()));
    report.set("client_cpu_pct", round2(cpu_pct));
    report.set("wall_s", round2(wall.as_secs_f64()));
    Ok(report)
}

/// Settings of a ramp: `chat` runs at growing rates until the deployment saturates.
#[derive(Clone, Debug)]
pub struct RampOptions {
    /// The first step; its `rate` is the starting rate and `duration` each step's length.
    pub base: ChatOptions,
    /// Each step's rate is the previous one times this (> 1).
    pub factor: f64,
    /// A step whose p99 exceeds this (ms) counts as saturated.
    pub max_p99_ms: f64,
}

/// Open-loop ramp to saturation: steps of `chat` at growing rates. A step is sustained when
/// at least 95 % of the offered rate is delivered, nothing is lost or unacknowledged beyond
/// 1 %, and p99 stays under the bound. Reports every step and the highest sustained rate.
pub async fn ramp(options: &RampOptions) -> Result<Report, BenchError> {
    if options.factor.is_nan() || options.factor <= 1.0 {
        return Err(BenchError::Usage("--ramp-factor must be above 1".into()));
    }
    let mut steps = Vec::new();
    let mut best: Option<Report> = None;
    let mut rate = options.base.rate;
    loop {
        let step = ChatOptions {
            rate,
            ..options.base.clone()
        };
        let report = match run(&step).await {
            Ok(report) => report,
            Err(BenchError::Usage(message)) if !steps.is_empty() => {
                tracing::info!(%message, "not enough users for the next step; stopping");
                break;
            }
            Err(error) => return Err(error),
        };
        let delivered = report.number("delivered_per_s");
        let sent = report.number("sent").max(1.0);
        let sustained = delivered >= 0.95 * rate
            && report.number("lost") == 0.0
            && report.number("unacked") / sent <= 0.01
            && report.number("p99_ms") <= options.max_p99_ms;
        println!(
            "step {:>9.0} msgs/s: delivered {:>9.1}/s, p50 {:>8.2} ms, p99 {:>8.2} ms, lost {}, unacked {} — {}",
            rate,
            delivered,
            report.number("p50_ms"),
            report.number("p99_ms"),
            report.number("lost"),
            report.number("unacked"),
            if sustained { "sustained" } else { "saturated" }
        );
        steps.push(report.to_json());
        if !sustained {
            break;
        }
        best = Some(report);
        rate *= options.factor;
    }
    let mut out = Report::new("chat-ramp");
    match &best {
        Some(best) => {
            out.set("max_sustained_per_s", best.number("delivered_per_s"));
            for key in ["p50_ms", "p99_ms", "client_cpu_pct"] {
                out.set(&format!("at_max_{key}"), best.number(key));
            }
        }
        None => out.set("max_sustained_per_s", 0.0),
    }
    out.set(
        "lost",
        steps
            .iter()
            .map(|s| s["lost"].as_f64().unwrap_or(0.0))
            .sum::<f64>(),
    );
    out.set("steps", serde_json::Value::Array(steps));
    Ok(out)
}
