//! Login, user and department sync, signature, push shield.

use teamtalk_proto::base_define::{DepartInfo, UserInfo};
use teamtalk_proto::buddy::{
    ImAllUserReq, ImAllUserRsp, ImChangeSignInfoReq, ImChangeSignInfoRsp, ImDepartmentReq,
    ImDepartmentRsp, ImUsersInfoReq, ImUsersInfoRsp,
};
use teamtalk_proto::login::{
    ImPushShieldReq, ImPushShieldRsp, ImQueryPushShieldReq, ImQueryPushShieldRsp,
};
use teamtalk_proto::server::{ImValidateReq, ImValidateRsp};

use super::DbProxy;
use crate::domain::{Clock, Timestamp, UserId};
use crate::password::verify_password;
use crate::store::{Department, StoreResult, User, UserStore};

/// `IMValidateRsp.result_code` values.
pub(crate) mod validate {
    /// Credentials accepted.
    pub(crate) const OK: u32 = 0;
    /// Unknown user, inactive user or wrong password.
    pub(crate) const REFUSED: u32 = 1;
    /// The server could not check (storage error).
    pub(crate) const INTERNAL_ERROR: u32 = 2;
    /// More than 10 failures in 30 minutes.
    pub(crate) const BLOCKED: u32 = 6;
}

impl<S: UserStore, C: Clock> DbProxy<S, C> {
    /// CID_OTHER_VALIDATE_REQ: checks a login (spec/storage.md §4). Unknown users, users whose
    /// status is not 0 and wrong passwords are refused with result 1 (the original accepted
    /// anything, Q-01); more than 10 failures of a name within 30 minutes → result 6.
    pub async fn validate(&self, req: ImValidateReq) -> StoreResult<ImValidateRsp> {
        let now = self.clock.now();
        let answer = |code: u32, text: &str, user: Option<UserInfo>| ImValidateRsp {
            user_name: req.user_name.clone(),
            result_code: code,
            result_string: Some(text.to_owned()),
            user_info: user,
            attach_data: req.attach_data.clone(),
        };
        if self.with_guard(|g| g.is_blocked(&req.user_name, now)) {
            return Ok(answer(validate::BLOCKED, "用户名/密码错误次数太多", None));
        }
        match self.store.login_candidate(&req.user_name).await? {
            Some((user, credentials))
                if verify_password(
                    &req.password,
                    &credentials.salt,
                    &credentials.password_hash,
                ) =>
            {
                self.with_guard(|g| g.record_success(&req.user_name));
                let mut info = user_info(&user);
                info.status = 0; // as the original
                Ok(answer(validate::OK, "成功", Some(info)))
            }
            _ => {
                self.with_guard(|g| g.record_failure(&req.user_name, now));
                Ok(answer(validate::REFUSED, "用户名/密码错误", None))
            }
        }
    }

    /// CID_BUDDY_LIST_USER_INFO_REQUEST: the users with the requested ids (any status; at most
    /// [`super::Limits::user_ids`] ids are looked at).
    pub async fn users_info(&self, req: ImUsersInfoReq) -> StoreResult<ImUsersInfoRsp> {
        let ids = super::bounded_unique(
            req.user_id_list.iter().map(|&id| UserId(id)),
            self.config.limits.user_ids,
        );
        let users = if ids.is_empty() {
            Vec::new()
        } else {
            self.store.users(&ids).await?
        };
        Ok(ImUsersInfoRsp {
            user_id: req.user_id,
            user_info_list: users.iter().map(user_info).collect(),
            attach_data: req.attach_data,
        })
    }

    /// CID_BUDDY_LIST_ALL_USER_REQUEST: users changed since `latest_update_time` (0: all
    /// users except resigned ones; otherwise `updated >= latest`, any status). Computed from
    /// the users' `updated` directly (the original gated it on a start-up watermark, Q-55).
    pub async fn changed_users(&self, req: ImAllUserReq) -> StoreResult<ImAllUserRsp> {
        let users = self
            .store
            .users_changed_since(Timestamp(req.latest_update_time))
            .await?;
        let latest = users
            .iter()
            .map(|u| u.updated.0)
            .max()
            .unwrap_or(req.latest_update_time);
        Ok(ImAllUserRsp {
            user_id: req.user_id,
            latest_update_time: latest,
            user_list: users.iter().map(user_info).collect(),
            attach_data: req.attach_data,
        })
    }

    /// CID_BUDDY_LIST_DEPARTMENT_REQUEST: departments with `updated > latest_update_time`.
    pub async fn changed_departments(&self, req: ImDepartmentReq) -> StoreResult<ImDepartmentRsp> {
        let departments = self
            .store
            .departments_changed_since(Timestamp(req.latest_update_time))
            .await?;
        let latest = departments
            .iter()
            .map(|d| d.updated.0)
            .max()
            .unwrap_or(req.latest_update_time);
        Ok(ImDepartmentRsp {
            user_id: req.user_id,
            latest_update_time: latest,
            dept_list: departments.iter().map(depart_info).collect(),
            attach_data: req.attach_data,
        })
    }

    /// CID_BUDDY_LIST_CHANGE_SIGN_INFO_REQUEST: result 0 and the new signature, or 1 when it is
    /// longer than 128 bytes or the user is unknown.
    pub async fn change_sign_info(
        &self,
        req: ImChangeSignInfoReq,
    ) -> StoreResult<ImChangeSignInfoRsp> {
        let ok = req.sign_info.len() <= self.config.limits.sign_info_bytes
            && self
                .store
                .set_sign_info(UserId(req.user_id), &req.sign_info, self.clock.now())
                .await?;
        Ok(ImChangeSignInfoRsp {
            user_id: req.user_id,
            result_code: u32::from(!ok),
            sign_info: ok.then_some(req.sign_info),
            attach_data: req.attach_data,
        })
    }

    /// CID_LOGIN_REQ_PUSH_SHIELD: sets do-not-disturb (any non-zero status means on). Result 0
    /// for a known user, also when the value does not change (the original answered 1 then,
    ///
    pub async fn set_push_shield(&self, req: ImPushShieldReq) -> StoreResult<ImPushShieldRsp> {
        let shield = req.shield_status != 0;
        let ok = self
            .store
            .set_push_shield(UserId(req.user_id), shield, self.clock.now())
            .await?;
        Ok(ImPushShieldRsp {
            user_id: req.user_id,
            result_code: u32::from(!ok),
            shield_status: ok.then_some(u32::from(shield)),
            attach_data: req.attach_data,
        })
    }

    /// CID_LOGIN_REQ_QUERY_PUSH_SHIELD: the stored do-not-disturb flag (the original always
    /// answered 0, Q-57); result 1 for an unknown user.
    pub async fn query_push_shield(
        &self,
        req: ImQueryPushShieldReq,
    ) -> StoreResult<ImQueryPushShieldRsp> {
        let shield = self.store.push_shield(UserId(req.user_id)).await?;
        Ok(ImQueryPushShieldRsp {
            user_id: req.user_id,
            result_code: u32::from(shield.is_none()),
            shield_status: shield.map(u32::from),
            attach_data: req.attach_data,
        })
    }
}

/// The wire form of a user.
pub(crate) fn user_info(user: &User) -> UserInfo {
    UserInfo {
        user_id: user.id.0,
        user_gender: user.gender,
        user_nick_name: user.nick.clone(),
        avatar_url: user.avatar.clone(),
        department_id: user.department.0,
        email: user.email.clone(),
        user_real_name: user.name.clone(),
        user_tel: user.phone.clone(),
        user_domain: user.domain.clone(),
        status: user.status,
        sign_info: Some(user.sign_info.clone()),
    }
}

fn depart_info(department: &Department) -> DepartInfo {
    DepartInfo {
        dept_id: department.id.0,
        priority: department.priority,
        dept_name: department.name.clone(),
        parent_dept_id: department.parent.0,
        dept_status: department.status as i32,
    }
}
