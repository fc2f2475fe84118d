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

use std::net::IpAddr;

use super::DbProxy;
use crate::attach::ValidateAttach;
use crate::domain::{Clock, Timestamp, UserId};
use crate::guard::{LoginAccount, LoginSource};
use crate::password::verify_password;
use crate::store::{Department, StoreResult, User, UserStore};

pub(crate) use crate::command::failures::validate;

impl<S: UserStore, C: Clock> DbProxy<S, C> {
    /// CID_OTHER_VALIDATE_REQ: checks a login with the source unknown
    /// unless the attach data names the client ([`DbProxy::validate_from`]).
    pub async fn validate(&self, req: ImValidateReq) -> StoreResult<ImValidateRsp> {
        self.validate_from(req, None).await
    }

    /// CID_OTHER_VALIDATE_REQ arriving on a link from `link_peer`. Unknown users, users whose
    /// status is not 0 and wrong passwords are refused with result 1 (the original accepted
    /// anything, Q-01). Result 6 when [`LoginGuard`](crate::guard::LoginGuard) blocks the
    /// account for the login's source: the client address our msg_server puts in the attach
    /// data ([`ValidateAttach`]), else `link_peer` (an original msg_server: all its clients
    /// share one source), else one shared unknown source (docs/compatibility.md, "Login
    /// lockout").
    pub async fn validate_from(
        &self,
        req: ImValidateReq,
        link_peer: Option<IpAddr>,
    ) -> StoreResult<ImValidateRsp> {
        let now = self.clock.now();
        let answer = |code: u32, text: &str, user: Option<UserInfo>| ImValidateRsp {
            user_name: req.user_name.clone(),
            result_code: code,
            result_string: Some(text.to_owned()),
            user_info: user,
            attach_data: req.attach_data.clone(),
        };
        let client = req
            .attach_data
            .as_deref()
            .and_then(|attach| ValidateAttach::decode(attach).ok())
            .and_then(|attach| attach.client);
        let source = client
            .or(link_peer)
            .map_or(LoginSource::Unknown, LoginSource::ip);
        // The name is looked up first, so that every spelling the store treats as this
        // account's name shares the account's counters.
        let candidate = self.store.login_candidate(&req.user_name).await?;
        let account = match &candidate {
            Some((user, _)) => LoginAccount::User(user.id),
            None => LoginAccount::unknown(&req.user_name),
        };
        if self.with_guard(|g| g.is_blocked(&account, source, now)) {
            return Ok(answer(validate::BLOCKED, "用户名/密码错误次数太多", None));
        }
        match candidate {
            Some((user, credentials))
                if verify_password(
                    &req.password,
                    &credentials.salt,
                    &credentials.password_hash,
                ) =>
            {
                self.with_guard(|g| g.record_success(user.id, source, now));
                let mut info = user_info(&user);
                info.status = 0; // as the original
                Ok(answer(validate::OK, "成功", Some(info)))
            }
            _ => {
                self.with_guard(|g| g.record_failure(&account, source, now));
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

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::net::IpAddr;

    use teamtalk_proto::server::ImValidateReq;

    use super::*;
    use crate::attach::{AttachType, DbAttach, ValidateAttach};
    use crate::domain::{DepartmentId, ManualClock};
    use crate::service::DbProxyConfig;
    use crate::store::{
        login_name_key, Credentials, Department, NewDepartment, NewUser, ProfileChange, StoreError,
        STATUS_ACTIVE,
    };

    /// Two accounts, looked up the way MySQL compares IMUser.name (trailing spaces ignored).
    struct Directory(Vec<User>);

    #[async_trait::async_trait]

    impl UserStore for Directory {
        async fn login_candidate(&self, name: &str) -> StoreResult<Option<(User, Credentials)>> {
            Ok(self
                .0
                .iter()
                .rev()
                .find(|u| {
                    login_name_key(&u.name) == login_name_key(name) && u.status == STATUS_ACTIVE
                })
                .map(|u| (u.clone(), Credentials::from_plain("right", "42"))))
        }
        async fn user_named(&self, _: &str) -> StoreResult<Option<User>> {
            Ok(None)
        }
        async fn users(&self, _: &[UserId]) -> StoreResult<Vec<User>> {
            Ok(Vec::new())
        }
        async fn user_exists(&self, _: UserId) -> StoreResult<bool> {
            Ok(false)
        }
        async fn users_changed_since(&self, _: Timestamp) -> StoreResult<Vec<User>> {
            Ok(Vec::new())
        }
        async fn departments_changed_since(&self, _: Timestamp) -> StoreResult<Vec<Department>> {
            Ok(Vec::new())
        }
        async fn set_sign_info(&self, _: UserId, _: &str, _: Timestamp) -> StoreResult<bool> {
            Ok(false)
        }
        async fn set_push_shield(&self, _: UserId, _: bool, _: Timestamp) -> StoreResult<bool> {
            Ok(false)
        }
        async fn push_shield(&self, _: UserId) -> StoreResult<Option<bool>> {
            Ok(None)
        }
        async fn set_credentials(
            &self,
            _: UserId,
            _: &Credentials,
            _: Timestamp,
        ) -> StoreResult<bool> {
            Ok(false)
        }
        async fn set_status(&self, _: UserId, _: u32, _: Timestamp) -> StoreResult<bool> {
            Ok(false)
        }
        async fn update_profile(
            &self,
            _: UserId,
            _: &ProfileChange,
            _: Timestamp,
        ) -> StoreResult<bool> {
            Ok(false)
        }
        async fn add_user(&self, _: &NewUser, _: Timestamp) -> StoreResult<UserId> {
            Err(StoreError::Inconsistent("read-only".into()))
        }
        async fn add_department(
            &self,
            _: &NewDepartment,
            _: Timestamp,
        ) -> StoreResult<DepartmentId> {
            Err(StoreError::Inconsistent("read-only".into()))
        }
    }

    fn proxy() -> DbProxy<Directory, ManualClock> {
        let user = |id: u32, name: &str| User {
            id: UserId(id),
            name: name.into(),
            ..User::default()
        };
        DbProxy::new(
            Directory(vec![user(1, "d3"), user(2, "e4")]),
            ManualClock::new(Timestamp(1_700_000_000)),
            DbProxyConfig::default(),
        )
    }

    /// A login of `name` with `plain`, from `client` when our msg_server named it.
    fn login(name: &str, plain: &str, client: Option<&str>) -> ImValidateReq {
        let attach = ValidateAttach {
            head: DbAttach::new(AttachType::HANDLE, 9),
            client: client.map(|ip| ip.parse().unwrap()),
        };
        ImValidateReq {
            user_name: name.into(),
            password: crate::password::client_password(plain),
            attach_data: Some(attach.to_bytes()),
        }
    }

    /// Polls a future that never waits (the directory answers at once).
    fn now<T>(f: impl Future<Output = T>) -> T {
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(value) => value,
            std::task::Poll::Pending => panic!("the directory does not wait"),
        }
    }

    fn code(proxy: &DbProxy<Directory, ManualClock>, req: ImValidateReq) -> u32 {
        now(proxy.validate(req)).unwrap().result_code
    }

    #[test]
    fn names_equal_under_the_stores_comparison_share_one_counter() {
        let proxy = proxy();
        for i in 0..11 {
            // alternate spellings of the same account
            let name = if i % 2 == 0 { "d3 " } else { "d3" };
            assert_eq!(code(&proxy, login(name, "guess", Some("192.0.2.1"))), 1);
        }
        for name in ["d3", "d3 ", "d3   "] {
            assert_eq!(
                code(&proxy, login(name, "right", Some("192.0.2.1"))),
                6,
                "{name:?}: blocked for this source, whatever the spelling"
            );
        }
        assert_eq!(
            code(&proxy, login("e4", "right", Some("192.0.2.1"))),
            0,
            "other accounts are not affected"
        );
    }

    #[test]
    fn a_stranger_cannot_lock_the_owner_out() {
        let proxy = proxy();
        for _ in 0..30 {
            let _ = code(&proxy, login("d3", "guess", Some("198.51.100.7")));
        }
        assert_eq!(code(&proxy, login("d3", "right", Some("198.51.100.7"))), 6);
        assert_eq!(
            code(&proxy, login("d3", "right", Some("203.0.113.9"))),
            0,
            "the owner, from another address, logs in"
        );
    }

    #[test]
    fn without_a_client_address_the_links_peer_is_the_source() {
        let proxy = proxy();
        let msg_server_a: IpAddr = "10.0.0.1".parse().unwrap();
        let msg_server_b: IpAddr = "10.0.0.2".parse().unwrap();
        let original = |plain: &str| ImValidateReq {
            user_name: "d3".into(),
            password: crate::password::client_password(plain),
            attach_data: Some(DbAttach::new(AttachType::HANDLE, 9).to_bytes()),
        };
        for _ in 0..11 {
            let rsp = now(proxy.validate_from(original("guess"), Some(msg_server_a))).unwrap();
            assert_eq!(rsp.result_code, 1);
        }
        let rsp = now(proxy.validate_from(original("right"), Some(msg_server_a))).unwrap();
        assert_eq!(rsp.result_code, 6);
        assert_eq!(
            rsp.attach_data.as_deref().map(<[u8]>::len),
            Some(12),
            "echoed"
        );
        let rsp = now(proxy.validate_from(original("right"), Some(msg_server_b))).unwrap();
        assert_eq!(rsp.result_code, 0);
        // A client address in the attach data wins over the link's peer.
        let rsp =
            now(proxy.validate_from(login("d3", "right", Some("192.0.2.50")), Some(msg_server_a)))
                .unwrap();
        assert_eq!(rsp.result_code, 0);
    }

    #[test]
    fn unknown_names_are_counted_too() {
        let proxy = proxy();
        for _ in 0..11 {
            assert_eq!(code(&proxy, login("nobody", "x", Some("192.0.2.1"))), 1);
        }
        assert_eq!(
            code(&proxy, login("nobody ", "x", Some("192.0.2.1"))),
            6,
            "like an account: answers do not tell which names exist"
        );
    }
}
