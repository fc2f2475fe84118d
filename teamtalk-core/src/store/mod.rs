//! Storage traits: one narrow trait per concern, each stating the invariants a backend must
//! keep. The domain services in [`crate::service`] are generic over them.
//!
//! | trait | concern | original storage |
//! |---|---|---|
//! | [`UserStore`] | users, credentials, departments, sign info, push shield | IMUser, IMDepart |
//! | [`SessionStore`] | user pairs (relations) and recent sessions | IMRelationShip, IMRecentSession |
//! | [`MessageStore`] | messages and their per-conversation ids | IMMessage_N, IMGroupMessage_N, `msg_id_*`, `group_msg_id_*` |
//! | [`RecordMessage`] | a sent message with its counters and sessions in one step (defaults compose the above) | — |
//! | [`UnreadStore`] | unread counters | `unread_{u}`, `{g}_im_group_msg`, `{u}_{g}_im_user_group` |
//! | [`GroupStore`] | groups and membership | IMGroup, IMGroupMember, `group_member_{g}` |
//! | [`DeviceStore`] | push tokens and group push shields | `device_*`, `group_set_{g}` |
//! | [`FileStore`] | offline file records | IMTransmitFile |
//!
//! [`Store`] is all of them together, implemented automatically for any type that implements
//! them. Backends live in `teamtalk-store` (memory, SQLite, MySQL + Redis); a third party can
//! bring its own by implementing the traits.
//!
//! The traits are object-safe: their methods are `async fn`s turned by [`async_trait`](macro@async_trait) into
//! methods returning a boxed `Future + Send`, so a backend chosen at run time is an
//! `Arc<dyn Store>` (or a `&dyn UserStore`, …) and the services can run on a multi-threaded
//! runtime. Implementations are written as `async fn` under `#[async_trait]` (re-exported here,
//! so a backend needs no extra dependency). `&T`, `Box<T>` and `Arc<T>` (also of an unsized
//! `T` such as `dyn Store`) implement every trait `T` implements, handing the call on without
//! a second allocation. docs/benchmarks.md measures what the boxed future costs per call.
//!
//! ```
//! use std::sync::Arc;
//! use teamtalk_core::store::{Store, UserStore};
//!
//! /// Any backend, chosen at run time: one type for the servers.
//! fn erase<S: Store + 'static>(store: S) -> Arc<dyn Store> {
//!     Arc::new(store)
//! }
//! /// Takes a static type or a trait object alike.
//! fn needs_users<U: UserStore + ?Sized>(_: &U) {}
//! # fn check(store: Arc<dyn Store>) { needs_users(&store); needs_users(&*store); }
//! ```
//!
//! Every method is a single logical operation: a backend that answers `Ok` has made the effect
//! durable to the degree its configuration promises (see each backend's documentation).

mod devices;
mod files;
mod forward;
mod groups;
mod messages;
mod sessions;
mod unread;
mod users;

/// The attribute that turns a backend's `async fn`s into the traits' boxed futures; put it on
/// every `impl UserStore for …` (and the other traits).
pub use async_trait::async_trait;
pub use devices::{DeviceStore, DeviceToken};
pub use files::{FileStore, OfflineFile};
pub use groups::{Group, GroupStore, Member, NewGroup};
pub use messages::{MessageQuery, MessageStore, NewMessage, RecordMessage, StoredMessage};
pub use sessions::{Peer, RecentSession, SessionStore};
pub use unread::UnreadStore;
pub use users::{
    login_name_key, Credentials, Department, NewDepartment, NewUser, ProfileChange, User,
    UserStore, STATUS_ACTIVE, STATUS_RESIGNED,
};

/// A storage operation failed. The request is answered as a server error; the cause is
/// logged. [`StoreError::NameTaken`] is the caller's doing (administration), not an outage.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend (database, cache, file) reported an error.
    #[error("storage backend error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Stored data violates an invariant the backend relies on.
    #[error("inconsistent stored data: {0}")]
    Inconsistent(String),
    /// The caller asked to create a user whose name is already taken: `existing` has a name
    /// equal to `name` under the store's comparison ([`login_name_key`]).
    #[error("a user named {name:?} already exists (id {existing})", existing = existing.0)]
    NameTaken {
        /// The name asked for.
        name: String,
        /// The user that already has it (the highest id when several do).
        existing: crate::domain::UserId,
    },
}

impl StoreError {
    /// Wraps a backend error.
    pub fn backend(error: impl std::error::Error + Send + Sync + 'static) -> StoreError {
        StoreError::Backend(Box::new(error))
    }
}

/// Result of a storage operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// Every storage concern of a db_proxy: what [`crate::service::DbProxy`]'s
/// [`Handler`](crate::service::Handler) needs. Object-safe: `Arc<dyn Store>` is a `Store`
/// too, so a backend picked at run time is `Arc::new(backend) as Arc<dyn Store>`.
#[async_trait::async_trait]
pub trait Store:
    UserStore
    + SessionStore
    + MessageStore
    + RecordMessage
    + UnreadStore
    + GroupStore
    + DeviceStore
    + FileStore
{
}

impl<T> Store for T where
    T: UserStore
        + SessionStore
        + MessageStore
        + RecordMessage
        + UnreadStore
        + GroupStore
        + DeviceStore
        + FileStore
{
}
