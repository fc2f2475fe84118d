//! [`Handler`]: how a server hands a decoded request to the business.

use std::future::Future;
use std::net::IpAddr;

use crate::command::AnyMessage;
use crate::domain::Clock;
use crate::service::DbProxy;
use crate::store::Store;

/// Answers decoded db_proxy requests.
///
/// [`DbProxy`] implements it for a complete [`Store`]. A third-party server can wrap it to
/// replace single handlers (match the commands it wants, delegate the rest) or implement it
/// from scratch.
pub trait Handler: Send + Sync {
    /// Handles one request; `None` when the protocol sends no answer (no response, an unknown
    /// command, a request the original ignores). Storage failures are answered like the
    /// original answers a failure ([`failure_reply`]), never with a panic.
    fn handle(&self, request: AnyMessage) -> impl Future<Output = Option<AnyMessage>> + Send;

    /// Handles one request that arrived on a link from `link_peer` (the msg_server's
    /// address). [`DbProxy`] uses it as the source of a login check when the request does
    /// not name the client; the default ignores it and calls [`Handler::handle`].
    fn handle_from(
        &self,
        request: AnyMessage,
        link_peer: Option<IpAddr>,
    ) -> impl Future<Output = Option<AnyMessage>> + Send {
        let _ = link_peer;
        self.handle(request)
    }
}

impl<S: Store, C: Clock> Handler for DbProxy<S, C> {
    async fn handle(&self, request: AnyMessage) -> Option<AnyMessage> {
        self.handle_from(request, None).await
    }

    async fn handle_from(
        &self,
        request: AnyMessage,
        link_peer: Option<IpAddr>,
    ) -> Option<AnyMessage> {
        let command = request.command();
        let fallback = failure_reply(&request);
        match self.dispatch(request, link_peer).await {
            Ok(answer) => answer,
            Err(error) => {
                tracing::warn!(%command, %error, "storage error; answering as a failure");
                fallback
            }
        }
    }
}

impl<S: Store, C: Clock> DbProxy<S, C> {
    /// Routes a request to its entry point (one exhaustive match over the db_proxy commands).
    async fn dispatch(
        &self,
        request: AnyMessage,
        link_peer: Option<IpAddr>,
    ) -> crate::store::StoreResult<Option<AnyMessage>> {
        use AnyMessage as M;
        Ok(match request {
            M::ValidateReq(req) => Some(self.validate_from(req, link_peer).await?.into()),
            M::PushShieldReq(req) => Some(self.set_push_shield(req).await?.into()),
            M::QueryPushShieldReq(req) => Some(self.query_push_shield(req).await?.into()),
            M::RecentContactSessionReq(req) => Some(self.recent_sessions(req).await?.into()),
            M::RemoveSessionReq(req) => Some(self.remove_session(req).await?.into()),
            M::UsersInfoReq(req) => Some(self.users_info(req).await?.into()),
            M::AllUserReq(req) => Some(self.changed_users(req).await?.into()),
            M::DepartmentReq(req) => Some(self.changed_departments(req).await?.into()),
            M::ChangeSignInfoReq(req) => Some(self.change_sign_info(req).await?.into()),
            M::MsgData(req) => self.send_message(req).await?.map(Into::into),
            M::GetMsgListReq(req) => Some(self.message_list(req).await?.into()),
            M::UnreadMsgCntReq(req) => Some(self.unread_counts(req).await?.into()),
            M::MsgDataReadAck(req) => {
                self.read_ack(req).await?;
                None
            }
            M::GetMsgByIdReq(req) => Some(self.messages_by_id(req).await?.into()),
            M::GetLatestMsgIdReq(req) => Some(self.latest_msg_id(req).await?.into()),
            M::DeviceTokenReq(req) => Some(self.set_device_token(req).await?.into()),
            M::GetDeviceTokenReq(req) => Some(self.device_tokens(req).await?.into()),
            M::GroupShieldReq(req) => self.set_group_shield(req).await?.map(Into::into),
            M::GroupGetShieldReq(req) => self.group_shields(req).await?.map(Into::into),
            M::NormalGroupListReq(req) => Some(self.normal_groups(req).await?.into()),
            M::GroupInfoListReq(req) => Some(self.group_info(req).await?.into()),
            M::GroupCreateReq(req) => self.create_group(req).await?.map(Into::into),
            M::GroupChangeMemberReq(req) => self.change_members(req).await?.map(Into::into),
            M::FileHasOfflineReq(req) => Some(self.offline_files(req).await?.into()),
            M::FileAddOfflineReq(req) => {
                self.add_offline_file(req).await?;
                None
            }
            M::FileDelOfflineReq(req) => {
                self.remove_offline_file(req).await?;
                None
            }
            other => {
                tracing::debug!(command = %other.command(), "no db_proxy handler for command");
                None
            }
        })
    }
}

/// The answer db_proxy gives when it cannot serve `request` (a storage error): derived from
/// the request table, [`crate::command::requests::failure_reply`].
pub use crate::command::requests::failure_reply;
