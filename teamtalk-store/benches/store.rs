//! Storage benchmarks through the db_proxy services: sending single and group messages and
//! reading unread counts, on the memory and SQLite backends; and `store_call`, the cost of one
//! store call with static dispatch against the same call through `Arc<dyn Store>`.
//!
//! `cargo bench -p teamtalk-store --bench store`; results in docs/benchmarks.md.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use teamtalk_core::domain::{GroupId, ManualClock, Timestamp, UserId};
use teamtalk_core::proto::{group, message};
use teamtalk_core::service::{DbProxy, DbProxyConfig};
use teamtalk_core::store::{Credentials, NewUser, Store, User, UserStore};
use teamtalk_store::sqlite::Durability;
use teamtalk_store::{MemoryStore, SqliteConfig, SqliteStore};
use tokio::runtime::Runtime;

type Proxy<S> = Arc<DbProxy<S, ManualClock>>;

/// Concurrent senders (each on its own user pair) of the concurrency benchmarks.
const CONCURRENCY: [u32; 2] = [50, 200];
/// Messages of the concurrency benchmarks per iteration.
const MESSAGES: u32 = 1000;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn text(from: UserId, to: u32, msg_type: i32) -> message::ImMsgData {
    message::ImMsgData {
        from_user_id: from.0,
        to_session_id: to,
        create_time: 1_700_000_000,
        msg_type,
        msg_data: Bytes::from(vec![b'A'; 100]),
        ..Default::default()
    }
}

/// A proxy over `store` with 400 users (ids 1..=400) and a group of the first 50.
async fn setup<S: Store>(store: S) -> (Proxy<S>, GroupId) {
    let proxy = Arc::new(DbProxy::new(
        store,
        ManualClock::new(Timestamp(1_700_000_000)),
        DbProxyConfig::default(),
    ));
    for i in 1..=400 {
        let user = NewUser {
            profile: User {
                name: format!("u{i}"),
                ..User::default()
            },
            credentials: Credentials::from_plain("123456", "1"),
        };
        proxy
            .store()
            .add_user(&user, Timestamp(1_700_000_000))
            .await
            .unwrap();
    }
    let created = proxy
        .create_group(group::ImGroupCreateReq {
            user_id: 1,
            group_type: 2,
            group_name: "bench".into(),
            group_avatar: String::new(),
            member_id_list: (1..=50).collect(),
            attach_data: None,
        })
        .await
        .unwrap()
        .unwrap();
    (proxy, GroupId(created.group_id.unwrap()))
}

fn sqlite(rt: &Runtime, durability: Durability) -> (SqliteStore, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "teamtalk-bench-{}-{durability:?}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut config = SqliteConfig::new(dir.join("bench.db"));
    config.durability = durability;
    (rt.block_on(SqliteStore::open(&config)).unwrap(), dir)
}

fn bench_backend<S: Store + 'static>(c: &mut Criterion, rt: &Runtime, name: &str, store: S) {
    let (proxy, group_id) = rt.block_on(setup(store));

    let mut g = c.benchmark_group("send_single");
    g.throughput(Throughput::Elements(1));
    g.bench_function(name, |b| {
        b.iter(|| {
            rt.block_on(proxy.send_message(text(UserId(1), 2, 1)))
                .unwrap()
                .unwrap()
        })
    });
    g.finish();

    for senders in CONCURRENCY {
        let mut g = c.benchmark_group(format!("send_single_{senders}_concurrent_senders"));
        g.throughput(Throughput::Elements(u64::from(MESSAGES)));
        g.sample_size(10);
        g.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    let mut tasks = Vec::new();
                    for s in 0..senders {
                        let proxy = proxy.clone();
                        tasks.push(tokio::spawn(async move {
                            for _ in 0..MESSAGES / senders {
                                // distinct pairs: sender s+1 to user s+201
                                proxy
                                    .send_message(text(UserId(s + 1), s + 201, 1))
                                    .await
                                    .unwrap();
                            }
                        }));
                    }
                    for task in tasks {
                        task.await.unwrap();
                    }
                })
            })
        });
        g.finish();
    }

    let mut g = c.benchmark_group("send_group_of_50");
    g.throughput(Throughput::Elements(1));
    g.bench_function(name, |b| {
        b.iter(|| {
            rt.block_on(proxy.send_message(text(UserId(3), group_id.0, 17)))
                .unwrap()
                .unwrap()
        })
    });
    g.finish();

    // User 2 now has unread messages from user 1, and unread group messages.
    let mut g = c.benchmark_group("unread_count");
    g.throughput(Throughput::Elements(1));
    g.bench_function(name, |b| {
        b.iter(|| {
            rt.block_on(proxy.unread_counts(message::ImUnreadMsgCntReq {
                user_id: 2,
                attach_data: None,
            }))
            .unwrap()
        })
    });
    g.finish();
}

/// Polls a future that completes without waiting (the memory store's), with a no-op waker:
/// no runtime in the measurement.
fn ready<T>(f: impl Future<Output = T>) -> T {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(value) => value,
        std::task::Poll::Pending => panic!("the memory store does not wait"),
    }
}

/// One store call (`users(&[1])`, a read by primary key) with static dispatch (`S`) and
/// through `Arc<dyn Store>`, on the memory store (the call alone) and on SQLite (a real
/// round trip to the database); and what the boxed future of an `#[async_trait]` method costs
/// by itself.
fn dispatch(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("store_call");
    g.bench_function("boxed_future/plain", |b| b.iter(|| ready(async { 1u32 })));
    g.bench_function("boxed_future/boxed", |b| {
        b.iter(|| {
            let boxed: Pin<Box<dyn Future<Output = u32> + Send>> = Box::pin(async { 1u32 });
            ready(boxed)
        })
    });

    let (memory, _) = rt.block_on(setup(Arc::new(MemoryStore::new())));
    let memory: Arc<MemoryStore> = memory.store().clone();
    let erased: Arc<dyn Store> = memory.clone();
    let ids = [UserId(1)];
    let direct: &MemoryStore = &memory;
    g.bench_function("memory/static", |b| {
        b.iter(|| ready(direct.users(&ids)).unwrap())
    });
    g.bench_function("memory/dyn_store", |b| {
        b.iter(|| ready(erased.users(&ids)).unwrap())
    });

    let (sqlite, dir) = sqlite(&rt, Durability::ProcessCrash);
    let (proxy, _) = rt.block_on(setup(Arc::new(sqlite)));
    let sqlite: Arc<SqliteStore> = proxy.store().clone();
    let erased: Arc<dyn Store> = sqlite.clone();
    let direct: &SqliteStore = &sqlite;
    g.bench_function("sqlite/static", |b| {
        b.iter(|| rt.block_on(direct.users(&ids)).unwrap())
    });
    g.bench_function("sqlite/dyn_store", |b| {
        b.iter(|| rt.block_on(erased.users(&ids)).unwrap())
    });
    g.finish();
    drop((proxy, erased, sqlite));
    let _ = std::fs::remove_dir_all(dir);
}

fn benches(c: &mut Criterion) {
    let rt = runtime();
    bench_backend(c, &rt, "memory", MemoryStore::new());
    let (store, dir) = sqlite(&rt, Durability::ProcessCrash);
    bench_backend(c, &rt, "sqlite", store);
    let _ = std::fs::remove_dir_all(dir);
    let (store, dir) = sqlite(&rt, Durability::PowerLoss);
    bench_backend(c, &rt, "sqlite_fsync", store);
    let _ = std::fs::remove_dir_all(dir);
}

criterion_group!(store_benches, dispatch, benches);
criterion_main!(store_benches);
