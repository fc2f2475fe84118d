//! `idle`: N logged-in connections held open (spread over several 127.0.0.x source
//! addresses), and the server's RSS growth per connection read from `/proc/PID/status`.

use std::net::IpAddr;
use std::time::Duration;

use crate::stats::rss_bytes;
use crate::{round2, BenchError, Report, Target, Users};

/// Settings of an idle run.
#[derive(Clone, Debug)]
pub struct IdleOptions {
    /// The deployment.
    pub target: Target,
    /// Users: one connection each.
    pub users: Users,
    /// The server process whose memory is measured (the msg_server, or `teamtalk serve`).
    pub server_pid: Option<u32>,
    /// Source addresses to spread the connections over.
    pub sources: Vec<IpAddr>,
    /// How long to hold the connections after the last login.
    pub hold: Duration,
}

/// Runs the idle mode.
pub async fn run(options: &IdleOptions) -> Result<Report, BenchError> {
    let addr = options.target.resolve().await?;
    let before = options.server_pid.and_then(rss_bytes);
    let sessions = crate::login_all(
        addr,
        &options.users,
        0..options.users.count,
        &options.sources,
        256,
    )
    .await?;
    tokio::time::sleep(options.hold).await;
    let after = options.server_pid.and_then(rss_bytes);
    let connections = sessions.len() as u64;
    let mut report = Report::new("idle");
    report.set("connections", connections);
    if let (Some(before), Some(after)) = (before, after) {
        report.set("server_rss_before_bytes", before);
        report.set("server_rss_after_bytes", after);
        let per = after.saturating_sub(before) as f64 / connections.max(1) as f64;
        report.set("server_rss_per_connection_bytes", round2(per));
    }
    if let Some(own) = rss_bytes(std::process::id()) {
        report.set("client_rss_bytes", own);
    }
    drop(sessions);
    Ok(report)
}
