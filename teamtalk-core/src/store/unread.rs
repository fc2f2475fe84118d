//! Unread counters (spec/storage.md §5.2, "Unread arithmetic").

use crate::domain::{GroupId, UserId};
use crate::store::StoreResult;

/// Unread counters.
///
/// Single chats count per (owner, peer). Groups count messages per group, and per member the
/// group count at the moment the member last caught up; a member's unread count is the
/// difference, never negative (quirks.md Q-50).
#[async_trait::async_trait]
pub trait UnreadStore: Send + Sync {
    /// One more unread message from `peer` for `owner`.
    async fn add_unread(&self, owner: UserId, peer: UserId) -> StoreResult<()>;

    /// `owner` has read everything from `peer`.
    async fn clear_unread(&self, owner: UserId, peer: UserId) -> StoreResult<()>;

    /// Every non-zero single-chat counter of `owner`: (peer, count), in ascending peer order.
    async fn unread_counts(&self, owner: UserId) -> StoreResult<Vec<(UserId, u32)>>;

    /// One more message in `group`.
    async fn add_group_message(&self, group: GroupId) -> StoreResult<()>;

    /// `user` has caught up with `group`: their counter becomes the group's.
    async fn catch_up(&self, user: UserId, group: GroupId) -> StoreResult<()>;

    /// Unread messages of `user` in `group`: group count − user count, at least 0. `None` when
    /// the group has no message count yet.
    async fn group_unread(&self, user: UserId, group: GroupId) -> StoreResult<Option<u32>>;
}
