//! Client requests of logged-in connections: the commands with logic of their own are served
//! here; every other one goes where its row of the request table ([`table`]) says — to
//! db_proxy on the row's range with the connection's handle in the row's attach layout, or to
//! the route master — and db_proxy's answers are routed back.

use super::*;
use crate::command::requests::{Route, Sender};

impl MsgServer {
    /// A client request of a logged-in connection. Its requester field is forced to `user`
    /// first ([`table::set_requester`]).
    pub(super) fn serve(&mut self, conn: ConnId, user: UserId, pdu: Pdu, now_ms: u64) {
        let seq = pdu.seq_num();
        let mut message = match pdu.decode_any() {
            Ok(message) => message,
            Err(error) => {
                tracing::debug!(?conn, command = %pdu.command(), %error, "undecodable request ignored");
                return;
            }
        };
        table::set_requester(&mut message, user.0);
        let client = self.conns.get(&conn).and_then(|c| c.client);
        let is_mobile = client.is_some_and(ClientType::is_mobile);
        use AnyMessage as M;
        match message {
            M::LogoutReq(_) => {
                if is_mobile {
                    let clear = login::ImDeviceTokenReq {
                        user_id: user.0,
                        device_token: String::new(),
                        client_type: client.map(ClientType::to_wire),
                        attach_data: None,
                    };
                    self.send_db_as_row(&clear.into(), seq);
                }
                let answer = login::ImLogoutRsp { result_code: 0 };
                self.answer_now(conn, answer.into(), seq);
                self.close(conn);
            }
            M::DeviceTokenReq(mut request) => {
                if !is_mobile {
                    return;
                }
                let answer = login::ImDeviceTokenRsp {
                    user_id: user.0,
                    attach_data: None,
                };
                self.answer_now(conn, answer.into(), seq);
                request.client_type = client.map(ClientType::to_wire);
                request.attach_data = None;
                self.send_db_as_row(&request.into(), seq);
            }
            M::KickPcClientReq(_) => {
                if !is_mobile {
                    return;
                }
                self.kick_local(user, ClientType::Mac, KICK_REASON_MOBILE_KICK, true);
                let kick = server::ImServerKickUser {
                    user_id: user.0,
                    client_type: ClientType::Mac.to_wire(),
                    reason: KICK_REASON_MOBILE_KICK as u32,
                };
                self.send_to_master_route(Pdu::encode_message(&kick, 0));
                let answer = login::ImKickPcClientRsp {
                    user_id: user.0,
                    result_code: 0,
                };
                self.answer_now(conn, answer.into(), seq);
            }
            M::MsgData(data) => self.client_message(conn, user, data, seq, now_ms),
            M::MsgDataReadAck(ack) => {
                let notify = message::ImMsgDataReadNotify {
                    user_id: user.0,
                    session_id: ack.session_id,
                    msg_id: ack.msg_id,
                    session_type: ack.session_type,
                };
                self.send_db_as_row(&ack.into(), seq);
                let notify = Frame::from(Pdu::encode_message(&notify, 0));
                self.send_to_user(user, Some(conn), &notify);
                self.send_to_master_route(notify);
            }
            M::ClientTimeReq(_) => {
                let answer = message::ImClientTimeRsp {
                    server_time: self.now.unix.0,
                };
                self.answer_now(conn, answer.into(), seq);
            }
            M::RemoveSessionReq(request) => {
                let (kind, peer) = (request.session_type, request.session_id);
                self.forward(conn, request.into(), seq);
                if kind == bd::SessionType::Single as i32 {
                    let notify = buddy::ImRemoveSessionNotify {
                        user_id: user.0,
                        session_type: kind,
                        session_id: peer,
                    };
                    let notify = Frame::from(Pdu::encode_message(&notify, 0));
                    self.send_to_user(user, Some(conn), &notify);
                    self.send_to_master_route(notify);
                }
            }
            M::P2pCmdMsg(command) => {
                let to = UserId(command.to_user_id);
                let relay = Frame::from(Pdu::encode_message(&command, 0));
                self.send_to_user(user, Some(conn), &relay);
                if to != user {
                    self.send_to_user(to, None, &relay);
                }
                self.send_to_master_route(relay);
            }
            M::GroupCreateReq(request) if request.group_type == bd::GroupType::Normal as i32 => {
                // Only administrators create fixed groups (Q-36: answered with the request's
                // failure body, not dropped).
                let request = M::GroupCreateReq(request);
                if let Some(answer) = table::failure_answer(&request) {
                    self.answer_now(conn, without_attach(answer), seq);
                }
            }
            M::FileReq(request) if !self.files.is_empty() => {
                self.file_request(conn, user, request, seq)
            }
            M::FileReq(request) => {
                // No file_server is connected to this msg_server: the request fails at once.
                if let Some(answer) = table::unreachable_answer(&request.into()) {
                    self.answer_now(conn, answer, seq);
                }
            }
            M::FileAddOfflineReq(request) => {
                let notify = file::ImFileNotify {
                    from_user_id: user.0,
                    to_user_id: request.to_user_id,
                    file_name: request.file_name.clone(),
                    file_size: request.file_size,
                    task_id: request.task_id.clone(),
                    ip_addr_list: self.file_addresses(),
                    trans_mode: bd::TransferFileType::FileTypeOffline as i32,
                    offline_ready: 1,
                };
                let to = UserId(request.to_user_id);
                self.send_db_as_row(&request.into(), seq);
                let notify = Frame::from(Pdu::encode_message(&notify, 0));
                self.send_to_user_pcs(to, &notify);
                self.send_to_master_route(notify);
            }
            M::FileDelOfflineReq(request) => {
                // Only the sender or the receiver of the file may delete its record.
                if request.from_user_id == user.0 || request.to_user_id == user.0 {
                    self.send_db_as_row(&request.into(), seq);
                }
            }
            request => self.route_by_table(conn, request, seq),
        }
    }

    /// A client request without logic of its own: it goes where its row of the request table
    /// says (db_proxy, the route master, a write to db_proxy); requests of other senders and
    /// of other routes are ignored.
    fn route_by_table(&mut self, conn: ConnId, mut request: AnyMessage, seq: u16) {
        let command = request.command();
        let rules = table::rules(command).filter(|r| matches!(r.sender, Sender::Client { .. }));
        match rules.map(|r| r.route) {
            Some(Route::Db { .. }) => self.forward(conn, request, seq),
            Some(Route::DbWrite { range }) => self.send_db(range, request.to_pdu(seq)),
            Some(Route::RouteServer { .. }) => {
                table::attach_handle(&mut request, conn.0);
                if !self.routes.is_empty() {
                    self.request_sent(conn);
                }
                self.send_to_master_route(request.to_pdu(seq));
            }
            _ => tracing::debug!(?conn, %command, "client command ignored"),
        }
    }

    /// Sends a client request to db_proxy on the range of its row, with the connection's
    /// handle as attach data in the row's layout ([`table::attach_handle`]). Without a usable
    /// db_proxy, answers the requests whose row has a failure answer for that
    /// ([`table::offline_answer`]).
    pub(super) fn forward(&mut self, conn: ConnId, mut request: AnyMessage, seq: u16) {
        let Some(range) = table::route(&request).db_range() else {
            tracing::debug!(?conn, command = %request.command(), "not a db_proxy request");
            return;
        };
        table::attach_handle(&mut request, conn.0);
        if self.pick_db(range).is_some() {
            self.send_db(range, request.to_pdu(seq));
            self.request_sent(conn);
            return;
        }
        tracing::debug!(?conn, command = %request.command(), "no db_proxy for request");
        if let Some(answer) = table::offline_answer(&request) {
            self.answer_now(conn, answer, seq);
        }
    }

    /// Sends a request to db_proxy as it is, on the range of its row.
    pub(super) fn send_db_as_row(&mut self, request: &AnyMessage, seq: u16) {
        match table::route(request).db_range() {
            Some(range) => self.send_db(range, request.to_pdu(seq)),
            None => tracing::debug!(command = %request.command(), "not a db_proxy request"),
        }
    }

    /// Answers a client request at once, echoing its seq.
    fn answer_now(&mut self, conn: ConnId, answer: AnyMessage, seq: u16) {
        self.out
            .push_back(Action::ToClient(conn, Frame::from(answer.to_pdu(seq))));
    }

    pub(super) fn db_answer(&mut self, link: LinkId, pdu: Pdu) {
        let seq = pdu.seq_num();
        let message = match pdu.decode_any() {
            Ok(message) => message,
            Err(error) => {
                tracing::debug!(command = %pdu.command(), %error, "undecodable db_proxy answer dropped");
                return;
            }
        };
        use AnyMessage as M;
        match message {
            M::StopReceivePacket(_) => {
                tracing::info!(?link, "db_proxy stops receiving on this link");
                if let Some(l) = self.db.iter_mut().find(|l| l.id == link) {
                    l.usable = false;
                }
            }
            M::ValidateRsp(answer) => self.validated(answer, seq),
            M::MsgData(data) => self.stored(data, seq),
            M::GroupInfoListRsp(mut info) => {
                let fan_out = info
                    .attach_data
                    .as_ref()
                    .and_then(|a| PduAttach::decode(a).ok())
                    .filter(|a| {
                        a.head.attach_type == AttachType::HANDLE_AND_PDU && !a.pdu.is_empty()
                    });
                match fan_out {
                    Some(attach) => self.group_fan_out(&info, attach),
                    None => {
                        let user = info.user_id;
                        let attach = info.attach_data.take();
                        self.route_back(user, attach, M::GroupInfoListRsp(info), seq);
                    }
                }
            }
            M::ChangeSignInfoRsp(mut answer) => {
                if answer.result_code == 0 {
                    let notify = buddy::ImSignInfoChangedNotify {
                        changed_user_id: answer.user_id,
                        sign_info: answer.sign_info.clone().unwrap_or_default(),
                    };
                    // route_server relays it to every msg_server, this one included.
                    self.send_to_master_route(Pdu::encode_message(&notify, 0));
                }
                let (user, attach) = (answer.user_id, answer.attach_data.take());
                self.route_back(user, attach, M::ChangeSignInfoRsp(answer), seq);
            }
            M::GroupChangeMemberRsp(mut answer) => {
                let handle = answer.attach_data.as_deref().and_then(handle_of);
                if answer.result_code == 0 {
                    let notify = group::ImGroupChangeMemberNotify {
                        user_id: answer.user_id,
                        change_type: answer.change_type,
                        group_id: answer.group_id,
                        cur_user_id_list: answer.cur_user_id_list.clone(),
                        chg_user_id_list: answer.chg_user_id_list.clone(),
                    };
                    self.member_change_notify(&notify, handle);
                    self.send_to_master_route(Pdu::encode_message(&notify, 0));
                }
                let (user, attach) = (answer.user_id, answer.attach_data.take());
                self.route_back(user, attach, M::GroupChangeMemberRsp(answer), seq);
            }
            M::ChangeAvatarRsp(answer) => {
                // Sent to every connection of the user, but it answers one request: that
                // request no longer counts against its connection's budget.
                let requester = answer.attach_data.as_deref().and_then(handle_of);
                let pdu = Frame::from(Pdu::encode_message(&answer, 0));
                self.send_to_user(UserId(answer.user_id), None, &pdu);
                if let Some(conn) = requester {
                    self.request_answered(conn);
                }
            }
            M::DeviceTokenRsp(_) => {} // token writes need no answer
            M::GroupGetShieldRsp(answer) => {
                let users: Vec<u32> = answer
                    .shield_status_list
                    .iter()
                    .filter(|s| s.shield_status == 0)
                    .map(|s| s.user_id)
                    .collect();
                if !users.is_empty() {
                    let request = server::ImGetDeviceTokenReq {
                        user_id: users,
                        attach_data: answer.attach_data,
                    };
                    self.send_db_as_row(&request.into(), 0);
                }
            }
            M::GetDeviceTokenRsp(answer) => self.push_tokens(answer),
            M::FileHasOfflineRsp(mut answer) => {
                answer.ip_addr_list = self.file_addresses();
                let (user, attach) = (answer.user_id, answer.attach_data.take());
                self.route_back(user, attach, M::FileHasOfflineRsp(answer), seq);
            }
            mut answer => match table::reply_route(&mut answer) {
                Some((user, attach)) => {
                    let attach = attach.take();
                    self.route_back(user, attach, answer, seq);
                }
                None => tracing::debug!(command = %answer.command(), "db_proxy message ignored"),
            },
        }
    }

    /// Sends an answer to the connection named by its attach data, if that connection is
    /// still logged in as `user`.
    pub(super) fn route_back(
        &mut self,
        user: u32,
        attach: Option<Bytes>,
        answer: AnyMessage,
        seq: u16,
    ) {
        let Some(conn) = attach.as_deref().and_then(handle_of) else {
            tracing::debug!(command = %answer.command(), "answer without readable attach data dropped");
            return;
        };
        match self.conns.get(&conn).map(|c| &c.state) {
            Some(ConnState::Open(owner)) if owner.0 == user => {
                self.out
                    .push_back(Action::ToClient(conn, Frame::from(answer.to_pdu(seq))));
            }
            _ => {
                tracing::debug!(?conn, command = %answer.command(), "requester gone, answer dropped")
            }
        }
        self.request_answered(conn);
    }
}

/// The client connection named by attach data (its first 12 bytes); `None` when too short.
pub(super) fn handle_of(attach: &[u8]) -> Option<ConnId> {
    DbAttach::decode(attach).ok().map(|a| ConnId(a.handle))
}

/// An answer given by the msg_server itself: the attach data the failure body echoes from the
/// request is cleared (unsolicited frames to clients carry none, Q-23).
fn without_attach(mut answer: AnyMessage) -> AnyMessage {
    if let Some((_, attach)) = table::reply_route(&mut answer) {
        *attach = None;
    }
    answer
}
