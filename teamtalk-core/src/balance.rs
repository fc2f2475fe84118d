//! The login_server's registry of msg_servers and its least-loaded choice, as a state
//! machine: the server feeds [`Registry`] link events and frames and asks it which msg_server
//! a client should use.
//!
//! Counting is per client connection (a user with PC and phone counts twice), as the
//! original. Counts never go below zero (Q-71 in docs/compatibility.md).
//!
//! A msg_server not heard from (no frame, not even a heartbeat, which it sends every 5 s)
//! for more than [`SILENT_MS`] is not offered to clients, although its link is still open: a
//! frozen process keeps its sockets (docs/compatibility.md, "login_server skips silent
//! msg_servers"). Time comes in with every input ([`Now`]).

use std::collections::{HashSet, VecDeque};

use crate::command::AnyMessage;
use crate::pdu::Pdu;
use crate::time::{Machine, Now};

/// A msg_server silent for longer than this (ms) is not offered: two missed heartbeats.
pub const SILENT_MS: u64 = 10_000;

/// What a msg_server reports about itself (`IMMsgServInfo`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MsgServerInfo {
    /// First client address ("telecom").
    pub ip1: String,
    /// Second client address ("netcom"; equal to `ip1` when not configured).
    pub ip2: String,
    /// Client port.
    pub port: u32,
    /// Connections it accepts at most.
    pub max_conn_cnt: u32,
    /// Connections it holds now.
    pub cur_conn_cnt: u32,
    /// Its host name (informational).
    pub host_name: String,
}

/// Why no msg_server could be chosen (the `code` of the discovery answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PickError {
    /// No msg_server is registered (code 1, "没有msg_server").
    #[error("no msg_server is registered")]
    NoServer,
    /// Every msg_server is at its connection limit (code 2, "负载过高").
    #[error("every msg_server is full")]
    AllFull,
}

impl PickError {
    /// The `code` of the login_server's JSON answer.
    pub const fn code(self) -> u32 {
        match self {
            PickError::NoServer => 1,
            PickError::AllFull => 2,
        }
    }

    /// The `msg` of the login_server's JSON answer (the original's Chinese text).
    pub const fn message(self) -> &'static str {
        match self {
            PickError::NoServer => "没有msg_server",
            PickError::AllFull => "负载过高",
        }
    }
}

/// A msg_server's link to the login_server, named by the [`Registry`] when it opens
/// ([`Registry::handle_link_opened`]); ids are never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MsgServerLink(u64);

impl MsgServerLink {
    /// The id as a number, for logs.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for MsgServerLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "msg-server-link-{}", self.0)
    }
}

/// What changed in the registry, for the shell's logs and metrics; the login_server sends
/// nothing to its msg_servers.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistryEvent {
    /// A msg_server registered (or registered again) on this link.
    Registered(MsgServerLink, MsgServerInfo),
    /// The msg_server of this link was not heard from for more than [`SILENT_MS`]: it is not
    /// offered to clients until it speaks again.
    Silent(MsgServerLink),
    /// A silent msg_server spoke again and is offered again.
    Resumed(MsgServerLink),
}

/// The registered msg_servers of a login_server, as a state machine ([`Machine`], see the
/// crate's "Run loop"): feed it link openings, every frame of each link and link closings;
/// ask it [`Registry::pick`]; drain the [`RegistryEvent`]s. Its timer fires when a
/// registered msg_server turns silent.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    /// In registration order: the first of equally loaded servers wins.
    servers: Vec<Entry>,
    /// Open links, registered or not.
    links: HashSet<MsgServerLink>,
    next_link: u64,
    out: VecDeque<RegistryEvent>,
}

#[derive(Clone, Debug)]
struct Entry {
    link: MsgServerLink,
    info: MsgServerInfo,
    /// When the link last carried a frame (ms).
    heard_ms: u64,
    /// [`RegistryEvent::Silent`] was reported and not yet followed by a frame.
    silent: bool,
}

impl Entry {
    /// The first moment (ms) at which the server counts as silent.
    fn silent_at(&self) -> u64 {
        self.heard_ms.saturating_add(SILENT_MS).saturating_add(1)
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// A msg_server connected at `now`; it is offered once it registers.
    pub fn handle_link_opened(&mut self, _now: Now) -> MsgServerLink {
        self.next_link += 1;
        let link = MsgServerLink(self.next_link);
        self.links.insert(link);
        link
    }

    /// A frame arrived on `link` at `now`. Any frame (a heartbeat too) says its msg_server is
    /// alive; `CID_OTHER_MSG_SERV_INFO` registers it (again, after a reconnect: the entry is
    /// replaced and keeps no stale count); `CID_OTHER_USER_CNT_UPDATE` counts a connection
    /// (action 1) or one less (any other action, never below zero). Other commands,
    /// undecodable bodies and frames of links that are not open are ignored (logged).
    pub fn handle_frame(&mut self, now: Now, link: MsgServerLink, pdu: &Pdu) {
        if !self.links.contains(&link) {
            tracing::debug!(%link, "frame of a link that is not open ignored");
            return;
        }
        self.heard(link, now.ms);
        match pdu.decode_any() {
            Ok(AnyMessage::MsgServInfo(info)) => self.register(
                link,
                MsgServerInfo {
                    ip1: info.ip1,
                    ip2: info.ip2,
                    port: info.port,
                    max_conn_cnt: info.max_conn_cnt,
                    cur_conn_cnt: info.cur_conn_cnt,
                    host_name: info.host_name,
                },
                now.ms,
            ),
            Ok(AnyMessage::UserCntUpdate(update)) => self.count_update(link, update.user_action),
            Ok(AnyMessage::HeartBeat(_)) => {}
            Ok(other) => tracing::debug!(command = %other.command(), "ignored"),
            Err(error) => tracing::debug!(%error, "undecodable PDU ignored"),
        }
    }

    /// `link` closed (or timed out) at `now`: its msg_server is forgotten.
    pub fn handle_link_closed(&mut self, _now: Now, link: MsgServerLink) {
        self.links.remove(&link);
        self.servers.retain(|e| e.link != link);
    }

    fn register(&mut self, link: MsgServerLink, info: MsgServerInfo, now_ms: u64) {
        self.out
            .push_back(RegistryEvent::Registered(link, info.clone()));
        match self.servers.iter_mut().find(|e| e.link == link) {
            Some(entry) => {
                entry.info = info;
                entry.heard_ms = now_ms;
            }
            None => self.servers.push(Entry {
                link,
                info,
                heard_ms: now_ms,
                silent: false,
            }),
        }
    }

    fn heard(&mut self, link: MsgServerLink, now_ms: u64) {
        if let Some(entry) = self.servers.iter_mut().find(|e| e.link == link) {
            entry.heard_ms = entry.heard_ms.max(now_ms);
            if entry.silent {
                entry.silent = false;
                self.out.push_back(RegistryEvent::Resumed(link));
            }
        }
    }

    fn count_update(&mut self, link: MsgServerLink, user_action: u32) {
        if let Some(entry) = self.servers.iter_mut().find(|e| e.link == link) {
            let count = &mut entry.info.cur_conn_cnt;
            *count = if user_action == 1 {
                count.saturating_add(1)
            } else {
                count.saturating_sub(1)
            };
        }
    }

    /// Client connections over all registered msg_servers.
    pub fn total_connections(&self) -> u64 {
        self.servers
            .iter()
            .map(|e| u64::from(e.info.cur_conn_cnt))
            .sum()
    }

    /// Registered msg_servers, in registration order (silent ones too).
    pub fn servers(&self) -> impl Iterator<Item = &MsgServerInfo> {
        self.servers.iter().map(|e| &e.info)
    }

    /// The msg_server a new client should use at `now`: among those heard from within
    /// [`SILENT_MS`] and below their limit, the one with the fewest connections (the first
    /// registered on ties). [`PickError::NoServer`] when none was heard from lately. (Silence
    /// is judged against `now` here, whether or not the timer has fired yet.)
    pub fn pick(&self, now: Now) -> Result<&MsgServerInfo, PickError> {
        let mut alive = self
            .servers
            .iter()
            .filter(|e| now.ms.saturating_sub(e.heard_ms) <= SILENT_MS)
            .map(|e| &e.info)
            .peekable();
        if alive.peek().is_none() {
            return Err(PickError::NoServer);
        }
        alive
            .filter(|s| s.cur_conn_cnt < s.max_conn_cnt)
            .fold(None, |best: Option<&MsgServerInfo>, s| match best {
                Some(b) if b.cur_conn_cnt <= s.cur_conn_cnt => Some(b),
                _ => Some(s),
            })
            .ok_or(PickError::AllFull)
    }
}

impl Machine for Registry {
    type Output = RegistryEvent;

    fn poll_output(&mut self) -> Option<RegistryEvent> {
        self.out.pop_front()
    }

    /// When the next registered msg_server that is still offered turns silent.
    fn poll_timeout(&self) -> Option<u64> {
        self.servers
            .iter()
            .filter(|e| !e.silent)
            .map(Entry::silent_at)
            .min()
    }

    fn handle_timeout(&mut self, now: Now) {
        for entry in &mut self.servers {
            if !entry.silent && now.ms >= entry.silent_at() {
                entry.silent = true;
                self.out.push_back(RegistryEvent::Silent(entry.link));
            }
        }
    }
}

/// The login_server's discovery answer (`GET /msg_server`): a JSON
/// object with the keys in alphabetical order, pretty-printed as the original's jsoncpp did.
///
/// `peer_is_ipv4` picks the address order: IPv4 clients get `ip1` as `priorIP` (the original
/// treated every IPv4 peer as "telecom"), others get `ip2` first. `port` is a string.
pub fn discovery_json(
    choice: Result<&MsgServerInfo, PickError>,
    msfs: &str,
    discovery: &str,
    peer_is_ipv4: bool,
) -> String {
    let mut fields: Vec<(&str, String)> = Vec::new();
    match choice {
        Ok(server) => {
            let (prior, backup) = if peer_is_ipv4 {
                (&server.ip1, &server.ip2)
            } else {
                (&server.ip2, &server.ip1)
            };
            fields.push(("backupIP", json_string(backup)));
            fields.push(("code", "0".to_owned()));
            fields.push(("discovery", json_string(discovery)));
            fields.push(("msfsBackup", json_string(msfs)));
            fields.push(("msfsPrior", json_string(msfs)));
            fields.push(("msg", json_string("")));
            fields.push(("port", json_string(&server.port.to_string())));
            fields.push(("priorIP", json_string(prior)));
        }
        Err(error) => {
            fields.push(("code", error.code().to_string()));
            fields.push(("msg", json_string(error.message())));
        }
    }
    let mut out = String::from("{\n");
    for (i, (key, value)) in fields.iter().enumerate() {
        out.push_str("   ");
        out.push_str(&json_string(key));
        out.push_str(" : ");
        out.push_str(value);
        if i + 1 < fields.len() {
            out.push(',');
        }
        out.push('\n');
    }
    out.push_str("}\n");
    out
}

/// The login_server's `/health` answer (ours, for load balancers and monitoring): whether a
/// new client would get a msg_server, and a JSON summary
/// `{"status":"ok"|"no msg_server"|"all msg_servers full","msg_servers":N,"connections":N}`.
pub fn health_json(registry: &Registry, now: Now) -> (bool, String) {
    let (healthy, status) = match registry.pick(now) {
        Ok(_) => (true, "ok"),
        Err(PickError::NoServer) => (false, "no msg_server"),
        Err(PickError::AllFull) => (false, "all msg_servers full"),
    };
    let body = format!(
        "{{\"status\":{},\"msg_servers\":{},\"connections\":{}}}\n",
        json_string(status),
        registry.servers.len(),
        registry.total_connections()
    );
    (healthy, body)
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::server as server_proto;

    fn server(ip: &str, cur: u32, max: u32) -> MsgServerInfo {
        MsgServerInfo {
            ip1: ip.into(),
            ip2: ip.into(),
            port: 8000,
            max_conn_cnt: max,
            cur_conn_cnt: cur,
            host_name: "h".into(),
        }
    }

    fn at(ms: u64) -> Now {
        Now::from_ms(ms)
    }

    /// A registry with `n` open links.
    fn open(n: usize) -> (Registry, Vec<MsgServerLink>) {
        let mut registry = Registry::new();
        let links = (0..n).map(|_| registry.handle_link_opened(at(0))).collect();
        (registry, links)
    }

    fn register(registry: &mut Registry, link: MsgServerLink, info: MsgServerInfo, ms: u64) {
        let info = server_proto::ImMsgServInfo {
            ip1: info.ip1,
            ip2: info.ip2,
            port: info.port,
            max_conn_cnt: info.max_conn_cnt,
            cur_conn_cnt: info.cur_conn_cnt,
            host_name: info.host_name,
        };
        registry.handle_frame(at(ms), link, &Pdu::encode_message(&info, 0));
    }

    fn count_update(registry: &mut Registry, link: MsgServerLink, user_action: u32) {
        let update = server_proto::ImUserCntUpdate {
            user_action,
            user_id: 1,
        };
        registry.handle_frame(at(0), link, &Pdu::encode_message(&update, 0));
    }

    fn heard(registry: &mut Registry, link: MsgServerLink, ms: u64) {
        let beat = crate::proto::other::ImHeartBeat {};
        registry.handle_frame(at(ms), link, &Pdu::encode_message(&beat, 0));
    }

    #[test]
    fn health_says_whether_a_client_would_get_a_server() {
        let (mut registry, l) = open(2);
        assert_eq!(
            health_json(&registry, at(0)),
            (
                false,
                "{\"status\":\"no msg_server\",\"msg_servers\":0,\"connections\":0}\n".into()
            )
        );
        register(&mut registry, l[0], server("a", 2, 2), 0);
        assert_eq!(
            health_json(&registry, at(0)).1,
            "{\"status\":\"all msg_servers full\",\"msg_servers\":1,\"connections\":2}\n"
        );
        register(&mut registry, l[1], server("b", 5, 10), 0);
        assert_eq!(
            health_json(&registry, at(0)),
            (
                true,
                "{\"status\":\"ok\",\"msg_servers\":2,\"connections\":7}\n".into()
            )
        );
    }

    #[test]
    fn picks_the_least_loaded_server_below_its_limit() {
        let (mut registry, l) = open(4);
        assert_eq!(registry.pick(at(0)), Err(PickError::NoServer));
        register(&mut registry, l[0], server("a", 5, 10), 0);
        register(&mut registry, l[1], server("b", 3, 10), 0);
        register(&mut registry, l[2], server("c", 3, 10), 0);
        assert_eq!(
            registry.pick(at(0)).unwrap().ip1,
            "b",
            "fewest connections, first on ties"
        );
        count_update(&mut registry, l[1], 1);
        assert_eq!(registry.pick(at(0)).unwrap().ip1, "c");
        register(&mut registry, l[3], server("d", 0, 0), 0);
        assert_eq!(
            registry.pick(at(0)).unwrap().ip1,
            "c",
            "a full server is never chosen"
        );
        registry.handle_link_closed(at(0), l[2]);
        assert_eq!(registry.pick(at(0)).unwrap().ip1, "b");
        assert_eq!(registry.total_connections(), 5 + 4);
    }

    #[test]
    fn a_silent_msg_server_is_not_offered() {
        let (mut registry, l) = open(2);
        register(&mut registry, l[0], server("a", 0, 10), 1_000);
        register(&mut registry, l[1], server("b", 5, 10), 1_000);
        assert_eq!(registry.pick(at(1_000)).unwrap().ip1, "a");
        // b keeps sending heartbeats, a goes quiet (frozen: its link stays open).
        heard(&mut registry, l[1], 6_000);
        heard(&mut registry, l[1], 11_000);
        assert_eq!(registry.pick(at(1_000 + SILENT_MS)).unwrap().ip1, "a");
        assert_eq!(registry.pick(at(1_000 + SILENT_MS + 1)).unwrap().ip1, "b");
        assert!(health_json(&registry, at(1_000 + SILENT_MS + 1)).0);
        // b goes quiet too: nobody to offer.
        assert_eq!(
            registry.pick(at(11_000 + SILENT_MS + 1)),
            Err(PickError::NoServer)
        );
        assert!(!health_json(&registry, at(11_000 + SILENT_MS + 1)).0);
        // a speaks again: offered again.
        heard(&mut registry, l[0], 30_000);
        assert_eq!(registry.pick(at(30_000)).unwrap().ip1, "a");
    }

    #[test]
    fn the_timer_reports_silence_and_return() {
        let (mut registry, l) = open(2);
        assert_eq!(registry.poll_timeout(), None, "nobody registered");
        register(&mut registry, l[0], server("a", 0, 10), 1_000);
        register(&mut registry, l[1], server("b", 0, 10), 2_000);
        let registered: Vec<_> = std::iter::from_fn(|| registry.poll_output()).collect();
        assert!(matches!(
            &registered[..],
            [RegistryEvent::Registered(a, _), RegistryEvent::Registered(b, _)] if (*a, *b) == (l[0], l[1])
        ));
        assert_eq!(registry.poll_timeout(), Some(1_000 + SILENT_MS + 1));
        registry.handle_timeout(at(1_000 + SILENT_MS));
        assert_eq!(registry.poll_output(), None, "not silent yet");
        registry.handle_timeout(at(1_000 + SILENT_MS + 1));
        assert_eq!(registry.poll_output(), Some(RegistryEvent::Silent(l[0])));
        assert_eq!(registry.poll_output(), None);
        assert_eq!(
            registry.poll_timeout(),
            Some(2_000 + SILENT_MS + 1),
            "a silent server arms no timer"
        );
        heard(&mut registry, l[0], 12_000);
        assert_eq!(registry.poll_output(), Some(RegistryEvent::Resumed(l[0])));
        registry.handle_link_closed(at(12_000), l[1]);
        assert_eq!(registry.poll_timeout(), Some(12_000 + SILENT_MS + 1));
    }

    #[test]
    fn all_full_and_no_underflow() {
        let (mut registry, l) = open(1);
        register(&mut registry, l[0], server("a", 2, 2), 0);
        assert_eq!(registry.pick(at(0)), Err(PickError::AllFull));
        assert_eq!(
            (PickError::AllFull.code(), PickError::NoServer.code()),
            (2, 1)
        );
        let (mut registry, l) = open(1);
        register(&mut registry, l[0], server("a", 0, 2), 0);
        count_update(&mut registry, l[0], 2);
        assert_eq!(registry.total_connections(), 0, "never below zero (Q-71)");
        count_update(&mut registry, MsgServerLink(99), 1);
        register(&mut registry, MsgServerLink(99), server("z", 0, 2), 0);
        assert_eq!(
            registry.servers().count(),
            1,
            "a link that is not open is ignored"
        );
        register(&mut registry, l[0], server("a", 1, 2), 0);
        assert_eq!(
            registry.total_connections(),
            1,
            "re-registration replaces the entry"
        );
    }

    #[test]
    fn discovery_answers_in_the_original_shape() {
        let mut info = server("10.0.0.1", 0, 10);
        info.ip2 = "10.0.0.2".into();
        let ok = discovery_json(Ok(&info), "http://m:8700/", "http://d/\"x", true);
        assert_eq!(
            ok,
            "{\n   \"backupIP\" : \"10.0.0.2\",\n   \"code\" : 0,\n   \"discovery\" : \"http://d/\\\"x\",\n   \
             \"msfsBackup\" : \"http://m:8700/\",\n   \"msfsPrior\" : \"http://m:8700/\",\n   \"msg\" : \"\",\n   \
             \"port\" : \"8000\",\n   \"priorIP\" : \"10.0.0.1\"\n}\n"
        );
        let v6 = discovery_json(Ok(&info), "", "", false);
        assert!(
            v6.contains("\"priorIP\" : \"10.0.0.2\""),
            "non-IPv4 peers get ip2 first"
        );
        let full = discovery_json(Err(PickError::AllFull), "", "", true);
        assert_eq!(full, "{\n   \"code\" : 2,\n   \"msg\" : \"负载过高\"\n}\n");
    }
}
