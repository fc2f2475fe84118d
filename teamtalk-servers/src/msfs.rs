//! msfs: the HTTP blob store for images, avatars and audio (docs/protocol.md § msfs,
//! docs/storage.md § msfs files), with the original URL scheme and on-disk layout.
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
//!
//! Uploads are streamed: the file part is read as it arrives
//! ([`teamtalk_core::multipart::FilePartReader`]) into a temporary file in `BaseDir`, renamed
//! into place when complete and removed when the upload fails or the client goes away. The
//! bodies of all uploads in flight share a byte budget ([`MsfsConfig::upload_budget`]): an
//! upload that does not fit waits up to [`MsfsConfig::upload_wait`] for room, then gets
//! `503 Service Unavailable` (docs/deploy.md).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::limits::serve_http;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, HOST, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use teamtalk_core::multipart::{FilePartReader, MultipartError};
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::conf::{ConfError, ConfFile};
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
    /// Bytes that all uploads in flight may announce together (64 MiB; `UploadBudgetMB`).
    /// Each upload reserves its `Content-Length` (or [`MsfsConfig::max_body`] without one)
    /// while it is received; file data is streamed to disk, so memory stays far below this.
    pub upload_budget: usize,
    /// How long an upload waits for room in the budget before it is refused with 503
    /// (5 s; `UploadWaitSecs`).
    pub upload_wait: Duration,
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
            upload_budget: 64 << 20,
            upload_wait: Duration::from_secs(5),
        }
    }

    /// Applies the upload budget keys: in an `msfs.conf` `UploadBudgetMB` (MiB, at least 1)
    /// and `UploadWaitSecs`; `teamtalk serve` names them `msfs_upload_budget_mb` and
    /// `msfs_upload_wait_secs`.
    pub fn apply_upload_keys(
        &mut self,
        conf: &ConfFile,
        budget_key: &str,
        wait_key: &str,
    ) -> Result<(), ConfError> {
        const MIB: &str = "a number of MiB (1 or more)";
        if let Some(mib) = conf.parsed::<usize>(budget_key, MIB)? {
            if mib == 0 {
                return Err(ConfError::Invalid {
                    key: budget_key.to_owned(),
                    expected: MIB,
                });
            }
            self.upload_budget = mib.saturating_mul(1 << 20);
        }
        if let Some(secs) = conf.parsed::<u64>(wait_key, "a number of seconds")? {
            self.upload_wait = Duration::from_secs(secs);
        }
        Ok(())
    }
}

struct State {
    config: MsfsConfig,
    /// The original's `FileCnt`: decides the directory of the next file.
    count: AtomicU64,
    /// Makes names unique within a microsecond.
    serial: AtomicU64,
    /// The upload budget, one permit per byte.
    budget: Arc<Semaphore>,
}

const COUNT_FILE: &str = "FileCnt";
/// Largest read buffer of a connection (hyper's default is ~400 KiB). Upload bodies pass
/// through in pieces of at most this size, and every buffer on the way stays below glibc's
/// mmap threshold (128 KiB): larger ones, once freed, raise that threshold, after which a
/// burst of uploads leaves tens of MiB of RSS behind (docs/benchmarks.md).
const READ_BUFFER: usize = 64 * 1024;
/// Uploads being received live in `BaseDir` under `{TEMP_PREFIX}…{TEMP_SUFFIX}`.
const TEMP_PREFIX: &str = ".upload-";
const TEMP_SUFFIX: &str = ".part";

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
    remove_stale_uploads(&config.base_dir).await;
    info!(addr = ?listener.local_addrs(), base = %config.base_dir.display(), "msfs listening");
    let budget = Arc::new(Semaphore::new(
        config.upload_budget.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let state = Arc::new(State {
        config,
        count: AtomicU64::new(count),
        serial: AtomicU64::new(0),
        budget,
    });
    loop {
        let (stream, peer) = tokio::select! {
            accepted = link::accept(&listener) => accepted,
            _ = shutdown.wait() => break,
        };
        let timeouts = listener.http_timeouts();
        let mut builder = timeouts.builder();
        builder.keep_alive(true).max_buf_size(READ_BUFFER);
        let timeout = state.config.timeout;
        let state = state.clone();
        let answer = move |request| {
            let state = state.clone();
            async move { handle(&state, request).await }
        };
        tokio::spawn(serve_http(
            stream, peer, timeouts, builder, timeout, "msfs", answer,
        ));
    }
    save_count(&state).await;
    Ok(())
}

/// Removes the temporary files of uploads a previous run did not finish.
async fn remove_stale_uploads(base: &Path) {
    let Ok(mut entries) = tokio::fs::read_dir(base).await else {
        return;
    };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(TEMP_PREFIX) && name.ends_with(TEMP_SUFFIX) {
            debug!(file = %name, "removing an unfinished upload");
            let _ = tokio::fs::remove_file(entry.path()).await;
        }
    }
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

const TOO_LARGE: &str = "上传文件过大";
const MALFORMED: &str = "格式错误";

/// Why an upload is not stored.
enum Refusal {
    /// error_code 1: the body or the file is too large.
    TooLarge,
    /// error_code 2: not a multipart body with a usable file part.
    Malformed,
    /// The client went away or broke the body off: nobody to answer.
    Aborted,
    /// Our disk failed: 500.
    Storage(std::io::Error),
}

impl From<MultipartError> for Refusal {
    fn from(error: MultipartError) -> Refusal {
        match error {
            MultipartError::FileTooLarge { .. } => Refusal::TooLarge,
            _ => Refusal::Malformed,
        }
    }
}

/// An upload being written; the file is removed unless it was moved into place.
struct TempFile {
    path: PathBuf,
    file: tokio::fs::File,
    /// The name it gets in the store.
    name: String,
    kept: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

async fn upload(state: &State, request: Request<Incoming>) -> Response<Full<Bytes>> {
    if !token_ok(state, &request) {
        return status(StatusCode::UNAUTHORIZED);
    }
    let header = |name| {
        request
            .headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let host = header(HOST).unwrap_or("").to_owned();
    let declared: Option<u64> = header(CONTENT_LENGTH).and_then(|v| v.trim().parse().ok());
    let reader = header(CONTENT_TYPE)
        .and_then(|v| {
            v.split(';')
                .find_map(|p| p.trim().strip_prefix("boundary="))
        })
        .map(|b| b.trim_matches('"'))
        .and_then(|b| FilePartReader::new(b, state.config.max_file).ok());
    let Some(reader) = reader else {
        return json(2, MALFORMED, "", "");
    };
    let max_body = state.config.max_body;
    let mut body = request.into_body();
    if declared.is_some_and(|n| n > max_body as u64) {
        // Answered as before: after reading up to the limit, with nothing kept.
        drain(&mut body, max_body).await;
        return json(1, TOO_LARGE, "", "");
    }
    let need = declared
        .map_or(max_body, |n| usize::try_from(n).unwrap_or(max_body))
        .min(state.config.upload_budget);
    let need = u32::try_from(need).unwrap_or(u32::MAX);
    let permit = tokio::time::timeout(
        state.config.upload_wait,
        state.budget.clone().acquire_many_owned(need),
    )
    .await;
    let Ok(Ok(_permit)) = permit else {
        debug!(bytes = need, "msfs upload budget exhausted, upload refused");
        return busy();
    };
    match receive(state, &mut body, reader).await {
        Ok(temp) => match store(state, temp).await {
            Ok(path) => json(0, "成功", &path, &format!("http://{host}/{path}")),
            Err(error) => {
                warn!(%error, "msfs cannot store a file");
                status(StatusCode::INTERNAL_SERVER_ERROR)
            }
        },
        Err(Refusal::TooLarge) => json(1, TOO_LARGE, "", ""),
        Err(Refusal::Malformed) => json(2, MALFORMED, "", ""),
        Err(Refusal::Aborted) => {
            debug!("msfs upload broken off by the client");
            status(StatusCode::BAD_REQUEST)
        }
        Err(Refusal::Storage(error)) => {
            warn!(%error, "msfs cannot write an upload");
            status(StatusCode::INTERNAL_SERVER_ERROR)
        }
    }
}

/// 503 for an upload that found no room in the budget.
fn busy() -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(
        b"msfs: too many uploads in flight, retry later\n",
    )));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// Reads and drops the rest of a body, up to `limit` bytes in all.
async fn drain(body: &mut Incoming, limit: usize) {
    let mut read = 0usize;
    while read <= limit {
        match body.frame().await {
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, Bytes::len),
            _ => return,
        }
    }
}

/// Receives an upload body into a temporary file: the file part when it is complete and the
/// body ended within `max_body`.
async fn receive(
    state: &State,
    body: &mut Incoming,
    mut reader: FilePartReader,
) -> Result<TempFile, Refusal> {
    let max_body = state.config.max_body;
    let mut temp: Option<TempFile> = None;
    let mut received = 0usize;
    let mut file_bytes = Vec::new();
    let mut refusal = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Refusal::Aborted)?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        received = received.saturating_add(data.len());
        if received > max_body {
            return Err(Refusal::TooLarge);
        }
        if refusal.is_some() || reader.is_complete() {
            continue; // read to the end (the answer comes after the body), kept nowhere
        }
        file_bytes.clear();
        if let Err(error) = reader.feed(&data, &mut file_bytes) {
            refusal = Some(Refusal::from(error));
            temp = None;
            continue;
        }
        if temp.is_none() {
            if let Some(file_name) = reader.file_name() {
                let Some(name) = stored_name(state, file_name) else {
                    refusal = Some(Refusal::Malformed);
                    continue;
                };
                temp = Some(create_temp(state, name).await.map_err(Refusal::Storage)?);
            }
        }
        if let Some(temp) = &mut temp {
            temp.file
                .write_all(&file_bytes)
                .await
                .map_err(Refusal::Storage)?;
        }
    }
    if let Some(refusal) = refusal {
        return Err(refusal);
    }
    reader.finish()?;
    temp.ok_or(Refusal::Malformed)
}

async fn create_temp(state: &State, name: String) -> std::io::Result<TempFile> {
    let serial = state.serial.fetch_add(1, Ordering::Relaxed);
    let path = state.config.base_dir.join(format!(
        "{TEMP_PREFIX}{}-{serial}{TEMP_SUFFIX}",
        std::process::id()
    ));
    let file = tokio::fs::File::create(&path).await?;
    Ok(TempFile {
        path,
        file,
        name,
        kept: false,
    })
}

/// Moves a received upload into its directory; returns its `g0/NNN/MMM/NAME` path.
async fn store(state: &State, mut temp: TempFile) -> std::io::Result<String> {
    temp.file.flush().await?;
    let count = state.count.fetch_add(1, Ordering::Relaxed);
    let per_dir = state.config.files_per_dir.max(1);
    let dir1 = format!("{:03}", (count / per_dir) / 255 % 1000);
    let dir2 = format!("{:03}", (count % (per_dir * 255)) / per_dir);
    let dir = state.config.base_dir.join(&dir1).join(&dir2);
    tokio::fs::create_dir_all(&dir).await?;
    // Renamed when complete: a download never sees half a file.
    tokio::fs::rename(&temp.path, dir.join(&temp.name)).await?;
    temp.kept = true;
    if count % 100 == 99 {
        save_count(state).await;
    }
    Ok(format!("g0/{dir1}/{dir2}/{}", temp.name))
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

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
    fn upload_budget_keys() {
        let mut config = MsfsConfig::new("x");
        assert_eq!(
            (config.upload_budget, config.upload_wait),
            (64 << 20, Duration::from_secs(5))
        );
        let conf = ConfFile::parse("UploadBudgetMB=16\nUploadWaitSecs=0\n");
        config
            .apply_upload_keys(&conf, "UploadBudgetMB", "UploadWaitSecs")
            .unwrap();
        assert_eq!(
            (config.upload_budget, config.upload_wait),
            (16 << 20, Duration::ZERO)
        );
        for bad in [
            "UploadBudgetMB=0",
            "UploadBudgetMB=lots",
            "UploadWaitSecs=-1",
        ] {
            let err = config
                .apply_upload_keys(&ConfFile::parse(bad), "UploadBudgetMB", "UploadWaitSecs")
                .unwrap_err();
            assert!(
                err.to_string().contains(bad.split('=').next().unwrap()),
                "{err}"
            );
        }
    }
}
