//! The msg_server driven through a harness with fixed links (db_proxy, route_server,
//! login_server) stepping a fake time; the tests are grouped by concern.

use super::*;
use crate::domain::Timestamp;
use crate::time::Machine;
use crate::PduMessage;

const DB: LinkId = LinkId(1);
const RS: LinkId = LinkId(2);
const LS: LinkId = LinkId(3);

/// The Unix time every input carries (the tests step only the monotonic scale).
const UNIX: Timestamp = Timestamp(1_000);

struct Harness {
    ms: MsgServer,
    now_ms: u64,
}

impl Harness {
    fn new() -> Harness {
        let mut h = Harness {
            ms: MsgServer::new(MsgServerConfig::default()),
            now_ms: 0,
        };
        let mut out = Vec::new();
        assert_eq!(h.link_opened(Upstream::Db(DbRange::Login), &mut out), DB);
        assert_eq!(h.link_opened(Upstream::Route, &mut out), RS);
        assert_eq!(h.link_opened(Upstream::Login, &mut out), LS);
        h
    }

    /// The moment of the next input.
    fn now(&self) -> Now {
        Now::new(self.now_ms, UNIX)
    }

    /// Everything the msg_server has to do after an input.
    fn drain(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.ms.poll_output()).collect()
    }

    fn client<M: PduMessage>(&mut self, conn: ConnId, message: &M, seq: u16) -> Vec<Action> {
        let now = self.now();
        self.ms
            .handle_client_frame(now, conn, Pdu::encode_message(message, seq));
        self.drain()
    }

    fn open_client(&mut self, peer_ip: Option<std::net::IpAddr>) -> ConnId {
        let now = self.now();
        let conn = self.ms.handle_client_opened(now, peer_ip);
        assert!(self.drain().is_empty());
        conn
    }

    fn client_closed(&mut self, conn: ConnId) -> Vec<Action> {
        let now = self.now();
        self.ms.handle_client_closed(now, conn);
        self.drain()
    }

    /// Opens an upstream link; its actions go to `out`.
    fn link_opened(&mut self, kind: Upstream, out: &mut Vec<Action>) -> LinkId {
        let now = self.now();
        let link = self.ms.handle_upstream_opened(now, kind);
        out.extend(self.drain());
        link
    }

    fn link_closed(&mut self, link: LinkId) -> Vec<Action> {
        let now = self.now();
        self.ms.handle_upstream_closed(now, link);
        self.drain()
    }

    fn frame_on(&mut self, link: LinkId, pdu: Pdu) -> Vec<Action> {
        let now = self.now();
        self.ms.handle_upstream_frame(now, link, pdu);
        self.drain()
    }

    /// Time reaches `ms` (whether or not a deadline is due then).
    fn tick(&mut self, ms: u64) -> Vec<Action> {
        self.ms.handle_timeout(Now::new(ms, UNIX));
        self.drain()
    }

    fn db<M: PduMessage>(&mut self, message: &M, seq: u16) -> Vec<Action> {
        self.frame_on(DB, Pdu::encode_message(message, seq))
    }

    fn route<M: PduMessage>(&mut self, message: &M, seq: u16) -> Vec<Action> {
        self.frame_on(RS, Pdu::encode_message(message, seq))
    }

    /// Connects and logs in `name` (user id `id`) with `client`; returns the connection.
    fn login(&mut self, id: u32, client: ClientType) -> ConnId {
        let conn = self.open_client(None);
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
    let found: Vec<Pdu> = out
        .iter()
        .filter_map(|a| match a {
            Action::ToUpstream(l, frame) if *l == link => Some(frame.pdu()),
            _ => None,
        })
        .collect();
    assert_eq!(found.len(), 1, "{out:?}");
    found[0].clone()
}

fn upstream(out: &[Action], link: LinkId, command: CommandId) -> Vec<Pdu> {
    out.iter()
        .filter_map(|a| match a {
            Action::ToUpstream(l, frame) if *l == link && frame.command() == command => {
                Some(frame.pdu())
            }
            _ => None,
        })
        .collect()
}

fn to_client(out: &[Action], conn: ConnId) -> Vec<Pdu> {
    out.iter()
        .filter_map(|a| match a {
            Action::ToClient(c, frame) if *c == conn => Some(frame.pdu()),
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
