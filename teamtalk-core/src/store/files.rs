//! Offline file records.

use std::future::Future;

use crate::domain::{Timestamp, UserId};
use crate::store::StoreResult;

/// A file uploaded to the file_server for a receiver who was away (one IMTransmitFile row).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfflineFile {
    /// Sender.
    pub from: UserId,
    /// Receiver.
    pub to: UserId,
    /// file_server task id.
    pub task_id: String,
    /// File name.
    pub file_name: String,
    /// Size in bytes.
    pub size: u32,
    /// When it was recorded.
    pub created: Timestamp,
}

/// Offline file records.
pub trait FileStore: Send + Sync {
    /// Files waiting for `to`, oldest first.
    fn offline_files(
        &self,
        to: UserId,
    ) -> impl Future<Output = StoreResult<Vec<OfflineFile>>> + Send;

    /// Records a file waiting for its receiver.
    fn add_offline_file(&self, file: &OfflineFile) -> impl Future<Output = StoreResult<()>> + Send;

    /// Deletes the record of `task_id` from `from` to `to`; `false` when there was none.
    fn remove_offline_file(
        &self,
        from: UserId,
        to: UserId,
        task_id: &str,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
}
