//! The db_proxy_server business: one async entry point per handler of spec/servers.md §5,
//! generic over the storage traits, and the [`Handler`] through which a server dispatches a
//! decoded request.
//!
//! Each entry point takes the request message as msg_server forwards it (with the
//! authenticated user already written into its `user_id` / `from_user_id`) and returns exactly
//! the response db_proxy_server sends, `attach_data` echoed; `None` where the original sends no
//! response. A server is then a thin loop: decode the PDU, [`Handler::handle`], encode the
//! answer with the request's `seq_num`.
//!
//! Each group of entry points only requires the storage traits it uses, so a partial store
//! works for the handlers it supports.
//!
//! # A custom store
//!
//! The login handler needs only a [`UserStore`](crate::store::UserStore). Here it reads a fixed
//! company directory instead of a database; the other handlers need the other traits.
//!
//! ```
//! use teamtalk_core::domain::{DepartmentId, ManualClock, Timestamp, UserId};
//! use teamtalk_core::proto::server::ImValidateReq;
//! use teamtalk_core::service::{DbProxy, DbProxyConfig};
//! use teamtalk_core::store::*;
//!
//! /// A read-only directory: (user, plain password).
//! struct Directory(Vec<(User, &'static str)>);
//!
//! #[async_trait::async_trait]
//! impl UserStore for Directory {
//!     async fn login_candidate(&self, name: &str) -> StoreResult<Option<(User, Credentials)>> {
//!         // Names compare as the trait says: trailing spaces do not count.
//!         let key = login_name_key(name);
//!         Ok(self.0.iter().find(|(u, _)| login_name_key(&u.name) == key && u.status == STATUS_ACTIVE)
//!             .map(|(u, plain)| (u.clone(), Credentials::from_plain(plain, "7"))))
//!     }
//!     async fn user_named(&self, name: &str) -> StoreResult<Option<User>> {
//!         Ok(self.0.iter().map(|(u, _)| u).find(|u| login_name_key(&u.name) == login_name_key(name)).cloned())
//!     }
//!     async fn users(&self, ids: &[UserId]) -> StoreResult<Vec<User>> {
//!         Ok(self.0.iter().map(|(u, _)| u).filter(|u| ids.contains(&u.id)).cloned().collect())
//!     }
//!     async fn user_exists(&self, id: UserId) -> StoreResult<bool> {
//!         Ok(self.0.iter().any(|(u, _)| u.id == id))
//!     }
//!     async fn users_changed_since(&self, _: Timestamp) -> StoreResult<Vec<User>> {
//!         Ok(self.0.iter().map(|(u, _)| u.clone()).collect())
//!     }
//!     async fn departments_changed_since(&self, _: Timestamp) -> StoreResult<Vec<Department>> {
//!         Ok(Vec::new())
//!     }
//!     // The directory is read-only: changes are refused.
//!     async fn set_sign_info(&self, _: UserId, _: &str, _: Timestamp) -> StoreResult<bool> {
//!         Ok(false)
//!     }
//!     async fn set_push_shield(&self, _: UserId, _: bool, _: Timestamp) -> StoreResult<bool> {
//!         Ok(false)
//!     }
//!     async fn push_shield(&self, _: UserId) -> StoreResult<Option<bool>> {
//!         Ok(None)
//!     }
//!     async fn set_credentials(&self, _: UserId, _: &Credentials, _: Timestamp) -> StoreResult<bool> {
//!         Ok(false)
//!     }
//!     async fn set_status(&self, _: UserId, _: u32, _: Timestamp) -> StoreResult<bool> {
//!         Ok(false)
//!     }
//!     async fn update_profile(&self, _: UserId, _: &ProfileChange, _: Timestamp) -> StoreResult<bool> {
//!         Ok(false)
//!     }
//!     async fn add_user(&self, _: &NewUser, _: Timestamp) -> StoreResult<UserId> {
//!         Err(StoreError::Inconsistent("the directory is read-only".into()))
//!     }
//!     async fn add_department(&self, _: &NewDepartment, _: Timestamp) -> StoreResult<DepartmentId> {
//!         Err(StoreError::Inconsistent("the directory is read-only".into()))
//!     }
//! }
//!
//! # futures_lite_block_on(async {
//! let alice = User { id: UserId(1), name: "alice".into(), ..User::default() };
//! let proxy = DbProxy::new(
//!     Directory(vec![(alice, "s3cret")]),
//!     ManualClock::new(Timestamp(1_700_000_000)),
//!     DbProxyConfig::default(),
//! );
//! let login = |password: &str| ImValidateReq {
//!     user_name: "alice".into(),
//!     password: teamtalk_core::password::client_password(password), // what clients send
//!     attach_data: None,
//! };
//! assert_eq!(proxy.validate(login("s3cret")).await.unwrap().result_code, 0);
//! assert_eq!(proxy.validate(login("guess")).await.unwrap().result_code, 1);
//! # });
//! # fn futures_lite_block_on(f: impl std::future::Future<Output = ()>) {
//! #     // The futures above complete without waiting: poll once with a no-op waker.
//! #     let mut f = std::pin::pin!(f);
//! #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
//! #     assert!(f.as_mut().poll(&mut cx).is_ready());
//! # }
//! ```

mod devices;
mod files;
mod groups;
mod handler;
mod messages;
mod sessions;
mod users;

use std::sync::Mutex;

use bytes::Bytes;

use crate::domain::Clock;
use crate::guard::LoginGuard;

pub use handler::{failure_reply, Handler};

/// Upper bounds on what one request may ask for (quirks.md Q-14). The original had none
/// except 100 recent sessions and 100 messages by id; longer lists are cut to these sizes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Recent sessions per answer (as the original): 100.
    pub recent_sessions: usize,
    /// Messages per history page (`msg_cnt` is clamped to this): 100.
    pub messages_per_page: usize,
    /// Message ids per get-by-id request, and messages per answer (as the original): 100.
    pub message_ids: usize,
    /// User ids per user-info request: 1000.
    pub user_ids: usize,
    /// Groups per group-info request: 100.
    pub group_ids: usize,
    /// Members per group (creation and additions beyond it fail): 2000.
    pub group_members: usize,
    /// Users per push-token or group-shield query: 2000.
    pub push_targets: usize,
    /// Signature length in bytes (as the original): 128.
    pub sign_info_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            recent_sessions: 100,
            messages_per_page: 100,
            message_ids: 100,
            user_ids: 1000,
            group_ids: 100,
            group_members: 2000,
            push_targets: 2000,
            sign_info_bytes: 128,
        }
    }
}

/// Settings of the db_proxy business.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbProxyConfig {
    /// Request size limits.
    pub limits: Limits,
    /// What clients are shown instead of an audio message in "latest message" fields: the
    /// string `"[语音]"` encrypted with the deployment's `aesKey` (wire.md §7). Default: the
    /// encryption with the default key `12345678901234567890123456789012`.
    pub audio_preview: Bytes,
    /// Offset of the server's local time from UTC in seconds, for the push quiet hours.
    pub utc_offset_secs: i32,
}

impl Default for DbProxyConfig {
    fn default() -> Self {
        DbProxyConfig {
            limits: Limits::default(),
            audio_preview: Bytes::from_static(DEFAULT_AUDIO_PREVIEW),
            utc_offset_secs: 0,
        }
    }
}

/// `"[语音]"` encrypted with the default `aesKey` (AES-256-ECB, TeamTalk padding, Base64).
pub const DEFAULT_AUDIO_PREVIEW: &[u8] = b"QhGXlpFjvMFUNrtl1aaPzA==";

/// The db_proxy business over a store `S` and a clock `C`.
#[derive(Debug)]
pub struct DbProxy<S, C> {
    store: S,
    clock: C,
    config: DbProxyConfig,
    guard: Mutex<LoginGuard>,
}

impl<S, C: Clock> DbProxy<S, C> {
    /// The business over `store`, reading time from `clock`.
    pub fn new(store: S, clock: C, config: DbProxyConfig) -> DbProxy<S, C> {
        DbProxy {
            store,
            clock,
            config,
            guard: Mutex::new(LoginGuard::default()),
        }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The settings.
    pub fn config(&self) -> &DbProxyConfig {
        &self.config
    }

    /// Runs `f` on the login guard (never held across an await).
    fn with_guard<T>(&self, f: impl FnOnce(&mut LoginGuard) -> T) -> T {
        let mut guard = self
            .guard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }
}

/// The first `limit` items of `items` without duplicates, in their original order.
fn bounded_unique<T: Copy + PartialEq>(items: impl IntoIterator<Item = T>, limit: usize) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for item in items {
        if out.len() >= limit {
            break;
        }
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

/// Sorts ids the way the original lists them after reading a Redis hash into an ordered
/// string map: as decimal strings ("10" before "2").
fn sort_as_decimal_strings(ids: &mut [u32]) {
    ids.sort_by_cached_key(|id| id.to_string());
}
