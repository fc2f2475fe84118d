//! Percentiles, delivery accounting and the tool's own CPU use.

use std::time::{Duration, Instant};

/// Latency samples in microseconds.
#[derive(Clone, Debug, Default)]
pub struct Latencies(Vec<u32>);

impl Latencies {
    /// Records one sample.
    pub fn record(&mut self, latency: Duration) {
        self.0
            .push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
    }

    /// Adds another set.
    pub fn merge(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }

    /// Samples recorded.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `p`-th percentile (0–100) in milliseconds; 0 without samples.
    pub fn percentile_ms(&mut self, p: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.sort_unstable();
        let rank = ((p / 100.0) * (self.0.len() - 1) as f64).round() as usize;
        let rank = rank.min(self.0.len() - 1);
        self.0.get(rank).map_or(0.0, |us| f64::from(*us) / 1000.0)
    }

    /// The largest sample in milliseconds.
    pub fn max_ms(&self) -> f64 {
        self.0
            .iter()
            .max()
            .map_or(0.0, |us| f64::from(*us) / 1000.0)
    }
}

/// What one receiver saw of one sender's numbered messages.
#[derive(Clone, Debug, Default)]
pub struct SeqTracker {
    seen: Vec<bool>,
    highest: Option<u32>,
    /// Messages received once.
    pub unique: u64,
    /// Messages received again.
    pub duplicated: u64,
    /// Messages received after a higher-numbered one.
    pub out_of_order: u64,
}

impl SeqTracker {
    /// Message `seq` arrived.
    pub fn receive(&mut self, seq: u32) {
        let index = seq as usize;
        if self.seen.len() <= index {
            self.seen.resize(index + 1, false);
        }
        if self.seen.get(index).copied().unwrap_or(false) {
            self.duplicated += 1;
            return;
        }
        if let Some(slot) = self.seen.get_mut(index) {
            *slot = true;
        }
        self.unique += 1;
        match self.highest {
            Some(high) if seq < high => self.out_of_order += 1,
            _ => self.highest = Some(seq),
        }
    }

    /// Whether `seq` arrived.
    pub fn has(&self, seq: u32) -> bool {
        self.seen.get(seq as usize).copied().unwrap_or(false)
    }
}

/// CPU time of this process so far (user + system), from `/proc/self/stat`.
pub fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // Clock ticks are 100 per second on Linux for every architecture we run on.
    Some(Duration::from_millis((utime + stime) * 10))
}

/// Measures the tool's CPU use over a period, in percent of one core.
pub struct CpuMeter {
    cpu: Option<Duration>,
    wall: Instant,
}

impl CpuMeter {
    /// Starts measuring.
    pub fn start() -> CpuMeter {
        CpuMeter {
            cpu: process_cpu(),
            wall: Instant::now(),
        }
    }

    /// Percent of one core used since the start (0 when unknown).
    pub fn percent(&self) -> f64 {
        let (Some(start), Some(now)) = (self.cpu, process_cpu()) else {
            return 0.0;
        };
        let wall = self.wall.elapsed().as_secs_f64();
        if wall <= 0.0 {
            return 0.0;
        }
        (now.saturating_sub(start).as_secs_f64() / wall) * 100.0
    }
}

/// The resident set size of process `pid` in bytes, from `/proc/PID/status`.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_counts_duplicates_and_reordering() {
        let mut t = SeqTracker::default();
        for seq in [0, 1, 3, 2, 3, 4] {
            t.receive(seq);
        }
        assert_eq!((t.unique, t.duplicated, t.out_of_order), (5, 1, 1));
        assert!(t.has(2) && !t.has(5));
    }

    #[test]
    fn percentiles() {
        let mut l = Latencies::default();
        for ms in 1..=100 {
            l.record(Duration::from_millis(ms));
        }
        assert_eq!(l.percentile_ms(50.0), 51.0);
        assert_eq!(l.percentile_ms(99.0), 99.0);
        assert_eq!(l.max_ms(), 100.0);
        assert!(process_cpu().is_some());
        assert!(rss_bytes(std::process::id()).unwrap() > 0);
    }
}
