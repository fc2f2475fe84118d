//! The login brute-force rule (the original's, kept per source; docs/compatibility.md,
//! "Login lockout").
//!
//! The original remembered failed logins per submitted user name: after more than 10
//! failures within 30 minutes every login of that name was refused with result code 6. Keyed
//! by the raw name, it was both too weak and too strong: `"d3 "` names the same account as
//! `"d3"` in MySQL but had a counter of its own (unlimited guesses), and anyone could lock
//! anyone out by typing wrong passwords for their name.
//!
//! Here failures count per **account** (the user id the name resolves to, so every spelling
//! the database treats as equal shares one counter; an unknown name counts under its
//! [`login_name_key`](crate::store::login_name_key)) **and source** (the client's IP address,
//! IPv6 by /64 network). Two rules decide, both over the last [`FAILURE_WINDOW_SECS`]:
//!
//! 1. **Per source, the original's rule**: more than [`MAX_FAILURES`] failures of one source
//!    on one account → that source is refused for that account (result 6, password not
//!    checked, the refusal not counted). Other sources are unaffected, so a stranger cannot
//!    lock the owner out.
//! 2. **Per account, against a distributed guesser**: more than [`MAX_ACCOUNT_FAILURES`]
//!    failures on one account from all sources together → the account is refused to every
//!    source that has not logged in to it successfully within [`KNOWN_SOURCE_SECS`]. Many
//!    addresses then buy at most about 100 guesses per 30 minutes, and the owner still gets
//!    in from where they logged in before.
//!
//! A successful login forgets that source's failures on the account (not the account-wide
//! count, which only ages out) and remembers the source as known. Memory is bounded: at most
//! [`LoginGuard::DEFAULT_MAX_KEYS`] entries per table, the stalest dropped first. Nothing is
//! shared between db_proxy processes or kept across restarts (as the original).

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};

use crate::domain::{Timestamp, UserId};

/// Failures remembered for this long (seconds).
pub const FAILURE_WINDOW_SECS: u32 = 30 * 60;

/// A source is refused on an account when more than this many of its failures on it lie
/// within the window (the original's threshold).
pub const MAX_FAILURES: usize = 10;

/// An account is refused to unknown sources when more than this many failures from all
/// sources lie within the window.
pub const MAX_ACCOUNT_FAILURES: usize = 100;

/// A source that logged in to an account stays known to it for this long (seconds).
pub const KNOWN_SOURCE_SECS: u32 = 30 * 24 * 60 * 60;

/// Bytes of an unknown name kept as its key (longer names share the counter of their prefix;
/// no stored name is that long).
const UNKNOWN_NAME_BYTES: usize = 64;

/// What a login is counted against.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LoginAccount {
    /// The account the name resolved to.
    User(UserId),
    /// A name no active account has: its [`login_name_key`](crate::store::login_name_key),
    /// cut to 64 bytes. Counted like an account, so the answers do not reveal which names
    /// exist.
    UnknownName(String),
}

impl LoginAccount {
    /// The key of a name that resolved to no account.
    pub fn unknown(name: &str) -> LoginAccount {
        let key = crate::store::login_name_key(name);
        let mut end = key.len().min(UNKNOWN_NAME_BYTES);
        while !key.is_char_boundary(end) {
            end -= 1;
        }
        LoginAccount::UnknownName(key.get(..end).unwrap_or_default().to_owned())
    }
}

/// Where a login comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LoginSource {
    /// A client address: IPv4, or an IPv6 /64 network (one host usually has a whole /64).
    Ip(IpAddr),
    /// Nobody said: every such login shares one source.
    Unknown,
}

impl LoginSource {
    /// The source of a client at `ip`: IPv4-mapped IPv6 addresses count as IPv4, other IPv6
    /// addresses by their /64 network.
    pub fn ip(ip: IpAddr) -> LoginSource {
        LoginSource::Ip(match ip {
            IpAddr::V4(v4) => IpAddr::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let network = u128::from(v6) & !((1u128 << 64) - 1);
                    IpAddr::V6(Ipv6Addr::from(network))
                }
            },
        })
    }
}

/// Failure memory per account and source.
#[derive(Debug)]
pub struct LoginGuard {
    per_source: Failures<(LoginAccount, LoginSource)>,
    per_account: Failures<LoginAccount>,
    /// (account, source) → last successful login.
    known: HashMap<(UserId, LoginSource), Timestamp>,
    max_keys: usize,
}

impl LoginGuard {
    /// Entries per table kept by [`LoginGuard::default`].
    pub const DEFAULT_MAX_KEYS: usize = 100_000;

    /// A guard keeping at most `max_keys` entries in each of its tables.
    pub fn new(max_keys: usize) -> LoginGuard {
        let max_keys = max_keys.max(1);
        LoginGuard {
            per_source: Failures::new(max_keys, MAX_FAILURES + 1),
            per_account: Failures::new(max_keys, MAX_ACCOUNT_FAILURES + 1),
            known: HashMap::new(),
            max_keys,
        }
    }

    /// Whether a login of `account` from `source` must be refused now (result 6).
    pub fn is_blocked(
        &mut self,
        account: &LoginAccount,
        source: LoginSource,
        now: Timestamp,
    ) -> bool {
        if self.per_source.count(&(account.clone(), source), now) > MAX_FAILURES {
            return true;
        }
        self.per_account.count(account, now) > MAX_ACCOUNT_FAILURES
            && !self.is_known(account, source, now)
    }

    /// Records a failed login of `account` from `source` at `now`.
    pub fn record_failure(&mut self, account: &LoginAccount, source: LoginSource, now: Timestamp) {
        self.per_source.record((account.clone(), source), now);
        self.per_account.record(account.clone(), now);
    }

    /// Records a successful login of `user` from `source`: forgets the source's failures on
    /// the account and remembers the source as known to it.
    pub fn record_success(&mut self, user: UserId, source: LoginSource, now: Timestamp) {
        self.per_source.forget(&(LoginAccount::User(user), source));
        if !self.known.contains_key(&(user, source)) && self.known.len() >= self.max_keys {
            let oldest_kept = now.minus(KNOWN_SOURCE_SECS);
            self.known.retain(|_, at| *at >= oldest_kept);
            if self.known.len() >= self.max_keys {
                let stalest = self
                    .known
                    .iter()
                    .min_by_key(|(_, at)| **at)
                    .map(|(k, _)| *k);
                if let Some(key) = stalest {
                    self.known.remove(&key);
                }
            }
        }
        self.known.insert((user, source), now);
    }

    /// (account, source) pairs with failures currently remembered.
    pub fn tracked(&self) -> usize {
        self.per_source.map.len()
    }

    fn is_known(&self, account: &LoginAccount, source: LoginSource, now: Timestamp) -> bool {
        let LoginAccount::User(user) = account else {
            return false;
        };
        self.known
            .get(&(*user, source))
            .is_some_and(|at| *at >= now.minus(KNOWN_SOURCE_SECS))
    }
}

impl Default for LoginGuard {
    fn default() -> Self {
        LoginGuard::new(Self::DEFAULT_MAX_KEYS)
    }
}

/// Recent failure times per key, at most `keep` per key and `max_keys` keys.
#[derive(Debug)]
struct Failures<K> {
    map: HashMap<K, VecDeque<Timestamp>>,
    max_keys: usize,
    keep: usize,
}

impl<K: Eq + Hash + Clone> Failures<K> {
    fn new(max_keys: usize, keep: usize) -> Failures<K> {
        Failures {
            map: HashMap::new(),
            max_keys,
            keep,
        }
    }

    /// Failures of `key` within the window.
    fn count(&mut self, key: &K, now: Timestamp) -> usize {
        let Some(times) = self.map.get_mut(key) else {
            return 0;
        };
        prune(times, now);
        if times.is_empty() {
            self.map.remove(key);
            return 0;
        }
        times.len()
    }

    fn record(&mut self, key: K, now: Timestamp) {
        if !self.map.contains_key(&key) && self.map.len() >= self.max_keys {
            self.evict(now);
        }
        let times = self.map.entry(key).or_default();
        times.push_back(now);
        // Only "more than the threshold" matters: older entries beyond that can go.
        while times.len() > self.keep {
            times.pop_front();
        }
    }

    fn forget(&mut self, key: &K) {
        self.map.remove(key);
    }

    /// Makes room for one more key: drops expired entries, then the key whose latest failure
    /// is the oldest.
    fn evict(&mut self, now: Timestamp) {
        self.map.retain(|_, times| {
            prune(times, now);
            !times.is_empty()
        });
        if self.map.len() < self.max_keys {
            return;
        }
        let stalest = self
            .map
            .iter()
            .min_by_key(|(_, times)| times.back().copied())
            .map(|(key, _)| key.clone());
        if let Some(key) = stalest {
            self.map.remove(&key);
        }
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

    const BOB: LoginAccount = LoginAccount::User(UserId(7));

    fn ip(text: &str) -> LoginSource {
        LoginSource::ip(text.parse().unwrap())
    }

    #[test]
    fn blocked_after_more_than_ten_failures_within_thirty_minutes() {
        let mut guard = LoginGuard::default();
        let a = ip("192.0.2.1");
        let t0 = Timestamp(1_000_000);
        for i in 0..10 {
            assert!(!guard.is_blocked(&BOB, a, Timestamp(t0.0 + i)));
            guard.record_failure(&BOB, a, Timestamp(t0.0 + i));
        }
        assert!(
            !guard.is_blocked(&BOB, a, Timestamp(t0.0 + 10)),
            "10 failures: still allowed"
        );
        guard.record_failure(&BOB, a, Timestamp(t0.0 + 10));
        assert!(
            guard.is_blocked(&BOB, a, Timestamp(t0.0 + 11)),
            "11 failures: refused"
        );
        let alice = LoginAccount::User(UserId(8));
        assert!(
            !guard.is_blocked(&alice, a, Timestamp(t0.0 + 11)),
            "per account"
        );
        // the oldest failure ages out 30 minutes after it happened
        assert!(guard.is_blocked(&BOB, a, Timestamp(t0.0 + FAILURE_WINDOW_SECS)));
        assert!(!guard.is_blocked(&BOB, a, Timestamp(t0.0 + FAILURE_WINDOW_SECS + 1)));
    }

    #[test]
    fn a_strangers_failures_do_not_block_other_sources() {
        let mut guard = LoginGuard::default();
        let stranger = ip("198.51.100.9");
        let owner = ip("203.0.113.5");
        for i in 0..50 {
            guard.record_failure(&BOB, stranger, Timestamp(i));
        }
        assert!(guard.is_blocked(&BOB, stranger, Timestamp(50)));
        assert!(!guard.is_blocked(&BOB, owner, Timestamp(50)));
        assert!(
            !guard.is_blocked(&BOB, LoginSource::Unknown, Timestamp(50)),
            "no address is a source of its own"
        );
    }

    #[test]
    fn ipv6_counts_by_network_and_mapped_ipv4_as_ipv4() {
        assert_eq!(ip("2001:db8:1:2:aaaa::1"), ip("2001:db8:1:2:bbbb::2"));
        assert_ne!(ip("2001:db8:1:2::1"), ip("2001:db8:1:3::1"));
        assert_eq!(ip("::ffff:192.0.2.1"), ip("192.0.2.1"));
        let mut guard = LoginGuard::default();
        for i in 0..11u16 {
            guard.record_failure(&BOB, ip(&format!("2001:db8::{i:x}")), Timestamp(1));
        }
        assert!(guard.is_blocked(&BOB, ip("2001:db8::ffff"), Timestamp(2)));
    }

    #[test]
    fn a_distributed_guesser_is_capped_but_known_sources_get_in() {
        let mut guard = LoginGuard::default();
        let home = ip("203.0.113.5");
        guard.record_success(UserId(7), home, Timestamp(1));
        // 101 failures from 101 addresses: each source alone is far below its limit.
        for i in 0..=MAX_ACCOUNT_FAILURES as u32 {
            let source = LoginSource::ip(IpAddr::from([10, 0, (i / 256) as u8, i as u8]));
            assert!(!guard.is_blocked(&BOB, source, Timestamp(100)));
            guard.record_failure(&BOB, source, Timestamp(100));
        }
        assert!(
            guard.is_blocked(&BOB, ip("10.9.9.9"), Timestamp(101)),
            "a new source is refused"
        );
        assert!(
            !guard.is_blocked(&BOB, home, Timestamp(101)),
            "where the owner logged in before still works"
        );
        let other = LoginAccount::User(UserId(8));
        assert!(!guard.is_blocked(&other, ip("10.9.9.9"), Timestamp(101)));
        assert!(
            !guard.is_blocked(&BOB, ip("10.9.9.9"), Timestamp(101 + FAILURE_WINDOW_SECS)),
            "the account-wide count ages out"
        );
        // A known source is forgotten after KNOWN_SOURCE_SECS.
        let late = Timestamp(2 + KNOWN_SOURCE_SECS);
        for i in 0..=MAX_ACCOUNT_FAILURES as u32 {
            let source = LoginSource::ip(IpAddr::from([10, 1, (i / 256) as u8, i as u8]));
            guard.record_failure(&BOB, source, late);
        }
        assert!(guard.is_blocked(&BOB, home, late));
    }

    #[test]
    fn success_clears_that_source_only() {
        let mut guard = LoginGuard::default();
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        for i in 0..11 {
            guard.record_failure(&BOB, a, Timestamp(i));
            guard.record_failure(&BOB, b, Timestamp(i));
        }
        assert!(guard.is_blocked(&BOB, a, Timestamp(20)));
        guard.record_success(UserId(7), a, Timestamp(20));
        assert!(!guard.is_blocked(&BOB, a, Timestamp(20)));
        assert!(guard.is_blocked(&BOB, b, Timestamp(20)));
        assert_eq!(guard.tracked(), 1);
    }

    #[test]
    fn unknown_names_count_by_their_key_and_are_cut() {
        assert_eq!(LoginAccount::unknown("eve  "), LoginAccount::unknown("eve"));
        assert_ne!(LoginAccount::unknown("Eve"), LoginAccount::unknown("eve"));
        let long = "é".repeat(1000);
        let LoginAccount::UnknownName(key) = LoginAccount::unknown(&long) else {
            panic!("an unknown name");
        };
        assert!(key.len() <= UNKNOWN_NAME_BYTES && long.starts_with(&key));
    }

    #[test]
    fn memory_is_bounded() {
        let mut guard = LoginGuard::new(100);
        let attacker = ip("192.0.2.66");
        for i in 0..10_000u32 {
            let source = LoginSource::ip(IpAddr::from(i.to_be_bytes()));
            guard.record_failure(
                &LoginAccount::unknown(&format!("random-{i}")),
                source,
                Timestamp(i),
            );
            guard.record_success(UserId(i), source, Timestamp(i));
            for _ in 0..20 {
                guard.record_failure(&BOB, attacker, Timestamp(i));
            }
        }
        assert!(guard.tracked() <= 100);
        assert!(guard.per_account.map.len() <= 100);
        assert!(guard.known.len() <= 100);
        assert!(
            guard.is_blocked(&BOB, attacker, Timestamp(10_000)),
            "an active attacker stays blocked"
        );
    }
}
