//! The background task that owns the TCP connection: writes requests, reads answers and
//! events, sends heartbeats, fails late requests, and reconnects (discovery, login) after a
//! drop. The bookkeeping is `teamtalk_core::client::ClientSession`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::BytesMut;
use teamtalk_core::client::{ClientOutput, ClientSession};
use teamtalk_core::crypt::MessageKey;
use teamtalk_core::password::client_password;
use teamtalk_core::proto::{base_define::UserInfo, login};
use teamtalk_core::time::{Epoch, Machine};
use teamtalk_core::{AnyMessage, Pdu, PduDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info};

use crate::{discovery, ClientConfig, Error, Event, Target};

/// What the [`crate::Client`] handle asks the task to do.
pub(crate) enum Command {
    /// Send a request; the answer (or the failure) goes to `reply`. Requests without an
    /// answer are answered with `None` once written.
    Request {
        message: AnyMessage,
        reply: oneshot::Sender<Result<Option<AnyMessage>, Error>>,
    },
}

/// An established, logged-in connection.
pub(crate) struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    decoder: PduDecoder,
    session: ClientSession,
    epoch: Epoch,
}

impl Conn {
    async fn write(&mut self, pdu: &Pdu) -> Result<(), Error> {
        self.stream
            .write_all(&pdu.to_bytes())
            .await
            .map_err(|_| Error::Disconnected)
    }

    /// Reads until a frame is complete (or the connection closes).
    async fn read_frame(&mut self) -> Result<Pdu, Error> {
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(pdu)) => return Ok(pdu),
                Ok(None) => {}
                Err(error) => return Err(Error::Protocol(error.to_string())),
            }
            if self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(8192);
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return Err(Error::Disconnected),
                Ok(_) => {}
            }
        }
    }
}

/// Finds a msg_server, connects and logs in.
pub(crate) async fn establish(config: &ClientConfig) -> Result<(Conn, UserInfo), Error> {
    let addresses = match &config.target {
        Target::MsgServer(addr) => vec![addr.clone()],
        Target::LoginUrl(url) => {
            let found = discovery::discover(url, config.request_timeout).await?;
            if found.prior == found.backup {
                vec![found.prior]
            } else {
                vec![found.prior, found.backup]
            }
        }
    };
    let mut last = Error::Disconnected;
    for addr in &addresses {
        let connect =
            tokio::time::timeout(config.request_timeout, TcpStream::connect(addr.as_str()));
        match connect.await {
            Ok(Ok(stream)) => return login(stream, config).await,
            Ok(Err(error)) => last = Error::Io(error),
            Err(_) => last = Error::Timeout,
        }
    }
    Err(last)
}

async fn login(stream: TcpStream, config: &ClientConfig) -> Result<(Conn, UserInfo), Error> {
    let _ = stream.set_nodelay(true);
    let epoch = Epoch::start();
    let mut conn = Conn {
        stream,
        buf: BytesMut::new(),
        decoder: PduDecoder::default(),
        session: ClientSession::new(
            epoch.now(),
            millis(config.request_timeout),
            millis(config.heartbeat),
        ),
        epoch,
    };
    let request: AnyMessage = login::ImLoginReq {
        user_name: config.user.clone(),
        password: client_password(&config.password),
        online_status: 1,
        client_type: config.client_type.to_wire(),
        client_version: Some(concat!("teamtalk-rs/", env!("CARGO_PKG_VERSION")).to_owned()),
    }
    .into();
    let seq = conn
        .session
        .handle_request(conn.epoch.now(), &request)
        .map_err(|_| Error::TooManyPending)?;
    while let Some(output) = conn.session.poll_output() {
        if let ClientOutput::Transmit(pdu) = output {
            conn.write(&pdu).await?;
        }
    }
    let answer = tokio::time::timeout(config.request_timeout, async {
        loop {
            let pdu = conn.read_frame().await?;
            conn.session.handle_frame(conn.epoch.now(), &pdu);
            // Before the login answer only the answer matters (nothing else is pending, and
            // the server sends no events to a connection that is not logged in).
            while let Some(output) = conn.session.poll_output() {
                if let ClientOutput::Answer(s, AnyMessage::LoginRes(res)) = output {
                    if s == seq {
                        return Ok::<_, Error>(res);
                    }
                }
            }
        }
    })
    .await
    .map_err(|_| Error::Timeout)??;
    if answer.result_code != 0 {
        return Err(Error::Refused {
            code: answer.result_code,
            reason: answer.result_string.unwrap_or_default(),
        });
    }
    let me = answer
        .user_info
        .ok_or_else(|| Error::Protocol("login answer without user info".into()))?;
    Ok((conn, me))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

type Waiters = HashMap<u16, oneshot::Sender<Result<Option<AnyMessage>, Error>>>;

/// Runs the connection until the [`crate::Client`] handles are dropped, the session is logged
/// out or kicked, or reconnecting is off and the connection dropped.
pub(crate) async fn run(
    mut conn: Conn,
    config: ClientConfig,
    key: MessageKey,
    me: Arc<Mutex<UserInfo>>,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
) {
    let mut backoff = config.reconnect_delay;
    loop {
        let end = serve(&mut conn, &key, &mut commands, &events).await;
        match end {
            End::Dropped => return,
            End::Final(reason) => {
                let _ = events.send(Event::Closed(reason)).await;
                return;
            }
            End::Disconnected => {
                let _ = events.send(Event::Disconnected).await;
                if !config.reconnect {
                    return;
                }
            }
        }
        // Reconnect: requests asked meanwhile fail at once.
        loop {
            let wait = tokio::time::sleep(backoff);
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    () = &mut wait => break,
                    command = commands.recv() => match command {
                        None => return,
                        Some(Command::Request { reply, .. }) => {
                            let _ = reply.send(Err(Error::Disconnected));
                        }
                    },
                }
            }
            match establish(&config).await {
                Ok((new_conn, info)) => {
                    info!(user = info.user_id, "reconnected");
                    *me.lock().unwrap_or_else(PoisonError::into_inner) = info;
                    conn = new_conn;
                    backoff = config.reconnect_delay;
                    let _ = events.send(Event::Reconnected).await;
                    break;
                }
                Err(error @ Error::Refused { code: 6, .. }) => {
                    // The credentials no longer work: retrying will not help.
                    let _ = events.send(Event::Closed(error.to_string())).await;
                    return;
                }
                Err(error) => {
                    debug!(%error, "reconnect failed");
                    backoff = (backoff * 2).min(config.max_reconnect_delay);
                }
            }
        }
    }
}

enum End {
    /// Every client handle is gone.
    Dropped,
    /// The connection dropped; reconnecting may help.
    Disconnected,
    /// The session ended for good (logout, kick), for this reason.
    Final(String),
}

async fn serve(
    conn: &mut Conn,
    key: &MessageKey,
    commands: &mut mpsc::Receiver<Command>,
    events: &mpsc::Sender<Event>,
) -> End {
    let mut waiters: Waiters = HashMap::new();
    let end = loop {
        let deadline = conn
            .session
            .poll_timeout()
            .map(|ms| Instant::from_std(conn.epoch.instant_at(ms)));
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            command = commands.recv() => {
                let Some(Command::Request { message, reply }) = command else { break End::Dropped };
                match conn.session.handle_request(conn.epoch.now(), &message) {
                    Ok(seq) => {
                        let expects_answer = teamtalk_core::client::answer_command(message.command()).is_some();
                        let reply = if expects_answer {
                            waiters.insert(seq, reply);
                            None
                        } else {
                            Some(reply)
                        };
                        let end = perform(conn, &mut waiters, key, events).await;
                        if let Some(reply) = reply {
                            let answer = match end {
                                Some(End::Disconnected) => Err(Error::Disconnected),
                                _ => Ok(None),
                            };
                            let _ = reply.send(answer);
                        }
                        if let Some(end) = end {
                            break end;
                        }
                    }
                    Err(_) => {
                        let _ = reply.send(Err(Error::TooManyPending));
                    }
                }
            }
            frame = conn.read_frame() => {
                let pdu = match frame {
                    Ok(pdu) => pdu,
                    Err(_) => break End::Disconnected,
                };
                conn.session.handle_frame(conn.epoch.now(), &pdu);
                if let Some(end) = perform(conn, &mut waiters, key, events).await {
                    break end;
                }
            }
            () = sleep => {
                conn.session.handle_timeout(conn.epoch.now());
                if let Some(end) = perform(conn, &mut waiters, key, events).await {
                    break end;
                }
            }
        }
    };
    // The connection is over: what the session still has, and every pending request, is
    // answered; nothing more is written.
    conn.session.handle_closed(conn.epoch.now());
    while let Some(output) = conn.session.poll_output() {
        match output {
            ClientOutput::Answer(seq, message) => {
                if let Some(waiter) = waiters.remove(&seq) {
                    let _ = waiter.send(Ok(Some(message)));
                }
            }
            ClientOutput::TimedOut(seq) => {
                if let Some(waiter) = waiters.remove(&seq) {
                    let _ = waiter.send(Err(Error::Timeout));
                }
            }
            ClientOutput::Failed(seq) => {
                if let Some(waiter) = waiters.remove(&seq) {
                    let _ = waiter.send(Err(Error::Disconnected));
                }
            }
            ClientOutput::Transmit(_) | ClientOutput::Event(_) => {}
        }
    }
    for (_, waiter) in waiters.drain() {
        let _ = waiter.send(Err(Error::Disconnected));
    }
    let _ = conn.stream.shutdown().await;
    end
}

/// Drains the session after an input: writes its frames, answers waiters, delivers events.
/// Returns how the connection ends when an output ends it (a failed write, a logout, a kick).
async fn perform(
    conn: &mut Conn,
    waiters: &mut Waiters,
    key: &MessageKey,
    events: &mpsc::Sender<Event>,
) -> Option<End> {
    while let Some(output) = conn.session.poll_output() {
        match output {
            ClientOutput::Transmit(pdu) => {
                if conn.write(&pdu).await.is_err() {
                    return Some(End::Disconnected);
                }
            }
            ClientOutput::Answer(seq, message) => {
                let logged_out = matches!(message, AnyMessage::LogoutRsp(_));
                if let Some(waiter) = waiters.remove(&seq) {
                    let _ = waiter.send(Ok(Some(message)));
                }
                if logged_out {
                    return Some(End::Final("logged out".into()));
                }
            }
            ClientOutput::Event(message) => {
                let event = Event::from_message(message, key);
                let kicked = matches!(event, Event::Kicked { .. });
                if events.send(event).await.is_err() {
                    // Nobody listens to events any more; keep serving requests.
                }
                if kicked {
                    // Another device took over; reconnecting would kick it back.
                    return Some(End::Final("kicked".into()));
                }
            }
            ClientOutput::TimedOut(seq) => {
                if let Some(waiter) = waiters.remove(&seq) {
                    let _ = waiter.send(Err(Error::Timeout));
                }
            }
            ClientOutput::Failed(seq) => {
                if let Some(waiter) = waiters.remove(&seq) {
                    let _ = waiter.send(Err(Error::Disconnected));
                }
            }
        }
    }
    None
}
