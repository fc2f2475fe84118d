//! The login brute-force rule (spec/storage.md §4, quirks.md Q-15).
//!
//! Failed logins are remembered per user name with their time. Before a login is validated,
//! failures older than 30 minutes are forgotten; when more than 10 remain, the login is refused
//! with result code 6 without checking the password (and that refusal is not counted). A
//! successful login forgets the name. Unlike the original, memory is bounded: at most
//! [`LoginGuard::DEFAULT_MAX_NAMES`] names are tracked, and the stalest ones are dropped first.

use std::collections::{HashMap, VecDeque};

use crate::domain::Timestamp;

/// Failures remembered for this long (seconds).
pub const FAILURE_WINDOW_SECS: u32 = 30 * 60;

/// A login is refused when more than this many failures lie within the window.
pub const MAX_FAILURES: usize = 10;

/// Per-name failure memory.
#[derive(Debug)]
pub struct LoginGuard {
    failures: HashMap<String, VecDeque<Timestamp>>,
    max_names: usize,
}

impl LoginGuard {
    /// Names tracked by [`LoginGuard::default`].
    pub const DEFAULT_MAX_NAMES: usize = 100_000;

    /// A guard tracking at most `max_names` user names.
    pub fn new(max_names: usize) -> LoginGuard {
        LoginGuard {
            failures: HashMap::new(),
            max_names: max_names.max(1),
        }
    }

    /// Whether a login for `name` must be refused now (more than [`MAX_FAILURES`] failures in
    /// the last [`FAILURE_WINDOW_SECS`]).
    pub fn is_blocked(&mut self, name: &str, now: Timestamp) -> bool {
        let Some(times) = self.failures.get_mut(name) else {
            return false;
        };
        prune(times, now);
        if times.is_empty() {
            self.failures.remove(name);
            return false;
        }
        times.len() > MAX_FAILURES
    }

    /// Records a failed login of `name` at `now`.
    pub fn record_failure(&mut self, name: &str, now: Timestamp) {
        if !self.failures.contains_key(name) && self.failures.len() >= self.max_names {
            self.evict(now);
        }
        let times = self.failures.entry(name.to_owned()).or_default();
        times.push_back(now);
        // Only "more than MAX_FAILURES" matters: older entries beyond that can go.
        while times.len() > MAX_FAILURES + 1 {
            times.pop_front();
        }
    }

    /// Forgets the failures of `name` (after a successful login).
    pub fn record_success(&mut self, name: &str) {
        self.failures.remove(name);
    }

    /// Number of names currently tracked.
    pub fn tracked_names(&self) -> usize {
        self.failures.len()
    }

    /// Makes room for one more name: drops expired entries, then the name whose latest
    /// failure is the oldest.
    fn evict(&mut self, now: Timestamp) {
        self.failures.retain(|_, times| {
            prune(times, now);
            !times.is_empty()
        });
        if self.failures.len() < self.max_names {
            return;
        }
        let stalest = self
            .failures
            .iter()
            .min_by_key(|(_, times)| times.back().copied())
            .map(|(name, _)| name.clone());
        if let Some(name) = stalest {
            self.failures.remove(&name);
        }
    }
}

impl Default for LoginGuard {
    fn default() -> Self {
        LoginGuard::new(Self::DEFAULT_MAX_NAMES)
    }
}

/// Drops failures older than the window.
fn prune(times: &mut VecDeque<Timestamp>, now: Timestamp) {
    let oldest_kept = now.minus(FAILURE_WINDOW_SECS);
    while times.front().is_some_and(|t| *t < oldest_kept) {
        times.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocked_after_more_than_ten_failures_within_thirty_minutes() {
        let mut guard = LoginGuard::default();
        let t0 = Timestamp(1_000_000);
        for i in 0..10 {
            assert!(!guard.is_blocked("bob", Timestamp(t0.0 + i)));
            guard.record_failure("bob", Timestamp(t0.0 + i));
        }
        assert!(
            !guard.is_blocked("bob", Timestamp(t0.0 + 10)),
            "10 failures: still allowed"
        );
        guard.record_failure("bob", Timestamp(t0.0 + 10));
        assert!(
            guard.is_blocked("bob", Timestamp(t0.0 + 11)),
            "11 failures: refused"
        );
        assert!(!guard.is_blocked("alice", Timestamp(t0.0 + 11)), "per name");
        // the oldest failure ages out 30 minutes after it happened
        assert!(guard.is_blocked("bob", Timestamp(t0.0 + FAILURE_WINDOW_SECS)));
        assert!(!guard.is_blocked("bob", Timestamp(t0.0 + FAILURE_WINDOW_SECS + 1)));
    }

    #[test]
    fn success_clears_the_name() {
        let mut guard = LoginGuard::default();
        for i in 0..11 {
            guard.record_failure("bob", Timestamp(i));
        }
        assert!(guard.is_blocked("bob", Timestamp(20)));
        guard.record_success("bob");
        assert!(!guard.is_blocked("bob", Timestamp(20)));
        assert_eq!(guard.tracked_names(), 0);
    }

    #[test]
    fn memory_is_bounded() {
        let mut guard = LoginGuard::new(100);
        for i in 0..10_000u32 {
            guard.record_failure(&format!("random-{i}"), Timestamp(i));
            for _ in 0..20 {
                guard.record_failure("attacker", Timestamp(i));
            }
        }
        assert!(guard.tracked_names() <= 100);
        assert!(
            guard.is_blocked("attacker", Timestamp(10_000)),
            "an active attacker stays blocked"
        );
    }
}
