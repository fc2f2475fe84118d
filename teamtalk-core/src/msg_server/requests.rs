//! Client requests of logged-in connections: served here, or forwarded to db_proxy with the
//! connection's handle as attach data, and db_proxy's answers routed back.

use super::*;

impl MsgServer {
    /// A client request of a logged-in connection.
    pub(super) fn serve(&mut self, conn: ConnId, user: UserId, pdu: Pdu, now_ms: u64) {
        let seq = pdu.seq_num();
        let mut message = match pdu.decode_any() {
            Ok(message) => message,
            Err(error) => {
                tracing::debug!(?conn, command = %pdu.command(), %error, "undecodable request ignored");
                return;
            }
        };
        identity::set_requester(&mut message, user.0);
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
                    self.send_db(DbRange::Other, Pdu::encode_message(&clear, seq));
                }
                let answer = login::ImLogoutRsp { result_code: 0 };
                self.out.push_back(Action::ToClient(
                    conn,
                    Frame::from(Pdu::encode_message(&answer, seq)),
                ));
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
                self.out.push_back(Action::ToClient(
                    conn,
                    Frame::from(Pdu::encode_message(&answer, seq)),
                ));
                request.client_type = client.map(ClientType::to_wire);
                request.attach_data = None;
                self.send_db(DbRange::Other, Pdu::encode_message(&request, seq));
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
                self.out.push_back(Action::ToClient(
                    conn,
                    Frame::from(Pdu::encode_message(&answer, seq)),
                ));
            }
            M::MsgData(data) => self.client_message(conn, user, data, seq, now_ms),
            M::MsgDataAck(_) => {
                // Delivery acks only fed a statistic in the original: nothing to do.
            }
            M::MsgDataReadAck(ack) => {
                self.send_db(DbRange::Other, Pdu::encode_message(&ack, seq));
                let notify = message::ImMsgDataReadNotify {
                    user_id: user.0,
                    session_id: ack.session_id,
                    msg_id: ack.msg_id,
                    session_type: ack.session_type,
                };
                let notify = Frame::from(Pdu::encode_message(&notify, 0));
                self.send_to_user(user, Some(conn), &notify);
                self.send_to_master_route(notify);
            }
            M::ClientTimeReq(_) => {
                let answer = message::ImClientTimeRsp {
                    server_time: self.now.unix.0,
                };
                self.out.push_back(Action::ToClient(
                    conn,
                    Frame::from(Pdu::encode_message(&answer, seq)),
                ));
            }
            M::RemoveSessionReq(request) => {
                let (kind, peer) = (request.session_type, request.session_id);
                self.forward(
                    conn,
                    M::RemoveSessionReq(request),
                    seq,
                    DbRange::Other,
                    false,
                );
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
            M::UsersStatReq(mut request) => {
                request.attach_data =
                    Some(PduAttach::new(AttachType::HANDLE, conn.0, Bytes::new()).to_bytes());
                if !self.routes.is_empty() {
                    self.request_sent(conn);
                }
                self.send_to_master_route(Pdu::encode_message(&request, seq));
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
            M::GroupCreateReq(request) => {
                if request.group_type == bd::GroupType::Normal as i32 {
                    // Only administrators create fixed groups (Q-36: answered, not dropped).
                    let answer = group::ImGroupCreateRsp {
                        user_id: user.0,
                        result_code: 1,
                        group_id: None,
                        group_name: request.group_name,
                        user_id_list: Vec::new(),
                        attach_data: None,
                    };
                    self.out.push_back(Action::ToClient(
                        conn,
                        Frame::from(Pdu::encode_message(&answer, seq)),
                    ));
                } else {
                    self.forward(conn, M::GroupCreateReq(request), seq, DbRange::Other, false);
                }
            }
            M::FileReq(request) if !self.files.is_empty() => {
                self.file_request(conn, user, request, seq)
            }
            M::FileReq(request) => {
                // No file_server is connected to this msg_server: the request fails at once.
                let answer = file::ImFileRsp {
                    result_code: 1,
                    from_user_id: user.0,
                    to_user_id: request.to_user_id,
                    file_name: request.file_name,
                    task_id: String::new(),
                    ip_addr_list: Vec::new(),
                    trans_mode: request.trans_mode,
                };
                self.out.push_back(Action::ToClient(
                    conn,
                    Frame::from(Pdu::encode_message(&answer, seq)),
                ));
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
                self.send_db(DbRange::Other, Pdu::encode_message(&request, seq));
                let notify = Frame::from(Pdu::encode_message(&notify, 0));
                self.send_to_user_pcs(UserId(request.to_user_id), &notify);
                self.send_to_master_route(notify);
            }
            M::FileDelOfflineReq(request) => {
                // Only the sender or the receiver of the file may delete its record.
                if request.from_user_id == user.0 || request.to_user_id == user.0 {
                    self.send_db(DbRange::Other, Pdu::encode_message(&request, seq));
                }
            }
            request @ (M::PushShieldReq(_)
            | M::QueryPushShieldReq(_)
            | M::ChangeSignInfoReq(_)
            | M::GroupInfoListReq(_)) => {
                self.forward(conn, request, seq, DbRange::Other, true);
            }
            request @ (M::GetMsgListReq(_)
            | M::GetMsgByIdReq(_)
            | M::UnreadMsgCntReq(_)
            | M::RecentContactSessionReq(_)
            | M::UsersInfoReq(_)) => {
                self.forward(conn, request, seq, DbRange::Login, false);
            }
            request @ (M::GetLatestMsgIdReq(_)
            | M::AllUserReq(_)
            | M::DepartmentReq(_)
            | M::ChangeAvatarReq(_)
            | M::NormalGroupListReq(_)
            | M::GroupChangeMemberReq(_)
            | M::GroupShieldReq(_)
            | M::FileHasOfflineReq(_)) => {
                self.forward(conn, request, seq, DbRange::Other, false);
            }
            other => {
                tracing::debug!(?conn, command = %other.command(), "client command ignored");
            }
        }
    }

    /// Sends a client request to db_proxy with the connection's handle as attach data (12
    /// bytes, or 16 with an empty embedded PDU where the original used that layout). Without
    /// a usable db_proxy, answers the requests that have a failure answer.
    pub(super) fn forward(
        &mut self,
        conn: ConnId,
        mut request: AnyMessage,
        seq: u16,
        range: DbRange,
        long_attach: bool,
    ) {
        let attach = if long_attach {
            PduAttach::new(AttachType::HANDLE, conn.0, Bytes::new()).to_bytes()
        } else {
            DbAttach::new(AttachType::HANDLE, conn.0).to_bytes()
        };
        set_attach(&mut request, attach);
        if self.pick_db(range).is_some() {
            self.send_db(range, request.to_pdu(seq));
            self.request_sent(conn);
            return;
        }
        tracing::debug!(?conn, command = %request.command(), "no db_proxy for request");
        if let Some(mut answer) = offline_answer(&request) {
            if let Some((_, attach)) = identity::reply_route(&mut answer) {
                *attach = None;
            }
            self.out
                .push_back(Action::ToClient(conn, Frame::from(answer.to_pdu(seq))));
        }
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
                    self.send_db(DbRange::Other, Pdu::encode_message(&request, 0));
                }
            }
            M::GetDeviceTokenRsp(answer) => self.push_tokens(answer),
            M::FileHasOfflineRsp(mut answer) => {
                answer.ip_addr_list = self.file_addresses();
                let (user, attach) = (answer.user_id, answer.attach_data.take());
                self.route_back(user, attach, M::FileHasOfflineRsp(answer), seq);
            }
            mut answer => match identity::reply_route(&mut answer) {
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

/// Puts `attach` into the attach data field of a request that has one.
pub(super) fn set_attach(request: &mut AnyMessage, attach: Bytes) {
    macro_rules! set {
        ($($variant:ident),*) => {
            match request {
                $(AnyMessage::$variant(m) => m.attach_data = Some(attach),)*
                _ => {}
            }
        };
    }
    set!(
        PushShieldReq,
        QueryPushShieldReq,
        RecentContactSessionReq,
        UsersInfoReq,
        RemoveSessionReq,
        AllUserReq,
        UsersStatReq,
        ChangeAvatarReq,
        DepartmentReq,
        ChangeSignInfoReq,
        UnreadMsgCntReq,
        GetMsgListReq,
        GetLatestMsgIdReq,
        GetMsgByIdReq,
        NormalGroupListReq,
        GroupInfoListReq,
        GroupCreateReq,
        GroupChangeMemberReq,
        GroupShieldReq,
        FileHasOfflineReq
    );
}

/// The answer to a request when no db_proxy is reachable, for the requests the original
/// answers then (groups, offline files), with every required field filled.
pub(super) fn offline_answer(request: &AnyMessage) -> Option<AnyMessage> {
    use AnyMessage as M;
    Some(match request {
        M::NormalGroupListReq(r) => group::ImNormalGroupListRsp {
            user_id: r.user_id,
            group_version_list: Vec::new(),
            attach_data: None,
        }
        .into(),
        M::GroupInfoListReq(r) => group::ImGroupInfoListRsp {
            user_id: r.user_id,
            group_info_list: Vec::new(),
            attach_data: None,
        }
        .into(),
        M::GroupCreateReq(r) => group::ImGroupCreateRsp {
            user_id: r.user_id,
            result_code: 1,
            group_id: None,
            group_name: r.group_name.clone(),
            user_id_list: Vec::new(),
            attach_data: None,
        }
        .into(),
        M::GroupChangeMemberReq(r) => group::ImGroupChangeMemberRsp {
            user_id: r.user_id,
            change_type: r.change_type,
            result_code: 1,
            group_id: r.group_id,
            cur_user_id_list: Vec::new(),
            chg_user_id_list: Vec::new(),
            attach_data: None,
        }
        .into(),
        M::GroupShieldReq(r) => group::ImGroupShieldRsp {
            user_id: r.user_id,
            group_id: r.group_id,
            result_code: 1,
            attach_data: None,
        }
        .into(),
        M::FileHasOfflineReq(r) => file::ImFileHasOfflineRsp {
            user_id: r.user_id,
            offline_file_list: Vec::new(),
            ip_addr_list: Vec::new(),
            attach_data: None,
        }
        .into(),
        _ => return None,
    })
}
