//! Unread counters (spec/storage.md §5.2, "Unread arithmetic").

use std::future::Future;

use crate::domain::{GroupId, UserId};
use crate::store::StoreResult;

/// Unread counters.
///
/// Single chats count per (owner, peer). Groups count messages per group, and per member the
/// group count at the moment the member last caught up; a member's unread count is the
/// difference, never negative (quirks.md Q-50).
pub trait UnreadStore: Send + Sync {
    /// One more unread message from `peer` for `owner`.
    fn add_unread(
        &self,
        owner: UserId,
        peer: UserId,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// `owner` has read everything from `peer`.
    fn clear_unread(
        &self,
        owner: UserId,
        peer: UserId,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Every non-zero single-chat counter of `owner`: (peer, count), in ascending peer order.
    fn unread_counts(
        &self,
        owner: UserId,
    ) -> impl Future<Output = StoreResult<Vec<(UserId, u32)>>> + Send;

    /// One more message in `group`.
    fn add_group_message(&self, group: GroupId) -> impl Future<Output = StoreResult<()>> + Send;

    /// `user` has caught up with `group`: their counter becomes the group's.
    fn catch_up(
        &self,
        user: UserId,
        group: GroupId,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Unread messages of `user` in `group`: group count − user count, at least 0. `None` when
    /// the group has no message count yet.
    fn group_unread(
        &self,
        user: UserId,
        group: GroupId,
    ) -> impl Future<Output = StoreResult<Option<u32>>> + Send;
}
