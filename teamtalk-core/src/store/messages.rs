//! Messages and their per-conversation ids.

use core::fmt;

use bytes::Bytes;

use crate::domain::{GroupId, MsgId, MsgType, RelationId, Timestamp, UserId};
use crate::store::{Peer, SessionStore, StoreResult, UnreadStore};

/// A message to store.
#[derive(Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// Sender.
    pub from: UserId,
    /// Text or audio, single or group.
    pub msg_type: MsgType,
    /// The payload as the client sent it (ciphertext for text; duration + bytes for audio).
    pub content: Bytes,
    /// Receive time (IMMsgData.create_time as set by the msg_server).
    pub created: Timestamp,
}

/// A stored message.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Id within its conversation.
    pub id: MsgId,
    /// Sender.
    pub from: UserId,
    /// Receive time.
    pub created: Timestamp,
    /// Type.
    pub msg_type: MsgType,
    /// Payload.
    pub content: Bytes,
}

impl fmt::Debug for NewMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewMessage")
            .field("from", &self.from)
            .field("msg_type", &self.msg_type)
            .field("content_len", &self.content.len())
            .field("created", &self.created)
            .finish()
    }
}

impl fmt::Debug for StoredMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredMessage")
            .field("id", &self.id)
            .field("from", &self.from)
            .field("created", &self.created)
            .field("msg_type", &self.msg_type)
            .field("content_len", &self.content.len())
            .finish()
    }
}

/// Which messages of a conversation to read. Results are always newest first (by `created`,
/// then by storage order), restricted to `created >= since` (a group member's join time; 0 for
/// single chats), at most `limit`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageQuery {
    /// A history page: messages with id ≤ `up_to` (`None`: from the newest).
    Page {
        /// Highest id to include.
        up_to: Option<MsgId>,
        /// Oldest creation time to include.
        since: Timestamp,
        /// Maximum number of messages.
        limit: usize,
    },
    /// The messages with these ids.
    Ids {
        /// Wanted ids.
        ids: Vec<MsgId>,
        /// Oldest creation time to include.
        since: Timestamp,
        /// Maximum number of messages.
        limit: usize,
    },
}

/// Messages of single chats (per relation) and groups.
///
/// Invariant: the ids of a conversation (a relation, or a group) start at 1, strictly increase
/// and are never reused, also across restarts and with concurrent callers: `append_*` allocates
/// the next id and stores the message as one step. (A failed append may leave a gap; it never
/// hands out an id twice.)
#[async_trait::async_trait]
pub trait MessageStore: Send + Sync {
    /// Stores a single-chat message between `message.from` and `to` under the next id of
    /// `relation`, and returns that id.
    async fn append_single(
        &self,
        relation: RelationId,
        to: UserId,
        message: &NewMessage,
    ) -> StoreResult<MsgId>;

    /// Stores a group message under the next id of `group`, records `message.created` as the
    /// group's last chat time, and returns the id.
    async fn append_group(&self, group: GroupId, message: &NewMessage) -> StoreResult<MsgId>;

    /// Messages of a single conversation.
    async fn single_messages(
        &self,
        relation: RelationId,
        query: &MessageQuery,
    ) -> StoreResult<Vec<StoredMessage>>;

    /// Messages of a group.
    async fn group_messages(
        &self,
        group: GroupId,
        query: &MessageQuery,
    ) -> StoreResult<Vec<StoredMessage>>;
}

/// Recording a sent message with its bookkeeping: the hot path of a chat server.
///
/// The default methods are the narrow calls in order (append, then counters and sessions), so
/// any store gets them with an empty `#[async_trait] impl RecordMessage for MyStore {}`. A backend that can do
/// the whole step at once (one transaction, one round trip) overrides them; the effects must be
/// the same.
#[async_trait::async_trait]
pub trait RecordMessage: MessageStore + UnreadStore + SessionStore {
    /// A single message from `message.from` to `to`: stored under the relation's next id, one
    /// more unread message for `to`, both users' sessions created or refreshed (`now`).
    async fn record_single(
        &self,
        relation: RelationId,
        to: UserId,
        message: &NewMessage,
        now: Timestamp,
    ) -> StoreResult<MsgId> {
        let from = message.from;
        let id = self.append_single(relation, to, message).await?;
        futures_util::try_join!(
            self.add_unread(to, from),
            self.touch_session(from, Peer::User(to), now),
            self.touch_session(to, Peer::User(from), now),
        )?;
        Ok(id)
    }

    /// A group message from `message.from`: stored under the group's next id, the group's
    /// message count grows, the sender catches up (after the count grew) and their session is
    /// refreshed (`now`).
    async fn record_group(
        &self,
        group: GroupId,
        message: &NewMessage,
        now: Timestamp,
    ) -> StoreResult<MsgId> {
        let from = message.from;
        let id = self.append_group(group, message).await?;
        self.add_group_message(group).await?;
        futures_util::try_join!(
            self.catch_up(from, group),
            self.touch_session(from, Peer::Group(group), now),
        )?;
        Ok(id)
    }
}
