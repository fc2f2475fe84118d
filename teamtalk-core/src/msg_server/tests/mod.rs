//! The msg_server driven through a harness with fixed links (db_proxy, route_server,
//! login_server) and a manual clock; the tests are grouped by concern.

use super::*;
use crate::domain::{ManualClock, Timestamp};
use crate::PduMessage;

const DB: LinkId = LinkId(1);
const RS: LinkId = LinkId(2);
const LS: LinkId = LinkId(3);

struct Harness {
    ms: MsgServer<ManualClock>,
    now_ms: u64,
}

impl Harness {
    fn new() -> Harness {
        let mut ms = MsgServer::new(
            MsgServerConfig::default(),
            ManualClock::new(Timestamp(1_000)),
        );
        let mut out = Vec::new();
        ms.upstream_opened(DB, Upstream::Db(DbRange::Login), &mut out);
        ms.upstream_opened(RS, Upstream::Route, &mut out);
        ms.upstream_opened(LS, Upstream::Login, &mut out);
        Harness { ms, now_ms: 0 }
    }

    fn client<M: PduMessage>(&mut self, conn: ConnId, message: &M, seq: u16) -> Vec<Action> {
        let mut out = Vec::new();
        self.ms.client_frame(
            conn,
            Pdu::encode_message(message, seq),
            self.now_ms,
            &mut out,
        );
        out
    }

    fn db<M: PduMessage>(&mut self, message: &M, seq: u16) -> Vec<Action> {
        let mut out = Vec::new();
        self.ms.upstream_frame(
            DB,
            Upstream::Db(DbRange::Login),
            Pdu::encode_message(message, seq),
            &mut out,
        );
        out
    }

    fn route<M: PduMessage>(&mut self, message: &M, seq: u16) -> Vec<Action> {
        let mut out = Vec::new();
        self.ms.upstream_frame(
            RS,
            Upstream::Route,
            Pdu::encode_message(message, seq),
            &mut out,
        );
        out
    }

    /// Connects and logs in `name` (user id `id`) with `client`; returns the connection.
    fn login(&mut self, id: u32, client: ClientType) -> ConnId {
        let conn = self.ms.client_opened(self.now_ms);
        let request = login::ImLoginReq {
            user_name: format!("u{id}"),
            password: "md5".into(),
            online_status: 1,
            client_type: client.to_wire(),
            client_version: None,
        };
        let out = self.client(conn, &request, 7);
        let validate: server::ImValidateReq = only_upstream(&out, DB).decode_body().unwrap();
        let answer = server::ImValidateRsp {
            user_name: validate.user_name,
            result_code: 0,
            result_string: None,
            user_info: Some(bd::UserInfo {
                user_id: id,
                ..Default::default()
            }),
            attach_data: validate.attach_data,
        };
        let out = self.db(&answer, 7);
        let res: login::ImLoginRes = to_client(&out, conn)[0].decode_body().unwrap();
        assert_eq!(res.result_code, 0);
        conn
    }
}

fn only_upstream(out: &[Action], link: LinkId) -> Pdu {
    let found: Vec<&Pdu> = out
        .iter()
        .filter_map(|a| match a {
            Action::ToUpstream(l, pdu) if *l == link => Some(pdu),
            _ => None,
        })
        .collect();
    assert_eq!(found.len(), 1, "{out:?}");
    found[0].clone()
}

fn upstream(out: &[Action], link: LinkId, command: CommandId) -> Vec<Pdu> {
    out.iter()
        .filter_map(|a| match a {
            Action::ToUpstream(l, pdu) if *l == link && pdu.command() == command => {
                Some(pdu.clone())
            }
            _ => None,
        })
        .collect()
}

fn to_client(out: &[Action], conn: ConnId) -> Vec<Pdu> {
    out.iter()
        .filter_map(|a| match a {
            Action::ToClient(c, pdu) if *c == conn => Some(pdu.clone()),
            _ => None,
        })
        .collect()
}

fn closes(out: &[Action], conn: ConnId) -> bool {
    out.contains(&Action::Close(conn))
}

fn text(from: u32, to: u32, kind: crate::domain::MsgType) -> message::ImMsgData {
    message::ImMsgData {
        from_user_id: from,
        to_session_id: to,
        msg_id: 90_000_000,
        create_time: 1,
        msg_type: kind.to_wire(),
        msg_data: Bytes::from_static(b"aGk="),
        attach_data: None,
    }
}

mod delivery;
mod groups;
mod requests;
mod session;
mod upstream;
