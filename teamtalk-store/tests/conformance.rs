//! The conformance kit ([`teamtalk_store::conformance`]) against each backend of this crate:
//! every check on a fresh store. MySQL + Redis run when `TEAMTALK_TEST_MYSQL_URL` and
//! `TEAMTALK_TEST_REDIS_URL` are set.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::{Arc, Mutex};

use teamtalk_store::conformance::run_all;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory() {
    run_all(|| async { teamtalk_store::MemoryStore::new() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite() {
    let dirs = Mutex::new(Vec::new());
    let dirs = &dirs;
    run_all(move || async move {
        let dir = TempDir::new("sqlite");
        let config = teamtalk_store::SqliteConfig::new(dir.0.join("teamtalk.db"));
        dirs.lock().unwrap().push(dir);
        teamtalk_store::SqliteStore::open(&config).await.unwrap()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_redis() {
    let guards = Mutex::new(Vec::new());
    if mysql(&guards).await.is_none() {
        return; // printed why it is skipped
    }
    let guards = &guards;
    run_all(move || async move { mysql(guards).await.unwrap() }).await;
}

/// Removes a test's scratch directory when dropped (also when the check panics).
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(backend: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("teamtalk-{backend}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh database and Redis key prefix on the servers named by `TEAMTALK_TEST_MYSQL_URL`
/// (a server URL without database, e.g. `mysql://root@127.0.0.1:3306`) and
/// `TEAMTALK_TEST_REDIS_URL`; both are removed when `guards` drops. `None` without them.
async fn mysql(guards: &Mutex<Vec<MysqlGuard>>) -> Option<teamtalk_store::MysqlRedisStore> {
    let (Ok(server), Ok(redis)) = (
        std::env::var("TEAMTALK_TEST_MYSQL_URL"),
        std::env::var("TEAMTALK_TEST_REDIS_URL"),
    ) else {
        println!("skipped: set TEAMTALK_TEST_MYSQL_URL and TEAMTALK_TEST_REDIS_URL to run the MySQL + Redis conformance checks");
        return None;
    };
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("tt_conformance_{}_{n}", std::process::id());
    let server = server.trim_end_matches('/').to_owned();
    let admin = sqlx::MySqlPool::connect(&server).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE `{name}` CHARACTER SET utf8mb4"
    )))
    .execute(&admin)
    .await
    .unwrap();
    admin.close().await;
    let mut config = teamtalk_store::MysqlRedisConfig::new(&format!("{server}/{name}"), &redis);
    config.key_prefix = format!("{name}:");
    config.max_connections = 8;
    config.msfs_url = Some(fake_msfs().await);
    let guard = MysqlGuard {
        server,
        name,
        config: config.clone(),
    };
    let store = teamtalk_store::MysqlRedisStore::connect(&config)
        .await
        .unwrap();
    guards.lock().unwrap().push(guard);
    store.bootstrap().await.unwrap();
    Some(store)
}

/// A stand-in msfs speaking the original protocol (docs/protocol.md § msfs): a multipart upload
/// answered with `{"error_code":0,…,"url":…}`, and a GET of that URL. Returns its base URL.
async fn fake_msfs() -> String {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
        haystack.windows(needle.len()).position(|w| w == needle)
    }
    fn answer(status: &str, body: &[u8]) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(body);
        out
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let files: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let files = files.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                let head_end = loop {
                    let n = stream.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = find(&buf, b"\r\n\r\n") {
                        break end;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                let header = |name: &str| {
                    head.lines().find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                    })
                };
                let length: usize = header("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                while buf.len() < head_end + 4 + length {
                    let n = stream.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let body = &buf[head_end + 4..head_end + 4 + length];
                let mut request = head.split_whitespace();
                let (method, path) = (request.next().unwrap_or(""), request.next().unwrap_or(""));
                let response = if method == "POST" {
                    let boundary = header("content-type")
                        .and_then(|v| v.split_once("boundary=").map(|(_, b)| b.to_owned()))
                        .unwrap();
                    let start = find(body, b"\r\n\r\n").unwrap() + 4;
                    let end = start
                        + find(&body[start..], format!("\r\n--{boundary}").as_bytes()).unwrap();
                    let mut files = files.lock().unwrap();
                    let name = format!("g0/000/000/{}_1.audio", files.len());
                    files.insert(format!("/{name}"), body[start..end].to_vec());
                    let json = format!(
                        r#"{{"error_code":0,"error_msg":"成功","path":"{name}","url":"http://{addr}/{name}"}}"#
                    );
                    answer("200 OK", json.as_bytes())
                } else {
                    match files.lock().unwrap().get(path) {
                        Some(data) => answer("200 OK", data),
                        None => answer("404 Not Found", b""),
                    }
                };
                let _ = stream.write_all(&response).await;
            });
        }
    });
    format!("http://{addr}/")
}

/// Drops a test's database and Redis keys (from its own thread and runtime, so it also works
/// while a failed test unwinds).
struct MysqlGuard {
    server: String,
    name: String,
    config: teamtalk_store::MysqlRedisConfig,
}

impl Drop for MysqlGuard {
    fn drop(&mut self) {
        let (server, name, config) = (self.server.clone(), self.name.clone(), self.config.clone());
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok(store) = teamtalk_store::MysqlRedisStore::connect(&config).await {
                    let _ = store.delete_prefixed_keys().await;
                }
                if let Ok(admin) = sqlx::MySqlPool::connect(&server).await {
                    let drop = format!("DROP DATABASE IF EXISTS `{name}`");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&admin).await;
                }
            });
        });
        let _ = cleanup.join();
    }
}
