//! Upstream links: opening, closing and frames of db_proxy, route_server, login_server,
//! push_server and file_server links, and choosing the link a request goes on.

use super::session::server_refusal;
use super::*;

impl<C: Clock> MsgServer<C> {
    /// An upstream link is up: login_servers learn about this msg_server, route_servers get
    /// the connected users (and the master its role).
    pub fn upstream_opened(&mut self, link: LinkId, kind: Upstream, out: &mut Vec<Action>) {
        self.upstream_closed(link, out);
        match kind {
            Upstream::Db(range) => {
                self.db.push(DbLink {
                    id: link,
                    range,
                    usable: true,
                });
                self.dispatch_held(out);
            }
            Upstream::Push => self.pushes.push(link),
            Upstream::File => {
                self.files.push((link, Vec::new()));
                let ask = server::ImFileServerIpReq {};
                out.push(Action::ToUpstream(link, Pdu::encode_message(&ask, 0)));
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
                out.push(Action::ToUpstream(link, Pdu::encode_message(&info, 0)));
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
                out.push(Action::ToUpstream(link, Pdu::encode_message(&info, 0)));
                if self.routes.len() == 1 {
                    let role = server::ImRoleSet { master: 1 };
                    out.push(Action::ToUpstream(link, Pdu::encode_message(&role, 0)));
                }
            }
        }
    }

    /// An upstream link closed; a new route master is elected when the master went away.
    /// Logins waiting for an answer on a closed db_proxy link are refused with
    /// `REFUSE_REASON_NO_DB_SERVER` (the answer can no longer come). Messages in flight on it
    /// are sent again on another db_proxy link, or held until one is up (hold.rs).
    pub fn upstream_closed(&mut self, link: LinkId, out: &mut Vec<Action>) {
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
            self.refuse(conn, seq, answer, out);
        }
        let was_db = self.db.iter().any(|l| l.id == link);
        self.db.retain(|l| l.id != link);
        if was_db {
            for c in self.conns.values_mut() {
                c.outgoing.link_lost(link);
            }
            self.dispatch_held(out);
        }
        self.logins.retain(|l| *l != link);
        self.pushes.retain(|l| *l != link);
        self.files.retain(|(l, _)| *l != link);
        let was_master = self.routes.first() == Some(&link);
        self.routes.retain(|l| *l != link);
        if was_master {
            if let Some(&master) = self.routes.first() {
                let role = server::ImRoleSet { master: 1 };
                out.push(Action::ToUpstream(master, Pdu::encode_message(&role, 0)));
            }
        }
    }

    /// A frame from an upstream link of kind `kind`.
    pub fn upstream_frame(
        &mut self,
        link: LinkId,
        kind: Upstream,
        pdu: Pdu,
        out: &mut Vec<Action>,
    ) {
        if pdu.command() == CommandId::OTHER_HEARTBEAT {
            return;
        }
        match kind {
            Upstream::Db(_) => self.db_answer(link, pdu, out),
            Upstream::Route => self.route_message(pdu, out),
            Upstream::Login => {}
            Upstream::File => self.file_answer(link, pdu, out),
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

    pub(super) fn send_db(&mut self, range: DbRange, pdu: Pdu, out: &mut Vec<Action>) {
        match self.pick_db(range) {
            Some(link) => out.push(Action::ToUpstream(link, pdu)),
            None => tracing::debug!(command = %pdu.command(), "no db_proxy: request dropped"),
        }
    }

    pub(super) fn to_master_route(&self, pdu: Pdu, out: &mut Vec<Action>) {
        if let Some(&master) = self.routes.first() {
            out.push(Action::ToUpstream(master, pdu));
        }
    }

    pub(super) fn to_routes(&self, pdu: &Pdu, out: &mut Vec<Action>) {
        out.extend(
            self.routes
                .iter()
                .map(|&l| Action::ToUpstream(l, pdu.clone())),
        );
    }

    pub(super) fn to_logins(&self, pdu: &Pdu, out: &mut Vec<Action>) {
        out.extend(
            self.logins
                .iter()
                .map(|&l| Action::ToUpstream(l, pdu.clone())),
        );
    }
}
