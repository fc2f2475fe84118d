//! The storage traits for shared, borrowed and boxed stores: `&T`, `Box<T>` and `Arc<T>`
//! (with `T: ?Sized`, so `Arc<dyn Store>` too) implement every trait `T` implements by
//! handing the call to `T`.
//!
//! The methods are written out as `#[async_trait]` expands them (one boxed future, returned
//! as it is), so a call through a wrapper costs no second allocation.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::domain::{ClientType, DepartmentId, GroupId, MsgId, RelationId, Timestamp, UserId};
use crate::store::{
    Credentials, Department, DeviceStore, DeviceToken, FileStore, Group, GroupStore, Member,
    MessageQuery, MessageStore, NewDepartment, NewGroup, NewMessage, NewUser, OfflineFile, Peer,
    ProfileChange, RecentSession, RecordMessage, SessionStore, StoreResult, StoredMessage,
    UnreadStore, User, UserStore,
};

/// The future an `#[async_trait]` method returns.
type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Implements `$trait` for `&T`, `Box<T>` and `Arc<T>` by forwarding each listed method.
/// Each method lists the lifetimes of its reference arguments in brackets, in order.
macro_rules! forward {
    ($trait:ident { $($methods:tt)* }) => {
        impl<T: $trait + ?Sized> $trait for &T {
            forward!(@methods $($methods)*);
        }
        impl<T: $trait + ?Sized> $trait for Box<T> {
            forward!(@methods $($methods)*);
        }
        impl<T: $trait + ?Sized> $trait for Arc<T> {
            forward!(@methods $($methods)*);
        }
    };
    (@methods $(fn $name:ident [$($lt:lifetime),*] ($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {$(
        fn $name<'life0, $($lt,)* 'async_trait>(
            &'life0 self,
            $($arg: $ty),*
        ) -> Boxed<'async_trait, $ret>
        where
            'life0: 'async_trait,
            $($lt: 'async_trait,)*
            Self: 'async_trait,
        {
            (**self).$name($($arg),*)
        }
    )*};
}

forward!(UserStore {
    fn login_candidate['a](name: &'a str) -> StoreResult<Option<(User, Credentials)>>;
    fn user_named['a](name: &'a str) -> StoreResult<Option<User>>;
    fn users['a](ids: &'a [UserId]) -> StoreResult<Vec<User>>;
    fn user_exists[](user: UserId) -> StoreResult<bool>;
    fn users_changed_since[](since: Timestamp) -> StoreResult<Vec<User>>;
    fn departments_changed_since[](since: Timestamp) -> StoreResult<Vec<Department>>;
    fn set_sign_info['a](user: UserId, sign_info: &'a str, now: Timestamp) -> StoreResult<bool>;
    fn set_push_shield[](user: UserId, shield: bool, now: Timestamp) -> StoreResult<bool>;
    fn push_shield[](user: UserId) -> StoreResult<Option<bool>>;
    fn set_credentials['a](user: UserId, credentials: &'a Credentials, now: Timestamp)
        -> StoreResult<bool>;
    fn set_status[](user: UserId, status: u32, now: Timestamp) -> StoreResult<bool>;
    fn update_profile['a](user: UserId, change: &'a ProfileChange, now: Timestamp)
        -> StoreResult<bool>;
    fn add_user['a](user: &'a NewUser, now: Timestamp) -> StoreResult<UserId>;
    fn add_department['a](department: &'a NewDepartment, now: Timestamp)
        -> StoreResult<DepartmentId>;
});

forward!(SessionStore {
    fn relation[](a: UserId, b: UserId, create: bool) -> StoreResult<Option<RelationId>>;
    fn touch_session[](owner: UserId, peer: Peer, now: Timestamp) -> StoreResult<()>;
    fn recent_sessions[](owner: UserId, since: Timestamp, limit: usize)
        -> StoreResult<Vec<RecentSession>>;
    fn remove_session[](owner: UserId, peer: Peer, now: Timestamp) -> StoreResult<bool>;
    fn remove_group_sessions['a](group: GroupId, users: &'a [UserId], now: Timestamp)
        -> StoreResult<()>;
    fn refresh_group_sessions['a](
        group: GroupId,
        members: &'a [UserId],
        last_chated: Timestamp,
        now: Timestamp
    ) -> StoreResult<()>;
});

forward!(MessageStore {
    fn append_single['a](relation: RelationId, to: UserId, message: &'a NewMessage)
        -> StoreResult<MsgId>;
    fn append_group['a](group: GroupId, message: &'a NewMessage) -> StoreResult<MsgId>;
    fn single_messages['a](relation: RelationId, query: &'a MessageQuery)
        -> StoreResult<Vec<StoredMessage>>;
    fn group_messages['a](group: GroupId, query: &'a MessageQuery)
        -> StoreResult<Vec<StoredMessage>>;
});

forward!(RecordMessage {
    fn record_single['a](relation: RelationId, to: UserId, message: &'a NewMessage, now: Timestamp)
        -> StoreResult<MsgId>;
    fn record_group['a](group: GroupId, message: &'a NewMessage, now: Timestamp)
        -> StoreResult<MsgId>;
});

forward!(UnreadStore {
    fn add_unread[](owner: UserId, peer: UserId) -> StoreResult<()>;
    fn clear_unread[](owner: UserId, peer: UserId) -> StoreResult<()>;
    fn unread_counts[](owner: UserId) -> StoreResult<Vec<(UserId, u32)>>;
    fn add_group_message[](group: GroupId) -> StoreResult<()>;
    fn catch_up[](user: UserId, group: GroupId) -> StoreResult<()>;
    fn group_unread[](user: UserId, group: GroupId) -> StoreResult<Option<u32>>;
});

forward!(GroupStore {
    fn create_group['a](group: &'a NewGroup, now: Timestamp) -> StoreResult<GroupId>;
    fn group[](group: GroupId) -> StoreResult<Option<Group>>;
    fn members[](group: GroupId) -> StoreResult<Option<Vec<Member>>>;
    fn member[](group: GroupId, user: UserId) -> StoreResult<Option<Member>>;
    fn add_members['a](group: GroupId, users: &'a [UserId], now: Timestamp)
        -> StoreResult<Vec<UserId>>;
    fn remove_members['a](group: GroupId, users: &'a [UserId], now: Timestamp)
        -> StoreResult<Vec<UserId>>;
    fn groups_of[](user: UserId) -> StoreResult<Vec<GroupId>>;
    fn groups_chatted_since[](since: Timestamp) -> StoreResult<Vec<(GroupId, Timestamp)>>;
});

forward!(DeviceStore {
    fn set_device_token['a](user: UserId, client_type: Option<ClientType>, token: &'a str)
        -> StoreResult<()>;
    fn device_tokens['a](users: &'a [UserId]) -> StoreResult<Vec<DeviceToken>>;
    fn set_group_shield[](group: GroupId, user: UserId, shielded: bool) -> StoreResult<()>;
    fn group_shields['a](group: GroupId, users: &'a [UserId]) -> StoreResult<Vec<bool>>;
});

forward!(FileStore {
    fn offline_files[](to: UserId) -> StoreResult<Vec<OfflineFile>>;
    fn add_offline_file['a](file: &'a OfflineFile) -> StoreResult<()>;
    fn remove_offline_file['a](from: UserId, to: UserId, task_id: &'a str) -> StoreResult<bool>;
});
