//! User pairs (relations) and recent sessions.

use crate::domain::{GroupId, RelationId, SessionKind, Timestamp, UserId};
use crate::store::StoreResult;

/// The other side of a conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Peer {
    /// A one-to-one conversation with this user.
    User(UserId),
    /// A group conversation.
    Group(GroupId),
}

impl Peer {
    /// A peer from a session kind and a raw id (as in `session_id` fields).
    pub const fn new(kind: SessionKind, id: u32) -> Peer {
        match kind {
            SessionKind::Single => Peer::User(UserId(id)),
            SessionKind::Group => Peer::Group(GroupId(id)),
        }
    }

    /// Single or group.
    pub const fn kind(self) -> SessionKind {
        match self {
            Peer::User(_) => SessionKind::Single,
            Peer::Group(_) => SessionKind::Group,
        }
    }

    /// The raw id (IMRecentSession.peerId, `session_id` on the wire).
    pub const fn raw(self) -> u32 {
        match self {
            Peer::User(user) => user.0,
            Peer::Group(group) => group.0,
        }
    }
}

/// One visible recent session of a user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecentSession {
    /// The other side.
    pub peer: Peer,
    /// Last activity.
    pub updated: Timestamp,
}

/// Relations (one id per unordered user pair) and recent sessions (per owner and peer).
///
/// Invariants: a pair has at most one active relation and an owner at most one session per
/// peer, also when called concurrently (quirks.md Q-61); a relation id, once given to a pair,
/// stays that pair's.
#[async_trait::async_trait]
pub trait SessionStore: Send + Sync {
    /// The relation of users `a` and `b` (order irrelevant). With `create`, a missing relation
    /// is created (or a removed one re-activated); otherwise `None` when there is none.
    async fn relation(&self, a: UserId, b: UserId, create: bool)
        -> StoreResult<Option<RelationId>>;

    /// Creates the session of `owner` with `peer`, or re-activates it, with `updated = now`.
    async fn touch_session(&self, owner: UserId, peer: Peer, now: Timestamp) -> StoreResult<()>;

    /// Visible sessions of `owner` with `updated > since`, newest first (ties: newest created
    /// first), at most `limit`.
    async fn recent_sessions(
        &self,
        owner: UserId,
        since: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<RecentSession>>;

    /// Hides the session of `owner` with `peer` (`updated = now`). `false` when there was no
    /// visible session.
    async fn remove_session(&self, owner: UserId, peer: Peer, now: Timestamp) -> StoreResult<bool>;

    /// Hides the sessions of `users` with `group` (members removed from it).
    async fn remove_group_sessions(
        &self,
        group: GroupId,
        users: &[UserId],
        now: Timestamp,
    ) -> StoreResult<()>;

    /// The group-session sync: for every member, an existing session with `group` (visible or
    /// not) gets `updated = last_chated`; a member without one gets a new visible session
    /// (`updated = now`).
    async fn refresh_group_sessions(
        &self,
        group: GroupId,
        members: &[UserId],
        last_chated: Timestamp,
        now: Timestamp,
    ) -> StoreResult<()>;
}
