//! File transfers: file_server addresses, transfer requests and their answers.

use super::requests::handle_of;
use super::*;

impl MsgServer {
    /// The addresses clients reach a file_server at (the first one that told us).
    pub(super) fn file_addresses(&self) -> Vec<bd::IpAddr> {
        self.files
            .iter()
            .find(|(_, addrs)| !addrs.is_empty())
            .map(|(_, addrs)| addrs.clone())
            .unwrap_or_default()
    }

    pub(super) fn send_to_file_server(&mut self, pdu: Pdu) {
        let link = self
            .files
            .iter()
            .find(|(_, addrs)| !addrs.is_empty())
            .or_else(|| self.files.first())
            .map(|(l, _)| *l);
        if let Some(link) = link {
            self.out
                .push_back(Action::ToUpstream(link, Frame::from(pdu)));
        }
    }

    /// CID_FILE_REQUEST (§8.10): the transfer is registered on a file_server; ONLINE only
    /// when the receiver can take it now (a PC client here, or online per route_server).
    pub(super) fn file_request(
        &mut self,
        conn: ConnId,
        user: UserId,
        request: file::ImFileReq,
        seq: u16,
    ) {
        let to = UserId(request.to_user_id);
        let mut transfer = server::ImFileTransferReq {
            from_user_id: user.0,
            to_user_id: to.0,
            file_name: request.file_name,
            file_size: request.file_size,
            trans_mode: request.trans_mode,
            attach_data: Some(DbAttach::new(AttachType::HANDLE, conn.0).to_bytes()),
        };
        let online_asked = request.trans_mode == bd::TransferFileType::FileTypeOnline as i32;
        if online_asked {
            match self.users.get(&to) {
                Some(entry) => {
                    let pc_here = self.has_class_here(entry, false);
                    if !pc_here {
                        transfer.trans_mode = bd::TransferFileType::FileTypeOffline as i32;
                    }
                }
                None if !self.routes.is_empty() => {
                    let query = buddy::ImUsersStatReq {
                        user_id: user.0,
                        user_id_list: vec![to.0],
                        attach_data: Some(
                            PduAttach::new(
                                AttachType::HANDLE_AND_PDU_FOR_FILE,
                                conn.0,
                                prost::Message::encode_to_vec(&transfer).into(),
                            )
                            .to_bytes(),
                        ),
                    };
                    self.send_to_master_route(Pdu::encode_message(&query, seq));
                    return;
                }
                None => transfer.trans_mode = bd::TransferFileType::FileTypeOffline as i32,
            }
        }
        self.send_to_file_server(Pdu::encode_message(&transfer, seq));
    }

    /// What a file_server says: its addresses, or a registered transfer for a client.
    pub(super) fn file_answer(&mut self, link: LinkId, pdu: Pdu) {
        let seq = pdu.seq_num();
        match pdu.decode_any() {
            Ok(AnyMessage::FileServerIpRsp(answer)) => {
                if let Some((_, addrs)) = self.files.iter_mut().find(|(l, _)| *l == link) {
                    *addrs = answer.ip_addr_list;
                }
            }
            Ok(AnyMessage::FileTransferRsp(answer)) => {
                let Some(conn) = answer.attach_data.as_deref().and_then(handle_of) else {
                    return;
                };
                if !matches!(self.conns.get(&conn).map(|c| &c.state), Some(ConnState::Open(u)) if u.0 == answer.from_user_id)
                {
                    return;
                }
                let addrs = self
                    .files
                    .iter()
                    .find(|(l, _)| *l == link)
                    .map(|(_, a)| a.clone())
                    .unwrap_or_default();
                let mode = answer
                    .trans_mode
                    .unwrap_or(bd::TransferFileType::FileTypeOffline as i32);
                let task_id = answer.task_id.clone().unwrap_or_default();
                let name = answer.file_name.clone().unwrap_or_default();
                let response = file::ImFileRsp {
                    result_code: answer.result_code,
                    from_user_id: answer.from_user_id,
                    to_user_id: answer.to_user_id,
                    file_name: name.clone(),
                    task_id: task_id.clone(),
                    ip_addr_list: addrs.clone(),
                    trans_mode: mode,
                };
                self.out.push_back(Action::ToClient(
                    conn,
                    Frame::from(Pdu::encode_message(&response, seq)),
                ));
                if answer.result_code == 0 {
                    let notify = file::ImFileNotify {
                        from_user_id: answer.from_user_id,
                        to_user_id: answer.to_user_id,
                        file_name: name,
                        file_size: answer.file_size.unwrap_or(0),
                        task_id,
                        ip_addr_list: addrs,
                        trans_mode: mode,
                        offline_ready: 0,
                    };
                    let notify = Frame::from(Pdu::encode_message(&notify, 0));
                    self.send_to_user_pcs(UserId(answer.to_user_id), &notify);
                    self.send_to_master_route(notify);
                }
            }
            _ => tracing::debug!(command = %pdu.command(), "file_server message ignored"),
        }
    }
}
