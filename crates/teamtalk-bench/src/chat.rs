//! `chat`: P sender→receiver pairs at a total rate; delivered messages per second, latency
//! sender→receiver, and exact counts of lost (acknowledged but never delivered), duplicated
//! and out-of-order messages.

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
    // Sessions come in user order: (sender, receiver), (sender, receiver), …
    let mut pair = 0u32;
    while !sessions.is_empty() {
        let sender = sessions.remove(0);
        let receiver = sessions.remove(0);
        let to = receiver.user_id;
        // Stagger the pairs over one period so the load is smooth.
        let offset = period.mul_f64(f64::from(pair) / f64::from(pairs));
        senders.push(tokio::spawn(traffic::send(
            sender,
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
            run,
            epoch,
            stop_rx.clone(),
        )));
        pair += 1;
    }
    let mut sent = 0u64;
    let mut acked_by_pair = Vec::new();
    for task in senders {
        let result = task
            .await
            .map_err(|e| BenchError::Protocol(e.to_string()))??;
        sent += result.sent;
        acked_by_pair.push(result.acked);
    }
    let wall = epoch.elapsed().saturating_sub(Duration::from_millis(200));
    let cpu_pct = cpu.percent();
    let _ = stop_tx.send(true);
    let mut latencies = Latencies::default();
    let (mut delivered, mut duplicated, mut out_of_order, mut lost, mut acked) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    for (pair, task) in receivers.into_iter().enumerate() {
        let received = task
            .await
            .map_err(|e| BenchError::Protocol(e.to_string()))??;
        let pair = u32::try_from(pair).unwrap_or(u32::MAX);
        let tracker = received.senders.get(&pair).cloned().unwrap_or_default();
        let acked_here = acked_by_pair
            .get(pair as usize)
            .cloned()
            .unwrap_or_default();
        acked += acked_here.len() as u64;
        lost += acked_here.iter().filter(|seq| !tracker.has(**seq)).count() as u64;
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
    report.set("p50_ms", round2(latencies.percentile_ms(50.0)));
    report.set("p95_ms", round2(latencies.percentile_ms(95.0)));
    report.set("p99_ms", round2(latencies.percentile_ms(99.0)));
    report.set("max_ms", round2(latencies.max_ms()));
    report.set("client_cpu_pct", round2(cpu_pct));
    report.set("wall_s", round2(wall.as_secs_f64()));
    Ok(report)
}
