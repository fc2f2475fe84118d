//! Offline file records.

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
#[async_trait::async_trait]
pub trait FileStore: Send + Sync {
    /// Files waiting for `to`, oldest first.
    async fn offline_files(&self, to: UserId) -> StoreResult<Vec<OfflineFile>>;

    /// Records a file waiting for its receiver.
    async fn add_offline_file(&self, file: &OfflineFile) -> StoreResult<()>;

    /// Deletes the record of `task_id` from `from` to `to`; `false` when there was none.
    async fn remove_offline_file(
        &self,
        from: UserId,
        to: UserId,
        task_id: &str,
    ) -> StoreResult<bool>;
}
