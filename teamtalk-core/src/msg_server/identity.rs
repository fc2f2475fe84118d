//! Which field of a message names its user: forced to the authenticated user on the way in
//! and read with the attach data on the way back. Both are columns of the
//! request table ([`crate::command::requests`]); these are its derived functions under their
//! msg_server names.

pub use crate::command::requests::{reply_route, set_requester};

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::command::requests::{self, TABLE};
    use crate::command::AnyMessage;
    use crate::ids::CommandId;
    use crate::msg_server::budget;
    use crate::proto::{group, message, switch_service};

    #[test]
    fn requester_fields_are_overwritten() {
        let mut m = AnyMessage::from(message::ImMsgData {
            from_user_id: 666,
            ..Default::default()
        });
        assert!(set_requester(&mut m, 7));
        let AnyMessage::MsgData(data) = &m else {
            unreachable!()
        };
        assert_eq!(data.from_user_id, 7);

        let mut p2p = AnyMessage::from(switch_service::Imp2pCmdMsg {
            from_user_id: 666,
            to_user_id: 8,
            cmd_msg_data: String::new(),
        });
        assert!(set_requester(&mut p2p, 7));
        let AnyMessage::P2pCmdMsg(p) = &p2p else {
            unreachable!()
        };
        assert_eq!((p.from_user_id, p.to_user_id), (7, 8));

        let mut time = AnyMessage::from(message::ImClientTimeReq {});
        assert!(!set_requester(&mut time, 7));
    }

    #[test]
    fn replies_name_their_user_and_attach() {
        let mut rsp = AnyMessage::from(group::ImGroupShieldRsp {
            user_id: 9,
            attach_data: Some(Bytes::from_static(b"abc")),
            ..Default::default()
        });
        let (user, attach) = reply_route(&mut rsp).unwrap();
        assert_eq!(user, 9);
        assert_eq!(attach.take().as_deref(), Some(&b"abc"[..]));
        let mut req = AnyMessage::from(message::ImClientTimeReq {});
        assert!(reply_route(&mut req).is_none());
    }

    /// Every message of the command table with its default body.
    fn every_message() -> Vec<AnyMessage> {
        CommandId::ALL
            .iter()
            .filter_map(|&c| AnyMessage::decode(c, &[][..]).ok())
            .collect()
    }

    /// Every message with its identity and attach fields set, so a body that forgets to echo
    /// one differs.
    fn filled(message: &AnyMessage) -> AnyMessage {
        let mut m = message.clone();
        requests::set_requester(&mut m, 77);
        requests::set_attach(&mut m, Bytes::from_static(b"attach-data-1234"));
        m
    }

    #[test]
    fn the_budget_counts_what_the_table_counts() {
        for &command in CommandId::ALL {
            assert_eq!(
                budget::counts(command),
                requests::counts(command),
                "{command}"
            );
        }
    }

    #[test]
    fn set_attach_matches_the_msg_server_for_forwarded_requests() {
        // The msg_server's own list (msg_server::set_attach) covers the requests it forwards
        // with attach data; the table's adds the requests whose attach the msg_server writes
        // elsewhere (a message when it is held, the msg_server's own db_proxy requests).
        let elsewhere = [
            CommandId::MSG_DATA,
            CommandId::OTHER_VALIDATE_REQ,
            CommandId::OTHER_GET_DEVICE_TOKEN_REQ,
            CommandId::OTHER_GET_SHIELD_REQ,
        ];
        for message in every_message() {
            let attach = Bytes::from_static(b"0123456789ab");
            let (mut old, mut new) = (message.clone(), message.clone());
            super::super::requests::set_attach(&mut old, attach.clone());
            let written = requests::set_attach(&mut new, attach);
            if elsewhere.contains(&message.command()) {
                assert!(written, "{}", message.command());
                assert_eq!(old, message, "{}", message.command());
            } else {
                assert_eq!(old, new, "{}", message.command());
                assert_eq!(written, old != message, "{}", message.command());
            }
        }
    }

    #[test]
    fn offline_answers_match_the_msg_server() {
        for message in every_message() {
            let message = filled(&message);
            assert_eq!(
                super::super::requests::offline_answer(&message),
                requests::offline_answer(&message),
                "{}",
                message.command()
            );
        }
    }

    #[test]
    fn every_routed_answer_of_the_table_has_a_reply_route() {
        for rules in TABLE {
            if let requests::Answer::Routed(rsp) | requests::Answer::EveryConnection(rsp) =
                rules.answer
            {
                let Ok(mut answer) = AnyMessage::decode(rsp, &[][..]) else {
                    panic!("{rsp} has no message");
                };
                assert!(reply_route(&mut answer).is_some(), "{rsp}");
            }
        }
    }
}
