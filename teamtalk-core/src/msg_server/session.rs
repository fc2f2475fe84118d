//! Login: the validation request to db_proxy, its answer, refusals, kicks, closing and
//! logout bookkeeping towards login_servers and route_servers.

use super::requests::handle_of;
use super::*;

impl MsgServer {
    pub(super) fn login(&mut self, conn: ConnId, pdu: &Pdu) {
        let seq = pdu.seq_num();
        let request: login::ImLoginReq = match pdu.decode_body() {
            Ok(request) => request,
            Err(error) => {
                tracing::debug!(?conn, %error, "undecodable login request");
                self.refuse(
                    conn,
                    seq,
                    server_refusal(bd::ResultType::RefuseReasonDbValidateFailed),
                );
                return;
            }
        };
        let missing = if !self.db.iter().any(|l| l.usable) {
            Some(bd::ResultType::RefuseReasonNoDbServer)
        } else if self.config.require_login_server && self.logins.is_empty() {
            Some(bd::ResultType::RefuseReasonNoLoginServer)
        } else if self.routes.is_empty() {
            Some(bd::ResultType::RefuseReasonNoRouteServer)
        } else {
            None
        };
        if let Some(code) = missing {
            tracing::info!(?conn, ?code, "login refused: a server is missing");
            self.refuse(conn, seq, server_refusal(code));
            return;
        }
        let Some(client) = ClientType::from_wire(request.client_type) else {
            let mut answer = server_refusal(bd::ResultType::RefuseReasonDbValidateFailed);
            answer.result_string = Some("unknown client type".to_owned());
            self.refuse(conn, seq, answer);
            return;
        };
        let status = match request.online_status {
            s @ 1..=3 => s,
            _ => STATUS_ONLINE as i32,
        };
        let Some(link) = self.pick_db(DbRange::Login) else {
            return; // checked above
        };
        let mut peer_ip = None;
        if let Some(c) = self.conns.get_mut(&conn) {
            c.client = Some(client);
            c.status = status;
            c.state = ConnState::Validating(request.user_name.clone(), link, seq);
            peer_ip = c.peer_ip;
        }
        let attach = crate::attach::ValidateAttach {
            head: DbAttach::new(AttachType::HANDLE, conn.0),
            client: peer_ip,
        };
        let validate = server::ImValidateReq {
            user_name: request.user_name,
            password: request.password,
            attach_data: Some(attach.to_bytes()),
        };
        self.out.push_back(Action::ToUpstream(
            link,
            Frame::from(Pdu::encode_message(&validate, seq)),
        ));
    }

    pub(super) fn refuse(&mut self, conn: ConnId, seq: u16, mut answer: login::ImLoginRes) {
        answer.server_time = self.now.unix.0;
        self.out.push_back(Action::ToClient(
            conn,
            Frame::from(Pdu::encode_message(&answer, seq)),
        ));
        self.close(conn);
    }

    /// Marks a connection closing and asks the shell to close it. A logged-in connection
    /// stays counted until [`MsgServer::client_closed`].
    pub(super) fn close(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if let ConnState::Open(user) = c.state {
                let client = c.client;
                c.state = ConnState::Closing;
                self.forget_login(conn, user, client);
            } else {
                c.state = ConnState::Closing;
            }
            self.out.push_back(Action::Close(conn));
        }
    }

    /// Removes a logged-in connection from its user and tells the login and route servers.
    pub(super) fn forget_login(&mut self, conn: ConnId, user: UserId, client: Option<ClientType>) {
        if let Some(entry) = self.users.get_mut(&user) {
            entry.conns.retain(|c| *c != conn);
            if entry.conns.is_empty() {
                self.users.remove(&user);
            }
        }
        let count = server::ImUserCntUpdate {
            user_action: 2,
            user_id: user.0,
        };
        self.send_to_logins(&Frame::from(Pdu::encode_message(&count, 0)));
        if let Some(client) = client {
            let status = server::ImUserStatusUpdate {
                user_status: STATUS_OFFLINE,
                user_id: user.0,
                client_type: client.to_wire(),
            };
            self.send_to_routes(&Frame::from(Pdu::encode_message(&status, 0)));
        }
    }

    pub(super) fn validated(&mut self, answer: server::ImValidateRsp, seq: u16) {
        let Some(conn) = answer.attach_data.as_deref().and_then(handle_of) else {
            return;
        };
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if !matches!(&c.state, ConnState::Validating(name, ..) if *name == answer.user_name) {
            return;
        }
        let (client, status) = (c.client, c.status);
        let user_info = answer.user_info.filter(|_| answer.result_code == 0);
        let Some((client, mut info)) = client.zip(user_info) else {
            let failure = login::ImLoginRes {
                server_time: self.now.unix.0,
                result_code: bd::ResultType::RefuseReasonDbValidateFailed as i32,
                result_string: answer.result_string,
                online_status: None,
                user_info: None,
            };
            self.out.push_back(Action::ToClient(
                conn,
                Frame::from(Pdu::encode_message(&failure, seq)),
            ));
            self.close(conn);
            return;
        };
        let user = UserId(info.user_id);
        // Older connections of the same device class, here and on the other msg_servers.
        self.kick_local(user, client, KICK_REASON_DUPLICATE_USER, false);
        let kick = server::ImServerKickUser {
            user_id: user.0,
            client_type: client.to_wire(),
            reason: KICK_REASON_DUPLICATE_USER as u32,
        };
        self.send_to_master_route(Pdu::encode_message(&kick, 0));
        if let Some(c) = self.conns.get_mut(&conn) {
            c.state = ConnState::Open(user);
        }
        self.arm_idle(conn);
        let entry = self.users.entry(user).or_default();
        entry.conns.push(conn);
        entry.nick = info.user_nick_name.clone();
        let count = server::ImUserCntUpdate {
            user_action: 1,
            user_id: user.0,
        };
        self.send_to_logins(&Frame::from(Pdu::encode_message(&count, 0)));
        let online = server::ImUserStatusUpdate {
            user_status: STATUS_ONLINE,
            user_id: user.0,
            client_type: client.to_wire(),
        };
        self.send_to_routes(&Frame::from(Pdu::encode_message(&online, 0)));
        info.status = 0;
        let success = login::ImLoginRes {
            server_time: self.now.unix.0,
            result_code: 0,
            result_string: Some(answer.result_string.unwrap_or_else(|| "成功".to_owned())),
            online_status: Some(status),
            user_info: Some(info),
        };
        self.out.push_back(Action::ToClient(
            conn,
            Frame::from(Pdu::encode_message(&success, seq)),
        ));
    }

    /// Sends `CID_LOGIN_KICK_USER` to every logged-in connection of `user` in the device
    /// class of `client` (or every PC connection when `pc_only`) and closes them.
    pub(super) fn kick_local(
        &mut self,
        user: UserId,
        client: ClientType,
        reason: i32,
        pc_only: bool,
    ) {
        let Some(entry) = self.users.get(&user) else {
            return;
        };
        let existing = entry
            .conns
            .iter()
            .filter_map(|&c| Some((c, self.conns.get(&c)?.client?)));
        let victims = if pc_only {
            kick::kicked_by_mobile(ClientType::Android, existing)
        } else {
            kick::kicked_by_login(client, existing)
        };
        let notice = Frame::from(Pdu::encode_message(
            &login::ImKickUser {
                user_id: user.0,
                kick_reason: reason,
            },
            0,
        ));
        for victim in victims {
            tracing::info!(conn = ?victim, user = user.0, reason, "kicking connection");
            self.out.push_back(Action::ToClient(victim, notice.clone()));
            self.close(victim);
        }
    }
}

/// A refused login's answer for a missing server or a failed check: `code`, the original's
/// "server error" text, and `server_time` filled in by [`MsgServer::refuse`].
pub(super) fn server_refusal(code: bd::ResultType) -> login::ImLoginRes {
    login::ImLoginRes {
        server_time: 0,
        result_code: code as i32,
        result_string: Some(SERVER_ERROR.to_owned()),
        online_status: None,
        user_info: None,
    }
}
