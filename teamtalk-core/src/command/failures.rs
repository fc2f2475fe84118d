//! The failure reply of each request that has one, written once per response type: what
//! db_proxy answers on a storage error and what the msg_server answers when the request's
//! upstream is unreachable. Which of the two situations uses a body is a column of
//! [`super::requests::TABLE`]; the bodies only say what a failed answer looks like.
//!
//! Every body echoes the request's identity fields (user, group, session, name) and its attach
//! data, so the answer is routed back like a successful one, and fills every field the
//! original's protobuf-lite marks required (docs/compatibility.md, Q-21).

use teamtalk_proto::{buddy, file, group, login, message, server};

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

/// `result_code` of a failed answer in the responses that have one.
const FAILED: u32 = 1;

/// `IMValidateRsp.result_string` when the check could not be made.
const INTERNAL_ERROR_TEXT: &str = "服务端内部错误";

/// A login check db_proxy could not make: "internal error", no user info.
pub(crate) fn validate(req: &server::ImValidateReq) -> server::ImValidateRsp {
    server::ImValidateRsp {
        user_name: req.user_name.clone(),
        result_code: validate::INTERNAL_ERROR,
        result_string: Some(INTERNAL_ERROR_TEXT.to_owned()),
        user_info: None,
        attach_data: req.attach_data.clone(),
    }
}

/// A message that was not stored: the message itself with `msg_id` 0 (the msg_server then
/// sends no ack).
pub(crate) fn message(req: &message::ImMsgData) -> message::ImMsgData {
    let mut answer = req.clone();
    answer.msg_id = 0;
    answer
}

/// The push shield was not changed.
pub(crate) fn push_shield(req: &login::ImPushShieldReq) -> login::ImPushShieldRsp {
    login::ImPushShieldRsp {
        user_id: req.user_id,
        result_code: FAILED,
        shield_status: None,
        attach_data: req.attach_data.clone(),
    }
}

/// The push shield could not be read.
pub(crate) fn query_push_shield(req: &login::ImQueryPushShieldReq) -> login::ImQueryPushShieldRsp {
    login::ImQueryPushShieldRsp {
        user_id: req.user_id,
        result_code: FAILED,
        shield_status: None,
        attach_data: req.attach_data.clone(),
    }
}

/// The session was not removed.
pub(crate) fn remove_session(req: &buddy::ImRemoveSessionReq) -> buddy::ImRemoveSessionRsp {
    buddy::ImRemoveSessionRsp {
        user_id: req.user_id,
        result_code: FAILED,
        session_type: req.session_type,
        session_id: req.session_id,
        attach_data: req.attach_data.clone(),
    }
}

/// The signature was not changed.
pub(crate) fn change_sign_info(req: &buddy::ImChangeSignInfoReq) -> buddy::ImChangeSignInfoRsp {
    buddy::ImChangeSignInfoRsp {
        user_id: req.user_id,
        result_code: FAILED,
        sign_info: None,
        attach_data: req.attach_data.clone(),
    }
}

/// No group list (this response has no result code: an empty list).
pub(crate) fn normal_groups(req: &group::ImNormalGroupListReq) -> group::ImNormalGroupListRsp {
    group::ImNormalGroupListRsp {
        user_id: req.user_id,
        group_version_list: Vec::new(),
        attach_data: req.attach_data.clone(),
    }
}

/// No group information (no result code: an empty list).
pub(crate) fn group_info(req: &group::ImGroupInfoListReq) -> group::ImGroupInfoListRsp {
    group::ImGroupInfoListRsp {
        user_id: req.user_id,
        group_info_list: Vec::new(),
        attach_data: req.attach_data.clone(),
    }
}

/// The group was not created. Also the msg_server's answer to a client asking for a fixed
/// group, which only administrators create.
pub(crate) fn group_create(req: &group::ImGroupCreateReq) -> group::ImGroupCreateRsp {
    group::ImGroupCreateRsp {
        user_id: req.user_id,
        result_code: FAILED,
        group_id: None,
        group_name: req.group_name.clone(),
        user_id_list: Vec::new(),
        attach_data: req.attach_data.clone(),
    }
}

/// The members were not changed.
pub(crate) fn group_change_member(
    req: &group::ImGroupChangeMemberReq,
) -> group::ImGroupChangeMemberRsp {
    group::ImGroupChangeMemberRsp {
        user_id: req.user_id,
        change_type: req.change_type,
        result_code: FAILED,
        group_id: req.group_id,
        cur_user_id_list: Vec::new(),
        chg_user_id_list: Vec::new(),
        attach_data: req.attach_data.clone(),
    }
}

/// The group's shield was not changed.
pub(crate) fn group_shield(req: &group::ImGroupShieldReq) -> group::ImGroupShieldRsp {
    group::ImGroupShieldRsp {
        user_id: req.user_id,
        group_id: req.group_id,
        result_code: FAILED,
        attach_data: req.attach_data.clone(),
    }
}

/// No transfer was registered (no file_server): no task, no addresses.
pub(crate) fn file_request(req: &file::ImFileReq) -> file::ImFileRsp {
    file::ImFileRsp {
        result_code: FAILED,
        from_user_id: req.from_user_id,
        to_user_id: req.to_user_id,
        file_name: req.file_name.clone(),
        task_id: String::new(),
        ip_addr_list: Vec::new(),
        trans_mode: req.trans_mode,
    }
}

/// No offline files (no result code: empty lists).
pub(crate) fn offline_files(req: &file::ImFileHasOfflineReq) -> file::ImFileHasOfflineRsp {
    file::ImFileHasOfflineRsp {
        user_id: req.user_id,
        offline_file_list: Vec::new(),
        ip_addr_list: Vec::new(),
        attach_data: req.attach_data.clone(),
    }
}
