//! A store implementing only some storage traits serves the entry points that need only
//! those: each proxy below sees the memory store through one trait object, so its type
//! implements that trait (or those few) and nothing else. The full `Arc<dyn Store>` serves
//! everything through the `Handler`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;

use teamtalk_core::domain::{ManualClock, Timestamp, UserId};
use teamtalk_core::proto::{buddy, file, login, server};
use teamtalk_core::service::{DbProxy, DbProxyConfig, Handler};
use teamtalk_core::store::{Credentials, DeviceStore, FileStore, NewUser, Store, User, UserStore};
use teamtalk_core::{AnyMessage, CommandId};
use teamtalk_store::MemoryStore;

const T0: u32 = 1_700_000_000;

fn proxy<S>(store: S) -> DbProxy<S, ManualClock> {
    DbProxy::new(
        store,
        ManualClock::new(Timestamp(T0)),
        DbProxyConfig::default(),
    )
}

fn login_req(name: &str, plain: &str) -> server::ImValidateReq {
    server::ImValidateReq {
        user_name: name.into(),
        password: teamtalk_core::password::client_password(plain),
        attach_data: None,
    }
}

async fn memory_with_alice() -> (Arc<MemoryStore>, UserId) {
    let memory = Arc::new(MemoryStore::new());
    let alice = NewUser {
        profile: User {
            name: "alice".into(),
            nick: "Alice".into(),
            ..User::default()
        },
        credentials: Credentials::from_plain("s3cret", "17"),
    };
    let id = memory.add_user(&alice, Timestamp(T0)).await.unwrap();
    (memory, id)
}

#[tokio::test]
async fn a_users_only_store_logs_users_in() {
    let (memory, alice) = memory_with_alice().await;
    // `Arc<dyn UserStore>` implements `UserStore` and no other storage trait.
    let users: Arc<dyn UserStore> = memory;
    let proxy = proxy(users);

    let ok = proxy.validate(login_req("alice", "s3cret")).await.unwrap();
    assert_eq!(ok.result_code, 0);
    assert_eq!(ok.user_info.unwrap().user_id, alice.0);
    let wrong = proxy.validate(login_req("alice", "guess")).await.unwrap();
    assert_eq!(wrong.result_code, 1);

    let info = proxy
        .users_info(buddy::ImUsersInfoReq {
            user_id: alice.0,
            user_id_list: vec![alice.0],
            attach_data: None,
        })
        .await
        .unwrap();
    assert_eq!(info.user_info_list.len(), 1);
    assert_eq!(info.user_info_list[0].user_nick_name, "Alice");
}

#[tokio::test]
async fn a_devices_only_store_registers_push_tokens() {
    let (memory, alice) = memory_with_alice().await;
    // A borrowed trait object: `&dyn DeviceStore` implements `DeviceStore` only.
    let devices: &dyn DeviceStore = &*memory;
    let proxy = proxy(devices);
    let rsp = proxy
        .set_device_token(login::ImDeviceTokenReq {
            user_id: alice.0,
            device_token: "token-1".into(),
            client_type: Some(teamtalk_core::proto::base_define::ClientType::Ios as i32),
            attach_data: None,
        })
        .await
        .unwrap();
    assert_eq!(rsp.user_id, alice.0);
    let tokens = memory.device_tokens(&[alice]).await.unwrap();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].token, "token-1");
}

#[tokio::test]
async fn a_files_only_store_keeps_offline_files() {
    let alice = UserId(1);
    // An owned trait object: `Box<dyn FileStore>` implements `FileStore` only.
    let files: Box<dyn FileStore> = Box::new(MemoryStore::new());
    let proxy = proxy(files);
    proxy
        .add_offline_file(file::ImFileAddOfflineReq {
            from_user_id: 7,
            to_user_id: alice.0,
            task_id: "task".into(),
            file_name: "a.txt".into(),
            file_size: 3,
        })
        .await
        .unwrap();
    let waiting = proxy
        .offline_files(file::ImFileHasOfflineReq {
            user_id: alice.0,
            attach_data: None,
        })
        .await
        .unwrap();
    assert_eq!(waiting.offline_file_list.len(), 1);
    assert_eq!(waiting.offline_file_list[0].task_id, "task");
}

#[tokio::test]
async fn a_store_chosen_at_run_time_serves_every_request() {
    let (memory, alice) = memory_with_alice().await;
    let store: Arc<dyn Store> = memory;
    let proxy = proxy(store);
    let answer = proxy
        .handle(AnyMessage::from(login_req("alice", "s3cret")))
        .await
        .unwrap();
    assert_eq!(answer.command(), CommandId::OTHER_VALIDATE_RSP);
    let AnyMessage::ValidateRsp(rsp) = answer else {
        panic!("not a validate response: {answer:?}");
    };
    assert_eq!(rsp.result_code, 0);
    assert_eq!(rsp.user_info.unwrap().user_id, alice.0);
}
