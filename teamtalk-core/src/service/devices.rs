//! Push tokens.

use teamtalk_proto::base_define::UserTokenInfo;
use teamtalk_proto::login::{ImDeviceTokenReq, ImDeviceTokenRsp};
use teamtalk_proto::server::{ImGetDeviceTokenReq, ImGetDeviceTokenRsp};

use super::DbProxy;
use crate::domain::{ClientType, Clock, Timestamp, UserId};
use crate::store::{DeviceStore, GroupStore, StoreResult, UnreadStore, UserStore};

/// Quiet hours for iOS pushes of do-not-disturb users: 22:00 to 07:59 local time.
fn in_quiet_hours(now: Timestamp, utc_offset_secs: i32) -> bool {
    let local = i64::from(now.0) + i64::from(utc_offset_secs);
    let hour = local.rem_euclid(86_400) / 3_600;
    hour >= 22 || hour <= 7
}

impl<S: DeviceStore, C: Clock> DbProxy<S, C> {
    /// CID_LOGIN_REQ_DEVICETOKEN: registers (or, with an empty token, clears) the push token
    /// of the user's device.
    pub async fn set_device_token(&self, req: ImDeviceTokenReq) -> StoreResult<ImDeviceTokenRsp> {
        let client_type = req.client_type.and_then(ClientType::from_wire);
        self.store
            .set_device_token(UserId(req.user_id), client_type, &req.device_token)
            .await?;
        Ok(ImDeviceTokenRsp {
            user_id: req.user_id,
            attach_data: req.attach_data,
        })
    }
}

impl<S: DeviceStore + UserStore + UnreadStore + GroupStore, C: Clock> DbProxy<S, C> {
    /// CID_OTHER_GET_DEVICE_TOKEN_REQ (msg_server, before pushing): the iOS and Android tokens
    /// of the requested users (at most [`super::Limits::push_targets`]) with their total unread
    /// count as badge. iOS tokens of do-not-disturb users are left out during quiet hours
    /// (22:00–07:59 local time; ineffective in the original, Q-57).
    pub async fn device_tokens(
        &self,
        req: ImGetDeviceTokenReq,
    ) -> StoreResult<ImGetDeviceTokenRsp> {
        let users: Vec<UserId> = req
            .user_id
            .iter()
            .take(self.config.limits.push_targets)
            .map(|&u| UserId(u))
            .collect();
        let quiet = in_quiet_hours(self.clock.now(), self.config.utc_offset_secs);
        let mut list = Vec::new();
        for token in self.store.device_tokens(&users).await? {
            if quiet
                && token.client_type == ClientType::Ios
                && self.store.push_shield(token.user).await?.unwrap_or(false)
            {
                continue;
            }
            list.push(UserTokenInfo {
                user_id: token.user.0,
                user_type: token.client_type.to_wire(),
                push_count: self.total_unread(token.user).await?,
                token: token.token,
                push_type: 1,
            });
        }
        Ok(ImGetDeviceTokenRsp {
            user_token_info: list,
            attach_data: req.attach_data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_hours_are_22_to_8_local() {
        let at = |h: u32, m: u32| Timestamp(19_000 * 86_400 + h * 3_600 + m * 60);
        assert!(in_quiet_hours(at(22, 0), 0));
        assert!(in_quiet_hours(at(7, 59), 0));
        assert!(!in_quiet_hours(at(8, 0), 0));
        assert!(!in_quiet_hours(at(21, 59), 0));
        // 14:00 UTC is 22:00 in UTC+8
        assert!(in_quiet_hours(at(14, 0), 8 * 3_600));
        assert!(!in_quiet_hours(at(0, 30), 8 * 3_600));
        // 00:30 UTC is 21:30 the day before in UTC-3
        assert!(!in_quiet_hours(at(0, 30), -3 * 3_600));
    }
}
