//! Regenerates the Rust code from `proto/*.proto` with protox + prost-build (no system `protoc`)
//! and fails when the checked-in copy under `src/generated/` is stale.
//!
//! To update the checked-in copy after editing a `.proto` file:
//!
//! ```text
//! TEAMTALK_REGENERATE=1 cargo test -p teamtalk-proto --test codegen
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};

/// Messages whose derived `Debug` would print a password or a message body; `src/redact.rs`
/// implements `Debug` for them by hand, showing only the sizes of those fields.
const REDACTED_DEBUG: [&str; 11] = [
    ".IM.Login.IMLoginReq",
    ".IM.Server.IMValidateReq",
    ".IM.Message.IMMsgData",
    ".IM.BaseDefine.MsgInfo",
    ".IM.BaseDefine.ContactSessionInfo",
    ".IM.BaseDefine.UnreadInfo",
    ".IM.Server.IMPushToUserReq",
    ".IM.Server.IMGetDeviceTokenReq",
    ".IM.Server.IMGetDeviceTokenRsp",
    ".IM.Server.IMGroupGetShieldReq",
    ".IM.Server.IMGroupGetShieldRsp",
];

/// The nine `.proto` files, in dependency order.
const PROTO_FILES: [&str; 9] = [
    "IM.BaseDefine.proto",
    "IM.Login.proto",
    "IM.Buddy.proto",
    "IM.Message.proto",
    "IM.Group.proto",
    "IM.File.proto",
    "IM.Server.proto",
    "IM.Other.proto",
    "IM.SwitchService.proto",
];

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn generate(out_dir: &Path) {
    let proto_dir = crate_dir().join("proto");
    let files: Vec<PathBuf> = PROTO_FILES.iter().map(|f| proto_dir.join(f)).collect();
    let descriptors = protox::compile(&files, [&proto_dir]).expect("the .proto files compile");
    let mut config = prost_build::Config::new();
    config
        .out_dir(out_dir)
        // Every `bytes` field is a `bytes::Bytes`, so decoding from a `Bytes` body is zero-copy.
        .bytes(["."])
        .skip_debug(REDACTED_DEBUG)
        // `prost::Name` gives each message its protobuf name (`IM.Message.IMMsgData`).
        .enable_type_names()
        .compile_fds(descriptors)
        .expect("prost-build generates code");
}

#[test]
fn generated_code_is_up_to_date() {
    let tmp = std::env::temp_dir().join(format!("teamtalk-proto-codegen-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("temp dir");
    generate(&tmp);

    let checked_in = crate_dir().join("src").join("generated");
    let regenerate = std::env::var_os("TEAMTALK_REGENERATE").is_some();
    let mut stale = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(&tmp)
        .expect("read generated dir")
        .map(|e| e.expect("dir entry").file_name())
        .collect();
    names.sort();
    assert_eq!(
        names.len(),
        PROTO_FILES.len(),
        "one generated file per package: {names:?}"
    );
    for name in names {
        let fresh = std::fs::read_to_string(tmp.join(&name)).expect("read generated file");
        let path = checked_in.join(&name);
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        if fresh != old {
            if regenerate {
                std::fs::create_dir_all(&checked_in).expect("create src/generated");
                std::fs::write(&path, fresh).expect("write generated file");
            } else {
                stale.push(name.to_string_lossy().into_owned());
            }
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    assert!(
        stale.is_empty(),
        "src/generated is stale for {stale:?}; run `TEAMTALK_REGENERATE=1 cargo test -p teamtalk-proto --test codegen`"
    );
}
