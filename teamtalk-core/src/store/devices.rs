//! Push tokens and group push shields.

use core::fmt;

use crate::domain::{ClientType, GroupId, UserId};
use crate::store::StoreResult;

/// The push token of a user's mobile device.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceToken {
    /// Owner.
    pub user: UserId,
    /// iOS or Android.
    pub client_type: ClientType,
    /// The token as the device registered it.
    pub token: String,
}

impl fmt::Debug for DeviceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceToken")
            .field("user", &self.user)
            .field("client_type", &self.client_type)
            .field("token_len", &self.token.len())
            .finish()
    }
}

/// Push tokens (one per user, the last registered) and per-group push shields.
///
/// Invariant: a token belongs to at most one user; registering it for another user takes it
/// away from the first.
#[async_trait::async_trait]
pub trait DeviceStore: Send + Sync {
    /// Registers `token` as the push token of `user`'s device of `client_type`; an empty token
    /// unregisters (logout). Only iOS and Android tokens are pushed to.
    async fn set_device_token(
        &self,
        user: UserId,
        client_type: Option<ClientType>,
        token: &str,
    ) -> StoreResult<()>;

    /// The iOS and Android tokens of `users`, in the order of `users`; users without one are
    /// skipped.
    async fn device_tokens(&self, users: &[UserId]) -> StoreResult<Vec<DeviceToken>>;

    /// Sets whether `user` gets push notifications for `group` (`true` = shielded, no push).
    async fn set_group_shield(
        &self,
        group: GroupId,
        user: UserId,
        shielded: bool,
    ) -> StoreResult<()>;

    /// The shield flags of `users` for `group`, in the order of `users` (unset = `false`).
    async fn group_shields(&self, group: GroupId, users: &[UserId]) -> StoreResult<Vec<bool>>;
}
