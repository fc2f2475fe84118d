//! Sending, history, unread counters and read acks.

use bytes::Bytes;
use teamtalk_proto::base_define::{MsgInfo, UnreadInfo};
use teamtalk_proto::message::{
    ImGetLatestMsgIdReq, ImGetLatestMsgIdRsp, ImGetMsgByIdReq, ImGetMsgByIdRsp, ImGetMsgListReq,
    ImGetMsgListRsp, ImMsgData, ImMsgDataReadAck, ImUnreadMsgCntReq, ImUnreadMsgCntRsp,
};

use super::DbProxy;
use crate::domain::{Clock, GroupId, MsgId, MsgType, SessionKind, Timestamp, UserId};
use crate::store::{
    GroupStore, MessageQuery, MessageStore, NewMessage, Peer, RecordMessage, SessionStore,
    StoreResult, StoredMessage, UnreadStore, UserStore,
};

/// Audio payloads start with a 4-byte duration and must carry audio after it.
const AUDIO_HEADER_LEN: usize = 4;

impl<S: UserStore + GroupStore + RecordMessage, C: Clock> DbProxy<S, C> {
    /// CID_MSG_DATA: stores a message and answers the request with `msg_id` set (0 when it
    /// was not stored: empty or invalid payload, unknown type or receiver, message to oneself).
    /// A group message from a non-member (or to an unknown group) is not stored and answered
    /// with `msg_id` 0 (the original did not answer at all, Q-35; msg_servers drop either way,
    /// but an answer lets a msg_server move on to the sender's next message).
    ///
    /// Single: both users' sessions are created or refreshed (the original missed the
    /// sender's, Q-53) and the receiver's unread counter grows. Group: the group counter grows,
    /// the sender catches up, the sender's session is refreshed; other members' sessions follow
    /// with [`DbProxy::sync_group_sessions`].
    pub async fn send_message(&self, mut req: ImMsgData) -> StoreResult<Option<ImMsgData>> {
        let from = UserId(req.from_user_id);
        let Some(msg_type) = MsgType::from_wire(req.msg_type) else {
            req.msg_id = 0;
            return Ok(Some(req));
        };
        let valid_payload = if msg_type.is_audio() {
            req.msg_data.len() > AUDIO_HEADER_LEN
        } else {
            !req.msg_data.is_empty()
        };
        let message = NewMessage {
            from,
            msg_type,
            content: req.msg_data.clone(),
            created: Timestamp(req.create_time),
        };
        let now = self.clock.now();
        match msg_type.session_kind() {
            SessionKind::Single => {
                let to = UserId(req.to_session_id);
                req.msg_id = 0;
                if !valid_payload || from == to || from.0 == 0 {
                    return Ok(Some(req));
                }
                if !self.store.user_exists(to).await? {
                    return Ok(Some(req));
                }
                let Some(relation) = self.store.relation(from, to, true).await? else {
                    return Ok(Some(req));
                };
                let id = self
                    .store
                    .record_single(relation, to, &message, now)
                    .await?;
                req.msg_id = id.0;
                Ok(Some(req))
            }
            SessionKind::Group => {
                let group = GroupId(req.to_session_id);
                req.msg_id = 0;
                if self.store.member(group, from).await?.is_none() {
                    return Ok(Some(req));
                }
                if !valid_payload {
                    return Ok(Some(req));
                }
                let id = self.store.record_group(group, &message, now).await?;
                req.msg_id = id.0;
                Ok(Some(req))
            }
        }
    }
}

impl<S: SessionStore + MessageStore + GroupStore, C: Clock> DbProxy<S, C> {
    /// CID_MSG_LIST_REQUEST: a history page, newest first: messages with id ≤ `msg_id_begin`
    /// (0: from the newest), at most `msg_cnt` (clamped to [`super::Limits::messages_per_page`]).
    /// Group history only for members, and only from their join time on.
    pub async fn message_list(&self, req: ImGetMsgListReq) -> StoreResult<ImGetMsgListRsp> {
        let limit = (req.msg_cnt as usize).min(self.config.limits.messages_per_page);
        let up_to = (req.msg_id_begin != 0).then_some(MsgId(req.msg_id_begin));
        let messages = self
            .read_messages(
                UserId(req.user_id),
                req.session_type,
                req.session_id,
                |since| MessageQuery::Page {
                    up_to,
                    since,
                    limit,
                },
            )
            .await?;
        Ok(ImGetMsgListRsp {
            user_id: req.user_id,
            session_type: req.session_type,
            session_id: req.session_id,
            msg_id_begin: req.msg_id_begin,
            msg_list: messages.iter().map(msg_info).collect(),
            attach_data: req.attach_data,
        })
    }

    /// CID_MSG_GET_BY_MSG_ID_REQ: the requested messages (at most 100 ids), newest first.
    pub async fn messages_by_id(&self, req: ImGetMsgByIdReq) -> StoreResult<ImGetMsgByIdRsp> {
        let limit = self.config.limits.message_ids;
        let ids = super::bounded_unique(req.msg_id_list.iter().map(|&id| MsgId(id)), limit);
        let messages = if ids.is_empty() {
            Vec::new()
        } else {
            self.read_messages(
                UserId(req.user_id),
                req.session_type,
                req.session_id,
                |since| MessageQuery::Ids { ids, since, limit },
            )
            .await?
        };
        Ok(ImGetMsgByIdRsp {
            user_id: req.user_id,
            session_type: req.session_type,
            session_id: req.session_id,
            msg_list: messages.iter().map(msg_info).collect(),
            attach_data: req.attach_data,
        })
    }

    /// CID_MSG_GET_LATEST_MSG_ID_REQ: id of the newest message of the conversation, 0 when
    /// there is none. Groups: members only (the original answered anyone, Q-07).
    pub async fn latest_msg_id(
        &self,
        req: ImGetLatestMsgIdReq,
    ) -> StoreResult<ImGetLatestMsgIdRsp> {
        let user = UserId(req.user_id);
        let mut latest = 0;
        if let Some(kind) = SessionKind::from_wire(req.session_type) {
            let peer = Peer::new(kind, req.session_id);
            let allowed = match peer {
                Peer::User(_) => true,
                Peer::Group(group) => self.store.member(group, user).await?.is_some(),
            };
            if allowed {
                latest = self.latest_message(user, peer).await?.map_or(0, |m| m.id.0);
            }
        }
        Ok(ImGetLatestMsgIdRsp {
            user_id: req.user_id,
            session_type: req.session_type,
            session_id: req.session_id,
            latest_msg_id: latest,
            attach_data: req.attach_data,
        })
    }
}

impl<S: SessionStore + MessageStore + UnreadStore + GroupStore, C: Clock> DbProxy<S, C> {
    /// CID_MSG_UNREAD_CNT_REQUEST: single sessions with unread messages (peers ordered as
    /// decimal strings, as the original), then the user's groups with unread messages (most
    /// recently joined first), each with its newest message; `total_cnt` is their sum.
    pub async fn unread_counts(&self, req: ImUnreadMsgCntReq) -> StoreResult<ImUnreadMsgCntRsp> {
        let user = UserId(req.user_id);
        let mut list = Vec::new();
        let mut singles = self.store.unread_counts(user).await?;
        singles.sort_by_cached_key(|(peer, _)| peer.0.to_string());
        for (peer, count) in singles {
            if count == 0 {
                continue;
            }
            if let Some(latest) = self.latest_message(user, Peer::User(peer)).await? {
                list.push(self.unread_info(Peer::User(peer), count, &latest, peer));
            }
        }
        for group in self.store.groups_of(user).await? {
            let Some(count) = self
                .store
                .group_unread(user, group)
                .await?
                .filter(|&n| n > 0)
            else {
                continue;
            };
            if let Some(latest) = self.latest_message(user, Peer::Group(group)).await? {
                list.push(self.unread_info(Peer::Group(group), count, &latest, latest.from));
            }
        }
        Ok(ImUnreadMsgCntRsp {
            user_id: req.user_id,
            total_cnt: list
                .iter()
                .fold(0u32, |sum, info| sum.saturating_add(info.unread_cnt)),
            unreadinfo_list: list,
            attach_data: req.attach_data,
        })
    }
}

impl<S: UnreadStore, C: Clock> DbProxy<S, C> {
    /// CID_MSG_READ_ACK: the whole session is read ("session read" semantics, Q-51; `msg_id`
    /// is not used). No answer.
    pub async fn read_ack(&self, req: ImMsgDataReadAck) -> StoreResult<()> {
        if let Some(kind) = SessionKind::from_wire(req.session_type) {
            self.mark_read(UserId(req.user_id), Peer::new(kind, req.session_id))
                .await?;
        }
        Ok(())
    }
}

impl<S: SessionStore + MessageStore + UnreadStore + GroupStore, C: Clock> DbProxy<S, C> {
    fn unread_info(
        &self,
        peer: Peer,
        count: u32,
        latest: &StoredMessage,
        from: UserId,
    ) -> UnreadInfo {
        UnreadInfo {
            session_id: peer.raw(),
            session_type: peer.kind().to_wire(),
            unread_cnt: count,
            latest_msg_id: latest.id.0,
            latest_msg_data: self.preview(latest),
            latest_msg_type: latest.msg_type.to_wire(),
            latest_msg_from_user_id: from.0,
        }
    }
}

impl<S: SessionStore + MessageStore + GroupStore, C: Clock> DbProxy<S, C> {
    /// Reads messages of `user`'s conversation with (`session_type`, `session_id`); the query
    /// gets the oldest creation time `user` may read (their join time for groups). Empty for
    /// an invalid session type, a user pair without messages, or a non-member.
    async fn read_messages(
        &self,
        user: UserId,
        session_type: i32,
        session_id: u32,
        query: impl FnOnce(Timestamp) -> MessageQuery,
    ) -> StoreResult<Vec<StoredMessage>> {
        let Some(kind) = SessionKind::from_wire(session_type) else {
            return Ok(Vec::new());
        };
        match Peer::new(kind, session_id) {
            Peer::User(peer) => match self.store.relation(user, peer, false).await? {
                Some(relation) => {
                    self.store
                        .single_messages(relation, &query(Timestamp(0)))
                        .await
                }
                None => Ok(Vec::new()),
            },
            Peer::Group(group) => match self.store.member(group, user).await? {
                Some(member) => {
                    self.store
                        .group_messages(group, &query(member.joined))
                        .await
                }
                None => Ok(Vec::new()),
            },
        }
    }
}

impl<S: UnreadStore + GroupStore, C: Clock> DbProxy<S, C> {
    /// Sum of a user's unread messages (single and group): the push badge.
    pub async fn total_unread(&self, user: UserId) -> StoreResult<u32> {
        let mut total = 0u32;
        for (_, count) in self.store.unread_counts(user).await? {
            total = total.saturating_add(count);
        }
        for group in self.store.groups_of(user).await? {
            let count = self.store.group_unread(user, group).await?.unwrap_or(0);
            total = total.saturating_add(count);
        }
        Ok(total)
    }
}

impl<S: SessionStore + MessageStore, C: Clock> DbProxy<S, C> {
    /// The newest message of `user`'s conversation with `peer` (groups: regardless of join
    /// time, as the original's session and unread lists).
    pub(crate) async fn latest_message(
        &self,
        user: UserId,
        peer: Peer,
    ) -> StoreResult<Option<StoredMessage>> {
        let newest = MessageQuery::Page {
            up_to: None,
            since: Timestamp(0),
            limit: 1,
        };
        let messages = match peer {
            Peer::User(other) => match self.store.relation(user, other, false).await? {
                Some(relation) => self.store.single_messages(relation, &newest).await?,
                None => return Ok(None),
            },
            Peer::Group(group) => self.store.group_messages(group, &newest).await?,
        };
        Ok(messages.into_iter().next())
    }
}

impl<S: UnreadStore, C: Clock> DbProxy<S, C> {
    /// Marks `user`'s conversation with `peer` as read.
    pub(crate) async fn mark_read(&self, user: UserId, peer: Peer) -> StoreResult<()> {
        match peer {
            Peer::User(other) => self.store.clear_unread(user, other).await,
            Peer::Group(group) => self.store.catch_up(user, group).await,
        }
    }
}

impl<S, C: Clock> DbProxy<S, C> {
    /// The payload shown as a conversation's latest message: audio is replaced by the
    /// encrypted `"[语音]"` text.
    pub(crate) fn preview(&self, message: &StoredMessage) -> Bytes {
        if message.msg_type.is_audio() {
            self.config.audio_preview.clone()
        } else {
            message.content.clone()
        }
    }
}

/// The wire form of a stored message.
fn msg_info(message: &StoredMessage) -> MsgInfo {
    MsgInfo {
        msg_id: message.id.0,
        from_session_id: message.from.0,
        create_time: message.created.0,
        msg_type: message.msg_type.to_wire(),
        msg_data: message.content.clone(),
    }
}
