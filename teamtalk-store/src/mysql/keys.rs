//! Every Redis key of the original db_proxy_server (docs/storage.md § Redis keys), in one place.
//!
//! An optional prefix (empty for a real deployment) lets tests and shared Redis servers keep
//! several key spaces apart.

use teamtalk_core::domain::{GroupId, RelationId, UserId};

/// The field of the group / user-group counter hashes.
pub(super) const COUNT: &str = "count";

/// Builds the original key names.
#[derive(Clone, Debug, Default)]
pub(super) struct Keys {
    prefix: String,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    /// The prefix every key starts with (for cleaning up a test's keys).
    pub(super) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `unread_{u}`: hash peer → unread count (instance `unread`).
    pub(super) fn unread(&self, user: UserId) -> String {
        format!("{}unread_{}", self.prefix, user.0)
    }

    /// `msg_id_{r}`: last message id of a relation (instance `unread`).
    pub(super) fn msg_id(&self, relation: RelationId) -> String {
        format!("{}msg_id_{}", self.prefix, relation.0)
    }

    /// `group_msg_id_{g}`: last message id of a group (instance `unread`).
    pub(super) fn group_msg_id(&self, group: GroupId) -> String {
        format!("{}group_msg_id_{}", self.prefix, group.0)
    }

    /// `{g}_im_group_msg`: hash `count` → messages in the group (instance `unread`).
    pub(super) fn group_count(&self, group: GroupId) -> String {
        format!("{}{}_im_group_msg", self.prefix, group.0)
    }

    /// `{u}_{g}_im_user_group`: hash `count` → the group count the user caught up with.
    pub(super) fn user_group_count(&self, user: UserId, group: GroupId) -> String {
        format!("{}{}_{}_im_user_group", self.prefix, user.0, group.0)
    }

    /// `group_set_{g}`: hash `{u}_1` → "1" shielded / "0" (instance `group_set`).
    pub(super) fn group_set(&self, group: GroupId) -> String {
        format!("{}group_set_{}", self.prefix, group.0)
    }

    /// The field of `group_set_{g}` for a user.
    pub(super) fn group_set_field(user: UserId) -> String {
        format!("{}_1", user.0)
    }

    /// `device_{u}`: "ios:tok", "android:tok" or "tok" (instance `token`).
    pub(super) fn device_of_user(&self, user: UserId) -> String {
        format!("{}device_{}", self.prefix, user.0)
    }

    /// `device_{token}`: the owning user id (instance `token`).
    pub(super) fn device_owner(&self, token: &str) -> String {
        format!("{}device_{}", self.prefix, token)
    }

    /// `group_member_{g}`: hash user → join time (instance `group_member`).
    pub(super) fn group_member(&self, group: GroupId) -> String {
        format!("{}group_member_{}", self.prefix, group.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_key_names() {
        let k = Keys::new("");
        assert_eq!(k.unread(UserId(7)), "unread_7");
        assert_eq!(k.msg_id(RelationId(3)), "msg_id_3");
        assert_eq!(k.group_msg_id(GroupId(9)), "group_msg_id_9");
        assert_eq!(k.group_count(GroupId(9)), "9_im_group_msg");
        assert_eq!(
            k.user_group_count(UserId(7), GroupId(9)),
            "7_9_im_user_group"
        );
        assert_eq!(k.group_set(GroupId(9)), "group_set_9");
        assert_eq!(Keys::group_set_field(UserId(7)), "7_1");
        assert_eq!(k.device_of_user(UserId(7)), "device_7");
        assert_eq!(k.device_owner("abc"), "device_abc");
        assert_eq!(k.group_member(GroupId(9)), "group_member_9");
        assert_eq!(Keys::new("t1:").unread(UserId(7)), "t1:unread_7");
    }
}
