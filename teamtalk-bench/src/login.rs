//! `login`: N logins, C at a time, each a fresh connection (through the login_server's
//! discovery when the target is a URL); logins per second and latency percentiles.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::stats::{CpuMeter, Latencies};
use crate::{conn, round2, BenchError, Report, Target, Users};

/// Settings of a login run.
#[derive(Clone, Debug)]
pub struct LoginOptions {
    /// The deployment (a URL includes discovery in every login).
    pub target: Target,
    /// Users, used in turn.
    pub users: Users,
    /// Logins in all.
    pub logins: u32,
    /// Logins at the same time.
    pub parallel: u32,
}

/// Runs the login mode.
pub async fn run(options: &LoginOptions) -> Result<Report, BenchError> {
    if options.users.count == 0 || options.logins == 0 {
        return Err(BenchError::Usage(
            "need --count ≥ 1 and --logins ≥ 1".into(),
        ));
    }
    let next = Arc::new(AtomicU32::new(0));
    let cpu = CpuMeter::start();
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..options.parallel.max(1) {
        let (next, options) = (next.clone(), options.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Latencies::default();
            let mut failures = 0u32;
            let mut first_error = None;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= options.logins {
                    break;
                }
                let name = options.users.name(n % options.users.count);
                let t0 = Instant::now();
                let result = async {
                    let addr = options.target.resolve().await?;
                    conn::login(
                        addr,
                        None,
                        &name,
                        &options.users.password,
                        options.users.client_type,
                    )
                    .await
                }
                .await;
                match result {
                    Ok(session) => {
                        latencies.record(t0.elapsed());
                        drop(session);
                    }
                    Err(error) => {
                        failures += 1;
                        first_error.get_or_insert(error.to_string());
                    }
                }
            }
            (latencies, failures, first_error)
        }));
    }
    let mut latencies = Latencies::default();
    let mut failures = 0;
    let mut first_error = None;
    for worker in workers {
        let (l, f, e) = worker
            .await
            .map_err(|e| BenchError::Protocol(e.to_string()))?;
        latencies.merge(l);
        failures += f;
        if first_error.is_none() {
            first_error = e;
        }
    }
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    let mut report = Report::new("login");
    report.set("logins", latencies.len() as u64);
    report.set("parallel", options.parallel);
    report.set("failures", failures);
    report.set("logins_per_s", round2(latencies.len() as f64 / secs));
    report.set("p50_ms", round2(latencies.percentile_ms(50.0)));
    report.set("p95_ms", round2(latencies.percentile_ms(95.0)));
    report.set("p99_ms", round2(latencies.percentile_ms(99.0)));
    report.set("client_cpu_pct", round2(cpu.percent()));
    if let Some(error) = first_error {
        report.set("first_error", error);
    }
    Ok(report)
}
