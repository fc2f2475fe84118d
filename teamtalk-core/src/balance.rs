//! The login_server's registry of msg_servers and its least-loaded choice (spec/servers.md
//! §2.2–2.3), as plain data: the server feeds it link events and asks it which msg_server a
//! client should use.
//!
//! Counting is per client connection (a user with PC and phone counts twice), as the
//! original. Counts never go below zero (quirks.md Q-71).
//!
//! A msg_server not heard from (no frame, not even a heartbeat, which it sends every 5 s)
//! for more than [`SILENT_MS`] is not offered to clients, although its link is still open: a
//! frozen process keeps its sockets (docs/compatibility.md, "login_server skips silent
//! msg_servers"). Time is the caller's monotonic milliseconds.

/// A msg_server silent for longer than this (ms) is not offered: two missed heartbeats.
pub const SILENT_MS: u64 = 10_000;

use std::hash::Hash;

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

/// The registered msg_servers, keyed by the link (connection) they registered on.
#[derive(Clone, Debug)]
pub struct Registry<L> {
    /// In registration order: the first of equally loaded servers wins.
    servers: Vec<Entry<L>>,
}

#[derive(Clone, Debug)]
struct Entry<L> {
    link: L,
    info: MsgServerInfo,
    /// When the link last carried a frame (ms).
    heard_ms: u64,
}

impl<L> Default for Registry<L> {
    fn default() -> Self {
        Registry {
            servers: Vec::new(),
        }
    }
}

impl<L: Copy + Eq + Hash> Registry<L> {
    /// An empty registry.
    pub fn new() -> Registry<L> {
        Registry::default()
    }

    /// `CID_OTHER_MSG_SERV_INFO` on `link` at `now_ms`: registers the msg_server (again,
    /// after a reconnect: the entry is replaced and keeps no stale count).
    pub fn register(&mut self, link: L, info: MsgServerInfo, now_ms: u64) {
        match self.servers.iter_mut().find(|e| e.link == link) {
            Some(entry) => {
                entry.info = info;
                entry.heard_ms = now_ms;
            }
            None => self.servers.push(Entry {
                link,
                info,
                heard_ms: now_ms,
            }),
        }
    }

    /// Any frame (a heartbeat too) arrived on `link` at `now_ms`: its msg_server is alive.
    pub fn heard(&mut self, link: L, now_ms: u64) {
        if let Some(entry) = self.servers.iter_mut().find(|e| e.link == link) {
            entry.heard_ms = entry.heard_ms.max(now_ms);
        }
    }

    /// `CID_OTHER_USER_CNT_UPDATE` on `link`: action 1 adds a connection, any other value
    /// removes one (never below zero). Unknown links are ignored.
    pub fn count_update(&mut self, link: L, user_action: u32) {
        if let Some(entry) = self.servers.iter_mut().find(|e| e.link == link) {
            let count = &mut entry.info.cur_conn_cnt;
            *count = if user_action == 1 {
                count.saturating_add(1)
            } else {
                count.saturating_sub(1)
            };
        }
    }

    /// The link closed (or timed out): its msg_server is forgotten.
    pub fn remove(&mut self, link: L) {
        self.servers.retain(|e| e.link != link);
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

    /// The msg_server a new client should use at `now_ms`: among those heard from within
    /// [`SILENT_MS`] and below their limit, the one with the fewest connections (the first
    /// registered on ties). [`PickError::NoServer`] when none was heard from lately.
    pub fn pick(&self, now_ms: u64) -> Result<&MsgServerInfo, PickError> {
        let mut alive = self
            .servers
            .iter()
            .filter(|e| now_ms.saturating_sub(e.heard_ms) <= SILENT_MS)
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

/// The login_server's discovery answer (`GET /msg_server`, spec/servers.md §2.3): a JSON
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
pub fn health_json<L: Copy + Eq + Hash>(registry: &Registry<L>, now_ms: u64) -> (bool, String) {
    let (healthy, status) = match registry.pick(now_ms) {
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

    #[test]
    fn health_says_whether_a_client_would_get_a_server() {
        let mut registry = Registry::new();
        assert_eq!(
            health_json(&registry, 0),
            (
                false,
                "{\"status\":\"no msg_server\",\"msg_servers\":0,\"connections\":0}\n".into()
            )
        );
        registry.register(1, server("a", 2, 2), 0);
        assert_eq!(
            health_json(&registry, 0).1,
            "{\"status\":\"all msg_servers full\",\"msg_servers\":1,\"connections\":2}\n"
        );
        registry.register(2, server("b", 5, 10), 0);
        assert_eq!(
            health_json(&registry, 0),
            (
                true,
                "{\"status\":\"ok\",\"msg_servers\":2,\"connections\":7}\n".into()
            )
        );
    }

    #[test]
    fn picks_the_least_loaded_server_below_its_limit() {
        let mut registry = Registry::new();
        assert_eq!(registry.pick(0), Err(PickError::NoServer));
        registry.register(1, server("a", 5, 10), 0);
        registry.register(2, server("b", 3, 10), 0);
        registry.register(3, server("c", 3, 10), 0);
        assert_eq!(
            registry.pick(0).unwrap().ip1,
            "b",
            "fewest connections, first on ties"
        );
        registry.count_update(2, 1);
        assert_eq!(registry.pick(0).unwrap().ip1, "c");
        registry.register(4, server("d", 0, 0), 0);
        assert_eq!(
            registry.pick(0).unwrap().ip1,
            "c",
            "a full server is never chosen"
        );
        registry.remove(3);
        assert_eq!(registry.pick(0).unwrap().ip1, "b");
        assert_eq!(registry.total_connections(), 5 + 4);
    }

    #[test]
    fn a_silent_msg_server_is_not_offered() {
        let mut registry = Registry::new();
        registry.register(1, server("a", 0, 10), 1_000);
        registry.register(2, server("b", 5, 10), 1_000);
        assert_eq!(registry.pick(1_000).unwrap().ip1, "a");
        // b keeps sending heartbeats, a goes quiet (frozen: its link stays open).
        registry.heard(2, 6_000);
        registry.heard(2, 11_000);
        assert_eq!(registry.pick(1_000 + SILENT_MS).unwrap().ip1, "a");
        assert_eq!(registry.pick(1_000 + SILENT_MS + 1).unwrap().ip1, "b");
        assert!(health_json(&registry, 1_000 + SILENT_MS + 1).0);
        // b goes quiet too: nobody to offer.
        assert_eq!(
            registry.pick(11_000 + SILENT_MS + 1),
            Err(PickError::NoServer)
        );
        assert!(!health_json(&registry, 11_000 + SILENT_MS + 1).0);
        // a speaks again: offered again.
        registry.heard(1, 30_000);
        assert_eq!(registry.pick(30_000).unwrap().ip1, "a");
    }

    #[test]
    fn all_full_and_no_underflow() {
        let mut registry = Registry::new();
        registry.register("x", server("a", 2, 2), 0);
        assert_eq!(registry.pick(0), Err(PickError::AllFull));
        assert_eq!(
            (PickError::AllFull.code(), PickError::NoServer.code()),
            (2, 1)
        );
        let mut registry = Registry::new();
        registry.register("x", server("a", 0, 2), 0);
        registry.count_update("x", 2);
        assert_eq!(registry.total_connections(), 0, "never below zero (Q-71)");
        registry.count_update("unknown", 1);
        registry.register("x", server("a", 1, 2), 0);
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
