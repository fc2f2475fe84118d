//! File transfer over real sockets: msg_server registers the transfer on file_server, the two
//! clients meet there and move the bytes (online), or the file waits on the server for the
//! receiver (offline).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use teamtalk_core::domain::Timestamp;
use teamtalk_core::password::client_password;
use teamtalk_core::proto::{file, login};
use teamtalk_core::store::{Credentials, NewUser, User, UserStore};
use teamtalk_core::{AnyMessage, PduDecoder, PduMessage};
use teamtalk_servers::serve::{self, ServeConfig};
use teamtalk_store::{SqliteConfig, SqliteStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BLOCK: u32 = 32_768;

struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    decoder: PduDecoder,
    user: u32,
}

impl Conn {
    async fn connect(addr: SocketAddr) -> Conn {
        Conn {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
            decoder: PduDecoder::default(),
            user: 0,
        }
    }

    async fn send(&mut self, message: impl Into<AnyMessage>, seq: u16) {
        self.stream
            .write_all(&message.into().to_pdu(seq).to_bytes())
            .await
            .unwrap();
    }

    async fn expect<M: PduMessage>(&mut self) -> (M, u16) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(pdu) = self.decoder.decode(&mut self.buf).unwrap() {
                if pdu.command() == M::COMMAND {
                    return (pdu.decode_body().unwrap(), pdu.seq_num());
                }
                continue;
            }
            let read = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await;
            let n = read
                .unwrap_or_else(|_| panic!("no {} in time", M::COMMAND))
                .unwrap();
            assert!(n > 0, "closed while waiting for {}", M::COMMAND);
        }
    }

    async fn login(addr: SocketAddr, name: &str) -> Conn {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut c = Conn::connect(addr).await;
            let request = login::ImLoginReq {
                user_name: name.into(),
                password: client_password("pw"),
                online_status: 1,
                client_type: 1,
                client_version: None,
            };
            c.send(request, 1).await;
            let (res, _) = c.expect::<login::ImLoginRes>().await;
            if res.result_code == 0 {
                c.user = res.user_info.unwrap().user_id;
                return c;
            }
            assert!(Instant::now() < deadline, "{name} cannot log in");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Asks for a transfer until the msg_server knows its file_server.
    async fn request_file(&mut self, to: u32, size: u32, mode: i32) -> file::ImFileRsp {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seq = 10;
        loop {
            seq += 1;
            let request = file::ImFileReq {
                from_user_id: 0,
                to_user_id: to,
                file_name: "data.bin".into(),
                file_size: size,
                trans_mode: mode,
            };
            self.send(request, seq).await;
            let (rsp, rsp_seq) = self.expect::<file::ImFileRsp>().await;
            assert_eq!(rsp_seq, seq);
            if rsp.result_code == 0 && !rsp.ip_addr_list.is_empty() {
                return rsp;
            }
            assert!(Instant::now() < deadline, "no file_server: {rsp:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Conn {
    /// Asks for the user's offline files until `done` holds for the list (db_proxy writes
    /// records on its own time); panics with `waiting_for` after 10 s.
    async fn offline_files_until(
        &mut self,
        done: impl Fn(&file::ImFileHasOfflineRsp) -> bool,
        waiting_for: &str,
    ) -> file::ImFileHasOfflineRsp {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let request = file::ImFileHasOfflineReq {
                user_id: 0,
                attach_data: None,
            };
            self.send(request, 5).await;
            let (list, _) = self.expect::<file::ImFileHasOfflineRsp>().await;
            if done(&list) {
                return list;
            }
            assert!(Instant::now() < deadline, "{waiting_for}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn content(size: usize) -> Bytes {
    (0..size)
        .map(|i| (i * 7 % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_and_offline_transfers_arrive_byte_identical() {
    let dir = std::env::temp_dir().join(format!("teamtalk-files-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = SqliteStore::open(&SqliteConfig::new(dir.join("teamtalk.db")))
        .await
        .unwrap();
    for name in ["alice", "bob"] {
        let user = NewUser {
            profile: User {
                name: name.into(),
                ..Default::default()
            },
            credentials: Credentials::from_plain("pw", "9"),
        };
        store.add_user(&user, Timestamp(1)).await.unwrap();
    }
    let config = || ServeConfig {
        file_dir: Some(dir.join("offline_file")),
        ..ServeConfig::ephemeral(1)
    };
    let running = serve::start(config(), store).await.unwrap();
    let ms = running.msg_servers[0];
    let mut alice = Conn::login(ms, "alice").await;
    let mut bob = Conn::login(ms, "bob").await;

    // Online, 5 MiB.
    let size = 5 << 20;
    let data = content(size as usize);
    let rsp = alice.request_file(bob.user, size, 1).await;
    assert_eq!(rsp.trans_mode, 1, "bob's PC is online: an online transfer");
    let task = rsp.task_id.clone();
    assert_eq!(task.len(), 36);
    let (notify, _) = bob.expect::<file::ImFileNotify>().await;
    assert_eq!(
        (notify.task_id.as_str(), notify.file_size),
        (task.as_str(), size)
    );
    let fs: SocketAddr = format!("{}:{}", rsp.ip_addr_list[0].ip, rsp.ip_addr_list[0].port)
        .parse()
        .unwrap();

    let mut sender = Conn::connect(fs).await;
    sender
        .send(
            file::ImFileLoginReq {
                user_id: alice.user,
                task_id: task.clone(),
                file_role: 1,
            },
            1,
        )
        .await;
    assert_eq!(
        sender.expect::<file::ImFileLoginRsp>().await.0.result_code,
        0
    );
    let mut receiver = Conn::connect(fs).await;
    // A third party cannot take the receiver's place.
    let mut intruder = Conn::connect(fs).await;
    intruder
        .send(
            file::ImFileLoginReq {
                user_id: 999,
                task_id: task.clone(),
                file_role: 2,
            },
            1,
        )
        .await;
    assert_eq!(
        intruder
            .expect::<file::ImFileLoginRsp>()
            .await
            .0
            .result_code,
        1
    );
    receiver
        .send(
            file::ImFileLoginReq {
                user_id: bob.user,
                task_id: task.clone(),
                file_role: 2,
            },
            1,
        )
        .await;
    assert_eq!(
        receiver
            .expect::<file::ImFileLoginRsp>()
            .await
            .0
            .result_code,
        0
    );
    assert_eq!(
        receiver.expect::<file::ImFileState>().await.0.state,
        0,
        "peer ready"
    );

    let source = data.clone();
    let (task_s, alice_id) = (task.clone(), alice.user);
    let serving = tokio::spawn(async move {
        loop {
            let (pull, _) = sender.expect::<file::ImFilePullDataReq>().await;
            let end = (pull.offset + pull.data_size).min(source.len() as u32);
            let block = file::ImFilePullDataRsp {
                result_code: 0,
                task_id: task_s.clone(),
                user_id: alice_id,
                offset: pull.offset,
                file_data: source.slice(pull.offset as usize..end as usize),
            };
            sender.send(block, 0).await;
            if end as usize == source.len() {
                let (state, _) = sender.expect::<file::ImFileState>().await;
                return state.state;
            }
        }
    });
    let mut received = Vec::with_capacity(size as usize);
    let mut seq = 1u16;
    while received.len() < size as usize {
        seq += 1;
        let offset = received.len() as u32;
        let pull = file::ImFilePullDataReq {
            task_id: task.clone(),
            user_id: bob.user,
            trans_mode: 1,
            offset,
            data_size: BLOCK.min(size - offset),
        };
        receiver.send(pull, seq).await;
        let (block, block_seq) = receiver.expect::<file::ImFilePullDataRsp>().await;
        assert_eq!((block_seq, block.offset), (seq, offset));
        received.extend_from_slice(&block.file_data);
    }
    assert!(received == data[..], "5 MiB arrive byte-identical");
    receiver
        .send(
            file::ImFileState {
                state: 3,
                task_id: task.clone(),
                user_id: bob.user,
            },
            0,
        )
        .await;
    assert_eq!(serving.await.unwrap(), 3, "the sender hears DONE");

    // Refused: the sender hears it.
    let rsp = alice.request_file(bob.user, 100, 1).await;
    let mut s2 = Conn::connect(fs).await;
    s2.send(
        file::ImFileLoginReq {
            user_id: alice.user,
            task_id: rsp.task_id.clone(),
            file_role: 1,
        },
        1,
    )
    .await;
    s2.expect::<file::ImFileLoginRsp>().await;
    let mut r2 = Conn::connect(fs).await;
    r2.send(
        file::ImFileLoginReq {
            user_id: bob.user,
            task_id: rsp.task_id.clone(),
            file_role: 2,
        },
        1,
    )
    .await;
    r2.expect::<file::ImFileLoginRsp>().await;
    r2.send(
        file::ImFileState {
            state: 2,
            task_id: rsp.task_id.clone(),
            user_id: bob.user,
        },
        0,
    )
    .await;
    assert_eq!(s2.expect::<file::ImFileState>().await.0.state, 2, "refused");

    // Cancelled by the sender: the receiver hears it.
    let rsp = alice.request_file(bob.user, 100, 1).await;
    let mut s3 = Conn::connect(fs).await;
    let login3 = |user, role| file::ImFileLoginReq {
        user_id: user,
        task_id: rsp.task_id.clone(),
        file_role: role,
    };
    s3.send(login3(alice.user, 1), 1).await;
    s3.expect::<file::ImFileLoginRsp>().await;
    let mut r3 = Conn::connect(fs).await;
    r3.send(login3(bob.user, 2), 1).await;
    r3.expect::<file::ImFileLoginRsp>().await;
    s3.send(
        file::ImFileState {
            state: 1,
            task_id: rsp.task_id.clone(),
            user_id: alice.user,
        },
        0,
    )
    .await;
    assert_eq!(
        r3.expect::<file::ImFileState>().await.0.state,
        0,
        "peer ready first"
    );
    assert_eq!(
        r3.expect::<file::ImFileState>().await.0.state,
        1,
        "then cancelled"
    );

    // Offline: uploaded while bob is away, listed after his login, downloaded, then deleted.
    drop(bob);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let bob_id = Conn::login(ms, "bob").await.user; // learn the id, then log out again
    tokio::time::sleep(Duration::from_millis(200)).await;
    let size = 3 * BLOCK + 123;
    let data = content(size as usize);
    // Asked as ONLINE; once route_server knows bob left, the msg_server makes it offline.
    let deadline = Instant::now() + Duration::from_secs(10);
    let rsp = loop {
        let rsp = alice.request_file(bob_id, size, 1).await;
        if rsp.trans_mode == 2 {
            break rsp;
        }
        assert!(Instant::now() < deadline, "bob is away: offline");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let task = rsp.task_id.clone();
    let mut up = Conn::connect(fs).await;
    up.send(
        file::ImFileLoginReq {
            user_id: alice.user,
            task_id: task.clone(),
            file_role: 3,
        },
        1,
    )
    .await;
    assert_eq!(up.expect::<file::ImFileLoginRsp>().await.0.result_code, 0);
    loop {
        let (pull, _) = up.expect::<file::ImFilePullDataReq>().await;
        let end = (pull.offset + pull.data_size) as usize;
        let block = file::ImFilePullDataRsp {
            result_code: 0,
            task_id: task.clone(),
            user_id: alice.user,
            offset: pull.offset,
            file_data: data.slice(pull.offset as usize..end),
        };
        up.send(block, 0).await;
        if end == data.len() {
            break;
        }
    }
    assert_eq!(
        up.expect::<file::ImFileState>().await.0.state,
        3,
        "upload done"
    );
    alice
        .send(
            file::ImFileAddOfflineReq {
                from_user_id: 0,
                to_user_id: bob_id,
                task_id: task.clone(),
                file_name: "data.bin".into(),
                file_size: size,
            },
            30,
        )
        .await;
    drop(up);

    let mut bob = Conn::login(ms, "bob").await;
    // The record is written by db_proxy on its own time: ask until it is there.
    bob.offline_files_until(
        |list| !list.offline_file_list.is_empty(),
        "the offline record never came",
    )
    .await;

    // The whole system restarts before bob downloads: the file_server finds the file on disk
    // again (its header says whose it is) and the record is still in the store.
    let alice_id = alice.user;
    drop((alice, bob));
    running.stop().await.unwrap();
    let store = SqliteStore::open(&SqliteConfig::new(dir.join("teamtalk.db")))
        .await
        .unwrap();
    let running = serve::start(config(), store).await.unwrap();
    let ms = running.msg_servers[0];
    let mut bob = Conn::login(ms, "bob").await;
    let list = bob
        // The file_server's link to the msg_server comes up on its own time after the restart
        // (logins no longer wait for TCP links between the other roles): ask until both are
        // there.
        .offline_files_until(
            |list| !list.offline_file_list.is_empty() && !list.ip_addr_list.is_empty(),
            "the record is kept across the restart, with the file_server's address",
        )
        .await;
    assert_eq!(list.offline_file_list.len(), 1, "{list:?}");
    assert_eq!(list.offline_file_list[0].task_id, task);
    assert!(
        !list.ip_addr_list.is_empty(),
        "with the file_server's address"
    );
    let fs: SocketAddr = format!("{}:{}", list.ip_addr_list[0].ip, list.ip_addr_list[0].port)
        .parse()
        .unwrap();
    let mut down = Conn::connect(fs).await;
    down.send(
        file::ImFileLoginReq {
            user_id: bob_id,
            task_id: task.clone(),
            file_role: 4,
        },
        1,
    )
    .await;
    assert_eq!(down.expect::<file::ImFileLoginRsp>().await.0.result_code, 0);
    let mut received = Vec::new();
    let mut seq = 1;
    while received.len() < size as usize {
        seq += 1;
        let offset = received.len() as u32;
        down.send(
            file::ImFilePullDataReq {
                task_id: task.clone(),
                user_id: bob_id,
                trans_mode: 2,
                offset,
                data_size: BLOCK,
            },
            seq,
        )
        .await;
        let (block, _) = down.expect::<file::ImFilePullDataRsp>().await;
        received.extend_from_slice(&block.file_data);
    }
    assert!(
        received == data[..],
        "the offline file arrives byte-identical"
    );
    assert_eq!(down.expect::<file::ImFileState>().await.0.state, 3);
    bob.send(
        file::ImFileDelOfflineReq {
            from_user_id: alice_id,
            to_user_id: bob_id,
            task_id: task.clone(),
        },
        6,
    )
    .await;
    bob.offline_files_until(
        |list| list.offline_file_list.is_empty(),
        "the record was never deleted",
    )
    .await;

    running.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
