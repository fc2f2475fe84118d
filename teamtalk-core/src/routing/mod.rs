//! The route_server's presence table and relay rules, as a state machine: the server feeds
//! [`RouteHub`] link openings, frames and closings and writes the frames it drains.
//!
//! Connections are counted per (user, msg_server link, client type), so a msg_server that goes
//! away takes exactly its connections with it (the original summed counts over links and never
//! decremented them on a link drop, Q-69 in docs/compatibility.md). A user is ONLINE when a PC client
//! (Windows/Mac) is connected anywhere; mobile-only users are OFFLINE, as the original.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::Hash;

use bytes::Bytes;

use crate::command::AnyMessage;
use crate::domain::{ClientType, UserId};
use crate::ids::CommandId;
use crate::pdu::Pdu;
use crate::proto::{base_define, buddy, server};
use crate::time::{Machine, Now};

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

/// Whether and where the route_server relays a PDU of `command` unchanged. `None`: the
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

/// A msg_server link of the route_server, named by the [`RouteHub`] when it opens
/// ([`RouteHub::handle_link_opened`]); ids are never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteLink(u64);

impl RouteLink {
    /// The id as a number, for logs.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for RouteLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "route-link-{}", self.0)
    }
}

/// A frame for one msg_server link. A PDU for many links is encoded once: every
/// [`Transmit`] of it shares the same `frame` buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The link to write to.
    pub link: RouteLink,
    /// The whole frame, header included (relayed PDUs are passed on unchanged).
    pub frame: Bytes,
}

/// Who a PDU goes to, resolved against the open links when it is queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Link(RouteLink),
    All,
    AllBut(RouteLink),
}

/// The whole route_server as a state machine ([`Machine`], see the crate's "Run loop"): feed
/// it link openings, the PDUs of each msg_server link and the link closings, and write the
/// [`Transmit`]s drained from [`Machine::poll_output`]. It has no timers (heartbeats and
/// idle timeouts are each link's [`crate::link::LinkTimer`]).
#[derive(Clone, Debug, Default)]
pub struct RouteHub {
    presence: Presence<RouteLink>,
    /// Open links, in opening order (fan-out order).
    links: BTreeSet<RouteLink>,
    next_link: u64,
    out: VecDeque<Transmit>,
}

impl RouteHub {
    /// A route_server with no links and nobody online.
    pub fn new() -> RouteHub {
        RouteHub::default()
    }

    /// The presence table.
    pub fn presence(&self) -> &Presence<RouteLink> {
        &self.presence
    }

    /// Open msg_server links.
    pub fn links(&self) -> usize {
        self.links.len()
    }

    /// A msg_server link opened at `now`: it receives what is sent to every link from now on.
    pub fn handle_link_opened(&mut self, _now: Now) -> RouteLink {
        self.next_link += 1;
        let link = RouteLink(self.next_link);
        self.links.insert(link);
        link
    }

    /// A PDU arrived on `link` at `now`. PDUs whose body does not decode, commands the
    /// route_server does not handle, and frames of links that are not open are ignored
    /// (logged).
    pub fn handle_frame(&mut self, _now: Now, link: RouteLink, pdu: &Pdu) {
        if !self.links.contains(&link) {
            tracing::debug!(%link, "frame of a link that is not open ignored");
            return;
        }
        if let Some(scope) = relay_scope(pdu.command()) {
            let to = match scope {
                RelayScope::AllButSource => Target::AllBut(link),
                RelayScope::All => Target::All,
            };
            self.send(to, pdu);
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
                // Every entry is a logged-in connection, whatever online status its client
                // chose at login: one that chose OFFLINE (2, "invisible") is still counted,
                // as its login's status update counted it (docs/compatibility.md Q-73).
                let connections = info.user_stat_list.iter().filter_map(|stat| {
                    let client = ClientType::from_wire(stat.client_type)?;
                    Some((UserId(stat.user_id), STATUS_ONLINE, client))
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
                self.send_notices(notices);
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
                self.send(
                    Target::Link(link),
                    &Pdu::encode_message(&answer, pdu.seq_num()),
                );
            }
            AnyMessage::RoleSet(_) | AnyMessage::HeartBeat(_) => {}
            other => {
                tracing::debug!(command = %other.command(), "not a route_server command, ignored");
            }
        }
    }

    /// `link` closed or timed out at `now`: its connections are forgotten and users who lost
    /// their last PC are announced offline to the remaining links. Nothing more is sent to
    /// it, frames already queued for it included.
    pub fn handle_link_closed(&mut self, _now: Now, link: RouteLink) {
        if !self.links.remove(&link) {
            return;
        }
        self.out.retain(|t| t.link != link);
        for notices in self.presence.link_closed(link) {
            self.send_notices(notices);
        }
    }

    /// Queues `pdu` for its recipients, encoded once.
    fn send(&mut self, to: Target, pdu: &Pdu) {
        let frame = pdu.to_bytes();
        let recipients = self.links.iter().copied().filter(|&l| match to {
            Target::Link(only) => l == only,
            Target::All => true,
            Target::AllBut(source) => l != source,
        });
        for link in recipients {
            self.out.push_back(Transmit {
                link,
                frame: frame.clone(),
            });
        }
    }

    /// The notifications of a presence change, for every link.
    fn send_notices(&mut self, notices: Notices) {
        if let Some((user, login_status)) = notices.login_status {
            let notify = server::ImServerPcLoginStatusNotify {
                user_id: user.0,
                login_status,
            };
            self.send(Target::All, &Pdu::encode_message(&notify, 0));
        }
        if let Some((user, status)) = notices.status {
            let notify = buddy::ImUserStatNotify {
                user_stat: base_define::UserStat {
                    user_id: user.0,
                    status: wire_status(status),
                },
            };
            self.send(Target::All, &Pdu::encode_message(&notify, 0));
        }
    }
}

impl Machine for RouteHub {
    type Output = Transmit;

    fn poll_output(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// Always `None`: the route_server's decisions are all answers to frames.
    fn poll_timeout(&self) -> Option<u64> {
        None
    }

    fn handle_timeout(&mut self, _now: Now) {}
}

fn wire_status(status: u32) -> i32 {
    i32::try_from(status).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests;
