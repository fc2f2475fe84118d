//! Offline file records.

use teamtalk_proto::base_define::OfflineFileInfo;
use teamtalk_proto::file::{
    ImFileAddOfflineReq, ImFileDelOfflineReq, ImFileHasOfflineReq, ImFileHasOfflineRsp,
};

use super::DbProxy;
use crate::domain::{Clock, UserId};
use crate::store::{FileStore, OfflineFile, StoreResult};

impl<S: FileStore, C: Clock> DbProxy<S, C> {
    /// CID_FILE_HAS_OFFLINE_REQ: files waiting for the user, oldest first (msg_server adds the
    /// file_server addresses).
    pub async fn offline_files(
        &self,
        req: ImFileHasOfflineReq,
    ) -> StoreResult<ImFileHasOfflineRsp> {
        let files = self.store.offline_files(UserId(req.user_id)).await?;
        Ok(ImFileHasOfflineRsp {
            user_id: req.user_id,
            offline_file_list: files
                .into_iter()
                .map(|f| OfflineFileInfo {
                    from_user_id: f.from.0,
                    task_id: f.task_id,
                    file_name: f.file_name,
                    file_size: f.size,
                })
                .collect(),
            ip_addr_list: Vec::new(),
            attach_data: req.attach_data,
        })
    }

    /// CID_FILE_ADD_OFFLINE_REQ: records an uploaded file for its receiver. No answer.
    pub async fn add_offline_file(&self, req: ImFileAddOfflineReq) -> StoreResult<()> {
        let file = OfflineFile {
            from: UserId(req.from_user_id),
            to: UserId(req.to_user_id),
            task_id: req.task_id,
            file_name: req.file_name,
            size: req.file_size,
            created: self.clock.now(),
        };
        self.store.add_offline_file(&file).await
    }

    /// CID_FILE_DEL_OFFLINE_REQ: deletes a file record once downloaded. No answer.
    pub async fn remove_offline_file(&self, req: ImFileDelOfflineReq) -> StoreResult<()> {
        self.store
            .remove_offline_file(
                UserId(req.from_user_id),
                UserId(req.to_user_id),
                &req.task_id,
            )
            .await
            .map(drop)
    }
}
