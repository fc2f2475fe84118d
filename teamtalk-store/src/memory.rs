//! The in-memory backend: every trait of [`teamtalk_core::store`] over one mutex-guarded
//! state. Nothing survives the process; meant for tests and demos.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

use teamtalk_core::domain::{
    ClientType, DepartmentId, GroupId, MsgId, RelationId, Timestamp, UserId,
};
use teamtalk_core::store::{
    login_name_key, Credentials, Department, DeviceStore, DeviceToken, FileStore, Group,
    GroupStore, Member, MessageQuery, MessageStore, NewDepartment, NewGroup, NewMessage, NewUser,
    OfflineFile, Peer, ProfileChange, RecentSession, RecordMessage, SessionStore, StoreError,
    StoreResult, StoredMessage, UnreadStore, User, UserStore, STATUS_ACTIVE, STATUS_RESIGNED,
};

/// The in-memory store. Cheap to create; share it behind an `Arc` for concurrent use.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    users: BTreeMap<UserId, (User, Credentials)>,
    departments: BTreeMap<DepartmentId, Department>,
    relations: HashMap<(UserId, UserId), RelationId>,
    sessions: HashMap<(UserId, Peer), SessionRow>,
    single: HashMap<RelationId, Conversation>,
    group_msgs: HashMap<GroupId, Conversation>,
    unread: HashMap<UserId, BTreeMap<UserId, u32>>,
    group_counts: HashMap<GroupId, u32>,
    caught_up: HashMap<(UserId, GroupId), u32>,
    groups: BTreeMap<GroupId, Group>,
    members: HashMap<GroupId, BTreeMap<UserId, MemberRow>>,
    tokens: HashMap<UserId, (Option<ClientType>, String)>,
    token_owners: HashMap<String, UserId>,
    shields: HashMap<(GroupId, UserId), bool>,
    files: Vec<OfflineFile>,
    /// Row-id sequence shared by every table: insertion order for tie-breaks.
    next_row: u64,
    next_user: u32,
    next_department: u32,
    next_relation: u32,
    next_group: u32,
}

#[derive(Debug, Clone, Copy)]
struct SessionRow {
    row: u64,
    visible: bool,
    updated: Timestamp,
}

#[derive(Debug, Default)]
struct Conversation {
    last_id: u32,
    /// Messages by (creation time, row id): iterating backwards yields newest first.
    rows: BTreeMap<(Timestamp, u64), StoredMessage>,
    /// Where each message id sits in `rows`.
    by_id: HashMap<MsgId, (Timestamp, u64)>,
}

#[derive(Debug, Clone, Copy)]
struct MemberRow {
    row: u64,
    joined: Timestamp,
    updated: Timestamp,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies `change` to `user` and moves its `updated` to `now`; `false` when there is no
    /// such user.
    fn change_user(
        &self,
        user: UserId,
        now: Timestamp,
        change: impl FnOnce(&mut User, &mut Credentials),
    ) -> bool {
        match self.state().users.get_mut(&user) {
            Some((u, c)) => {
                change(u, c);
                u.updated = now;
                true
            }
            None => false,
        }
    }
}

impl State {
    fn row(&mut self) -> u64 {
        self.next_row += 1;
        self.next_row
    }

    fn members_of(&self, group: GroupId) -> Option<&BTreeMap<UserId, MemberRow>> {
        // Like the original's Redis hash: a group without members does not exist.
        self.members.get(&group).filter(|m| !m.is_empty())
    }
}

impl Conversation {
    fn append(&mut self, row: u64, message: &NewMessage) -> MsgId {
        self.last_id += 1;
        let id = MsgId(self.last_id);
        let key = (message.created, row);
        self.by_id.insert(id, key);
        self.rows.insert(
            key,
            StoredMessage {
                id,
                from: message.from,
                created: message.created,
                msg_type: message.msg_type,
                content: message.content.clone(),
            },
        );
        id
    }

    /// Newest first; cost proportional to the messages returned (and, for a page below the
    /// newest, to those skipped), not to the conversation's length.
    fn query(&self, query: &MessageQuery) -> Vec<StoredMessage> {
        match query {
            MessageQuery::Page {
                up_to,
                since,
                limit,
            } => self
                .rows
                .range((*since, 0)..)
                .rev()
                .map(|(_, m)| m)
                .filter(|m| up_to.is_none_or(|max| m.id <= max))
                .take(*limit)
                .cloned()
                .collect(),
            MessageQuery::Ids { ids, since, limit } => {
                let mut keys: Vec<(Timestamp, u64)> = ids
                    .iter()
                    .filter_map(|id| self.by_id.get(id).copied())
                    .filter(|(created, _)| created >= since)
                    .collect();
                keys.sort_unstable_by(|a, b| b.cmp(a));
                keys.dedup();
                keys.iter()
                    .take(*limit)
                    .filter_map(|k| self.rows.get(k).cloned())
                    .collect()
            }
        }
    }
}

#[async_trait::async_trait]

impl UserStore for MemoryStore {
    async fn login_candidate(&self, name: &str) -> StoreResult<Option<(User, Credentials)>> {
        let key = login_name_key(name);
        let state = self.state();
        Ok(state
            .users
            .values()
            .rev()
            .find(|(u, _)| login_name_key(&u.name) == key && u.status == STATUS_ACTIVE)
            .cloned())
    }

    async fn user_named(&self, name: &str) -> StoreResult<Option<User>> {
        let key = login_name_key(name);
        let state = self.state();
        Ok(state
            .users
            .values()
            .rev()
            .find(|(u, _)| login_name_key(&u.name) == key)
            .map(|(u, _)| u.clone()))
    }

    async fn users(&self, ids: &[UserId]) -> StoreResult<Vec<User>> {
        let state = self.state();
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        Ok(ids
            .iter()
            .filter_map(|id| state.users.get(id))
            .map(|(u, _)| u.clone())
            .collect())
    }

    async fn user_exists(&self, user: UserId) -> StoreResult<bool> {
        Ok(self.state().users.contains_key(&user))
    }

    async fn users_changed_since(&self, since: Timestamp) -> StoreResult<Vec<User>> {
        let state = self.state();
        Ok(state
            .users
            .values()
            .map(|(u, _)| u)
            .filter(|u| {
                if since.0 == 0 {
                    u.status != STATUS_RESIGNED
                } else {
                    u.updated >= since
                }
            })
            .cloned()
            .collect())
    }

    async fn departments_changed_since(&self, since: Timestamp) -> StoreResult<Vec<Department>> {
        let state = self.state();
        Ok(state
            .departments
            .values()
            .filter(|d| d.updated > since && d.status <= 1)
            .cloned()
            .collect())
    }

    async fn set_sign_info(
        &self,
        user: UserId,
        sign_info: &str,
        now: Timestamp,
    ) -> StoreResult<bool> {
        Ok(self.change_user(user, now, |u, _| u.sign_info = sign_info.to_owned()))
    }

    async fn set_push_shield(
        &self,
        user: UserId,
        shield: bool,
        now: Timestamp,
    ) -> StoreResult<bool> {
        Ok(self.change_user(user, now, |u, _| u.push_shield = shield))
    }

    async fn push_shield(&self, user: UserId) -> StoreResult<Option<bool>> {
        Ok(self.state().users.get(&user).map(|(u, _)| u.push_shield))
    }

    async fn set_credentials(
        &self,
        user: UserId,
        credentials: &Credentials,
        now: Timestamp,
    ) -> StoreResult<bool> {
        Ok(self.change_user(user, now, |_, c| *c = credentials.clone()))
    }

    async fn set_status(&self, user: UserId, status: u32, now: Timestamp) -> StoreResult<bool> {
        Ok(self.change_user(user, now, |u, _| u.status = status))
    }

    async fn update_profile(
        &self,
        user: UserId,
        change: &ProfileChange,
        now: Timestamp,
    ) -> StoreResult<bool> {
        Ok(self.change_user(user, now, |u, _| {
            if let Some(nick) = &change.nick {
                u.nick.clone_from(nick);
            }
            if let Some(gender) = change.gender {
                u.gender = gender;
            }
            if let Some(avatar) = &change.avatar {
                u.avatar.clone_from(avatar);
            }
            if let Some(department) = change.department {
                u.department = department;
            }
            if let Some(email) = &change.email {
                u.email.clone_from(email);
            }
            if let Some(phone) = &change.phone {
                u.phone.clone_from(phone);
            }
        }))
    }

    async fn add_user(&self, user: &NewUser, now: Timestamp) -> StoreResult<UserId> {
        let key = login_name_key(&user.profile.name);
        let mut state = self.state();
        // Checked and inserted under the same lock: atomic.
        if let Some((existing, _)) = state
            .users
            .values()
            .rev()
            .find(|(u, _)| login_name_key(&u.name) == key)
        {
            return Err(StoreError::NameTaken {
                name: user.profile.name.clone(),
                existing: existing.id,
            });
        }
        state.next_user += 1;
        let id = UserId(state.next_user);
        let profile = User {
            id,
            updated: now,
            ..user.profile.clone()
        };
        state.users.insert(id, (profile, user.credentials.clone()));
        Ok(id)
    }

    async fn add_department(
        &self,
        department: &NewDepartment,
        now: Timestamp,
    ) -> StoreResult<DepartmentId> {
        let mut state = self.state();
        state.next_department += 1;
        let id = DepartmentId(state.next_department);
        state.departments.insert(
            id,
            Department {
                id,
                name: department.name.clone(),
                priority: department.priority,
                parent: department.parent,
                status: 0,
                updated: now,
            },
        );
        Ok(id)
    }
}

#[async_trait::async_trait]

impl SessionStore for MemoryStore {
    async fn relation(
        &self,
        a: UserId,
        b: UserId,
        create: bool,
    ) -> StoreResult<Option<RelationId>> {
        if a.0 == 0 || b.0 == 0 {
            return Ok(None);
        }
        let key = (a.min(b), a.max(b));
        let mut state = self.state();
        if let Some(id) = state.relations.get(&key) {
            return Ok(Some(*id));
        }
        if !create {
            return Ok(None);
        }
        state.next_relation += 1;
        let id = RelationId(state.next_relation);
        state.relations.insert(key, id);
        Ok(Some(id))
    }

    async fn touch_session(&self, owner: UserId, peer: Peer, now: Timestamp) -> StoreResult<()> {
        let mut state = self.state();
        let row = state.row();
        let session = state.sessions.entry((owner, peer)).or_insert(SessionRow {
            row,
            visible: true,
            updated: now,
        });
        session.visible = true;
        session.updated = now;
        Ok(())
    }

    async fn recent_sessions(
        &self,
        owner: UserId,
        since: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<RecentSession>> {
        let state = self.state();
        let mut rows: Vec<(Peer, SessionRow)> = state
            .sessions
            .iter()
            .filter(|((o, _), s)| *o == owner && s.visible && s.updated > since)
            .map(|((_, peer), s)| (*peer, *s))
            .collect();
        rows.sort_by(|(_, a), (_, b)| b.updated.cmp(&a.updated).then(b.row.cmp(&a.row)));
        Ok(rows
            .into_iter()
            .take(limit)
            .map(|(peer, s)| RecentSession {
                peer,
                updated: s.updated,
            })
            .collect())
    }

    async fn remove_session(&self, owner: UserId, peer: Peer, now: Timestamp) -> StoreResult<bool> {
        let mut state = self.state();
        Ok(match state.sessions.get_mut(&(owner, peer)) {
            Some(session) if session.visible => {
                session.visible = false;
                session.updated = now;
                true
            }
            _ => false,
        })
    }

    async fn remove_group_sessions(
        &self,
        group: GroupId,
        users: &[UserId],
        now: Timestamp,
    ) -> StoreResult<()> {
        let mut state = self.state();
        for user in users {
            if let Some(session) = state.sessions.get_mut(&(*user, Peer::Group(group))) {
                session.visible = false;
                session.updated = now;
            }
        }
        Ok(())
    }

    async fn refresh_group_sessions(
        &self,
        group: GroupId,
        members: &[UserId],
        last_chated: Timestamp,
        now: Timestamp,
    ) -> StoreResult<()> {
        let mut state = self.state();
        for member in members {
            let row = state.row();
            match state.sessions.get_mut(&(*member, Peer::Group(group))) {
                Some(session) => session.updated = last_chated,
                None => {
                    state.sessions.insert(
                        (*member, Peer::Group(group)),
                        SessionRow {
                            row,
                            visible: true,
                            updated: now,
                        },
                    );
                }
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]

impl MessageStore for MemoryStore {
    async fn append_single(
        &self,
        relation: RelationId,
        _to: UserId,
        message: &NewMessage,
    ) -> StoreResult<MsgId> {
        let mut state = self.state();
        let row = state.row();
        Ok(state
            .single
            .entry(relation)
            .or_default()
            .append(row, message))
    }

    async fn append_group(&self, group: GroupId, message: &NewMessage) -> StoreResult<MsgId> {
        let mut state = self.state();
        let row = state.row();
        let id = state
            .group_msgs
            .entry(group)
            .or_default()
            .append(row, message);
        if let Some(g) = state.groups.get_mut(&group) {
            g.last_chated = message.created;
        }
        Ok(id)
    }

    async fn single_messages(
        &self,
        relation: RelationId,
        query: &MessageQuery,
    ) -> StoreResult<Vec<StoredMessage>> {
        Ok(self
            .state()
            .single
            .get(&relation)
            .map(|c| c.query(query))
            .unwrap_or_default())
    }

    async fn group_messages(
        &self,
        group: GroupId,
        query: &MessageQuery,
    ) -> StoreResult<Vec<StoredMessage>> {
        Ok(self
            .state()
            .group_msgs
            .get(&group)
            .map(|c| c.query(query))
            .unwrap_or_default())
    }
}

/// The default (one call per effect) is already a single lock each.
#[async_trait::async_trait]
impl RecordMessage for MemoryStore {}

#[async_trait::async_trait]

impl UnreadStore for MemoryStore {
    async fn add_unread(&self, owner: UserId, peer: UserId) -> StoreResult<()> {
        let mut state = self.state();
        let count = state
            .unread
            .entry(owner)
            .or_default()
            .entry(peer)
            .or_default();
        *count = count.saturating_add(1);
        Ok(())
    }

    async fn clear_unread(&self, owner: UserId, peer: UserId) -> StoreResult<()> {
        if let Some(counts) = self.state().unread.get_mut(&owner) {
            counts.remove(&peer);
        }
        Ok(())
    }

    async fn unread_counts(&self, owner: UserId) -> StoreResult<Vec<(UserId, u32)>> {
        let state = self.state();
        Ok(state
            .unread
            .get(&owner)
            .map(|counts| {
                counts
                    .iter()
                    .filter(|(_, n)| **n > 0)
                    .map(|(p, n)| (*p, *n))
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn add_group_message(&self, group: GroupId) -> StoreResult<()> {
        let mut state = self.state();
        let count = state.group_counts.entry(group).or_default();
        *count = count.saturating_add(1);
        Ok(())
    }

    async fn catch_up(&self, user: UserId, group: GroupId) -> StoreResult<()> {
        let mut state = self.state();
        // Nothing to copy while the group has no messages.
        if let Some(count) = state.group_counts.get(&group).copied() {
            state.caught_up.insert((user, group), count);
        }
        Ok(())
    }

    async fn group_unread(&self, user: UserId, group: GroupId) -> StoreResult<Option<u32>> {
        let state = self.state();
        Ok(state.group_counts.get(&group).map(|total| {
            total.saturating_sub(state.caught_up.get(&(user, group)).copied().unwrap_or(0))
        }))
    }
}

#[async_trait::async_trait]

impl GroupStore for MemoryStore {
    async fn create_group(&self, group: &NewGroup, now: Timestamp) -> StoreResult<GroupId> {
        let mut state = self.state();
        state.next_group += 1;
        let id = GroupId(state.next_group);
        state.groups.insert(
            id,
            Group {
                id,
                name: group.name.clone(),
                avatar: group.avatar.clone(),
                creator: group.creator,
                group_type: group.group_type,
                version: 1,
                updated: now,
                last_chated: Timestamp(0),
            },
        );
        let mut members = BTreeMap::new();
        for user in &group.members {
            let row = state.row();
            members.insert(
                *user,
                MemberRow {
                    row,
                    joined: now,
                    updated: now,
                },
            );
        }
        state.members.insert(id, members);
        Ok(id)
    }

    async fn group(&self, group: GroupId) -> StoreResult<Option<Group>> {
        Ok(self.state().groups.get(&group).cloned())
    }

    async fn members(&self, group: GroupId) -> StoreResult<Option<Vec<Member>>> {
        let state = self.state();
        Ok(state.members_of(group).map(|members| {
            members
                .iter()
                .map(|(user, m)| Member {
                    user: *user,
                    joined: m.joined,
                })
                .collect()
        }))
    }

    async fn member(&self, group: GroupId, user: UserId) -> StoreResult<Option<Member>> {
        let state = self.state();
        Ok(state
            .members_of(group)
            .and_then(|members| members.get(&user))
            .map(|m| Member {
                user,
                joined: m.joined,
            }))
    }

    async fn add_members(
        &self,
        group: GroupId,
        users: &[UserId],
        now: Timestamp,
    ) -> StoreResult<Vec<UserId>> {
        let mut state = self.state();
        if !state.groups.contains_key(&group) {
            return Ok(Vec::new());
        }
        let mut added = Vec::new();
        for user in users {
            let row = state.row();
            let members = state.members.entry(group).or_default();
            if !members.contains_key(user) {
                members.insert(
                    *user,
                    MemberRow {
                        row,
                        joined: now,
                        updated: now,
                    },
                );
                added.push(*user);
            }
        }
        if !added.is_empty() {
            if let Some(g) = state.groups.get_mut(&group) {
                g.version += 1;
            }
        }
        Ok(added)
    }

    async fn remove_members(
        &self,
        group: GroupId,
        users: &[UserId],
        _now: Timestamp,
    ) -> StoreResult<Vec<UserId>> {
        let mut state = self.state();
        let removed: Vec<UserId> = match state.members.get_mut(&group) {
            Some(members) => users
                .iter()
                .filter(|u| members.remove(u).is_some())
                .copied()
                .collect(),
            None => Vec::new(),
        };
        if !removed.is_empty() {
            if let Some(g) = state.groups.get_mut(&group) {
                g.version += 1;
            }
        }
        Ok(removed)
    }

    async fn groups_of(&self, user: UserId) -> StoreResult<Vec<GroupId>> {
        let state = self.state();
        let mut rows: Vec<(GroupId, MemberRow)> = state
            .members
            .iter()
            .filter_map(|(group, members)| members.get(&user).map(|m| (*group, *m)))
            .collect();
        rows.sort_by(|(_, a), (_, b)| b.updated.cmp(&a.updated).then(b.row.cmp(&a.row)));
        Ok(rows.into_iter().map(|(group, _)| group).collect())
    }

    async fn groups_chatted_since(
        &self,
        since: Timestamp,
    ) -> StoreResult<Vec<(GroupId, Timestamp)>> {
        let state = self.state();
        Ok(state
            .groups
            .values()
            .filter(|g| g.last_chated >= since)
            .map(|g| (g.id, g.last_chated))
            .collect())
    }
}

#[async_trait::async_trait]

impl DeviceStore for MemoryStore {
    async fn set_device_token(
        &self,
        user: UserId,
        client_type: Option<ClientType>,
        token: &str,
    ) -> StoreResult<()> {
        let mut state = self.state();
        if let Some((_, old)) = state.tokens.get(&user).cloned() {
            if state.token_owners.get(&old) == Some(&user) {
                state.token_owners.remove(&old);
            }
        }
        if token.is_empty() {
            state.tokens.remove(&user);
            return Ok(());
        }
        if let Some(previous_owner) = state.token_owners.insert(token.to_owned(), user) {
            if previous_owner != user {
                state.tokens.remove(&previous_owner);
            }
        }
        state.tokens.insert(user, (client_type, token.to_owned()));
        Ok(())
    }

    async fn device_tokens(&self, users: &[UserId]) -> StoreResult<Vec<DeviceToken>> {
        let state = self.state();
        Ok(users
            .iter()
            .filter_map(|user| {
                let (client_type, token) = state.tokens.get(user)?;
                match client_type {
                    Some(t @ (ClientType::Ios | ClientType::Android)) => Some(DeviceToken {
                        user: *user,
                        client_type: *t,
                        token: token.clone(),
                    }),
                    _ => None,
                }
            })
            .collect())
    }

    async fn set_group_shield(
        &self,
        group: GroupId,
        user: UserId,
        shielded: bool,
    ) -> StoreResult<()> {
        self.state().shields.insert((group, user), shielded);
        Ok(())
    }

    async fn group_shields(&self, group: GroupId, users: &[UserId]) -> StoreResult<Vec<bool>> {
        let state = self.state();
        Ok(users
            .iter()
            .map(|u| state.shields.get(&(group, *u)).copied().unwrap_or(false))
            .collect())
    }
}

#[async_trait::async_trait]

impl FileStore for MemoryStore {
    async fn offline_files(&self, to: UserId) -> StoreResult<Vec<OfflineFile>> {
        let state = self.state();
        let mut files: Vec<OfflineFile> =
            state.files.iter().filter(|f| f.to == to).cloned().collect();
        files.sort_by_key(|f| f.created);
        Ok(files)
    }

    async fn add_offline_file(&self, file: &OfflineFile) -> StoreResult<()> {
        self.state().files.push(file.clone());
        Ok(())
    }

    async fn remove_offline_file(
        &self,
        from: UserId,
        to: UserId,
        task_id: &str,
    ) -> StoreResult<bool> {
        let mut state = self.state();
        let before = state.files.len();
        state
            .files
            .retain(|f| !(f.from == from && f.to == to && f.task_id == task_id));
        Ok(state.files.len() != before)
    }
}
