//! Frames to the logged-in connections of a user, of a device class, or of everyone.

use super::*;

impl MsgServer {
    /// Whether `conn` is a mobile client (`false` when unknown or not logged in yet).
    pub(super) fn is_mobile(&self, conn: ConnId) -> bool {
        self.conns
            .get(&conn)
            .and_then(|c| c.client)
            .is_some_and(ClientType::is_mobile)
    }

    /// Whether one of `entry`'s connections is a client of the class (mobile or PC;
    /// connections of unknown type count as neither).
    pub(super) fn has_class_here(&self, entry: &LocalUser, mobile: bool) -> bool {
        entry.conns.iter().any(|c| {
            self.conns
                .get(c)
                .and_then(|c| c.client)
                .is_some_and(|t| t.is_mobile() == mobile)
        })
    }

    /// To every logged-in connection of `user` except `except`.
    pub(super) fn send_to_user(&mut self, user: UserId, except: Option<ConnId>, frame: &Frame) {
        if let Some(entry) = self.users.get(&user) {
            for &conn in &entry.conns {
                if Some(conn) != except {
                    self.out.push_back(Action::ToClient(conn, frame.clone()));
                }
            }
        }
    }

    /// To the logged-in connections of `user` of one class (mobile or PC).
    pub(super) fn send_to_user_class(&mut self, user: UserId, mobile: bool, frame: &Frame) {
        if let Some(entry) = self.users.get(&user) {
            for &conn in &entry.conns {
                if self.is_mobile(conn) == mobile {
                    self.out.push_back(Action::ToClient(conn, frame.clone()));
                }
            }
        }
    }

    pub(super) fn send_to_user_pcs(&mut self, user: UserId, frame: &Frame) {
        self.send_to_user_class(user, false, frame);
    }

    /// To every logged-in connection here (only PC ones when `pc_only`).
    pub(super) fn send_to_everyone(&mut self, frame: &Frame, pc_only: bool) {
        let mut conns: Vec<ConnId> = self
            .users
            .values()
            .flat_map(|u| u.conns.iter().copied())
            .filter(|&c| !pc_only || !self.is_mobile(c))
            .collect();
        conns.sort_unstable();
        self.out.extend(
            conns
                .into_iter()
                .map(|c| Action::ToClient(c, frame.clone())),
        );
    }
}
