//! Groups and membership.

use crate::domain::{GroupId, GroupType, Timestamp, UserId};
use crate::store::StoreResult;

/// One IMGroup row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// IMGroup.id.
    pub id: GroupId,
    /// Name.
    pub name: String,
    /// Avatar URL.
    pub avatar: String,
    /// Creator (0: created by an administrator).
    pub creator: UserId,
    /// Fixed or temporary.
    pub group_type: GroupType,
    /// +1 on every membership change; clients refetch the group when it grows.
    pub version: u32,
    /// Creation time (the original never changes it afterwards).
    pub updated: Timestamp,
    /// Time of the last message (0: none).
    pub last_chated: Timestamp,
}

/// A group member and when they joined (messages before that are not theirs to read).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Member {
    /// The member.
    pub user: UserId,
    /// Join time (refreshed when re-added).
    pub joined: Timestamp,
}

/// A group to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewGroup {
    /// Name (non-empty).
    pub name: String,
    /// Avatar URL.
    pub avatar: String,
    /// Creator (0: administrator).
    pub creator: UserId,
    /// Fixed or temporary.
    pub group_type: GroupType,
    /// Initial members, without duplicates (the creator is not added implicitly).
    pub members: Vec<UserId>,
}

/// Groups and their members.
///
/// Invariants: a group's version starts at 1 and grows by one with every call that changes its
/// membership; the member count (IMGroup.userCnt) equals the number of members (quirks.md
/// Q-59); a group with no member set is not a valid group (as the original's missing Redis hash).
#[async_trait::async_trait]
pub trait GroupStore: Send + Sync {
    /// Creates a group (version 1, members joined at `now`, message ids and counters starting
    /// afresh) and returns its id.
    async fn create_group(&self, group: &NewGroup, now: Timestamp) -> StoreResult<GroupId>;

    /// The group, `None` when unknown. Groups whose stored type is not 1 or 2 are `None`.
    async fn group(&self, group: GroupId) -> StoreResult<Option<Group>>;

    /// Current members in ascending user order, `None` when the group is not valid.
    async fn members(&self, group: GroupId) -> StoreResult<Option<Vec<Member>>>;

    /// `user`'s membership of `group`, `None` when not a member (or the group is not valid).
    async fn member(&self, group: GroupId, user: UserId) -> StoreResult<Option<Member>>;

    /// Adds those of `users` who are not members yet (joined at `now`); returns them, in the
    /// order given. The version grows by one when anybody was added.
    async fn add_members(
        &self,
        group: GroupId,
        users: &[UserId],
        now: Timestamp,
    ) -> StoreResult<Vec<UserId>>;

    /// Removes those of `users` who are members; returns them, in the order given. The version
    /// grows by one when anybody was removed.
    async fn remove_members(
        &self,
        group: GroupId,
        users: &[UserId],
        now: Timestamp,
    ) -> StoreResult<Vec<UserId>>;

    /// Groups `user` is a member of, most recently joined first.
    async fn groups_of(&self, user: UserId) -> StoreResult<Vec<GroupId>>;

    /// Groups with a message at or after `since`: (group, last chat time).
    async fn groups_chatted_since(
        &self,
        since: Timestamp,
    ) -> StoreResult<Vec<(GroupId, Timestamp)>>;
}
