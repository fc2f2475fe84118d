//! Upstream links: opening, closing and frames of db_proxy, route_server, login_server,
//! push_server and file_server links, and choosing the link a request goes on.

use super::session::server_refusal;
use super::*;

impl MsgServer {
    /// An upstream link of `kind` is up at `now`; returns the id the core gave it (the
    /// shell names the link with it in [`MsgServer::handle_upstream_frame`] and
    /// [`MsgServer::handle_upstream_closed`]; an id is never given twice while open).
    ///
    /// login_servers learn about this msg_server, route_servers get the connected users (and
    /// the first one its master role), file_servers are asked for their addresses; held
    /// messages go to a new db_proxy link. Logins need a usable db_proxy link, a
    /// login_server link and a route_server link open ([`MsgServer`]); push_server and
    /// file_server links are optional.
    pub fn handle_upstream_opened(&mut self, now: Now, kind: Upstream) -> LinkId {
        self.advance(now);
        let link = loop {
            self.next_link = self.next_link.wrapping_add(1).max(1);
            let id = LinkId(self.next_link);
            if !self.links.contains_key(&id) {
                break id;
            }
        };
        self.links.insert(link, kind);
        match kind {
            Upstream::Db(range) => {
                self.db.push(DbLink {
                    id: link,
                    range,
                    usable: true,
                });
                self.dispatch_held();
            }
            Upstream::Push => self.pushes.push(link),
            Upstream::File => {
                self.files.push((link, Vec::new()));
                let ask = server::ImFileServerIpReq {};
                self.out.push_back(Action::ToUpstream(
                    link,
                    Frame::from(Pdu::encode_message(&ask, 0)),
                ));
            }
            Upstream::Login => {
                self.logins.push(link);
                let info = server::ImMsgServInfo {
                    ip1: self.config.ip1.clone(),
                    ip2: self.config.ip2.clone(),
                    port: self.config.port,
                    max_conn_cnt: self.config.max_conn_cnt,
                    cur_conn_cnt: u32::try_from(self.logged_in()).unwrap_or(u32::MAX),
                    host_name: self.config.host_name.clone(),
                };
                self.out.push_back(Action::ToUpstream(
                    link,
                    Frame::from(Pdu::encode_message(&info, 0)),
                ));
            }
            Upstream::Route => {
                self.routes.push(link);
                let mut list = Vec::new();
                for (user, entry) in &self.users {
                    for conn in &entry.conns {
                        if let Some(c) = self.conns.get(conn) {
                            list.push(bd::ServerUserStat {
                                user_id: user.0,
                                status: c.status,
                                client_type: c.client.map_or(0, ClientType::to_wire),
                            });
                        }
                    }
                }
                list.sort_by_key(|s| s.user_id);
                let info = server::ImOnlineUserInfo {
                    user_stat_list: list,
                };
                self.out.push_back(Action::ToUpstream(
                    link,
                    Frame::from(Pdu::encode_message(&info, 0)),
                ));
                if self.routes.len() == 1 {
                    let role = server::ImRoleSet { master: 1 };
                    self.out.push_back(Action::ToUpstream(
                        link,
                        Frame::from(Pdu::encode_message(&role, 0)),
                    ));
                }
            }
        }
        link
    }

    /// An upstream link closed; a new route master is elected when the master went away.
    /// Logins waiting for an answer on a closed db_proxy link are refused with
    /// `REFUSE_REASON_NO_DB_SERVER` (the answer can no longer come). Messages in flight on it
    /// are sent again on another db_proxy link, or held until one is up (hold.rs). Unknown
    /// links are ignored.
    pub fn handle_upstream_closed(&mut self, now: Now, link: LinkId) {
        self.advance(now);
        if self.links.remove(&link).is_none() {
            return;
        }
        let mut stranded: Vec<(ConnId, u16)> = self
            .conns
            .iter()
            .filter_map(|(id, c)| match c.state {
                ConnState::Validating(_, l, seq) if l == link => Some((*id, seq)),
                _ => None,
            })
            .collect();
        stranded.sort_unstable();
        for (conn, seq) in stranded {
            let answer = server_refusal(bd::ResultType::RefuseReasonNoDbServer);
            self.refuse(conn, seq, answer);
        }
        let was_db = self.db.iter().any(|l| l.id == link);
        self.db.retain(|l| l.id != link);
        if was_db {
            for c in self.conns.values_mut() {
                c.outgoing.link_lost(link);
            }
            self.dispatch_held();
        }
        self.logins.retain(|l| *l != link);
        self.pushes.retain(|l| *l != link);
        self.files.retain(|(l, _)| *l != link);
        let was_master = self.routes.first() == Some(&link);
        self.routes.retain(|l| *l != link);
        if was_master {
            if let Some(&master) = self.routes.first() {
                let role = server::ImRoleSet { master: 1 };
                self.out.push_back(Action::ToUpstream(
                    master,
                    Frame::from(Pdu::encode_message(&role, 0)),
                ));
            }
        }
    }

    /// A frame at `now` from the upstream link `link` (as returned by
    /// [`MsgServer::handle_upstream_opened`]; frames of unknown links are dropped).
    pub fn handle_upstream_frame(&mut self, now: Now, link: LinkId, pdu: Pdu) {
        self.advance(now);
        let Some(&kind) = self.links.get(&link) else {
            return;
        };
        if pdu.command() == CommandId::OTHER_HEARTBEAT {
            return;
        }
        match kind {
            Upstream::Db(_) => self.db_answer(link, pdu),
            Upstream::Route => self.route_message(pdu),
            Upstream::Login => {}
            Upstream::File => self.file_answer(link, pdu),
            Upstream::Push => {
                if pdu.command() == CommandId::OTHER_PUSH_TO_USER_RSP {
                    tracing::debug!("push_server answered");
                }
            }
        }
    }

    pub(super) fn pick_db(&mut self, range: DbRange) -> Option<LinkId> {
        let usable = |wanted: DbRange| {
            self.db
                .iter()
                .filter(move |l| l.usable && l.range == wanted)
                .map(|l| l.id)
        };
        let other = match range {
            DbRange::Login => DbRange::Other,
            DbRange::Other => DbRange::Login,
        };
        let first: Vec<LinkId> = usable(range).collect();
        let candidates = if first.is_empty() {
            usable(other).collect()
        } else {
            first
        };
        if candidates.is_empty() {
            return None;
        }
        self.db_turn = self.db_turn.wrapping_add(1);
        candidates.get(self.db_turn % candidates.len()).copied()
    }

    pub(super) fn send_db(&mut self, range: DbRange, pdu: Pdu) {
        match self.pick_db(range) {
            Some(link) => self
                .out
                .push_back(Action::ToUpstream(link, Frame::from(pdu))),
            None => tracing::debug!(command = %pdu.command(), "no db_proxy: request dropped"),
        }
    }

    pub(super) fn send_to_master_route(&mut self, frame: impl Into<Frame>) {
        if let Some(&master) = self.routes.first() {
            self.out.push_back(Action::ToUpstream(master, frame.into()));
        }
    }

    pub(super) fn send_to_routes(&mut self, frame: &Frame) {
        self.out.extend(
            self.routes
                .iter()
                .map(|&l| Action::ToUpstream(l, frame.clone())),
        );
    }

    pub(super) fn send_to_logins(&mut self, frame: &Frame) {
        self.out.extend(
            self.logins
                .iter()
                .map(|&l| Action::ToUpstream(l, frame.clone())),
        );
    }
}
