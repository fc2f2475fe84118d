//! Audio bytes in msfs, where the original db_proxy keeps them (docs/protocol.md § msfs,
//! docs/storage.md § Audio messages): a multipart upload (field `file`, file name `1.audio`)
//! answered with JSON `{"error_code":0,"url":…}`, and a plain GET of that URL to read them back.
//!
//! A deliberately small HTTP/1.1 client: one request per connection (`Connection: close`),
//! bodies with `Content-Length` or read to the end, bounded sizes and a timeout.

use std::time::Duration;

use bytes::Bytes;
use teamtalk_core::store::{StoreError, StoreResult};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// msfs refuses files above 5 MiB; answers are read up to this size.
const MAX_RESPONSE: usize = 6 << 20;
/// How long one upload or download may take (the original used 2 s for downloads).
const TIMEOUT: Duration = Duration::from_secs(5);
const BOUNDARY: &str = "teamtalk-rs-audio-boundary-7f3a";

fn fail(what: impl Into<String>) -> StoreError {
    StoreError::Inconsistent(format!("msfs: {}", what.into()))
}

/// An msfs server reached at a base URL such as `http://127.0.0.1:8700/`.
#[derive(Clone, Debug)]
pub(super) struct Msfs {
    base: url::Url,
}

impl Msfs {
    /// The msfs at `base` (a full `http://` URL; the original's scheme-less default pointed at
    /// port 80 by accident, Q-67).
    pub(super) fn new(base: &str) -> StoreResult<Msfs> {
        let base = url::Url::parse(base).map_err(|e| fail(format!("bad URL {base:?}: {e}")))?;
        if base.scheme() != "http" || base.host_str().is_none() {
            return Err(fail(format!(
                "only http:// URLs with a host are supported, got {base}"
            )));
        }
        Ok(Msfs { base })
    }

    /// Uploads audio bytes; returns the download URL msfs answered.
    pub(super) async fn upload(&self, audio: &[u8]) -> StoreResult<String> {
        let mut body = Vec::with_capacity(audio.len() + 256);
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"1.audio\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(audio);
        body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
        let content_type = format!("multipart/form-data; boundary={BOUNDARY}");
        let answer = self
            .request("POST", &self.base, Some((&content_type, &body)))
            .await?;
        let json: serde_json::Value = serde_json::from_slice(&answer)
            .map_err(|e| fail(format!("upload answer is not JSON: {e}")))?;
        let code = json.get("error_code").and_then(serde_json::Value::as_i64);
        match (code, json.get("url").and_then(serde_json::Value::as_str)) {
            (Some(0), Some(url)) if !url.is_empty() => Ok(url.to_owned()),
            _ => Err(fail(format!("upload refused: error_code {code:?}"))),
        }
    }

    /// Downloads `url`, which must hold exactly `size` bytes.
    pub(super) async fn download(&self, url: &str, size: usize) -> StoreResult<Bytes> {
        let url = url::Url::parse(url).map_err(|e| fail(format!("bad audio URL: {e}")))?;
        let body = self.request("GET", &url, None).await?;
        if body.len() != size {
            return Err(fail(format!(
                "audio of {} bytes, {size} expected",
                body.len()
            )));
        }
        Ok(Bytes::from(body))
    }

    /// One request on a fresh connection; the body of a 200 answer.
    async fn request(
        &self,
        method: &str,
        url: &url::Url,
        body: Option<(&str, &[u8])>,
    ) -> StoreResult<Vec<u8>> {
        tokio::time::timeout(TIMEOUT, self.exchange(method, url, body))
            .await
            .map_err(|_| fail("timed out"))?
    }

    async fn exchange(
        &self,
        method: &str,
        url: &url::Url,
        body: Option<(&str, &[u8])>,
    ) -> StoreResult<Vec<u8>> {
        let host = url.host_str().ok_or_else(|| fail("URL without host"))?;
        let port = url.port_or_known_default().unwrap_or(80);
        let mut stream = TcpStream::connect((host, port))
            .await
            .map_err(StoreError::backend)?;
        let mut head = format!(
            "{method} {} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n",
            url.path()
        );
        if let Some((content_type, body)) = body {
            head.push_str(&format!(
                "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        stream
            .write_all(head.as_bytes())
            .await
            .map_err(StoreError::backend)?;
        if let Some((_, body)) = body {
            stream.write_all(body).await.map_err(StoreError::backend)?;
        }
        let mut answer = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let n = stream.read(&mut chunk).await.map_err(StoreError::backend)?;
            if n == 0 {
                break;
            }
            answer.extend_from_slice(chunk.get(..n).unwrap_or_default());
            if answer.len() > MAX_RESPONSE {
                return Err(fail("answer too large"));
            }
            if let Some(body) = complete_body(&answer)? {
                return Ok(body);
            }
        }
        complete_body(&answer)?.map_or_else(|| parse_to_end(&answer), Ok)
    }
}

/// The body once the whole answer (headers + `Content-Length` bytes) arrived.
fn complete_body(answer: &[u8]) -> StoreResult<Option<Vec<u8>>> {
    let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(answer.get(..end).unwrap_or_default()).to_ascii_lowercase();
    check_status(&head)?;
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let body = answer.get(end + 4..).unwrap_or_default();
    Ok(match length {
        Some(n) if body.len() >= n => Some(body.get(..n).unwrap_or_default().to_vec()),
        _ => None,
    })
}

/// The body of an answer that ended with the connection (no `Content-Length`).
fn parse_to_end(answer: &[u8]) -> StoreResult<Vec<u8>> {
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| fail("incomplete answer"))?;
    let head = String::from_utf8_lossy(answer.get(..end).unwrap_or_default()).to_ascii_lowercase();
    check_status(&head)?;
    if head.contains("transfer-encoding: chunked") {
        return Err(fail("chunked answers are not supported"));
    }
    Ok(answer.get(end + 4..).unwrap_or_default().to_vec())
}

fn check_status(head: &str) -> StoreResult<()> {
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status == "200" {
        Ok(())
    } else {
        Err(fail(format!("HTTP status {status}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_parsed() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcEXTRA";
        assert_eq!(complete_body(ok).unwrap(), Some(b"abc".to_vec()));
        assert_eq!(
            complete_body(b"HTTP/1.1 200 OK\r\nContent-Le").unwrap(),
            None
        );
        assert!(complete_body(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n").is_err());
        assert_eq!(
            parse_to_end(b"HTTP/1.1 200 OK\r\n\r\nall of it").unwrap(),
            b"all of it".to_vec()
        );
        assert!(
            Msfs::new("127.0.0.1").is_err(),
            "scheme-less URLs are refused (Q-67)"
        );
        assert!(Msfs::new("http://127.0.0.1:8700/").is_ok());
    }
}
