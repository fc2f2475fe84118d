//! Recent sessions.

use teamtalk_proto::base_define::ContactSessionInfo;
use teamtalk_proto::buddy::{
    ImRecentContactSessionReq, ImRecentContactSessionRsp, ImRemoveSessionReq, ImRemoveSessionRsp,
};

use super::DbProxy;
use crate::domain::{Clock, SessionKind, Timestamp, UserId};
use crate::store::{MessageStore, Peer, SessionStore, StoreResult, UnreadStore};

impl<S: SessionStore + MessageStore, C: Clock> DbProxy<S, C> {
    /// CID_BUDDY_LIST_RECENT_CONTACT_SESSION_REQUEST: visible sessions updated after
    /// `latest_update_time`, newest first, at most 100, each with its newest message; sessions
    /// without a message are left out. For single sessions `latest_msg_from_user_id` is the
    /// peer, as in the original.
    pub async fn recent_sessions(
        &self,
        req: ImRecentContactSessionReq,
    ) -> StoreResult<ImRecentContactSessionRsp> {
        let owner = UserId(req.user_id);
        let sessions = self
            .store
            .recent_sessions(
                owner,
                Timestamp(req.latest_update_time),
                self.config.limits.recent_sessions,
            )
            .await?;
        let mut list = Vec::with_capacity(sessions.len());
        for session in sessions {
            let Some(latest) = self.latest_message(owner, session.peer).await? else {
                continue;
            };
            let from = match session.peer {
                Peer::User(peer) => peer.0,
                Peer::Group(_) => latest.from.0,
            };
            list.push(ContactSessionInfo {
                session_id: session.peer.raw(),
                session_type: session.peer.kind().to_wire(),
                session_status: 0,
                updated_time: session.updated.0,
                latest_msg_id: latest.id.0,
                latest_msg_data: self.preview(&latest),
                latest_msg_type: latest.msg_type.to_wire(),
                latest_msg_from_user_id: from,
            });
        }
        Ok(ImRecentContactSessionRsp {
            user_id: req.user_id,
            contact_session_list: list,
            attach_data: req.attach_data,
        })
    }
}

impl<S: SessionStore + UnreadStore, C: Clock> DbProxy<S, C> {
    /// CID_BUDDY_LIST_REMOVE_SESSION_REQ: hides a visible session and marks it read; result 1
    /// when there was none (or the session type is invalid).
    pub async fn remove_session(&self, req: ImRemoveSessionReq) -> StoreResult<ImRemoveSessionRsp> {
        let owner = UserId(req.user_id);
        let mut removed = false;
        if let Some(kind) = SessionKind::from_wire(req.session_type) {
            let peer = Peer::new(kind, req.session_id);
            removed = self
                .store
                .remove_session(owner, peer, self.clock.now())
                .await?;
            if removed {
                self.mark_read(owner, peer).await?;
            }
        }
        Ok(ImRemoveSessionRsp {
            user_id: req.user_id,
            result_code: u32::from(!removed),
            session_type: req.session_type,
            session_id: req.session_id,
            attach_data: req.attach_data,
        })
    }
}
