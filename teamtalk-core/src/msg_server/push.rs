//! Push notifications for messages (spec/servers.md §8.9): the alert text and custom data of
//! a stored message, as the original msg_server builds them.

use crate::crypt::MessageKey;
use crate::domain::MsgType;
use crate::proto::message::ImMsgData;

use super::*;

/// Alerts longer than this many bytes are cut (on a character boundary, quirks.md Q-29) and
/// get "..." appended.
pub const ALERT_BYTES: usize = 37;

const PICTURE_START: &str = "&$#@~^@[{:";
const PICTURE_END: &str = ":}]&$~@#@";
const SOMETHING_ARRIVED: &str = "您收到了一条消息";

/// The alert text for `message` sent by a user called `sender_nick` (`None`: not known
/// here). `None` when a text message cannot be decrypted (the original then sends nothing).
pub fn alert(message: &ImMsgData, sender_nick: Option<&str>, key: &MessageKey) -> Option<String> {
    let kind = MsgType::from_wire(message.msg_type)?;
    let text = match (kind, sender_nick) {
        (MsgType::GroupAudio, Some(nick)) => format!("{nick}在群聊中发送了一条语音消息"),
        (MsgType::SingleAudio, Some(nick)) => format!("{nick}给您发送了一条语音消息"),
        (_, None) if kind.is_audio() => SOMETHING_ARRIVED.to_owned(),
        (_, nick) => {
            let plain = key.decrypt(&message.msg_data).ok()?;
            let plain = String::from_utf8_lossy(&plain).into_owned();
            match nick {
                _ if plain.contains(PICTURE_START) && plain.contains(PICTURE_END) => {
                    SOMETHING_ARRIVED.to_owned()
                }
                None => SOMETHING_ARRIVED.to_owned(),
                Some(nick) => format!("{nick}:{plain}"),
            }
        }
    };
    Some(truncate(&text, ALERT_BYTES))
}

/// `text` cut to at most `max` bytes on a character boundary, with "..." when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", text.get(..end).unwrap_or_default())
}

/// The push's custom data: `{"msg_type":N,"from_id":U}` plus `"group_id":G` for group
/// messages (the original's jsonxx output).
pub fn custom_data(message: &ImMsgData) -> String {
    let group = MsgType::from_wire(message.msg_type)
        .is_some_and(|k| k.session_kind() == crate::domain::SessionKind::Group);
    if group {
        format!(
            "{{\"msg_type\":{},\"from_id\":{},\"group_id\":{}}}",
            message.msg_type, message.from_user_id, message.to_session_id
        )
    } else {
        format!(
            "{{\"msg_type\":{},\"from_id\":{}}}",
            message.msg_type, message.from_user_id
        )
    }
}

impl MsgServer {
    /// db_proxy gave the push tokens of a message's receivers: push to those whose phone is
    /// not connected here; receivers on other msg_servers are looked up on route_server first
    /// (their push is silent while a PC of theirs is online).
    pub(super) fn push_tokens(&mut self, answer: server::ImGetDeviceTokenRsp) {
        let Some(message) = answer
            .attach_data
            .as_ref()
            .and_then(|a| <message::ImMsgData as prost::Message>::decode(a.clone()).ok())
        else {
            return;
        };
        let from = UserId(message.from_user_id);
        let nick = self
            .users
            .get(&from)
            .map(|u| u.nick.clone())
            .filter(|n| !n.is_empty());
        let Some(flash) = push::alert(&message, nick.as_deref(), &self.key) else {
            return;
        };
        let data = push::custom_data(&message);
        let (mut local, mut remote) = (Vec::new(), Vec::new());
        for mut token in answer.user_token_info {
            let user = UserId(token.user_id);
            if user == from {
                continue; // never push a sender their own message
            }
            match self.users.get(&user) {
                Some(entry) => {
                    let phone_here = self.has_class_here(entry, true);
                    if phone_here {
                        continue; // the phone got the message itself
                    }
                    let pc_here = self.has_class_here(entry, false);
                    token.push_type = crate::kick::push_type(entry.pc_online || pc_here);
                    local.push(token);
                }
                None => remote.push(token),
            }
        }
        if !local.is_empty() {
            let request = server::ImPushToUserReq {
                flash: flash.clone(),
                data: data.clone(),
                user_token_list: local,
            };
            self.send_to_push(Pdu::encode_message(&request, 0));
        }
        if !remote.is_empty() {
            let mut users: Vec<u32> = remote.iter().map(|t| t.user_id).collect();
            users.sort_unstable();
            users.dedup();
            let prepared = server::ImPushToUserReq {
                flash,
                data,
                user_token_list: remote,
            };
            let query = buddy::ImUsersStatReq {
                user_id: 0,
                user_id_list: users,
                attach_data: Some(
                    PduAttach::new(
                        AttachType::PDU_FOR_PUSH,
                        0,
                        prost::Message::encode_to_vec(&prepared).into(),
                    )
                    .to_bytes(),
                ),
            };
            self.send_to_master_route(Pdu::encode_message(&query, 0));
        }
    }

    pub(super) fn send_to_push(&mut self, pdu: Pdu) {
        if let Some(&link) = self.pushes.last() {
            self.out
                .push_back(Action::ToUpstream(link, Frame::from(pdu)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(kind: MsgType, body: &str) -> ImMsgData {
        ImMsgData {
            from_user_id: 3,
            to_session_id: 9,
            msg_type: kind.to_wire(),
            msg_data: MessageKey::default_key().encrypt(body.as_bytes()).into(),
            ..Default::default()
        }
    }

    #[test]
    fn alerts_as_the_original_builds_them() {
        let key = MessageKey::default_key();
        assert_eq!(
            alert(&text(MsgType::SingleText, "hi"), Some("Bob"), &key).unwrap(),
            "Bob:hi"
        );
        assert_eq!(
            alert(&text(MsgType::SingleText, "hi"), None, &key).unwrap(),
            SOMETHING_ARRIVED
        );
        let picture = format!("look {PICTURE_START}http://x/1.png{PICTURE_END}");
        assert_eq!(
            alert(&text(MsgType::GroupText, &picture), Some("Bob"), &key).unwrap(),
            SOMETHING_ARRIVED
        );
        let audio = ImMsgData {
            msg_type: MsgType::SingleAudio.to_wire(),
            msg_data: vec![0, 0, 0, 1, 9].into(),
            ..Default::default()
        };
        assert_eq!(
            alert(&audio, Some("Bob"), &key).unwrap(),
            "Bob给您发送了一条语音消息"
        );
        let garbage = ImMsgData {
            msg_type: 1,
            msg_data: "not base64!".into(),
            ..Default::default()
        };
        assert_eq!(alert(&garbage, Some("Bob"), &key), None);
    }

    #[test]
    fn long_alerts_are_cut_on_character_boundaries() {
        let long = truncate(&"一".repeat(20), ALERT_BYTES);
        assert_eq!(
            long,
            format!("{}...", "一".repeat(12)),
            "36 bytes, not a split character (Q-29)"
        );
        assert_eq!(truncate("short", ALERT_BYTES), "short");
    }

    #[test]
    fn custom_data_names_the_group() {
        assert_eq!(
            custom_data(&text(MsgType::SingleText, "x")),
            r#"{"msg_type":1,"from_id":3}"#
        );
        assert_eq!(
            custom_data(&text(MsgType::GroupText, "x")),
            r#"{"msg_type":17,"from_id":3,"group_id":9}"#
        );
    }
}
