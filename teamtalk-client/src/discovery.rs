//! Asking a login_server which msg_server to use: `GET /msg_server`, answered with the original
//! JSON (`code`, `priorIP`, `backupIP`, `port` as a string, docs/protocol.md § login_server).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Error;

/// Answers are tiny; anything longer is not a login_server.
const MAX_RESPONSE: u64 = 16 * 1024;

/// The msg_server addresses a login_server hands out, preferred first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discovered {
    /// `priorIP:port`.
    pub prior: String,
    /// `backupIP:port`.
    pub backup: String,
}

/// Asks the login_server at `url` (e.g. `http://127.0.0.1:8080`, with or without the
/// `/msg_server` path) for a msg_server.
pub async fn discover(url: &str, timeout: Duration) -> Result<Discovered, Error> {
    let fail = |what: String| Error::Discovery(format!("{url}: {what}"));
    let mut parsed = url::Url::parse(url).map_err(|e| fail(e.to_string()))?;
    if parsed.scheme() != "http" {
        return Err(fail("only http:// URLs are supported".into()));
    }
    if !parsed.path().starts_with("/msg_server") {
        parsed.set_path("/msg_server");
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| fail("no host".into()))?
        .to_owned();
    let port = parsed.port_or_known_default().unwrap_or(80);
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n",
        &parsed[url::Position::BeforePath..]
    );
    let exchange = async {
        let mut stream = TcpStream::connect((host.as_str(), port)).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.take(MAX_RESPONSE).read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| fail("timed out".into()))?
        .map_err(|e| fail(e.to_string()))?;
    parse_answer(&response).map_err(fail)
}

/// Reads the HTTP answer of a login_server.
fn parse_answer(response: &[u8]) -> Result<Discovered, String> {
    let text = String::from_utf8_lossy(response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| "not an HTTP answer".to_owned())?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(format!(
            "answered {}",
            head.lines().next().unwrap_or_default()
        ));
    }
    let json: serde_json::Value =
        serde_json::from_str(body.trim()).map_err(|e| format!("not JSON: {e}"))?;
    let code = json.get("code").and_then(serde_json::Value::as_u64);
    if code != Some(0) {
        let msg = json.get("msg").and_then(|m| m.as_str()).unwrap_or("");
        return Err(format!("no msg_server available (code {code:?}: {msg})"));
    }
    let field = |key: &str| {
        json.get(key)
            .and_then(|v| v.as_str())
            .ok_or_else(|| format!("answer without {key}"))
    };
    let port: u16 = field("port")?
        .parse()
        .map_err(|_| "port is not a number".to_owned())?;
    let prior = field("priorIP")?;
    let backup = field("backupIP").unwrap_or(prior);
    Ok(Discovered {
        prior: format!("{prior}:{port}"),
        backup: format!("{backup}:{port}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_original_answer() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Type:text/html;charset=utf-8\r\n\r\n{\n   \"backupIP\" : \"10.0.0.2\",\n   \"code\" : 0,\n   \"port\" : \"8000\",\n   \"priorIP\" : \"10.0.0.1\"\n}\n";
        assert_eq!(
            parse_answer(ok),
            Ok(Discovered {
                prior: "10.0.0.1:8000".into(),
                backup: "10.0.0.2:8000".into()
            })
        );
        let none = "HTTP/1.1 200 OK\r\n\r\n{\"code\":1,\"msg\":\"没有msg_server\"}";
        assert!(parse_answer(none.as_bytes())
            .unwrap_err()
            .contains("code Some(1)"));
        assert!(parse_answer(b"HTTP/1.1 404 Not Found\r\n\r\n").is_err());
        assert!(parse_answer(b"garbage").is_err());
        assert!(parse_answer(
            b"HTTP/1.1 200 OK\r\n\r\n{\"code\":0,\"port\":\"x\",\"priorIP\":\"a\"}"
        )
        .is_err());
    }
}
