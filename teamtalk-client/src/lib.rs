#![doc = include_str!("../README.md")]

mod connection;
pub mod discovery;

/// The code in docs/client.md is compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/client.md")]
struct ClientDoc;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use teamtalk_core::crypt::MessageKey;
use teamtalk_core::domain::{ClientType, GroupChange, MsgType, SessionKind};
use teamtalk_core::proto::base_define::{
    ContactSessionInfo, DepartInfo, GroupInfo, GroupVersionInfo, MsgInfo, UserInfo, UserStat,
};
use teamtalk_core::proto::{buddy, group, login, message};
use teamtalk_core::AnyMessage;
use tokio::sync::{mpsc, oneshot};

use connection::Command;

/// Where to connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A login_server's HTTP address, e.g. `http://127.0.0.1:8080` (asked for a msg_server on
    /// every connect).
    LoginUrl(String),
    /// A msg_server's `host:port`.
    MsgServer(String),
}

/// How to connect and behave.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Where to connect.
    pub target: Target,
    /// Login name.
    pub user: String,
    /// Plain password (sent as its md5, as the original clients do).
    pub password: String,
    /// Device class to log in as. Default Windows: a PC client, shown online to others; a
    /// second login of the same class elsewhere kicks this one.
    pub client_type: ClientType,
    /// How long a request may wait for its answer. Default 10 s.
    pub request_timeout: Duration,
    /// A heartbeat after this long without sending. Default 30 s (servers drop PC clients
    /// after 120 s of silence).
    pub heartbeat: Duration,
    /// Reconnect (and log in again) after the connection drops. Default true.
    pub reconnect: bool,
    /// First reconnect delay, doubling up to [`ClientConfig::max_reconnect_delay`]. Default 1 s.
    pub reconnect_delay: Duration,
    /// Longest reconnect delay. Default 30 s.
    pub max_reconnect_delay: Duration,
    /// The message key (`aesKey`) for text messages. Default: the original's default key.
    pub message_key: String,
}

impl ClientConfig {
    fn new(target: Target, user: &str, password: &str) -> ClientConfig {
        ClientConfig {
            target,
            user: user.to_owned(),
            password: password.to_owned(),
            client_type: ClientType::Windows,
            request_timeout: Duration::from_secs(10),
            heartbeat: Duration::from_secs(30),
            reconnect: true,
            reconnect_delay: Duration::from_secs(1),
            max_reconnect_delay: Duration::from_secs(30),
            message_key: teamtalk_core::crypt::DEFAULT_KEY.to_owned(),
        }
    }

    /// Connect through the login_server at `url` (e.g. `http://127.0.0.1:8080`).
    pub fn login_url(url: &str, user: &str, password: &str) -> ClientConfig {
        ClientConfig::new(Target::LoginUrl(url.to_owned()), user, password)
    }

    /// Connect to the msg_server at `addr` (`host:port`).
    pub fn msg_server(addr: &str, user: &str, password: &str) -> ClientConfig {
        ClientConfig::new(Target::MsgServer(addr.to_owned()), user, password)
    }
}

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The login_server could not be asked, or had no msg_server.
    #[error("discovery failed: {0}")]
    Discovery(String),
    /// A socket error while connecting.
    #[error("connection failed: {0}")]
    Io(#[from] std::io::Error),
    /// The msg_server refused the login (`result_code`: 3 no db_proxy, 4 no login_server,
    /// 5 no route_server, 6 wrong name or password).
    #[error("login refused ({code}): {reason}")]
    Refused {
        /// `IMLoginRes.result_code`.
        code: i32,
        /// `IMLoginRes.result_string`.
        reason: String,
    },
    /// The connection is down (requests in flight when it dropped fail with this too).
    #[error("not connected")]
    Disconnected,
    /// No answer in time.
    #[error("no answer in time")]
    Timeout,
    /// The server answered with a failure result code.
    #[error("{request} failed with result code {code}")]
    Failed {
        /// The request's message name.
        request: &'static str,
        /// Its result code.
        code: u32,
    },
    /// The server sent something that does not fit the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Too many requests wait for answers at once.
    #[error("too many requests in flight")]
    TooManyPending,
    /// The client was closed (logged out, kicked, or its task ended).
    #[error("the client is closed")]
    Closed,
}

/// A chat message received from the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Server-assigned id, per conversation.
    pub msg_id: u32,
    /// Sender.
    pub from: u32,
    /// Receiver: a user id for 1:1 messages, a group id for group messages.
    pub to: u32,
    /// Message type (`None` for types this library does not know).
    pub kind: Option<MsgType>,
    /// Creation time (Unix seconds, set by the server).
    pub created: u32,
    /// The payload: encrypted Base64 text, or duration + audio bytes.
    pub data: Bytes,
    /// The decrypted text of a text message; `None` for audio or undecryptable payloads.
    pub text: Option<String>,
}

impl Message {
    fn new(data: message::ImMsgData, key: &MessageKey) -> Message {
        let kind = MsgType::from_wire(data.msg_type);
        let text = match kind {
            Some(k) if !k.is_audio() => key
                .decrypt(&data.msg_data)
                .ok()
                .map(|plain| String::from_utf8_lossy(&plain).into_owned()),
            _ => None,
        };
        Message {
            msg_id: data.msg_id,
            from: data.from_user_id,
            to: data.to_session_id,
            kind,
            created: data.create_time,
            data: data.msg_data,
            text,
        }
    }

    /// Whether it was sent to a group.
    pub fn is_group(&self) -> bool {
        self.kind
            .is_some_and(|k| k.session_kind() == SessionKind::Group)
    }
}

/// What the server sends on its own, and connection changes.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A message to us, to a group of ours, or sent by another of our devices.
    Message(Message),
    /// We read a conversation on another device.
    ReadNotify {
        /// The conversation (user or group id).
        session_id: u32,
        /// 1:1 or group.
        kind: Option<SessionKind>,
        /// Read up to this message.
        msg_id: u32,
    },
    /// Another login of our account took over; the client is closing.
    Kicked {
        /// 1 the same account logged in on the same device class, 2 our phone kicked the PC.
        reason: i32,
    },
    /// A user's PC presence changed.
    Status {
        /// The user.
        user_id: u32,
        /// Online (a PC client connected) or not.
        online: bool,
    },
    /// Our own PC client came or went (sent to mobile clients).
    PcLogin {
        /// Whether a PC client of ours is online.
        online: bool,
    },
    /// Members of a group changed.
    GroupMembers(group::ImGroupChangeMemberNotify),
    /// A conversation was removed on another device.
    SessionRemoved {
        /// The conversation.
        session_id: u32,
        /// 1:1 or group.
        kind: Option<SessionKind>,
    },
    /// A user changed their signature.
    SignInfo {
        /// The user.
        user_id: u32,
        /// The new signature.
        sign_info: String,
    },
    /// Anything else the server sent on its own (P2P commands, file notices …).
    Other(AnyMessage),
    /// The connection dropped; requests fail until [`Event::Reconnected`].
    Disconnected,
    /// Connected and logged in again.
    Reconnected,
    /// The session ended for good (logout, kick, credentials refused); the reason.
    Closed(String),
}

impl Event {
    fn from_message(message: AnyMessage, key: &MessageKey) -> Event {
        use AnyMessage as M;
        match message {
            M::MsgData(data) => Event::Message(Message::new(data, key)),
            M::MsgDataReadNotify(n) => Event::ReadNotify {
                session_id: n.session_id,
                kind: SessionKind::from_wire(n.session_type),
                msg_id: n.msg_id,
            },
            M::KickUser(k) => Event::Kicked {
                reason: k.kick_reason,
            },
            M::UserStatNotify(n) => Event::Status {
                user_id: n.user_stat.user_id,
                online: n.user_stat.status == 1,
            },
            M::PcLoginStatusNotify(n) => Event::PcLogin {
                online: n.login_stat == 1,
            },
            M::GroupChangeMemberNotify(n) => Event::GroupMembers(n),
            M::RemoveSessionNotify(n) => Event::SessionRemoved {
                session_id: n.session_id,
                kind: SessionKind::from_wire(n.session_type),
            },
            M::SignInfoChangedNotify(n) => Event::SignInfo {
                user_id: n.changed_user_id,
                sign_info: n.sign_info,
            },
            other => Event::Other(other),
        }
    }
}

/// The events of a client, in the order the server sent them. Keep receiving: when nobody
/// does, the client stops reading from the server after a while.
#[derive(Debug)]
pub struct Events(mpsc::Receiver<Event>);

impl Events {
    /// The next event; `None` after the client's task ended (the last event is
    /// [`Event::Closed`] or [`Event::Disconnected`] without reconnecting).
    pub async fn recv(&mut self) -> Option<Event> {
        self.0.recv().await
    }
}

/// A logged-in TeamTalk client. Cheap to clone; the connection closes when every clone and
/// the [`Events`] are dropped (or after [`Client::logout`]).
#[derive(Clone, Debug)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    me: Arc<Mutex<UserInfo>>,
    key: MessageKey,
}

impl Client {
    /// Finds a msg_server, connects and logs in; then serves the connection in the
    /// background. Fails when the first login fails.
    pub async fn connect(config: ClientConfig) -> Result<(Client, Events), Error> {
        let key = MessageKey::new(&config.message_key)
            .map_err(|e| Error::Protocol(format!("message key: {e}")))?;
        let (conn, me) = connection::establish(&config).await?;
        let me = Arc::new(Mutex::new(me));
        let (commands, rx) = mpsc::channel(256);
        let (events_tx, events) = mpsc::channel(4096);
        tokio::spawn(connection::run(
            conn,
            config,
            key.clone(),
            me.clone(),
            rx,
            events_tx,
        ));
        Ok((Client { commands, me, key }, Events(events)))
    }

    /// Our own user (as of the last login).
    pub fn me(&self) -> UserInfo {
        self.me
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Our user id.
    pub fn user_id(&self) -> u32 {
        self.me
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .user_id
    }

    /// Sends any request and returns its answer (`None` for requests without one). The
    /// typed methods below are built on it.
    pub async fn request(
        &self,
        message: impl Into<AnyMessage>,
    ) -> Result<Option<AnyMessage>, Error> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Request {
                message: message.into(),
                reply,
            })
            .await
            .map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)?
    }

    async fn ask<T>(
        &self,
        message: impl Into<AnyMessage>,
        pick: impl FnOnce(AnyMessage) -> Option<T>,
    ) -> Result<T, Error> {
        let message = message.into();
        let name = message.message_name();
        match self.request(message).await? {
            Some(answer) => {
                pick(answer).ok_or_else(|| Error::Protocol(format!("unexpected answer to {name}")))
            }
            None => Err(Error::Protocol(format!("no answer to {name}"))),
        }
    }

    /// Sends a text message to a user; returns the server's msg_id once it is stored.
    pub async fn send_text(&self, to_user: u32, text: &str) -> Result<u32, Error> {
        let data = self.key.encrypt(text.as_bytes());
        self.send_message(to_user, MsgType::SingleText, data.into())
            .await
    }

    /// Sends a text message to a group we belong to; returns the server's msg_id.
    pub async fn send_group_text(&self, group_id: u32, text: &str) -> Result<u32, Error> {
        let data = self.key.encrypt(text.as_bytes());
        self.send_message(group_id, MsgType::GroupText, data.into())
            .await
    }

    /// Sends a message with an already encoded payload; returns the server's msg_id.
    pub async fn send_message(&self, to: u32, kind: MsgType, data: Bytes) -> Result<u32, Error> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let request = message::ImMsgData {
            from_user_id: self.user_id(),
            to_session_id: to,
            msg_id: 0,
            create_time: u32::try_from(now).unwrap_or(u32::MAX),
            msg_type: kind.to_wire(),
            msg_data: data,
            attach_data: None,
        };
        self.ask(request, |a| match a {
            AnyMessage::MsgDataAck(ack) => Some(ack.msg_id),
            _ => None,
        })
        .await
    }

    /// One page of a conversation's history: `count` messages with ids up to `before_msg_id`
    /// (0: the newest), newest first.
    pub async fn history(
        &self,
        kind: SessionKind,
        peer: u32,
        before_msg_id: u32,
        count: u32,
    ) -> Result<Vec<MsgInfo>, Error> {
        let request = message::ImGetMsgListReq {
            user_id: self.user_id(),
            session_type: kind.to_wire(),
            session_id: peer,
            msg_id_begin: before_msg_id,
            msg_cnt: count,
            attach_data: None,
        };
        self.ask(request, |a| match a {
            AnyMessage::GetMsgListRsp(r) => Some(r.msg_list),
            _ => None,
        })
        .await
    }

    /// Messages of a conversation by id.
    pub async fn messages_by_id(
        &self,
        kind: SessionKind,
        peer: u32,
        ids: Vec<u32>,
    ) -> Result<Vec<MsgInfo>, Error> {
        let request = message::ImGetMsgByIdReq {
            user_id: self.user_id(),
            session_type: kind.to_wire(),
            session_id: peer,
            msg_id_list: ids,
            attach_data: None,
        };
        self.ask(request, |a| match a {
            AnyMessage::GetMsgByIdRsp(r) => Some(r.msg_list),
            _ => None,
        })
        .await
    }

    /// The newest msg_id of a conversation.
    pub async fn latest_msg_id(&self, kind: SessionKind, peer: u32) -> Result<u32, Error> {
        let request = message::ImGetLatestMsgIdReq {
            user_id: self.user_id(),
            session_type: kind.to_wire(),
            session_id: peer,
            attach_data: None,
        };
        self.ask(request, |a| match a {
            AnyMessage::GetLatestMsgIdRsp(r) => Some(r.latest_msg_id),
            _ => None,
        })
        .await
    }

    /// Unread counts per conversation (with each one's last message) and their total.
    pub async fn unread(&self) -> Result<message::ImUnreadMsgCntRsp, Error> {
        let request = message::ImUnreadMsgCntReq {
            user_id: self.user_id(),
            attach_data: None,
        };
        self.ask(request, |a| match a {
            AnyMessage::UnreadMsgCntRsp(r) => Some(r),
            _ => None,
        })
        .await
    }

    /// Marks a conversation read up to `msg_id` (our other devices are told).
    pub async fn read_ack(&self, kind: SessionKind, peer: u32, msg_id: u32) -> Result<(), Error> {
        let request = message::ImMsgDataReadAck {
            user_id: self.user_id(),
            session_id: peer,
            msg_id,
            session_type: kind.to_wire(),
        };
        self.request(request).await.map(|_| ())
    }

    /// Recent conversations changed since `since` (0: all), each with its last message.
    pub async fn recent_sessions(&self, since: u32) -> Result<Vec<ContactSessionInfo>, Error> {
        let request = buddy::ImRecentContactSessionReq {
            user_id: self.user_id(),
            latest_update_time: since,
            attach_data: None,
        };
        self.ask(request, |a| match a {
            AnyMessage::RecentContactSessionRsp(r) => Some(r.contact_session_list),
            _ => None,
        })
        .await
    }

    /// Users changed since `since` (0: everybody) and the time to ask from next.
    pub async fn users_changed(&self, since: u32) -> Result<(Vec<UserInfo>, u32), Error> {
        let request = buddy::ImAllUserReq {
            user_id: self.user_id(),
            latest_update_time: since,
            attach_data: None,
        };
        self.ask(request, |a| match a {
            AnyMessage::AllUserRsp(r) => Some((r.user_list, r.latest_update_time)),
            _ => None,
        })
        .await
    }

    /// Departments changed since `since` (0: all) and the time to ask from next.
    pub async fn departments_changed(&self, since: u32) -> Result<(Vec<DepartInfo>, u32), Error> {
        let request = buddy::ImDepartmentReq {
            user_id: self.user_id(),
            latest_update_time: since,
            attach_data: None,
        };
        self.ask(request, |a| match a {
            AnyMessage::DepartmentRsp(r) => Some((r.dept_list, r.latest_update_time)),
            _ => None,
        })
        .await
    }

    /// Users by id.
    pub async fn users(&self, ids: Vec<u32>) -> Result<Vec<UserInfo>, Error> {
        let request = buddy::ImUsersInfoReq {
            user_id: self.user_id(),
            user_id_list: ids,
            attach_data: None,
        };
        self.ask(request, |a| match a {
            AnyMessage::UsersInfoRsp(r) => Some(r.user_info_list),
            _ => None,
        })
        .await
    }

    /// Presence of users (online = a PC client connected).
    pub async fn user_status(&self, ids: Vec<u32>) -> Result<Vec<UserStat>, Error> {
        let request = buddy::ImUsersStatReq {
            user_id: self.user_id(),
            user_id_list: ids,
            attach_data: None,
        };
        self.ask(request, |a| match a {
            AnyMessage::UsersStatRsp(r) => Some(r.user_stat_list),
            _ => None,
        })
        .await
    }

    /// Our fixed (normal) groups with their versions.
    pub async fn groups(&self) -> Result<Vec<GroupVersionInfo>, Error> {
        let request = group::ImNormalGroupListReq {
            user_id: self.user_id(),
            attach_data: None,
        };
        self.ask(request, |a| match a {
            AnyMessage::NormalGroupListRsp(r) => Some(r.group_version_list),
            _ => None,
        })
        .await
    }

    /// Groups by id, with their members.
    pub async fn group_info(&self, ids: Vec<u32>) -> Result<Vec<GroupInfo>, Error> {
        let request = group::ImGroupInfoListReq {
            user_id: self.user_id(),
            group_version_list: ids
                .into_iter()
                .map(|group_id| GroupVersionInfo {
                    group_id,
                    version: 0,
                })
                .collect(),
            attach_data: None,
        };
        self.ask(request, |a| match a {
            AnyMessage::GroupInfoListRsp(r) => Some(r.group_info_list),
            _ => None,
        })
        .await
    }

    /// Creates a temporary group with these members (include yourself); returns its id.
    pub async fn create_group(&self, name: &str, members: Vec<u32>) -> Result<u32, Error> {
        let request = group::ImGroupCreateReq {
            user_id: self.user_id(),
            group_type: teamtalk_core::domain::GroupType::Temporary.to_wire(),
            group_name: name.to_owned(),
            group_avatar: String::new(),
            member_id_list: members,
            attach_data: None,
        };
        let answer = self
            .ask(request, |a| match a {
                AnyMessage::GroupCreateRsp(r) => Some(r),
                _ => None,
            })
            .await?;
        match (answer.result_code, answer.group_id) {
            (0, Some(id)) => Ok(id),
            (code, _) => Err(Error::Failed {
                request: "IMGroupCreateReq",
                code,
            }),
        }
    }

    /// Adds or removes group members; returns the members afterwards.
    pub async fn change_group_members(
        &self,
        group_id: u32,
        change: GroupChange,
        users: Vec<u32>,
    ) -> Result<Vec<u32>, Error> {
        let request = group::ImGroupChangeMemberReq {
            user_id: self.user_id(),
            change_type: change.to_wire(),
            group_id,
            member_id_list: users,
            attach_data: None,
        };
        let answer = self
            .ask(request, |a| match a {
                AnyMessage::GroupChangeMemberRsp(r) => Some(r),
                _ => None,
            })
            .await?;
        if answer.result_code != 0 {
            return Err(Error::Failed {
                request: "IMGroupChangeMemberReq",
                code: answer.result_code,
            });
        }
        Ok(answer.cur_user_id_list)
    }

    /// Mutes (or unmutes) push notifications of a group for us.
    pub async fn shield_group(&self, group_id: u32, shield: bool) -> Result<(), Error> {
        let request = group::ImGroupShieldReq {
            user_id: self.user_id(),
            group_id,
            shield_status: u32::from(shield),
            attach_data: None,
        };
        let code = self
            .ask(request, |a| match a {
                AnyMessage::GroupShieldRsp(r) => Some(r.result_code),
                _ => None,
            })
            .await?;
        match code {
            0 => Ok(()),
            code => Err(Error::Failed {
                request: "IMGroupShieldReq",
                code,
            }),
        }
    }

    /// Sets our signature (everyone is told).
    pub async fn set_sign_info(&self, sign_info: &str) -> Result<(), Error> {
        let request = buddy::ImChangeSignInfoReq {
            user_id: self.user_id(),
            sign_info: sign_info.to_owned(),
            attach_data: None,
        };
        let code = self
            .ask(request, |a| match a {
                AnyMessage::ChangeSignInfoRsp(r) => Some(r.result_code),
                _ => None,
            })
            .await?;
        match code {
            0 => Ok(()),
            code => Err(Error::Failed {
                request: "IMChangeSignInfoReq",
                code,
            }),
        }
    }

    /// The server's clock (Unix seconds).
    pub async fn server_time(&self) -> Result<u32, Error> {
        self.ask(message::ImClientTimeReq {}, |a| match a {
            AnyMessage::ClientTimeRsp(r) => Some(r.server_time),
            _ => None,
        })
        .await
    }

    /// Logs out; the client closes (the last event is [`Event::Closed`]).
    pub async fn logout(&self) -> Result<(), Error> {
        self.ask(login::ImLogoutReq {}, |a| match a {
            AnyMessage::LogoutRsp(_) => Some(()),
            _ => None,
        })
        .await
    }
}
