//! The route_server's presence table and relay rules (spec/servers.md §4.2–4.3), as plain
//! data: the server feeds it status updates and link events and sends the notifications it
//! returns.
//!
//! Connections are counted per (user, msg_server link, client type), so a msg_server that goes
//! away takes exactly its connections with it (the original summed counts over links and never
//! decremented them on a link drop, quirks.md Q-69). A user is ONLINE when a PC client
//! (Windows/Mac) is connected anywhere; mobile-only users are OFFLINE, as the original.

use std::collections::HashMap;
use std::hash::Hash;

use crate::command::AnyMessage;
use crate::domain::{ClientType, UserId};
use crate::ids::CommandId;
use crate::pdu::Pdu;
use crate::proto::{base_define, buddy, server};

/// `UserStatType::USER_STATUS_OFFLINE`; every other status of an update counts as connected.
pub const STATUS_OFFLINE: u32 = 2;
/// `UserStatType::USER_STATUS_ONLINE`.
pub const STATUS_ONLINE: u32 = 1;

/// Notifications the route_server sends after a presence change, to every msg_server link
/// (including the one the update came from).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Notices {
    /// `CID_OTHER_LOGIN_STATUS_NOTIFY {user, login_status}`: 1 a PC client of the user is
    /// online, 0 none is left (msg_servers tell the user's own mobile clients).
    pub login_status: Option<(UserId, u32)>,
    /// `CID_BUDDY_LIST_STATUS_NOTIFY {user, status}`: a PC presence change everybody sees.
    pub status: Option<(UserId, u32)>,
}

/// Who a relayed PDU goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayScope {
    /// Every msg_server link except the one it came from.
    AllButSource,
    /// Every msg_server link, the source included.
    All,
}

/// Whether and where the route_server relays a PDU of `command` unchanged (§4.3). `None`: the
/// command is not relayed (it is handled, or ignored).
pub fn relay_scope(command: CommandId) -> Option<RelayScope> {
    match command {
        CommandId::MSG_DATA
        | CommandId::SWITCH_P2P_CMD
        | CommandId::MSG_READ_NOTIFY
        | CommandId::OTHER_SERVER_KICK_USER
        | CommandId::GROUP_CHANGE_MEMBER_NOTIFY
        | CommandId::FILE_NOTIFY
        | CommandId::BUDDY_LIST_REMOVE_SESSION_NOTIFY => Some(RelayScope::AllButSource),
        CommandId::BUDDY_LIST_SIGN_INFO_CHANGED_NOTIFY => Some(RelayScope::All),
        _ => None,
    }
}

/// Connected clients of every user, per msg_server link `L`.
#[derive(Clone, Debug)]
pub struct Presence<L> {
    users: HashMap<UserId, HashMap<(L, ClientType), u32>>,
}

impl<L> Default for Presence<L> {
    fn default() -> Self {
        Presence {
            users: HashMap::new(),
        }
    }
}

impl<L: Copy + Eq + Hash> Presence<L> {
    /// An empty table.
    pub fn new() -> Presence<L> {
        Presence::default()
    }

    /// `CID_OTHER_USER_STATUS_UPDATE` from `link`: one connection of `user` with `client`
    /// came (`status` ≠ 2) or went (`status` = 2). Returns what to announce.
    pub fn update(&mut self, link: L, user: UserId, status: u32, client: ClientType) -> Notices {
        let offline = status == STATUS_OFFLINE;
        self.apply(link, user, offline, client);
        let exists = self.users.contains_key(&user);
        let has_pc = self.has_pc(user);
        let is_pc = !client.is_mobile();
        let mut notices = Notices::default();
        if exists && ((offline && is_pc && !has_pc) || (!offline && has_pc)) {
            notices.login_status = Some((user, u32::from(!offline)));
        }
        if is_pc && !(offline && has_pc) {
            notices.status = Some((user, status));
        }
        notices
    }

    /// `CID_OTHER_ONLINE_USER_INFO` from `link` (sent by each msg_server when it connects):
    /// its connections, applied without notifications.
    pub fn load(
        &mut self,
        link: L,
        connections: impl IntoIterator<Item = (UserId, u32, ClientType)>,
    ) {
        for (user, status, client) in connections {
            self.apply(link, user, status == STATUS_OFFLINE, client);
        }
    }

    /// The link to a msg_server closed or timed out: its connections are gone. Returns the
    /// announcements for users who thereby lost their last PC client (the original announced
    /// nothing and kept stale counts).
    pub fn link_closed(&mut self, link: L) -> Vec<Notices> {
        let mut notices = Vec::new();
        self.users.retain(|&user, clients| {
            let had_pc = clients.iter().any(|((_, t), n)| !t.is_mobile() && *n > 0);
            clients.retain(|(l, _), _| *l != link);
            let has_pc = clients.iter().any(|((_, t), n)| !t.is_mobile() && *n > 0);
            if had_pc && !has_pc {
                notices.push(Notices {
                    login_status: (!clients.is_empty()).then_some((user, 0)),
                    status: Some((user, STATUS_OFFLINE)),
                });
            }
            !clients.is_empty()
        });
        notices
    }

    /// The status other users see: ONLINE (1) with a PC client connected anywhere, else
    /// OFFLINE (2).
    pub fn status(&self, user: UserId) -> u32 {
        if self.has_pc(user) {
            STATUS_ONLINE
        } else {
            STATUS_OFFLINE
        }
    }

    /// Whether a PC (Windows/Mac) client of `user` is connected anywhere.
    pub fn has_pc(&self, user: UserId) -> bool {
        self.users
            .get(&user)
            .is_some_and(|clients| clients.iter().any(|((_, t), n)| !t.is_mobile() && *n > 0))
    }

    /// Users with at least one connection.
    pub fn online_users(&self) -> usize {
        self.users.len()
    }

    fn apply(&mut self, link: L, user: UserId, offline: bool, client: ClientType) {
        if offline {
            let Some(clients) = self.users.get_mut(&user) else {
                return;
            };
            if let Some(count) = clients.get_mut(&(link, client)) {
                *count -= 1;
                if *count == 0 {
                    clients.remove(&(link, client));
                }
            }
            if clients.is_empty() {
                self.users.remove(&user);
            }
        } else {
            *self
                .users
                .entry(user)
                .or_default()
                .entry((link, client))
                .or_default() += 1;
        }
    }
}

/// Where the route_server sends a PDU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target<L> {
    /// One msg_server link.
    Link(L),
    /// Every msg_server link.
    All,
    /// Every msg_server link except this one.
    AllBut(L),
}

/// A PDU the route_server sends, and to whom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing<L> {
    /// Recipients.
    pub to: Target<L>,
    /// The frame (relayed PDUs are passed on unchanged).
    pub pdu: Pdu,
}

/// The whole route_server as a state machine: feed it the PDUs of each msg_server link and
/// the link closings, send what it returns. Heartbeats are the shell's business.
#[derive(Clone, Debug)]
pub struct RouteHub<L> {
    presence: Presence<L>,
}

impl<L> Default for RouteHub<L> {
    fn default() -> Self {
        RouteHub {
            presence: Presence::default(),
        }
    }
}

impl<L: Copy + Eq + Hash> RouteHub<L> {
    /// A route_server with nobody online.
    pub fn new() -> RouteHub<L> {
        RouteHub::default()
    }

    /// The presence table.
    pub fn presence(&self) -> &Presence<L> {
        &self.presence
    }

    /// A PDU arrived on `link`; what to send is appended to `out`. PDUs whose body does not
    /// decode, and commands the route_server does not handle, are ignored (logged).
    pub fn on_pdu(&mut self, link: L, pdu: &Pdu, out: &mut Vec<Outgoing<L>>) {
        if let Some(scope) = relay_scope(pdu.command()) {
            let to = match scope {
                RelayScope::AllButSource => Target::AllBut(link),
                RelayScope::All => Target::All,
            };
            out.push(Outgoing {
                to,
                pdu: pdu.clone(),
            });
            return;
        }
        let message = match pdu.decode_any() {
            Ok(message) => message,
            Err(error) => {
                tracing::debug!(command = %pdu.command(), %error, "undecodable PDU ignored");
                return;
            }
        };
        match message {
            AnyMessage::OnlineUserInfo(info) => {
                let connections = info.user_stat_list.iter().filter_map(|stat| {
                    let client = ClientType::from_wire(stat.client_type)?;
                    Some((UserId(stat.user_id), status_u32(stat.status), client))
                });
                self.presence.load(link, connections);
            }
            AnyMessage::UserStatusUpdate(update) => {
                let Some(client) = ClientType::from_wire(update.client_type) else {
                    tracing::debug!(client_type = update.client_type, "unknown client type");
                    return;
                };
                let notices =
                    self.presence
                        .update(link, UserId(update.user_id), update.user_status, client);
                push_notices(notices, out);
            }
            AnyMessage::UsersStatReq(request) => {
                let answer = buddy::ImUsersStatRsp {
                    user_id: request.user_id,
                    user_stat_list: request
                        .user_id_list
                        .iter()
                        .map(|&id| base_define::UserStat {
                            user_id: id,
                            status: wire_status(self.presence.status(UserId(id))),
                        })
                        .collect(),
                    attach_data: request.attach_data,
                };
                out.push(Outgoing {
                    to: Target::Link(link),
                    pdu: Pdu::encode_message(&answer, pdu.seq_num()),
                });
            }
            AnyMessage::RoleSet(_) | AnyMessage::HeartBeat(_) => {}
            other => {
                tracing::debug!(command = %other.command(), "not a route_server command, ignored");
            }
        }
    }

    /// `link` closed or timed out: its connections are forgotten and users who lost their
    /// last PC are announced offline to the remaining links.
    pub fn on_link_closed(&mut self, link: L, out: &mut Vec<Outgoing<L>>) {
        for notices in self.presence.link_closed(link) {
            push_notices(notices, out);
        }
    }
}

/// The notifications of a presence change, for every link.
fn push_notices<L>(notices: Notices, out: &mut Vec<Outgoing<L>>) {
    if let Some((user, login_status)) = notices.login_status {
        let notify = server::ImServerPcLoginStatusNotify {
            user_id: user.0,
            login_status,
        };
        out.push(Outgoing {
            to: Target::All,
            pdu: Pdu::encode_message(&notify, 0),
        });
    }
    if let Some((user, status)) = notices.status {
        let notify = buddy::ImUserStatNotify {
            user_stat: base_define::UserStat {
                user_id: user.0,
                status: wire_status(status),
            },
        };
        out.push(Outgoing {
            to: Target::All,
            pdu: Pdu::encode_message(&notify, 0),
        });
    }
}

fn wire_status(status: u32) -> i32 {
    i32::try_from(status).unwrap_or(i32::MAX)
}

fn status_u32(status: i32) -> u32 {
    u32::try_from(status).unwrap_or(STATUS_OFFLINE)
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: UserId = UserId(7);

    #[test]
    fn pc_presence_is_announced_mobile_is_not() {
        let mut p = Presence::new();
        let n = p.update(1, U, STATUS_ONLINE, ClientType::Android);
        assert_eq!(n, Notices::default(), "mobile alone: nothing to announce");
        assert_eq!(p.status(U), STATUS_OFFLINE, "mobile-only users are OFFLINE");

        let n = p.update(1, U, STATUS_ONLINE, ClientType::Windows);
        assert_eq!(n.status, Some((U, STATUS_ONLINE)));
        assert_eq!(
            n.login_status,
            Some((U, 1)),
            "the user's phone learns about the PC"
        );
        assert_eq!(p.status(U), STATUS_ONLINE);

        let n = p.update(1, U, STATUS_OFFLINE, ClientType::Windows);
        assert_eq!(n.status, Some((U, STATUS_OFFLINE)));
        assert_eq!(n.login_status, Some((U, 0)));
        assert_eq!(p.status(U), STATUS_OFFLINE);
    }

    #[test]
    fn a_second_pc_keeps_the_user_online() {
        let mut p = Presence::new();
        p.update(1, U, STATUS_ONLINE, ClientType::Windows);
        p.update(2, U, STATUS_ONLINE, ClientType::Mac);
        let n = p.update(1, U, STATUS_OFFLINE, ClientType::Windows);
        assert_eq!(n, Notices::default(), "still online through the Mac");
        assert_eq!(p.status(U), STATUS_ONLINE);
    }

    #[test]
    fn offline_from_another_link_is_ignored() {
        let mut p = Presence::new();
        p.update(1, U, STATUS_ONLINE, ClientType::Windows);
        p.update(2, U, STATUS_OFFLINE, ClientType::Windows);
        assert_eq!(
            p.status(U),
            STATUS_ONLINE,
            "link 2 never had that connection"
        );
    }

    #[test]
    fn a_closed_link_takes_its_connections_along() {
        let mut p = Presence::new();
        p.load(
            1,
            [
                (U, STATUS_ONLINE, ClientType::Windows),
                (UserId(8), STATUS_ONLINE, ClientType::Ios),
            ],
        );
        p.update(2, U, STATUS_ONLINE, ClientType::Android);
        assert_eq!(p.online_users(), 2);
        let notices = p.link_closed(1);
        assert_eq!(
            notices,
            vec![Notices {
                login_status: Some((U, 0)),
                status: Some((U, STATUS_OFFLINE))
            }],
            "U lost its PC and is announced offline; user 8 (mobile only) silently gone"
        );
        assert_eq!(p.status(U), STATUS_OFFLINE);
        assert_eq!(
            p.online_users(),
            1,
            "U is still connected by phone, user 8 is gone (Q-69)"
        );
    }

    #[test]
    fn relay_scopes() {
        assert_eq!(
            relay_scope(CommandId::MSG_DATA),
            Some(RelayScope::AllButSource)
        );
        assert_eq!(
            relay_scope(CommandId::BUDDY_LIST_SIGN_INFO_CHANGED_NOTIFY),
            Some(RelayScope::All)
        );
        assert_eq!(relay_scope(CommandId::OTHER_USER_STATUS_UPDATE), None);
    }

    #[test]
    fn hub_answers_status_queries_and_relays() {
        let mut hub = RouteHub::new();
        let mut out = Vec::new();
        let login = server::ImUserStatusUpdate {
            user_status: STATUS_ONLINE,
            user_id: 7,
            client_type: ClientType::Windows.to_wire(),
        };
        hub.on_pdu(1u8, &Pdu::encode_message(&login, 0), &mut out);
        assert_eq!(out.len(), 2, "login status and status notify");
        assert!(out.iter().all(|o| o.to == Target::All));
        out.clear();

        let query = buddy::ImUsersStatReq {
            user_id: 9,
            user_id_list: vec![7, 8],
            attach_data: Some(bytes::Bytes::from_static(b"handle")),
        };
        hub.on_pdu(2, &Pdu::encode_message(&query, 33), &mut out);
        let [Outgoing { to, pdu }] = &out[..] else {
            panic!("{out:?}")
        };
        assert_eq!(*to, Target::Link(2));
        assert_eq!(pdu.seq_num(), 33, "the request's seq is echoed");
        let answer: buddy::ImUsersStatRsp = pdu.decode_body().unwrap();
        assert_eq!(answer.attach_data.as_deref(), Some(&b"handle"[..]));
        let statuses: Vec<_> = answer
            .user_stat_list
            .iter()
            .map(|s| (s.user_id, s.status))
            .collect();
        assert_eq!(statuses, vec![(7, 1), (8, 2)]);
        out.clear();

        let data = crate::proto::message::ImMsgData {
            from_user_id: 7,
            to_session_id: 8,
            ..Default::default()
        };
        let frame = Pdu::encode_message(&data, 5);
        hub.on_pdu(1, &frame, &mut out);
        assert_eq!(
            out,
            vec![Outgoing {
                to: Target::AllBut(1),
                pdu: frame
            }],
            "relayed unchanged"
        );
        out.clear();

        hub.on_link_closed(1, &mut out);
        assert_eq!(
            out.len(),
            1,
            "user 7 announced offline (no login-status: no client left)"
        );
        assert_eq!(hub.presence().status(UserId(7)), STATUS_OFFLINE);
    }
}
