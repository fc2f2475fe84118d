//! Messages: a client's messages held and sent to db_proxy one at a time, their storage
//! answers, and what route_server relays from the other msg_servers.

use super::requests::handle_of;
use super::*;

impl MsgServer {
    pub(super) fn client_message(
        &mut self,
        conn: ConnId,
        user: UserId,
        mut data: message::ImMsgData,
        seq: u16,
        now_ms: u64,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let second = now_ms / 1000;
        if c.rate_second != second {
            c.rate_second = second;
            c.rate_count = 0;
        }
        c.rate_count += 1;
        if c.rate_count > self.config.max_msgs_per_sec {
            tracing::debug!(?conn, "message rate limit exceeded, message dropped");
            return;
        }
        if data.msg_data.is_empty() {
            return;
        }
        let single = crate::domain::MsgType::from_wire(data.msg_type)
            .is_some_and(|t| t.session_kind() == crate::domain::SessionKind::Single);
        if single && data.to_session_id == user.0 {
            return; // self-addressed (compared with the authenticated id, Q-34)
        }
        data.create_time = self.now.unix.0;
        data.attach_data = Some(DbAttach::new(AttachType::HANDLE, conn.0).to_bytes());
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let pending = hold::Pending {
            data,
            seq,
            since_ms: now_ms,
        };
        if let Err(refusal) = c.outgoing.push(pending) {
            self.refuse_messages(conn, refusal);
            return;
        }
        self.timers.arm(
            now_ms.saturating_add(hold::HOLD_MS),
            conn,
            timers::Timer::Hold,
        );
        self.dispatch_message(conn);
    }

    /// Sends the connection's next held message to db_proxy when none is in flight and a
    /// db_proxy link is up; it is the message in flight until its answer (or the loss of the
    /// link, or the hold bound). One at a time per connection keeps a sender's messages in
    /// order: db_proxy answers requests concurrently, in any order. Without a link the
    /// messages stay held (hold.rs).
    pub(super) fn dispatch_message(&mut self, conn: ConnId) {
        if !self.conns.get(&conn).is_some_and(|c| c.outgoing.ready()) {
            return;
        }
        let Some(link) = self.pick_db(DbRange::Other) else {
            tracing::debug!(?conn, "no db_proxy: message held");
            return;
        };
        let Some(next) = self
            .conns
            .get_mut(&conn)
            .and_then(|c| c.outgoing.send_next(link))
        else {
            return;
        };
        self.out.push_back(Action::ToUpstream(
            link,
            Frame::from(Pdu::encode_message(&next.data, next.seq)),
        ));
    }

    /// The connection's message in flight is settled; the next held one goes.
    pub(super) fn message_done(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.outgoing.done();
        self.dispatch_message(conn);
    }

    /// A message of `conn` cannot be stored in time or not held: the connection is closed,
    /// the one negative signal every client notices (its unacknowledged messages stay
    /// unsent; docs/compatibility.md). Its other held messages go with it.
    pub(super) fn refuse_messages(&mut self, conn: ConnId, refusal: hold::Refusal) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let waiting = c.outgoing.len();
        c.outgoing.clear();
        tracing::info!(
            ?conn,
            ?refusal,
            waiting,
            "messages cannot be stored: closing the connection"
        );
        self.close(conn);
    }

    /// Sends the held messages of every connection that has some (a db_proxy link is up).
    pub(super) fn dispatch_held(&mut self) {
        let mut ready: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.outgoing.ready())
            .map(|(id, _)| *id)
            .collect();
        ready.sort_unstable();
        for conn in ready {
            self.dispatch_message(conn);
        }
    }

    /// db_proxy stored a message (msg_id set, 0 = failure): acknowledge it to the sender,
    /// pass it to the other msg_servers and deliver it here.
    pub(super) fn stored(&mut self, mut data: message::ImMsgData, seq: u16) {
        let sender = data.attach_data.take().as_deref().and_then(handle_of);
        if let Some(conn) = sender {
            self.message_done(conn);
        }
        if data.msg_id == 0 {
            return;
        }
        let kind = crate::domain::MsgType::from_wire(data.msg_type).map(|t| t.session_kind());
        let Some(kind) = kind else {
            return;
        };
        let from = UserId(data.from_user_id);
        if let Some(conn) = sender {
            if matches!(self.conns.get(&conn).map(|c| &c.state), Some(ConnState::Open(u)) if *u == from)
            {
                let ack = message::ImMsgDataAck {
                    user_id: from.0,
                    session_id: data.to_session_id,
                    msg_id: data.msg_id,
                    session_type: kind.to_wire(),
                };
                self.out.push_back(Action::ToClient(
                    conn,
                    Frame::from(Pdu::encode_message(&ack, seq)),
                ));
            }
        }
        let relay = Frame::from(Pdu::encode_message(&data, 0));
        self.send_to_master_route(relay.clone());
        match kind {
            crate::domain::SessionKind::Single => {
                self.send_to_user(from, sender, &relay);
                let to = UserId(data.to_session_id);
                if to != from {
                    self.send_to_user(to, None, &relay);
                    if !self.pushes.is_empty() {
                        let request = server::ImGetDeviceTokenReq {
                            user_id: vec![to.0],
                            attach_data: Some(prost::Message::encode_to_vec(&data).into()),
                        };
                        self.send_db(DbRange::Other, Pdu::encode_message(&request, 0));
                    }
                }
            }
            crate::domain::SessionKind::Group => self.ask_group_members(data, sender),
        }
    }

    pub(super) fn route_message(&mut self, pdu: Pdu) {
        let seq = pdu.seq_num();
        let message = match pdu.decode_any() {
            Ok(message) => message,
            Err(error) => {
                tracing::debug!(command = %pdu.command(), %error, "undecodable route_server message dropped");
                return;
            }
        };
        use AnyMessage as M;
        match message {
            M::ServerKickUser(kick) => {
                if let Some(client) = ClientType::from_wire(kick.client_type) {
                    let reason = i32::try_from(kick.reason).unwrap_or(KICK_REASON_DUPLICATE_USER);
                    let pc_only = reason == KICK_REASON_MOBILE_KICK;
                    self.kick_local(UserId(kick.user_id), client, reason, pc_only);
                }
            }
            M::UserStatNotify(notify) => {
                let pdu = Frame::from(Pdu::encode_message(&notify, 0));
                self.send_to_everyone(&pdu, true);
            }
            M::SignInfoChangedNotify(notify) => {
                let pdu = Frame::from(Pdu::encode_message(&notify, 0));
                self.send_to_everyone(&pdu, false);
            }
            M::UsersStatRsp(mut answer) => {
                let attach = answer.attach_data.take();
                let kind = attach
                    .as_deref()
                    .and_then(|a| DbAttach::decode(a).ok())
                    .map(|a| a.attach_type);
                if kind == Some(AttachType::HANDLE) {
                    self.route_back(answer.user_id, attach, M::UsersStatRsp(answer), seq);
                } else if kind == Some(AttachType::HANDLE_AND_PDU_FOR_FILE) {
                    // An ONLINE file request to a user elsewhere: online only if route_server
                    // sees them online.
                    let prepared = attach
                        .as_ref()
                        .and_then(|a| PduAttach::decode(a).ok())
                        .and_then(|a| {
                            <server::ImFileTransferReq as prost::Message>::decode(a.pdu).ok()
                        });
                    if let Some(mut prepared) = prepared {
                        let online = answer.user_stat_list.iter().any(|s| {
                            s.user_id == prepared.to_user_id && s.status == STATUS_ONLINE as i32
                        });
                        if !online {
                            prepared.trans_mode = bd::TransferFileType::FileTypeOffline as i32;
                        }
                        self.send_to_file_server(Pdu::encode_message(&prepared, seq));
                    }
                } else if kind == Some(AttachType::PDU_FOR_PUSH) {
                    // The receivers' presence decides silent (PC online) or normal pushes.
                    let prepared = attach
                        .as_ref()
                        .and_then(|a| PduAttach::decode(a).ok())
                        .and_then(|a| {
                            <server::ImPushToUserReq as prost::Message>::decode(a.pdu).ok()
                        });
                    if let Some(mut prepared) = prepared {
                        for token in &mut prepared.user_token_list {
                            let online = answer.user_stat_list.iter().any(|s| {
                                s.user_id == token.user_id && s.status == STATUS_ONLINE as i32
                            });
                            token.push_type = crate::kick::push_type(online);
                        }
                        self.send_to_push(Pdu::encode_message(&prepared, 0));
                    }
                }
            }
            M::MsgDataReadNotify(notify) => {
                let pdu = Frame::from(Pdu::encode_message(&notify, 0));
                self.send_to_user(UserId(notify.user_id), None, &pdu);
            }
            M::MsgData(mut data) => {
                data.attach_data = None;
                match crate::domain::MsgType::from_wire(data.msg_type).map(|t| t.session_kind()) {
                    Some(crate::domain::SessionKind::Single) => {
                        let pdu = Frame::from(Pdu::encode_message(&data, 0));
                        let (from, to) = (UserId(data.from_user_id), UserId(data.to_session_id));
                        self.send_to_user(from, None, &pdu);
                        if to != from {
                            self.send_to_user(to, None, &pdu);
                        }
                    }
                    Some(crate::domain::SessionKind::Group) if self.has_group_audience() => {
                        self.ask_group_members(data, None);
                    }
                    Some(crate::domain::SessionKind::Group) => {}
                    None => {}
                }
            }
            M::P2pCmdMsg(command) => {
                let pdu = Frame::from(Pdu::encode_message(&command, 0));
                let (from, to) = (UserId(command.from_user_id), UserId(command.to_user_id));
                self.send_to_user(from, None, &pdu);
                if to != from {
                    self.send_to_user(to, None, &pdu);
                }
            }
            M::ServerPcLoginStatusNotify(notify) => {
                let user = UserId(notify.user_id);
                let online = notify.login_status == 1;
                if let Some(entry) = self.users.get_mut(&user) {
                    entry.pc_online = online;
                }
                let status = if online {
                    STATUS_ONLINE
                } else {
                    STATUS_OFFLINE
                };
                let pdu = Frame::from(Pdu::encode_message(
                    &buddy::ImpcLoginStatusNotify {
                        user_id: user.0,
                        login_stat: status as i32,
                    },
                    0,
                ));
                self.send_to_user_class(user, true, &pdu);
            }
            M::RemoveSessionNotify(notify) => {
                let pdu = Frame::from(Pdu::encode_message(&notify, 0));
                self.send_to_user(UserId(notify.user_id), None, &pdu);
            }
            M::GroupChangeMemberNotify(notify) => self.member_change_notify(&notify, None),
            M::FileNotify(notify) => {
                let pdu = Frame::from(Pdu::encode_message(&notify, 0));
                self.send_to_user_pcs(UserId(notify.to_user_id), &pdu);
            }
            other => tracing::debug!(command = %other.command(), "route_server message ignored"),
        }
    }
}
