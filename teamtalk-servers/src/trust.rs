//! Who may use an internal port (docs/deploy.md "Trust model").
//!
//! The internal ports (db_proxy_server, route_server, login_server's msg_server port,
//! push_server, file_server's msg_server port) trust every frame they receive: whoever can
//! open a connection to them can read and write any user's data. They are therefore trusted
//! only by configuration: they listen on loopback unless told otherwise, and a connection from
//! a peer address that is not on the role's [`AllowedPeers`] list is accepted and closed at
//! once, before a byte is read, and logged (at most one line per [`REFUSAL_LOG_INTERVAL`]).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use tracing::warn;

/// One entry of an allow-list: an address block `addr/prefix` (a single address is a block
/// of prefix 32 or 128).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerNet {
    addr: IpAddr,
    prefix: u8,
}

impl PeerNet {
    /// The block of `addr` with `prefix` leading bits; `None` when `prefix` is longer than the
    /// address.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<PeerNet> {
        match addr {
            IpAddr::V4(_) if prefix <= 32 => Some(PeerNet { addr, prefix }),
            IpAddr::V6(v6) if prefix <= 128 => Some(match v6.to_ipv4_mapped() {
                // A v4-mapped block is the v4 block it maps.
                Some(v4) if prefix >= 96 => PeerNet {
                    addr: IpAddr::V4(v4),
                    prefix: prefix - 96,
                },
                _ => PeerNet { addr, prefix },
            }),
            _ => None,
        }
    }

    /// Whether `ip` is inside this block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, normalize(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(
                u128::from(u32::from(net)),
                u128::from(u32::from(ip)),
                32,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(u128::from(net), u128::from(ip), 128, self.prefix)
            }
            _ => false,
        }
    }
}

impl fmt::Display for PeerNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Whether the first `prefix` of `bits` bits of `a` and `b` agree.
fn prefix_eq(a: u128, b: u128, bits: u32, prefix: u8) -> bool {
    let prefix = u32::from(prefix).min(bits);
    if prefix == 0 {
        return true;
    }
    let shift = bits - prefix;
    (a >> shift) == (b >> shift)
}

/// A v4-mapped v6 address (`::ffff:10.0.0.5`, what a dual-stack socket reports for a v4
/// peer) as the v4 address.
fn normalize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// An allow-list entry that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{entry:?} is not an IP address or address/prefix block")]
pub struct PeerListError {
    /// The offending entry, as written.
    pub entry: String,
}

/// The peers allowed on an internal port: IP addresses and CIDR blocks, v4 and v6, or any
/// address. Default: loopback only (`127.0.0.0/8` and `::1`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedPeers {
    nets: Vec<PeerNet>,
    any: bool,
}

impl Default for AllowedPeers {
    fn default() -> Self {
        AllowedPeers::loopback()
    }
}

impl AllowedPeers {
    /// Loopback only: `127.0.0.0/8` and `::1`.
    pub fn loopback() -> AllowedPeers {
        AllowedPeers {
            nets: vec![
                PeerNet {
                    addr: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)),
                    prefix: 8,
                },
                PeerNet {
                    addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
                    prefix: 128,
                },
            ],
            any: false,
        }
    }

    /// Nobody (an empty list).
    pub fn none() -> AllowedPeers {
        AllowedPeers {
            nets: Vec::new(),
            any: false,
        }
    }

    /// Every address (`*`): the operator relies on a firewall instead.
    pub fn any() -> AllowedPeers {
        AllowedPeers {
            nets: Vec::new(),
            any: true,
        }
    }

    /// Whether a peer at `ip` may connect.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.any || self.nets.iter().any(|net| net.contains(ip))
    }

    /// Whether every address is allowed (`*`).
    pub fn allows_any(&self) -> bool {
        self.any
    }

    /// Adds the single address `ip`.
    pub fn with(mut self, ip: IpAddr) -> AllowedPeers {
        if !self.allows(ip) {
            let ip = normalize(ip);
            let prefix = if ip.is_ipv4() { 32 } else { 128 };
            self.nets.push(PeerNet { addr: ip, prefix });
        }
        self
    }

    /// Adds every entry of `other`.
    pub fn union(mut self, other: &AllowedPeers) -> AllowedPeers {
        self.any |= other.any;
        for net in &other.nets {
            if !self.nets.contains(net) {
                self.nets.push(*net);
            }
        }
        self
    }
}

impl FromStr for AllowedPeers {
    type Err = PeerListError;

    /// `10.0.0.5;10.0.1.0/24;fd00::/8` (`;` or `,` between entries, blanks ignored); `*`
    /// alone or as an entry: any address. An empty list allows nobody.
    fn from_str(text: &str) -> Result<AllowedPeers, PeerListError> {
        let mut peers = AllowedPeers::none();
        for entry in text
            .split([';', ','])
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            if entry == "*" {
                peers.any = true;
                continue;
            }
            let bad = || PeerListError {
                entry: entry.to_owned(),
            };
            let (addr, prefix) = match entry.split_once('/') {
                Some((addr, prefix)) => {
                    let prefix: u8 = prefix
                        .parse()
                        .ok()
                        .filter(|p: &u8| prefix == p.to_string())
                        .ok_or_else(bad)?;
                    (addr, Some(prefix))
                }
                None => (entry, None),
            };
            let addr: IpAddr = addr.trim_matches(['[', ']']).parse().map_err(|_| bad())?;
            let prefix = prefix.unwrap_or(if addr.is_ipv4() { 32 } else { 128 });
            peers.nets.push(PeerNet::new(addr, prefix).ok_or_else(bad)?);
        }
        Ok(peers)
    }
}

impl fmt::Display for AllowedPeers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        if self.any {
            f.write_str("*")?;
            first = false;
        }
        for net in &self.nets {
            if !first {
                f.write_str(";")?;
            }
            write!(f, "{net}")?;
            first = false;
        }
        Ok(())
    }
}

/// Refusals are logged at most once per this interval (with a count of the others), so a
/// scanner cannot flood the log.
pub const REFUSAL_LOG_INTERVAL: Duration = crate::limits::WARN_INTERVAL;

/// The gate of one set of listening sockets: its allow-list and the rate limit of its
/// refusal log lines.
#[derive(Debug)]
pub struct PeerGate {
    allowed: AllowedPeers,
    /// The role and key named in log lines (`route_server`, `AllowedPeers`).
    role: &'static str,
    log: crate::limits::WarnEvery,
}

impl PeerGate {
    /// The gate of `role`'s internal port.
    pub fn new(role: &'static str, allowed: AllowedPeers) -> PeerGate {
        PeerGate {
            allowed,
            role,
            log: crate::limits::WarnEvery::default(),
        }
    }

    /// The allow-list.
    pub fn allowed(&self) -> &AllowedPeers {
        &self.allowed
    }

    /// Whether `peer` may connect; a refusal is logged (rate-limited).
    pub fn admit(&self, peer: SocketAddr) -> bool {
        if self.allowed.allows(peer.ip()) {
            return true;
        }
        if let Some(refused) = self.log.due() {
            warn!(
                role = self.role,
                %peer,
                allowed = %self.allowed,
                refused,
                "connection refused: the peer is not on the allow-list (AllowedPeers / allowed_peers)"
            );
        }
        false
    }

    /// A warning when `addrs` reach beyond loopback while only loopback peers are allowed:
    /// what an operator who moved a role to its own machine most likely forgot.
    pub fn warn_if_unreachable(&self, addrs: &[SocketAddr]) {
        let exposed = addrs.iter().any(|a| !a.ip().is_loopback());
        if exposed && self.allowed == AllowedPeers::loopback() {
            warn!(
                role = self.role,
                addrs = ?addrs,
                "listening beyond loopback, but only loopback peers are allowed: set AllowedPeers \
                 (or allowed_peers) to the addresses of the other machines' roles"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_and_blocks_v4_and_v6() {
        let list: AllowedPeers = " 10.0.0.5; 10.0.1.0/24 ,fd00::/8;[::1]".parse().unwrap();
        for allowed in [
            "10.0.0.5",
            "10.0.1.0",
            "10.0.1.255",
            "fd12::7",
            "::1",
            "::ffff:10.0.1.9",
        ] {
            assert!(list.allows(ip(allowed)), "{allowed}");
        }
        for refused in [
            "10.0.0.6",
            "10.0.2.1",
            "127.0.0.1",
            "fe80::1",
            "::2",
            "::ffff:10.0.0.6",
        ] {
            assert!(!list.allows(ip(refused)), "{refused}");
        }
        assert_eq!(list.to_string(), "10.0.0.5/32;10.0.1.0/24;fd00::/8;::1/128");
    }

    #[test]
    fn default_is_loopback_only_and_star_is_any() {
        let default = AllowedPeers::default();
        assert!(default.allows(ip("127.0.0.1")) && default.allows(ip("127.0.0.2")));
        assert!(default.allows(ip("::1")) && default.allows(ip("::ffff:127.0.0.1")));
        assert!(!default.allows(ip("10.0.0.5")) && !default.allows(ip("::2")));
        let any: AllowedPeers = "*".parse().unwrap();
        assert!(any.allows(ip("203.0.113.9")) && any.allows_any());
        let none: AllowedPeers = "".parse().unwrap();
        assert!(!none.allows(ip("127.0.0.1")), "an empty list allows nobody");
    }

    #[test]
    fn bad_entries_are_refused_by_name() {
        for bad in [
            "10.0.0",
            "10.0.0.1/33",
            "::1/129",
            "10.0.0.0/-1",
            "host.example",
            "1.2.3.4/ 8",
            "10.0.0.0/08",
        ] {
            let error = bad.parse::<AllowedPeers>().unwrap_err();
            assert_eq!(error.entry, bad.trim());
        }
    }

    #[test]
    fn prefix_edges() {
        let zero: AllowedPeers = "0.0.0.0/0".parse().unwrap();
        assert!(zero.allows(ip("198.51.100.1")) && !zero.allows(ip("2001:db8::1")));
        let mapped: AllowedPeers = "::ffff:10.0.0.0/104".parse().unwrap();
        assert!(mapped.allows(ip("10.9.9.9")) && !mapped.allows(ip("11.0.0.1")));
        let one = AllowedPeers::loopback().with(ip("10.0.0.5"));
        assert!(one.allows(ip("10.0.0.5")) && !one.allows(ip("10.0.0.4")));
    }

    #[test]
    fn the_gate_refuses_and_keeps_logging_bounded() {
        let gate = PeerGate::new("route_server", "127.0.0.1".parse().unwrap());
        assert!(gate.admit("127.0.0.1:5000".parse().unwrap()));
        for _ in 0..1000 {
            assert!(!gate.admit("127.0.0.2:5000".parse().unwrap()));
        }
        assert_eq!(gate.log.pending(), 999, "one line, the rest counted");
    }
}
