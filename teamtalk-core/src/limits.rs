//! Connection admission: how many connections a listener holds in total and per source
//! address, and how a process's descriptor limit is shared between the roles it runs.
//!
//! A [`ConnGate`] is the shared counter table of one listener (or of several listeners of one
//! role); [`ConnGate::admit`] either refuses a new connection with the [`Refusal`] that says
//! which cap it hit, or hands out a [`ConnPermit`] that gives the slot back when dropped.
//! The table does no I/O and reads no clock; the servers accept, ask, and close.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// The caps of one listener. `0` means "no cap".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnLimits {
    /// Connections held at once, from all sources together.
    pub max_total: usize,
    /// Connections held at once from one source address (IPv4-mapped IPv6 addresses count
    /// as their IPv4 address).
    pub max_per_source: usize,
}

/// Why a connection was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The listener holds [`ConnLimits::max_total`] connections already.
    Total,
    /// The peer's address holds [`ConnLimits::max_per_source`] connections already.
    PerSource,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::Total => "connection limit reached",
            Refusal::PerSource => "per-address connection limit reached",
        })
    }
}

/// The counters behind a [`ConnGate`]: connections held in total and per source address.
#[derive(Debug, Default)]
pub struct ConnTable {
    limits: ConnLimits,
    total: usize,
    per_source: HashMap<IpAddr, usize>,
}

impl ConnTable {
    /// An empty table with `limits`.
    pub fn new(limits: ConnLimits) -> ConnTable {
        ConnTable {
            limits,
            ..ConnTable::default()
        }
    }

    /// Counts a connection from `source`, unless a cap is reached.
    pub fn admit(&mut self, source: IpAddr) -> Result<(), Refusal> {
        let source = canonical(source);
        if self.limits.max_total != 0 && self.total >= self.limits.max_total {
            return Err(Refusal::Total);
        }
        let held = self.per_source.get(&source).copied().unwrap_or(0);
        if self.limits.max_per_source != 0 && held >= self.limits.max_per_source {
            return Err(Refusal::PerSource);
        }
        self.total += 1;
        self.per_source.insert(source, held + 1);
        Ok(())
    }

    /// Gives back the slot of a connection from `source` admitted before.
    pub fn release(&mut self, source: IpAddr) {
        let source = canonical(source);
        if let Some(held) = self.per_source.get_mut(&source) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                self.per_source.remove(&source);
            }
            self.total = self.total.saturating_sub(1);
        }
    }

    /// Connections held now.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Connections held now from `source`.
    pub fn from_source(&self, source: IpAddr) -> usize {
        self.per_source
            .get(&canonical(source))
            .copied()
            .unwrap_or(0)
    }

    /// The caps in force.
    pub fn limits(&self) -> ConnLimits {
        self.limits
    }

    /// Lowers the total cap to `max` (when `max` is lower, or no cap was set); connections
    /// held already stay.
    pub fn cap_total(&mut self, max: usize) {
        if max != 0 && (self.limits.max_total == 0 || max < self.limits.max_total) {
            self.limits.max_total = max;
        }
    }
}

/// A [`ConnTable`] shared by a listener and its connections' [`ConnPermit`]s.
#[derive(Clone, Debug, Default)]
pub struct ConnGate(Arc<Mutex<ConnTable>>);

impl ConnGate {
    /// A gate with `limits` and no connection held.
    pub fn new(limits: ConnLimits) -> ConnGate {
        ConnGate(Arc::new(Mutex::new(ConnTable::new(limits))))
    }

    /// A permit for a connection from `source`, or why there is none.
    pub fn admit(&self, source: IpAddr) -> Result<ConnPermit, Refusal> {
        self.table().admit(source)?;
        Ok(ConnPermit {
            gate: self.clone(),
            source,
        })
    }

    /// Lowers the total cap (see [`ConnTable::cap_total`]).
    pub fn cap_total(&self, max: usize) {
        self.table().cap_total(max);
    }

    /// The caps in force.
    pub fn limits(&self) -> ConnLimits {
        self.table().limits()
    }

    /// Connections held now.
    pub fn total(&self) -> usize {
        self.table().total()
    }

    fn table(&self) -> std::sync::MutexGuard<'_, ConnTable> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One admitted connection's slot; dropping it gives the slot back.
#[derive(Debug)]
pub struct ConnPermit {
    gate: ConnGate,
    source: IpAddr,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        self.gate.table().release(self.source);
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// Descriptors a process keeps out of every connection cap, for its store, log files,
/// outbound links and the like: an eighth of the limit, at least 64.
pub fn reserved_descriptors(limit: u64) -> u64 {
    (limit / 8).max(64)
}

/// The descriptors of a process with descriptor limit `limit` that connection caps may
/// share: `limit` less [`reserved_descriptors`] (at least 16, so a tiny limit still serves).
pub fn connection_budget(limit: u64) -> usize {
    let budget = limit.saturating_sub(reserved_descriptors(limit)).max(16);
    usize::try_from(budget).unwrap_or(usize::MAX)
}

/// `percent` of `budget`, at least 1.
pub fn share(budget: usize, percent: usize) -> usize {
    (budget.saturating_mul(percent) / 100).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn total_cap_refuses_the_one_over_and_frees_on_release() {
        let mut t = ConnTable::new(ConnLimits {
            max_total: 2,
            max_per_source: 0,
        });
        assert_eq!(t.admit(A), Ok(()));
        assert_eq!(t.admit(B), Ok(()));
        assert_eq!(t.admit(B), Err(Refusal::Total));
        t.release(A);
        assert_eq!(t.admit(B), Ok(()));
        assert_eq!(t.total(), 2);
        assert_eq!(t.from_source(B), 2);
    }

    #[test]
    fn per_source_cap_leaves_other_sources_alone() {
        let mut t = ConnTable::new(ConnLimits {
            max_total: 0,
            max_per_source: 2,
        });
        assert_eq!(t.admit(A), Ok(()));
        assert_eq!(t.admit(A), Ok(()));
        assert_eq!(t.admit(A), Err(Refusal::PerSource));
        assert_eq!(t.admit(B), Ok(()));
        t.release(A);
        assert_eq!(t.admit(A), Ok(()));
        assert_eq!(t.from_source(A), 2);
    }

    #[test]
    fn mapped_ipv6_counts_as_its_ipv4_address() {
        let mut t = ConnTable::new(ConnLimits {
            max_total: 0,
            max_per_source: 1,
        });
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        assert_eq!(t.admit(A), Ok(()));
        assert_eq!(t.admit(mapped), Err(Refusal::PerSource));
        assert_eq!(t.admit(IpAddr::V6(Ipv6Addr::LOCALHOST)), Ok(()));
    }

    #[test]
    fn no_caps_admit_everything_and_release_of_unknown_is_harmless() {
        let mut t = ConnTable::new(ConnLimits::default());
        for _ in 0..10_000 {
            assert_eq!(t.admit(A), Ok(()));
        }
        t.release(B);
        assert_eq!(t.total(), 10_000);
    }

    #[test]
    fn permits_give_their_slot_back_when_dropped() {
        let gate = ConnGate::new(ConnLimits {
            max_total: 1,
            max_per_source: 1,
        });
        let permit = gate.admit(A);
        assert!(permit.is_ok());
        assert_eq!(gate.admit(B).err(), Some(Refusal::Total));
        drop(permit);
        assert_eq!(gate.total(), 0);
        assert!(gate.admit(B).is_ok());
    }

    #[test]
    fn cap_total_only_lowers() {
        let gate = ConnGate::new(ConnLimits {
            max_total: 10,
            max_per_source: 0,
        });
        gate.cap_total(20);
        assert_eq!(gate.limits().max_total, 10);
        gate.cap_total(3);
        assert_eq!(gate.limits().max_total, 3);
        gate.cap_total(0);
        assert_eq!(gate.limits().max_total, 3);
        let open = ConnGate::new(ConnLimits::default());
        open.cap_total(5);
        assert_eq!(open.limits().max_total, 5);
    }

    #[test]
    fn the_budget_leaves_headroom_below_the_limit() {
        assert_eq!(connection_budget(20_000), 17_500);
        assert_eq!(connection_budget(1024), 896);
        assert_eq!(connection_budget(256), 192);
        assert_eq!(connection_budget(10), 16);
        assert_eq!(share(17_500, 40), 7_000);
        assert_eq!(share(192, 5), 9);
        assert_eq!(share(10, 1), 1);
    }
}
