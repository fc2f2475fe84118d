//! msfs: the HTTP blob store for images, avatars and audio (spec/servers.md §7.1, storage.md
//! §8), with the original URL scheme and on-disk layout.
//!
//! - `POST` (any path) with a `multipart/form-data` body: the first part with a file name is
//!   stored as `{base}/{NNN}/{MMM}/{usec}_{n}[_{W}x{H}].{ext}` and answered with
//!   `{"error_code":0,"error_msg":"成功","path":"g0/NNN/MMM/…","url":"http://{Host}/g0/NNN/MMM/…"}`;
//!   too large → `error_code` 1 ("上传文件过大"), malformed → 2 ("格式错误").
//! - `GET /g0/NNN/MMM/NAME`: the file, `image/<ext>` for jpg/jpeg/png/gif, otherwise
//!   `multipart/form-data` (as the original); 404 when missing. Paths that are not exactly
//!   `g0/3 digits/3 digits/plain name` are refused (no traversal, Q-12).
//! - Optional upload token (the original had none, Q-12): uploads must then carry
//!   `Authorization: Bearer TOKEN` (or `?token=TOKEN`); downloads stay public, as clients
//!   fetch images by URL.
//! - Other methods: 403.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::limits::IdleWatch;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response, StatusCode};
use tracing::{debug, info, warn};

use crate::link::{self, Listeners};
use crate::shutdown::Shutdown;

/// Settings of msfs.
#[derive(Clone, Debug)]
pub struct MsfsConfig {
    /// Where files live (`BaseDir`).
    pub base_dir: PathBuf,
    /// Files per directory (`FilesPerDir`, 30000).
    pub files_per_dir: u64,
    /// Largest stored file (5 MiB).
    pub max_file: usize,
    /// Largest request body (10 MiB).
    pub max_body: usize,
    /// When set, uploads need this token.
    pub upload_token: Option<String>,
    /// Idle HTTP connections are closed after this long (30 s).
    pub timeout: Duration,
}

impl MsfsConfig {
    /// Defaults for files under `base_dir`.
    pub fn new(base_dir: impl Into<PathBuf>) -> MsfsConfig {
        MsfsConfig {
            base_dir: base_dir.into(),
            files_per_dir: 30_000,
            max_file: 5 << 20,
            max_body: 10 << 20,
            upload_token: None,
            timeout: Duration::from_secs(30),
        }
    }
}

struct State {
    config: MsfsConfig,
    /// The original's `FileCnt`: decides the directory of the next file.
    count: AtomicU64,
    /// Makes names unique within a microsecond.
    serial: AtomicU64,
}

const COUNT_FILE: &str = "FileCnt";

/// Serves msfs on `listener` until `shutdown`; the file counter is saved on the way out.
pub async fn run(
    config: MsfsConfig,
    listener: impl Into<Listeners>,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    let listener: Listeners = listener.into();
    tokio::fs::create_dir_all(&config.base_dir).await?;
    let count = tokio::fs::read_to_string(config.base_dir.join(COUNT_FILE))
        .await
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    info!(addr = ?listener.local_addrs(), base = %config.base_dir.display(), "msfs listening");
    let state = Arc::new(State {
        config,
        count: AtomicU64::new(count),
        serial: AtomicU64::new(0),
    });
    loop {
        let (stream, peer) = tokio::select! {
            accepted = link::accept(&listener) => accepted,
            _ = shutdown.wait() => break,
        };
        let state = state.clone();
        let timeouts = listener.http_timeouts();
        tokio::spawn(async move {
            let timeout = state.config.timeout;
            let (io, idle) = IdleWatch::new(stream, &timeouts);
            let watch = idle.clone();
            let service = hyper::service::service_fn(move |request| {
                let state = state.clone();
                let busy = watch.busy();
                async move {
                    let answer = handle(&state, request).await;
                    drop(busy);
                    Ok::<_, Infallible>(answer)
                }
            });
            let connection = idle.run(
                timeouts
                    .builder()
                    .keep_alive(true)
                    .serve_connection(io, service),
            );
            match tokio::time::timeout(timeout, connection).await {
                Ok(Some(Ok(()))) => {}
                Ok(Some(Err(error))) => debug!(%peer, %error, "msfs connection failed"),
                Ok(None) | Err(_) => debug!(%peer, "msfs connection idle, closed"),
            }
        });
    }
    save_count(&state).await;
    Ok(())
}

async fn save_count(state: &State) {
    let count = state.count.load(Ordering::Relaxed).to_string();
    if let Err(error) = tokio::fs::write(state.config.base_dir.join(COUNT_FILE), count).await {
        warn!(%error, "cannot save the file counter");
    }
}

fn json(error_code: u32, error_msg: &str, path: &str, url: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({
        "error_code": error_code,
        "error_msg": error_msg,
        "path": path,
        "url": url,
    })
    .to_string();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html;charset=utf-8"),
    );
    response
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = code;
    response
}

async fn handle(state: &State, request: Request<Incoming>) -> Response<Full<Bytes>> {
    match *request.method() {
        Method::GET | Method::HEAD => download(state, request.uri().path()).await,
        Method::POST => upload(state, request).await,
        _ => status(StatusCode::FORBIDDEN),
    }
}

/// `NNN/MMM/NAME` of a `/g0/NNN/MMM/NAME` URL, `None` for anything else.
fn stored_path(url_path: &str) -> Option<(String, String, String)> {
    let rest = url_path.strip_prefix('/')?;
    let mut parts = rest.split('/');
    let (_group, dir1, dir2, name) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let three_digits = |s: &str| s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit());
    let plain_name = !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    (three_digits(dir1) && three_digits(dir2) && plain_name)
        .then(|| (dir1.to_owned(), dir2.to_owned(), name.to_owned()))
}

async fn download(state: &State, url_path: &str) -> Response<Full<Bytes>> {
    let Some((dir1, dir2, name)) = stored_path(url_path) else {
        return status(StatusCode::BAD_REQUEST);
    };
    let path = state.config.base_dir.join(&dir1).join(&dir2).join(&name);
    match tokio::fs::read(&path).await {
        Ok(bytes) => {
            let ext = name
                .rsplit_once('.')
                .map(|(_, e)| e.to_ascii_lowercase())
                .unwrap_or_default();
            let content_type = match ext.as_str() {
                "jpg" | "jpeg" | "png" | "gif" => format!("image/{ext}"),
                _ => "multipart/form-data".to_owned(),
            };
            let mut response = Response::new(Full::new(Bytes::from(bytes)));
            if let Ok(value) = HeaderValue::from_str(&content_type) {
                response.headers_mut().insert(CONTENT_TYPE, value);
            }
            response
        }
        Err(_) => status(StatusCode::NOT_FOUND),
    }
}

fn token_ok(state: &State, request: &Request<Incoming>) -> bool {
    let Some(expected) = &state.config.upload_token else {
        return true;
    };
    let bearer = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let query = request
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")));
    bearer
        .or(query)
        .is_some_and(|given| constant_time_eq(given.as_bytes(), expected.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn upload(state: &State, request: Request<Incoming>) -> Response<Full<Bytes>> {
    const TOO_LARGE: &str = "上传文件过大";
    const MALFORMED: &str = "格式错误";
    if !token_ok(state, &request) {
        return status(StatusCode::UNAUTHORIZED);
    }
    let host = request
        .headers()
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let boundary = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(';')
                .find_map(|p| p.trim().strip_prefix("boundary="))
        })
        .map(|b| b.trim_matches('"').to_owned());
    let Some(boundary) = boundary.filter(|b| !b.is_empty()) else {
        return json(2, MALFORMED, "", "");
    };
    let body = match Limited::new(request.into_body(), state.config.max_body)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            let too_large = error
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            return if too_large {
                json(1, TOO_LARGE, "", "")
            } else {
                json(2, MALFORMED, "", "")
            };
        }
    };
    let Some((file_name, data)) = first_file_part(&body, &boundary) else {
        return json(2, MALFORMED, "", "");
    };
    if data.len() > state.config.max_file {
        return json(1, TOO_LARGE, "", "");
    }
    let Some(name) = stored_name(state, &file_name) else {
        return json(2, MALFORMED, "", "");
    };
    let count = state.count.fetch_add(1, Ordering::Relaxed);
    let per_dir = state.config.files_per_dir.max(1);
    let dir1 = format!("{:03}", (count / per_dir) / 255 % 1000);
    let dir2 = format!("{:03}", (count % (per_dir * 255)) / per_dir);
    let dir = state.config.base_dir.join(&dir1).join(&dir2);
    if let Err(error) = write_file(&dir, &name, data).await {
        warn!(%error, "msfs cannot store a file");
        return status(StatusCode::INTERNAL_SERVER_ERROR);
    }
    if count % 100 == 99 {
        save_count(state).await;
    }
    let path = format!("g0/{dir1}/{dir2}/{name}");
    json(0, "成功", &path, &format!("http://{host}/{path}"))
}

async fn write_file(dir: &Path, name: &str, data: &[u8]) -> std::io::Result<()> {
    tokio::fs::create_dir_all(dir).await?;
    // Written under a temporary name and renamed: a download never sees half a file.
    let tmp = dir.join(format!(".{name}.part"));
    tokio::fs::write(&tmp, data).await?;
    tokio::fs::rename(&tmp, dir.join(name)).await
}

/// `{usec}_{n}[_{W}x{H}].{ext}` for an uploaded file name.
fn stored_name(state: &State, file_name: &str) -> Option<String> {
    let (stem, ext) = file_name.rsplit_once('.')?;
    if ext.is_empty() || ext.len() > 15 || !ext.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let size = stem.rsplit_once('_').and_then(|(_, wh)| {
        let (w, h) = wh.split_once('x')?;
        let digits =
            |s: &str| !s.is_empty() && s.len() <= 6 && s.bytes().all(|b| b.is_ascii_digit());
        (digits(w) && digits(h)).then(|| format!("_{w}x{h}"))
    });
    let usec = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    let serial = state.serial.fetch_add(1, Ordering::Relaxed);
    Some(format!("{usec}_{serial}{}.{ext}", size.unwrap_or_default()))
}

/// The file name and content of the first part of a multipart body that has a file name.
fn first_file_part<'a>(body: &'a [u8], boundary: &str) -> Option<(String, &'a [u8])> {
    let delimiter = format!("--{boundary}");
    let mut rest = body;
    loop {
        let start = find(rest, delimiter.as_bytes())? + delimiter.len();
        rest = rest.get(start..)?;
        if rest.starts_with(b"--") {
            return None; // the closing delimiter: no file part
        }
        let head_end = find(rest, b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(rest.get(..head_end)?).into_owned();
        let content = rest.get(head_end + 4..)?;
        let end = find(content, format!("\r\n{delimiter}").as_bytes())?;
        let file_name = head.lines().find_map(|line| {
            let lower = line.to_ascii_lowercase();
            if !lower.starts_with("content-disposition:") {
                return None;
            }
            let at = lower.find("filename=\"")? + "filename=\"".len();
            let value = line.get(at..)?;
            Some(value.get(..value.find('"')?)?.to_owned())
        });
        if let Some(file_name) = file_name {
            // Only the last path component of what the client called the file.
            let file_name = file_name
                .rsplit(['/', '\\'])
                .next()
                .unwrap_or_default()
                .to_owned();
            return Some((file_name, content.get(..end)?));
        }
        rest = content.get(end..)?;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_stored_paths_are_served() {
        assert_eq!(
            stored_path("/g0/000/001/123_4_10x20.png"),
            Some(("000".into(), "001".into(), "123_4_10x20.png".into()))
        );
        for bad in [
            "/g0/000/001/../x",
            "/g0/../../etc/passwd",
            "/g0/00/001/a.png",
            "/g0/000/001/.hidden",
            "/g0/000/001/a/b",
            "/x",
        ] {
            assert_eq!(stored_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn multipart_first_file_part() {
        let body = b"--XY\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nvalue\r\n--XY\r\nContent-Disposition: form-data; name=\"file\"; filename=\"dir/pic_640x480.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n\x00\x01\r\nbytes\r\n--XY--\r\n";
        let (name, data) = first_file_part(body, "XY").unwrap();
        assert_eq!(name, "pic_640x480.jpg");
        assert_eq!(data, b"\x00\x01\r\nbytes");
        assert!(first_file_part(b"--XY--\r\n", "XY").is_none());
        assert!(first_file_part(b"garbage", "XY").is_none());
    }
}
