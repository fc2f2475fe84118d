//! msfs over real sockets: upload, download, limits, traversal, the upload token.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::path::PathBuf;

use teamtalk_servers::msfs::{self, MsfsConfig};
use teamtalk_servers::shutdown;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn http(addr: SocketAddr, request: Vec<u8>) -> (String, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&request).await.unwrap();
    let mut response = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut response),
    );
    read.await.unwrap().unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    (head, response[split + 4..].to_vec())
}

fn upload_request(file_name: &str, data: &[u8], auth: Option<&str>) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(
        b"--BOUND\r\nContent-Disposition: form-data; name=\"file\"; filename=\"",
    );
    body.extend_from_slice(file_name.as_bytes());
    body.extend_from_slice(b"\"\r\nContent-Type: application/octet-stream\r\n\r\n");
    body.extend_from_slice(data);
    body.extend_from_slice(b"\r\n--BOUND--\r\n");
    let auth = auth
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let mut request = format!(
        "POST / HTTP/1.1\r\nHost: files.example:8700\r\nConnection: close\r\n{auth}\
         Content-Type: multipart/form-data; boundary=BOUND\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    request
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").into_bytes()
}

async fn start(token: Option<&str>) -> (SocketAddr, shutdown::ShutdownTrigger, PathBuf) {
    let name = if token.is_some() { "token" } else { "open" };
    start_with(name, |config| {
        config.upload_token = token.map(str::to_owned)
    })
    .await
}

async fn start_with(
    name: &str,
    configure: impl FnOnce(&mut MsfsConfig),
) -> (SocketAddr, shutdown::ShutdownTrigger, PathBuf) {
    let dir = std::env::temp_dir().join(format!("teamtalk-msfs-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = MsfsConfig::new(&dir);
    config.max_file = 64 * 1024;
    configure(&mut config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (trigger, shutdown) = shutdown::channel();
    tokio::spawn(msfs::run(config, listener, shutdown));
    (addr, trigger, dir)
}

/// The uploads being received (temporary files in the storage dir).
fn partial_uploads(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".part"))
                .collect()
        })
        .unwrap_or_default()
}

/// Every stored file (`NNN/MMM/NAME`) under the storage dir.
fn stored_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(next) = todo.pop() {
        for entry in std::fs::read_dir(&next).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else if next != dir {
                found.push(path);
            }
        }
    }
    found
}

/// Waits (generously) until `done` holds.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn answer_of(mut stream: TcpStream) -> (String, Vec<u8>) {
    let mut response = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut response),
    );
    let _ = read.await.unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(response.len());
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    (head, response.get(split + 4..).unwrap_or_default().to_vec())
}

#[tokio::test]
async fn upload_then_download_the_same_bytes() {
    let (addr, trigger, dir) = start(None).await;
    let image: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    let (head, body) = http(addr, upload_request("photo_640x480.PNG", &image, None)).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["error_code"], 0);
    let path = json["path"].as_str().unwrap();
    assert!(
        path.starts_with("g0/000/000/") && path.ends_with("_640x480.PNG"),
        "{path}"
    );
    assert_eq!(json["url"], format!("http://files.example:8700/{path}"));

    let (head, body) = http(addr, get(&format!("/{path}"))).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: image/png"),
        "{head}"
    );
    assert_eq!(body, image, "byte-identical");

    // Missing, traversal, other methods.
    assert!(http(addr, get("/g0/000/000/nothing.png"))
        .await
        .0
        .starts_with("HTTP/1.1 404"));
    for bad in [
        "/g0/../../etc/passwd",
        "/g0/000/000/../../../x",
        "/g0/000/%2e%2e/x",
        "/g0/000/000/.hidden",
    ] {
        let (head, _) = http(addr, get(bad)).await;
        assert!(head.starts_with("HTTP/1.1 400"), "{bad}: {head}");
    }
    let (head, _) = http(
        addr,
        b"DELETE /g0/000/000/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");

    // Limits and malformed uploads get the original error codes.
    let (_, body) = http(addr, upload_request("big.jpg", &vec![7u8; 70 * 1024], None)).await;
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (json["error_code"].as_u64(), json["error_msg"].as_str()),
        (Some(1), Some("上传文件过大"))
    );
    let (_, body) = http(addr, upload_request("no-extension", b"x", None)).await;
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["error_code"], 2);

    // The file counter survives a restart.
    trigger.trigger();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(
        std::fs::read_to_string(dir.join("FileCnt")).unwrap().trim(),
        "1"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn uploads_need_the_token_when_one_is_set() {
    let (addr, trigger, dir) = start(Some("s3cret")).await;
    let (head, _) = http(addr, upload_request("a.gif", b"GIF89a", None)).await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    let (head, _) = http(addr, upload_request("a.gif", b"GIF89a", Some("wrong"))).await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    let (_, body) = http(addr, upload_request("a.gif", b"GIF89a", Some("s3cret"))).await;
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["error_code"], 0);
    let (head, body) = http(addr, get(&format!("/{}", json["path"].as_str().unwrap()))).await;
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "downloads stay public: {head}"
    );
    assert_eq!(body, b"GIF89a");
    trigger.trigger();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn uploads_beyond_the_budget_are_refused_until_room_is_free() {
    let (addr, trigger, dir) = start_with("budget", |config| {
        config.upload_budget = 100 * 1024;
        config.upload_wait = std::time::Duration::from_millis(300);
    })
    .await;
    // A: 60 KiB announced, the head and a first piece sent, then held open.
    let first: Vec<u8> = (0..60 * 1024u32).map(|i| (i % 253) as u8).collect();
    let request = upload_request("held.png", &first, None);
    let (start, rest) = request.split_at(request.len() - 30 * 1024);
    let mut held = TcpStream::connect(addr).await.unwrap();
    held.write_all(start).await.unwrap();
    eventually("the held upload is streamed to a temporary file", || {
        partial_uploads(&dir).len() == 1
    })
    .await;

    // B: 50 KiB more do not fit in 100 KiB: after the wait, 503.
    let second = vec![9u8; 50 * 1024];
    let (head, _) = http(addr, upload_request("second.png", &second, None)).await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(head.to_ascii_lowercase().contains("retry-after"), "{head}");

    // A completes and is stored whole; then B fits.
    held.write_all(rest).await.unwrap();
    let (head, body) = answer_of(held).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["error_code"], 0);
    let (_, stored) = http(addr, get(&format!("/{}", json["path"].as_str().unwrap()))).await;
    assert_eq!(stored, first, "byte-identical after streaming");
    let (_, body) = http(addr, upload_request("second.png", &second, None)).await;
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["error_code"], 0, "room again once A is done");

    // A chunked body (no Content-Length) is streamed too.
    let whole = upload_request("chunked.gif", b"GIF89a chunked", None);
    let split = whole.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&whole[..split])
        .lines()
        .filter(|l| !l.starts_with("Content-Length"))
        .collect::<Vec<_>>()
        .join("\r\n");
    let mut request = format!("{head}\r\nTransfer-Encoding: chunked\r\n\r\n").into_bytes();
    for piece in whole[split + 4..].chunks(7) {
        request.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        request.extend_from_slice(piece);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let (_, body) = http(addr, request).await;
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["error_code"], 0, "{json}");
    let (_, stored) = http(addr, get(&format!("/{}", json["path"].as_str().unwrap()))).await;
    assert_eq!(stored, b"GIF89a chunked");
    assert!(partial_uploads(&dir).is_empty());
    trigger.trigger();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_aborted_upload_leaves_no_file_behind() {
    let (addr, trigger, dir) = start_with("abort", |_| {}).await;
    let data = vec![1u8; 60 * 1024];
    let request = upload_request("gone.jpg", &data, None);
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(&request[..request.len() / 2])
        .await
        .unwrap();
    eventually("the upload is being received", || {
        partial_uploads(&dir).len() == 1
    })
    .await;
    drop(stream);
    eventually("the temporary file is removed", || {
        partial_uploads(&dir).is_empty()
    })
    .await;
    assert!(stored_files(&dir).is_empty(), "{:?}", stored_files(&dir));

    // Refused uploads (too large, no usable name) keep nothing either.
    let (_, body) = http(addr, upload_request("big.jpg", &vec![7u8; 70 * 1024], None)).await;
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["error_code"], 1);
    assert!(partial_uploads(&dir).is_empty() && stored_files(&dir).is_empty());

    // A temporary file left by a crash is removed on start.
    trigger.trigger();
    std::fs::write(dir.join(".upload-1-2.part"), b"half").unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (trigger, shutdown) = shutdown::channel();
    tokio::spawn(msfs::run(MsfsConfig::new(&dir), listener, shutdown));
    eventually("the stale upload is removed", || {
        partial_uploads(&dir).is_empty()
    })
    .await;
    trigger.trigger();
    let _ = std::fs::remove_dir_all(&dir);
}
