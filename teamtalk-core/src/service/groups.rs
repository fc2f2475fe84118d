//! Groups: lists, info, creation, membership, push shields, and the group-session sync.

use teamtalk_proto::base_define::{GroupInfo, GroupVersionInfo, ShieldStatus};
use teamtalk_proto::group::{
    ImGroupChangeMemberReq, ImGroupChangeMemberRsp, ImGroupCreateReq, ImGroupCreateRsp,
    ImGroupInfoListReq, ImGroupInfoListRsp, ImGroupShieldReq, ImGroupShieldRsp,
    ImNormalGroupListReq, ImNormalGroupListRsp,
};
use teamtalk_proto::server::{ImGroupGetShieldReq, ImGroupGetShieldRsp};

use super::DbProxy;
use crate::attach::{AttachType, DbAttach};
use crate::domain::{Clock, GroupChange, GroupId, GroupType, Timestamp, UserId};
use crate::store::{
    DeviceStore, Group, GroupStore, NewGroup, SessionStore, StoreResult, UnreadStore,
};

impl<S: GroupStore, C: Clock> DbProxy<S, C> {
    /// CID_GROUP_NORMAL_LIST_REQUEST: the fixed (normal) groups the user is a member of, with
    /// their versions, most recently created first. Temporary groups are not listed (clients
    /// learn them from sessions).
    pub async fn normal_groups(
        &self,
        req: ImNormalGroupListReq,
    ) -> StoreResult<ImNormalGroupListRsp> {
        let mut groups = Vec::new();
        for id in self.store.groups_of(UserId(req.user_id)).await? {
            if let Some(group) = self.store.group(id).await? {
                if group.group_type == GroupType::Normal {
                    groups.push(group);
                }
            }
        }
        sort_newest_first(&mut groups);
        Ok(ImNormalGroupListRsp {
            user_id: req.user_id,
            group_version_list: groups
                .iter()
                .map(|g| GroupVersionInfo {
                    group_id: g.id.0,
                    version: g.version,
                })
                .collect(),
            attach_data: req.attach_data,
        })
    }
}

impl<S: GroupStore + DeviceStore, C: Clock> DbProxy<S, C> {
    /// CID_GROUP_INFO_REQUEST: details of the requested valid groups whose version is newer
    /// than the one the requester holds (at most 100 groups), most recently created first.
    /// Only for members (the original answered anyone, Q-07); msg_server's internal fan-out
    /// request (attach type 3) and the administrator (user 0) may read any group.
    /// `shield_status` is the requester's push shield for the group (the original sent 0, Q-58).
    pub async fn group_info(&self, req: ImGroupInfoListReq) -> StoreResult<ImGroupInfoListRsp> {
        let user = UserId(req.user_id);
        let internal = user.0 == 0
            || req
                .attach_data
                .as_deref()
                .and_then(|a| DbAttach::decode(a).ok())
                .is_some_and(|a| a.attach_type == AttachType::HANDLE_AND_PDU);
        let wanted = super::bounded_unique(
            req.group_version_list
                .iter()
                .map(|v| (GroupId(v.group_id), v.version)),
            self.config.limits.group_ids,
        );
        let mut found = Vec::new();
        for (id, known_version) in wanted {
            let Some(members) = self.store.members(id).await? else {
                continue;
            };
            if !internal && !members.iter().any(|m| m.user == user) {
                continue;
            }
            let Some(group) = self.store.group(id).await? else {
                continue;
            };
            if known_version >= group.version {
                continue;
            }
            let shielded = !internal
                && self
                    .store
                    .group_shields(id, &[user])
                    .await?
                    .first()
                    .copied()
                    .unwrap_or(false);
            let mut ids: Vec<u32> = members.iter().map(|m| m.user.0).collect();
            super::sort_as_decimal_strings(&mut ids);
            found.push((group, ids, shielded));
        }
        found.sort_by(|a, b| b.0.updated.cmp(&a.0.updated).then(b.0.id.cmp(&a.0.id)));
        Ok(ImGroupInfoListRsp {
            user_id: req.user_id,
            group_info_list: found
                .into_iter()
                .map(|(g, members, shielded)| GroupInfo {
                    group_id: g.id.0,
                    version: g.version,
                    group_name: g.name,
                    group_avatar: g.avatar,
                    group_creator_id: g.creator.0,
                    group_type: g.group_type.to_wire(),
                    shield_status: u32::from(shielded),
                    group_member_list: members,
                })
                .collect(),
            attach_data: req.attach_data,
        })
    }
}

impl<S: GroupStore, C: Clock> DbProxy<S, C> {
    /// CID_GROUP_CREATE_REQUEST: creates a group with the de-duplicated member list (the
    /// creator is not added implicitly). Result 1 for an empty name, no members, or more than
    /// [`super::Limits::group_members`]; no answer for an invalid group type, as the original.
    pub async fn create_group(
        &self,
        req: ImGroupCreateReq,
    ) -> StoreResult<Option<ImGroupCreateRsp>> {
        let Some(group_type) = GroupType::from_wire(req.group_type) else {
            return Ok(None);
        };
        let members =
            super::bounded_unique(req.member_id_list.iter().map(|&u| UserId(u)), usize::MAX);
        let valid = !req.group_name.is_empty()
            && !members.is_empty()
            && members.len() <= self.config.limits.group_members;
        let mut group_id = None;
        if valid {
            let new = NewGroup {
                name: req.group_name.clone(),
                avatar: req.group_avatar.clone(),
                creator: UserId(req.user_id),
                group_type,
                members: members.clone(),
            };
            group_id = Some(self.store.create_group(&new, self.clock.now()).await?.0);
        }
        Ok(Some(ImGroupCreateRsp {
            user_id: req.user_id,
            result_code: u32::from(group_id.is_none()),
            group_id,
            group_name: req.group_name,
            user_id_list: members.iter().map(|u| u.0).collect(),
            attach_data: req.attach_data,
        }))
    }
}

impl<S: GroupStore + SessionStore + UnreadStore, C: Clock> DbProxy<S, C> {
    /// CID_GROUP_CHANGE_MEMBER_REQUEST: adds or removes members; no answer for an invalid
    /// change type or group, as the original.
    ///
    /// Permission (quirks.md Q-08): the administrator (user 0) and the creator may do
    /// anything; in a temporary group members may add, and anyone may remove themselves.
    /// Removed members' group sessions are hidden. On success `cur_user_id_list` holds the
    /// members after the change and `chg_user_id_list` those actually added, or the
    /// (de-duplicated) ids asked to be removed.
    pub async fn change_members(
        &self,
        req: ImGroupChangeMemberReq,
    ) -> StoreResult<Option<ImGroupChangeMemberRsp>> {
        let Some(change) = GroupChange::from_wire(req.change_type) else {
            return Ok(None);
        };
        let group_id = GroupId(req.group_id);
        let Some(members) = self.store.members(group_id).await? else {
            return Ok(None);
        };
        let requester = UserId(req.user_id);
        let users =
            super::bounded_unique(req.member_id_list.iter().map(|&u| UserId(u)), usize::MAX);
        let is_member = members.iter().any(|m| m.user == requester);
        let group = self.store.group(group_id).await?;
        let allowed = match (&group, change) {
            _ if requester.0 == 0 => true,
            (None, _) => false,
            (Some(g), _) if g.creator == requester => true,
            (Some(g), GroupChange::Add) => g.group_type == GroupType::Temporary && is_member,
            (Some(g), GroupChange::Remove) => {
                g.group_type == GroupType::Temporary && users.as_slice() == [requester]
            }
        };
        let too_many = change == GroupChange::Add
            && members.len() + users.len() > self.config.limits.group_members;
        let mut answer = ImGroupChangeMemberRsp {
            user_id: req.user_id,
            change_type: req.change_type,
            result_code: 1,
            group_id: req.group_id,
            cur_user_id_list: Vec::new(),
            chg_user_id_list: Vec::new(),
            attach_data: req.attach_data,
        };
        if !allowed || users.is_empty() || too_many {
            return Ok(Some(answer));
        }
        let now = self.clock.now();
        let changed = match change {
            GroupChange::Add => self.store.add_members(group_id, &users, now).await?,
            GroupChange::Remove => {
                let removed = self.store.remove_members(group_id, &users, now).await?;
                self.store
                    .remove_group_sessions(group_id, &removed, now)
                    .await?;
                removed
            }
        };
        for &user in &changed {
            self.store.catch_up(user, group_id).await?;
        }
        let mut current: Vec<u32> = self
            .store
            .members(group_id)
            .await?
            .unwrap_or_default()
            .iter()
            .map(|m| m.user.0)
            .collect();
        super::sort_as_decimal_strings(&mut current);
        answer.result_code = 0;
        answer.cur_user_id_list = current;
        answer.chg_user_id_list = match change {
            GroupChange::Add => changed.iter().map(|u| u.0).collect(),
            GroupChange::Remove => users.iter().map(|u| u.0).collect(),
        };
        Ok(Some(answer))
    }
}

impl<S: GroupStore + DeviceStore, C: Clock> DbProxy<S, C> {
    /// CID_GROUP_SHIELD_GROUP_REQUEST: sets the requester's push shield for a group; result 1
    /// when not a member; no answer for an invalid group, as the original.
    pub async fn set_group_shield(
        &self,
        req: ImGroupShieldReq,
    ) -> StoreResult<Option<ImGroupShieldRsp>> {
        let group = GroupId(req.group_id);
        let Some(members) = self.store.members(group).await? else {
            return Ok(None);
        };
        let user = UserId(req.user_id);
        let member = members.iter().any(|m| m.user == user);
        if member {
            self.store
                .set_group_shield(group, user, req.shield_status != 0)
                .await?;
        }
        Ok(Some(ImGroupShieldRsp {
            user_id: req.user_id,
            group_id: req.group_id,
            result_code: u32::from(!member),
            attach_data: req.attach_data,
        }))
    }

    /// CID_OTHER_GET_SHIELD_REQ (msg_server, before pushing a group message): the shield flag
    /// of each requested user (at most [`super::Limits::push_targets`]); no answer for an
    /// invalid group.
    pub async fn group_shields(
        &self,
        req: ImGroupGetShieldReq,
    ) -> StoreResult<Option<ImGroupGetShieldRsp>> {
        let group = GroupId(req.group_id);
        if self.store.members(group).await?.is_none() {
            return Ok(None);
        }
        let users: Vec<UserId> = req
            .user_id
            .iter()
            .take(self.config.limits.push_targets)
            .map(|&u| UserId(u))
            .collect();
        let flags = self.store.group_shields(group, &users).await?;
        Ok(Some(ImGroupGetShieldRsp {
            group_id: req.group_id,
            shield_status_list: users
                .iter()
                .zip(flags)
                .map(|(user, shielded)| ShieldStatus {
                    user_id: user.0,
                    group_id: req.group_id,
                    shield_status: u32::from(shielded),
                })
                .collect(),
            attach_data: req.attach_data,
        }))
    }
}

impl<S: GroupStore + SessionStore, C: Clock> DbProxy<S, C> {
    /// The group-session sync (the original's SyncCenter thread): every group with a message
    /// at or after `since` gets its members' sessions refreshed to its last chat time (a
    /// member without a session gets a new visible one; hidden sessions stay hidden, Q-54).
    /// Returns the watermark for the next pass (the time this pass started). Servers call it
    /// every few seconds.
    pub async fn sync_group_sessions(&self, since: Timestamp) -> StoreResult<Timestamp> {
        let now = self.clock.now();
        for (group, last_chated) in self.store.groups_chatted_since(since).await? {
            if last_chated.0 == 0 {
                continue;
            }
            let Some(members) = self.store.members(group).await? else {
                continue;
            };
            let users: Vec<UserId> = members.iter().map(|m| m.user).collect();
            self.store
                .refresh_group_sessions(group, &users, last_chated, now)
                .await?;
        }
        Ok(now)
    }
}

fn sort_newest_first(groups: &mut [Group]) {
    groups.sort_by(|a, b| b.updated.cmp(&a.updated).then(b.id.cmp(&a.id)));
}
