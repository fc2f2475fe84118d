//! Lean client connections for load: connect (optionally from a given source address), log
//! in, then read and write raw frames. No per-request bookkeeping beyond what a mode needs.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use teamtalk_core::password::client_password;
use teamtalk_core::proto::login;
use teamtalk_core::{CommandId, Pdu, PduDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};

use crate::BenchError;

/// Where the deployment under test is.
#[derive(Clone, Debug)]
pub enum Target {
    /// A login_server (`http://host:port`): every connection asks it for a msg_server.
    LoginUrl(String),
    /// A msg_server (or the relay) directly.
    MsgServer(String),
}

impl Target {
    /// The msg_server address to connect to (asking the login_server when there is one).
    pub async fn resolve(&self) -> Result<SocketAddr, BenchError> {
        let addr = match self {
            Target::MsgServer(addr) => addr.clone(),
            Target::LoginUrl(url) => {
                teamtalk_client::discovery::discover(url, Duration::from_secs(10))
                    .await
                    .map_err(|e| BenchError::Setup(e.to_string()))?
                    .prior
            }
        };
        let mut found = tokio::net::lookup_host(addr.as_str())
            .await
            .map_err(|e| BenchError::Setup(format!("{addr}: {e}")))?;
        found
            .next()
            .ok_or_else(|| BenchError::Setup(format!("{addr}: no address")))
    }
}

/// Reads frames from one connection.
pub struct FrameReader {
    half: OwnedReadHalf,
    buf: BytesMut,
    decoder: PduDecoder,
}

impl FrameReader {
    /// The next frame; `None` when the connection closed.
    pub async fn next(&mut self) -> Result<Option<Pdu>, BenchError> {
        loop {
            if let Some(pdu) = self
                .decoder
                .decode(&mut self.buf)
                .map_err(|e| BenchError::Protocol(e.to_string()))?
            {
                return Ok(Some(pdu));
            }
            if self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(16 * 1024);
            }
            match self.half.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return Ok(None),
                Ok(_) => {}
            }
        }
    }
}

/// A logged-in connection, split for concurrent reading and writing.
pub struct Session {
    /// The user id the server assigned.
    pub user_id: u32,
    /// Incoming frames.
    pub reader: FrameReader,
    /// Outgoing frames.
    pub writer: OwnedWriteHalf,
}

impl Session {
    /// Writes one frame.
    pub async fn send(&mut self, frame: &[u8]) -> Result<(), BenchError> {
        self.writer
            .write_all(frame)
            .await
            .map_err(|e| BenchError::Protocol(format!("write: {e}")))
    }
}

/// Connects to `addr` (from `source` when given) and logs in as `user`.
pub async fn login(
    addr: SocketAddr,
    source: Option<IpAddr>,
    user: &str,
    password: &str,
    client_type: i32,
) -> Result<Session, BenchError> {
    let stream = match source {
        None => TcpStream::connect(addr).await,
        Some(ip) => {
            let socket = if ip.is_ipv4() {
                TcpSocket::new_v4()
            } else {
                TcpSocket::new_v6()
            }
            .map_err(|e| BenchError::Setup(e.to_string()))?;
            socket
                .bind(SocketAddr::new(ip, 0))
                .map_err(|e| BenchError::Setup(format!("bind {ip}: {e}")))?;
            socket.connect(addr).await
        }
    }
    .map_err(|e| BenchError::Setup(format!("connect {addr}: {e}")))?;
    let _ = stream.set_nodelay(true);
    let (half, mut writer) = stream.into_split();
    let request = login::ImLoginReq {
        user_name: user.to_owned(),
        password: client_password(password),
        online_status: 1,
        client_type,
        client_version: Some("teamtalk-bench".to_owned()),
    };
    writer
        .write_all(&Pdu::encode_message(&request, 1).to_bytes())
        .await
        .map_err(|e| BenchError::Setup(format!("login write: {e}")))?;
    let mut reader = FrameReader {
        half,
        buf: BytesMut::new(),
        decoder: PduDecoder::default(),
    };
    let answer = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match reader.next().await? {
                None => return Err(BenchError::Setup(format!("{user}: closed during login"))),
                Some(pdu) if pdu.command() == CommandId::LOGIN_RES_USERLOGIN => {
                    return pdu
                        .decode_body::<login::ImLoginRes>()
                        .map_err(|e| BenchError::Protocol(e.to_string()));
                }
                Some(_) => {}
            }
        }
    })
    .await
    .map_err(|_| BenchError::Setup(format!("{user}: no login answer")))??;
    if answer.result_code != 0 {
        return Err(BenchError::Setup(format!(
            "{user}: login refused ({}): {}",
            answer.result_code,
            answer.result_string.unwrap_or_default()
        )));
    }
    let user_id = answer.user_info.map_or(0, |u| u.user_id);
    Ok(Session {
        user_id,
        reader,
        writer,
    })
}

/// The body of a bench message: `run:pair:seq:sent_ns` (plain ASCII; servers relay it as
/// is). The run id keeps stragglers of an earlier run out of a later run's counts.
pub fn bench_body(run: u64, pair: u32, seq: u32, sent_ns: u64) -> Bytes {
    Bytes::from(format!("{run}:{pair}:{seq}:{sent_ns}"))
}

/// Reads a bench body of run `run` back; `None` for other bodies.
pub fn parse_body(run: u64, body: &[u8]) -> Option<(u32, u32, u64)> {
    let text = std::str::from_utf8(body).ok()?;
    let mut parts = text.split(':');
    if parts.next()?.parse::<u64>().ok()? != run {
        return None;
    }
    let pair = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    let sent = parts.next()?.parse().ok()?;
    Some((pair, seq, sent))
}

/// A fresh run id.
pub fn new_run_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.finish()
}
