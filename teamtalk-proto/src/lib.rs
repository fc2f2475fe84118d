#![doc = include_str!("../README.md")]
//!
//! # Wire rules worth knowing
//!
//! - **Required fields are always emitted**, even at their default value (prost encodes
//!   `required` fields unconditionally). The original clients refuse a message that misses
//!   one, so never rely on "default = absent" here.
//! - **Decoding is lenient**: a missing required field decodes to its default, an enum field
//!   holding an unknown value keeps the raw number (read it through the `i32` field; the
//!   generated getter falls back to the default). Decoding never panics.
//! - Repeated scalars are not packed (proto2), as in the original.
//! - Every `bytes` field is a [`bytes::Bytes`]: decoding from a `Bytes` buffer slices it
//!   instead of copying.
//! - `Debug` never prints a password or a message body: the messages carrying them
//!   (`ImLoginReq`, `ImValidateReq`, `ImMsgData`, `MsgInfo`, `ImPushToUserReq` …) show only the
//!   size of those fields, so logging a decoded message is safe.
//!
//! # Modules
//!
//! - [`base_define`]: shared enums (service and command ids, result codes, client types …)
//!   and sub-messages (`UserInfo`, `MsgInfo`, `GroupInfo` …).
//! - [`login`], [`buddy`], [`message`], [`group`], [`file`](mod@file), [`switch_service`], [`other`]:
//!   the messages of each client-visible service.
//! - [`server`]: server-to-server messages (service `SID_OTHER`).
//!
//! The Rust code under `src/generated/` is checked in; `tests/codegen.rs` regenerates it with
//! protox + prost-build (no system `protoc` needed) and fails when it is stale.

pub use prost;

/// The `IM` protobuf namespace; each package is a submodule, also re-exported at the crate root.
pub mod im {
    /// Package `IM.BaseDefine`: shared enums and sub-messages.
    pub mod base_define {
        include!("generated/im.base_define.rs");
    }
    /// Package `IM.Login`: service 0x0001 (`SID_LOGIN`).
    pub mod login {
        include!("generated/im.login.rs");
    }
    /// Package `IM.Buddy`: service 0x0002 (`SID_BUDDY_LIST`).
    pub mod buddy {
        include!("generated/im.buddy.rs");
    }
    /// Package `IM.Message`: service 0x0003 (`SID_MSG`).
    pub mod message {
        include!("generated/im.message.rs");
    }
    /// Package `IM.Group`: service 0x0004 (`SID_GROUP`).
    pub mod group {
        include!("generated/im.group.rs");
    }
    /// Package `IM.File`: service 0x0005 (`SID_FILE`).
    pub mod file {
        include!("generated/im.file.rs");
    }
    /// Package `IM.SwitchService`: service 0x0006 (`SID_SWITCH_SERVICE`).
    pub mod switch_service {
        include!("generated/im.switch_service.rs");
    }
    /// Package `IM.Other`: the heartbeat (service 0x0007).
    pub mod other {
        include!("generated/im.other.rs");
    }
    /// Package `IM.Server`: server-to-server messages (service 0x0007, `SID_OTHER`).
    pub mod server {
        include!("generated/im.server.rs");
    }
}

mod redact;

pub use im::{base_define, buddy, file, group, login, message, other, server, switch_service};
