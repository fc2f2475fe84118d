//! Group fan-out: member lookups for group messages and member-change notifications.

use super::*;

impl MsgServer {
    /// Asks db_proxy for the members of a group message's group, embedding the message.
    pub(super) fn ask_group_members(&mut self, data: message::ImMsgData, sender: Option<ConnId>) {
        let request = group::ImGroupInfoListReq {
            user_id: data.from_user_id,
            group_version_list: vec![bd::GroupVersionInfo {
                group_id: data.to_session_id,
                version: 0,
            }],
            attach_data: Some(
                PduAttach::new(
                    AttachType::HANDLE_AND_PDU,
                    sender.map_or(0, |c| c.0),
                    prost::Message::encode_to_vec(&data).into(),
                )
                .to_bytes(),
            ),
        };
        self.send_db(DbRange::Other, Pdu::encode_message(&request, 0));
    }

    pub(super) fn group_fan_out(&mut self, info: &group::ImGroupInfoListRsp, attach: PduAttach) {
        let Ok(mut data) = <message::ImMsgData as prost::Message>::decode(attach.pdu.clone())
        else {
            return;
        };
        let Some(group) = info
            .group_info_list
            .iter()
            .find(|g| g.group_id == data.to_session_id)
        else {
            return;
        };
        if !group.group_member_list.contains(&data.from_user_id) {
            return;
        }
        data.attach_data = None;
        let pdu = Frame::from(Pdu::encode_message(&data, 0));
        let origin = (attach.head.handle != 0).then_some(ConnId(attach.head.handle));
        let mut members = group.group_member_list.clone();
        members.sort_unstable();
        members.dedup();
        for &member in &members {
            self.send_to_user(UserId(member), origin, &pdu);
        }
        // The msg_server the message was sent on asks for the pushes (once, not every one).
        if origin.is_some() && !self.pushes.is_empty() {
            let request = server::ImGroupGetShieldReq {
                group_id: group.group_id,
                user_id: members
                    .into_iter()
                    .filter(|m| *m != data.from_user_id)
                    .collect(),
                attach_data: Some(prost::Message::encode_to_vec(&data).into()),
            };
            self.send_db(DbRange::Other, Pdu::encode_message(&request, 0));
        }
    }

    pub(super) fn member_change_notify(
        &mut self,
        notify: &group::ImGroupChangeMemberNotify,
        except: Option<ConnId>,
    ) {
        let pdu = Frame::from(Pdu::encode_message(notify, 0));
        let mut users: Vec<u32> = notify
            .chg_user_id_list
            .iter()
            .chain(&notify.cur_user_id_list)
            .copied()
            .collect();
        users.sort_unstable();
        users.dedup();
        for user in users {
            self.send_to_user(UserId(user), except, &pdu);
        }
    }

    /// Whether anyone is logged in here (a group message from elsewhere needs a member
    /// lookup only then).
    pub(super) fn has_group_audience(&self) -> bool {
        !self.users.is_empty()
    }
}
