//! `Debug` for the messages that carry a password or a message body.
//!
//! Passwords and message contents must never reach a log. prost's derived `Debug` is switched
//! off for these messages (see `REDACTED_DEBUG` in `tests/codegen.rs`); the impls below print
//! every other field as usual and only the size of the sensitive ones.

use core::fmt;

use bytes::Bytes;

use crate::{base_define, login, message, server};

/// Prints a sensitive field as its size only.
struct Hidden<'a, T: ?Sized>(&'a T);

impl fmt::Debug for Hidden<'_, String> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted, {} bytes>", self.0.len())
    }
}

impl fmt::Debug for Hidden<'_, Bytes> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted, {} bytes>", self.0.len())
    }
}

impl fmt::Debug for Hidden<'_, Option<Bytes>> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(bytes) => write!(f, "Some({:?})", Hidden(bytes)),
            None => f.write_str("None"),
        }
    }
}

/// `redacted_debug!(Type { shown, fields } hide { secret, fields })`.
macro_rules! redacted_debug {
    ($($ty:ident :: $name:ident { $($shown:ident),* } hide { $($secret:ident),* })*) => {$(
        impl fmt::Debug for $ty::$name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    $(.field(stringify!($shown), &self.$shown))*
                    $(.field(stringify!($secret), &Hidden(&self.$secret)))*
                    .finish()
            }
        }
    )*};
}

redacted_debug! {
    login::ImLoginReq { user_name, online_status, client_type, client_version } hide { password }
    server::ImValidateReq { user_name } hide { password, attach_data }
    message::ImMsgData {
        from_user_id, to_session_id, msg_id, create_time, msg_type
    } hide { msg_data, attach_data }
    base_define::MsgInfo { msg_id, from_session_id, create_time, msg_type } hide { msg_data }
    base_define::ContactSessionInfo {
        session_id, session_type, session_status, updated_time, latest_msg_id, latest_msg_type,
        latest_msg_from_user_id
    } hide { latest_msg_data }
    base_define::UnreadInfo {
        session_id, session_type, unread_cnt, latest_msg_id, latest_msg_type,
        latest_msg_from_user_id
    } hide { latest_msg_data }
    server::ImPushToUserReq { data, user_token_list } hide { flash }
    server::ImGetDeviceTokenReq { user_id } hide { attach_data }
    server::ImGetDeviceTokenRsp { user_token_info } hide { attach_data }
    server::ImGroupGetShieldReq { group_id, user_id } hide { attach_data }
    server::ImGroupGetShieldRsp { group_id, shield_status_list } hide { attach_data }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_passwords_or_bodies() {
        let login = login::ImLoginReq {
            user_name: "alice".into(),
            password: "e10adc3949ba59abbe56e057f20f883e".into(),
            ..Default::default()
        };
        let shown = format!("{login:?}");
        assert!(shown.contains("alice"), "{shown}");
        assert!(!shown.contains("e10adc"), "{shown}");
        assert!(shown.contains("<redacted, 32 bytes>"), "{shown}");

        let msg = message::ImMsgData {
            from_user_id: 7,
            msg_data: Bytes::from_static(b"secret text"),
            attach_data: Some(Bytes::from_static(b"secret attach")),
            ..Default::default()
        };
        let shown = format!("{msg:?}");
        assert!(shown.contains("from_user_id: 7"), "{shown}");
        assert!(!shown.contains("secret"), "{shown}");

        let push = server::ImPushToUserReq {
            flash: "alice: hello".into(),
            ..Default::default()
        };
        assert!(!format!("{push:?}").contains("hello"));
    }
}
