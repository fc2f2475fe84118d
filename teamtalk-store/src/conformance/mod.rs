//! The conformance kit (feature `conformance`): every storage rule of
//! [`teamtalk_core::store`] and every db_proxy entry point, checked through the services of
//! [`teamtalk_core::service`] against a store. The three backends of this crate pass it; a
//! third-party backend runs it from its own tests to show that it keeps the same invariants
//! (docs/storage.md, "Writing your own backend").
//!
//! Each check is a `pub async fn` taking a fresh, empty store; it panics with the assertion
//! that failed, like a test. [`run_all`] runs every check, each on a new store from a factory:
//!
//! ```no_run
//! # async fn example() {
//! // In a test of the backend's crate, with teamtalk-store's `conformance` feature enabled:
//! teamtalk_store::conformance::run_all(|| async { teamtalk_store::MemoryStore::new() }).await;
//! # }
//! ```
//!
//! Run it on a multi-threaded tokio runtime (`#[tokio::test(flavor = "multi_thread")]`):
//! some checks spawn tasks to call the store concurrently.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod devices;
mod dispatch;
mod fixture;
mod groups;
mod messages;
mod users;

use std::future::Future;

use teamtalk_core::store::Store;

pub use devices::{device_tokens, offline_files};
pub use dispatch::{
    every_string_field_round_trips, handler_dispatches_and_answers_like_db_proxy,
    strings_round_trip_intact,
};
pub use groups::{
    group_creation_and_info, group_membership_changes, group_messages_and_unread,
    group_push_shields, group_session_sync,
};
pub use messages::{
    audio_messages, concurrent_senders_get_distinct_consecutive_ids,
    history_pages_by_id_and_latest, recent_sessions_are_capped_at_100,
    sessions_and_unread_of_single_chats, single_message_ids_per_conversation,
};
pub use users::{
    login_checks_the_password_of_active_users, login_is_blocked_after_more_than_ten_failures,
    login_lockout_counts_per_account_and_source, one_account_per_login_name,
    password_changes_and_closed_accounts, profile_changes, sign_info_and_push_shield,
    user_and_department_sync,
};

/// Runs every check of the kit, each on a fresh store from `fresh`, in a fixed order; prints
/// the name of each check before it runs, so a failure names the check in the test output.
/// Panics at the first check that fails.
pub async fn run_all<S, F, Fut>(mut fresh: F)
where
    S: Store + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = S>,
{
    macro_rules! checks {
        ($($check:ident),* $(,)?) => {$(
            println!("conformance: {}", stringify!($check));
            $check(fresh().await).await;
        )*};
    }
    checks!(
        login_checks_the_password_of_active_users,
        login_is_blocked_after_more_than_ten_failures,
        login_lockout_counts_per_account_and_source,
        one_account_per_login_name,
        password_changes_and_closed_accounts,
        profile_changes,
        user_and_department_sync,
        sign_info_and_push_shield,
        single_message_ids_per_conversation,
        concurrent_senders_get_distinct_consecutive_ids,
        history_pages_by_id_and_latest,
        sessions_and_unread_of_single_chats,
        audio_messages,
        recent_sessions_are_capped_at_100,
        group_creation_and_info,
        group_messages_and_unread,
        group_membership_changes,
        group_push_shields,
        group_session_sync,
        device_tokens,
        offline_files,
        strings_round_trip_intact,
        every_string_field_round_trips,
        handler_dispatches_and_answers_like_db_proxy,
    );
}
