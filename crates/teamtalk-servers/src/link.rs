//! Framed TCP links: one task per connection that reads frames with the core's decoder,
//! writes what the owner queues, and keeps heartbeats and idle timeouts (spec/wire.md §5).
//!
//! A server owns its links through a hub task: every link reports [`LinkEvent`]s on one
//! channel (bounded: a busy hub slows the readers down, which fills TCP windows — real
//! backpressure), and the hub answers through each link's [`Outbox`] (bounded too: a peer that
//! does not read is disconnected instead of growing memory). [`dial`] keeps an outgoing link
//! up with the original's reconnect backoff.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use teamtalk_core::limits::ConnGate;
use teamtalk_core::link::{LinkAction, LinkTimer, SERVER_HEARTBEAT_INTERVAL_MS, SERVER_TIMEOUT_MS};
use teamtalk_core::pdu::DEFAULT_MAX_FRAME_LEN;
use teamtalk_core::proto::other::ImHeartBeat;
use teamtalk_core::{CommandId, Pdu, PduDecoder};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn, Instrument};

use crate::limits::{out_of_descriptors, Reserve, WarnEvery};
pub use crate::limits::{Conn, HttpTimeouts, ListenConfig};
use crate::shutdown::Shutdown;

/// How a link behaves.
#[derive(Clone, Debug)]
pub struct LinkConfig {
    /// Largest accepted frame; a longer (or shorter than 16 bytes) length field closes the
    /// link. Default 1 MiB.
    pub max_frame_len: u32,
    /// Frames queued for sending; a full queue means the peer does not keep up. Default 1024.
    pub outbox: usize,
    /// Send `CID_OTHER_HEARTBEAT` after this long without sending; `None`: never (client
    /// links). Default 5 s.
    pub heartbeat: Option<Duration>,
    /// Close after this long without receiving; `None`: never (the owner decides, as for
    /// client links whose timeout depends on the device). Default 30 s.
    pub timeout: Option<Duration>,
    /// Whether received heartbeats are reported to the owner (client links) or swallowed
    /// (server links). Default: swallowed.
    pub report_heartbeats: bool,
    /// On shutdown, stop reading but keep sending until the owner drops the outbox (the
    /// owner finishes what it was asked, db_proxy-style), instead of flushing and closing at
    /// once. Default false.
    pub drain_on_shutdown: bool,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            outbox: 1024,
            heartbeat: Some(Duration::from_millis(SERVER_HEARTBEAT_INTERVAL_MS)),
            timeout: Some(Duration::from_millis(SERVER_TIMEOUT_MS)),
            report_heartbeats: false,
            drain_on_shutdown: false,
        }
    }
}

impl LinkConfig {
    /// A link to a client: no heartbeats of our own, no timeout (the owner applies the
    /// device's), heartbeats reported; a smaller outbox.
    pub fn client() -> LinkConfig {
        LinkConfig {
            outbox: 256,
            heartbeat: None,
            timeout: None,
            report_heartbeats: true,
            ..LinkConfig::default()
        }
    }
}

/// What a link tells its owner.
#[derive(Debug)]
pub enum LinkEvent<Id> {
    /// The link is up; send through the outbox.
    Opened(Id, Outbox),
    /// A frame arrived.
    Frame(Id, Pdu),
    /// The link is gone (peer closed, error, timeout, or the outbox was dropped).
    Closed(Id),
}

/// The frames waiting for a link's writer. Unlike a channel it allocates nothing while
/// empty, which is what an idle connection mostly is (memory per idle connection is a
/// published benchmark).
struct Queue {
    state: std::sync::Mutex<QueueState>,
    /// Wakes the link: frames arrived, or the last outbox went away.
    ready: tokio::sync::Notify,
    /// Wakes senders waiting for room.
    room: tokio::sync::Notify,
    capacity: usize,
}

#[derive(Default)]
struct QueueState {
    frames: std::collections::VecDeque<Bytes>,
    /// Live [`Outbox`] clones.
    owners: usize,
    /// The link task ended.
    closed: bool,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Moves up to `max` frames into `batch`; `false` when the queue is empty and every outbox
    /// is gone (the owner closed the link).
    async fn next_batch(&self, batch: &mut Vec<Bytes>, max: usize) -> bool {
        loop {
            let ready = self.ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            {
                let mut state = self.lock();
                if !state.frames.is_empty() {
                    let n = state.frames.len().min(max);
                    batch.extend(state.frames.drain(..n));
                    if state.frames.is_empty() && state.frames.capacity() > 16 {
                        state.frames = std::collections::VecDeque::new(); // give a burst back
                    }
                    drop(state);
                    self.room.notify_waiters();
                    return true;
                }
                if state.owners == 0 {
                    return false;
                }
            }
            ready.await;
        }
    }

    fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.frames.clear();
        drop(state);
        self.room.notify_waiters();
    }
}

/// The sending side of a link. Dropping every clone closes the link after the queued frames
/// are written.
pub struct Outbox(Arc<Queue>);

impl Clone for Outbox {
    fn clone(&self) -> Outbox {
        self.0.lock().owners += 1;
        Outbox(self.0.clone())
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let last = {
            let mut state = self.0.lock();
            state.owners = state.owners.saturating_sub(1);
            state.owners == 0
        };
        if last {
            self.0.ready.notify_one();
        }
    }
}

impl fmt::Debug for Outbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbox")
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// Why a frame was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The queue is full: the peer does not read fast enough.
    #[error("the peer's send queue is full")]
    Full,
    /// The link is closed.
    #[error("the link is closed")]
    Closed,
}

impl Outbox {
    /// Queues an encoded frame without waiting.
    pub fn send(&self, frame: Bytes) -> Result<(), SendError> {
        let mut state = self.0.lock();
        if state.closed {
            return Err(SendError::Closed);
        }
        if state.frames.len() >= self.0.capacity {
            return Err(SendError::Full);
        }
        state.frames.push_back(frame);
        drop(state);
        self.0.ready.notify_one();
        Ok(())
    }

    /// Queues a PDU without waiting.
    pub fn send_pdu(&self, pdu: &Pdu) -> Result<(), SendError> {
        self.send(pdu.to_bytes())
    }

    /// Queues an encoded frame, waiting for room.
    pub async fn send_wait(&self, frame: Bytes) -> Result<(), SendError> {
        loop {
            let room = self.0.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.send(frame.clone()) {
                Err(SendError::Full) => room.await,
                other => return other,
            }
        }
    }

    /// Whether the link is gone.
    pub fn is_closed(&self) -> bool {
        self.0.lock().closed
    }
}

/// Serves `stream` as link `id` until it closes, reporting to `events`. Reports
/// [`LinkEvent::Opened`] first and [`LinkEvent::Closed`] last. Returns when the link is
/// closed; `shutdown` closes it after flushing the queued frames.
pub async fn serve<Id: Copy + Send + fmt::Debug + 'static>(
    stream: TcpStream,
    id: Id,
    config: LinkConfig,
    events: mpsc::Sender<LinkEvent<Id>>,
    mut shutdown: Shutdown,
) {
    let _ = stream.set_nodelay(true);
    let queue = Arc::new(Queue {
        state: std::sync::Mutex::new(QueueState {
            owners: 1,
            ..QueueState::default()
        }),
        ready: tokio::sync::Notify::new(),
        room: tokio::sync::Notify::new(),
        capacity: config.outbox.max(1),
    });
    if events
        .send(LinkEvent::Opened(id, Outbox(queue.clone())))
        .await
        .is_err()
    {
        return;
    }
    let (reader, mut writer) = stream.into_split();
    let started = Instant::now();
    let now_ms = || u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let never = u64::MAX / 4;
    let mut timer = LinkTimer::with_intervals(
        0,
        config.heartbeat.map_or(never, millis),
        config.timeout.map_or(never, millis),
    );
    let mut decoder = PduDecoder::new(config.max_frame_len);
    let mut buf = BytesMut::new();
    let mut batch = Vec::new();
    let mut out = BytesMut::new();
    let mut draining = false;
    'link: loop {
        let deadline = started + Duration::from_millis(timer.next_deadline());
        tokio::select! {
            ready = reader.readable(), if !draining => match ready.and_then(|()| read_into(&reader, &mut buf)) {
                Ok(0) => break 'link,
                Ok(_) => {
                    timer.received(now_ms());
                    loop {
                        match decoder.decode(&mut buf) {
                            Ok(Some(pdu)) => {
                                if pdu.command() == CommandId::OTHER_HEARTBEAT && !config.report_heartbeats {
                                    continue;
                                }
                                if events.send(LinkEvent::Frame(id, pdu)).await.is_err() {
                                    break 'link;
                                }
                            }
                            Ok(None) => break,
                            Err(error) => {
                                info!(%error, "framing error, closing the link");
                                break 'link;
                            }
                        }
                    }
                    if buf.is_empty() {
                        // An idle connection keeps no buffer (frames handed out keep theirs).
                        buf = BytesMut::new();
                    }
                }
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(error) => {
                    debug!(%error, "read failed");
                    break 'link;
                }
            },
            more = queue.next_batch(&mut batch, 64) => {
                if !more {
                    break 'link; // the owner dropped the outbox
                }
                for frame in batch.drain(..) {
                    out.extend_from_slice(&frame);
                }
                if let Err(error) = write(&mut writer, &out).await {
                    debug!(%error, "write failed");
                    break 'link;
                }
                out = BytesMut::new();
                timer.sent(now_ms());
            },
            _ = tokio::time::sleep_until(deadline) => match timer.poll(now_ms()) {
                Some(LinkAction::SendHeartbeat) => {
                    let beat = Pdu::encode_message(&ImHeartBeat {}, 0).to_bytes();
                    if write(&mut writer, &beat).await.is_err() {
                        break 'link;
                    }
                }
                Some(LinkAction::Close) => {
                    info!("link silent for too long, closing");
                    break 'link;
                }
                None => {}
            },
            _ = shutdown.wait(), if !draining => {
                if config.drain_on_shutdown {
                    draining = true; // no more reading; the owner closes the outbox when done
                    continue 'link;
                }
                // Flush what is queued, then close.
                let pending: Vec<Bytes> = queue.lock().frames.drain(..).collect();
                for frame in pending {
                    if write(&mut writer, &frame).await.is_err() {
                        break;
                    }
                }
                break 'link;
            }
        }
    }
    queue.close();
    let _ = writer.shutdown().await;
    let _ = events.send(LinkEvent::Closed(id)).await;
}

/// Reads what the socket has into `buf` through a stack buffer, so that idle connections
/// hold no read buffer of their own. `Ok(0)`: the peer closed.
fn read_into(
    reader: &tokio::net::tcp::OwnedReadHalf,
    buf: &mut BytesMut,
) -> std::io::Result<usize> {
    let mut scratch = [0u8; 8192];
    let mut total = 0;
    loop {
        match reader.try_read(&mut scratch) {
            Ok(0) if total == 0 => return Ok(0),
            Ok(0) => return Ok(total),
            Ok(n) => {
                buf.extend_from_slice(scratch.get(..n).unwrap_or_default());
                total += n;
                if n < scratch.len() || total >= 64 * 1024 {
                    return Ok(total);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                // A spurious wake-up: nothing read yet is not a close.
                return if total == 0 { Err(e) } else { Ok(total) };
            }
            Err(e) => return Err(e),
        }
    }
}

/// A peer that takes longer than this to accept one batch of frames is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Writes `bytes`, failing when the peer stops reading for [`WRITE_TIMEOUT`].
async fn write(writer: &mut tokio::net::tcp::OwnedWriteHalf, bytes: &[u8]) -> std::io::Result<()> {
    match tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(bytes)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "peer does not read",
        )),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 4)
}

/// The listening sockets of one server: a role's `ListenIP` may name several addresses
/// (`;`-separated, spec/servers.md §1), and every one is served. They share one table of
/// connection caps ([`ListenConfig::limits`]) and the role's HTTP timeouts.
#[derive(Debug)]
pub struct Listeners {
    listeners: Vec<TcpListener>,
    /// Where the next accept starts looking, so no address starves the others.
    next: std::sync::atomic::AtomicUsize,
    gate: ConnGate,
    http: HttpTimeouts,
    reserve: Reserve,
    refused: WarnEvery,
    exhausted: WarnEvery,
}

impl Listeners {
    /// Binds every address of `addrs` (at least one) with the default [`ListenConfig`].
    pub async fn bind(addrs: &[SocketAddr]) -> std::io::Result<Listeners> {
        Listeners::bind_with(addrs, &ListenConfig::default()).await
    }

    /// Binds every address of `addrs` (at least one) with `config`'s backlog and caps.
    pub async fn bind_with(
        addrs: &[SocketAddr],
        config: &ListenConfig,
    ) -> std::io::Result<Listeners> {
        if addrs.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "no listen address",
            ));
        }
        let mut listeners = Vec::with_capacity(addrs.len());
        for addr in addrs {
            let listener = listen(*addr, config.backlog).map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
            })?;
            listeners.push(listener);
        }
        Ok(Listeners::with_config(listeners, config))
    }

    fn with_config(listeners: Vec<TcpListener>, config: &ListenConfig) -> Listeners {
        Listeners {
            listeners,
            next: std::sync::atomic::AtomicUsize::new(0),
            gate: ConnGate::new(config.limits),
            http: config.http,
            reserve: Reserve::open(),
            refused: WarnEvery::default(),
            exhausted: WarnEvery::default(),
        }
    }

    /// Lowers the cap of connections held at once to `max` (0: leaves it).
    pub fn cap_total(&self, max: usize) {
        self.gate.cap_total(max);
    }

    /// The caps in force.
    pub fn limits(&self) -> teamtalk_core::limits::ConnLimits {
        self.gate.limits()
    }

    /// The HTTP timeouts of this role.
    pub fn http_timeouts(&self) -> HttpTimeouts {
        self.http
    }

    /// The bound addresses (port 0 resolved), in the order given.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The first bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listeners
            .first()
            .ok_or_else(|| std::io::Error::other("no listener"))?
            .local_addr()
    }

    /// The next connection on any of the sockets, caps not applied.
    pub async fn accept(&self) -> std::io::Result<(TcpStream, SocketAddr)> {
        use std::sync::atomic::Ordering;
        std::future::poll_fn(|cx| {
            let count = self.listeners.len();
            let start = self.next.load(Ordering::Relaxed);
            for offset in 0..count {
                let index = (start + offset) % count;
                if let Some(listener) = self.listeners.get(index) {
                    if let std::task::Poll::Ready(result) = listener.poll_accept(cx) {
                        self.next.store(index + 1, Ordering::Relaxed);
                        return std::task::Poll::Ready(result);
                    }
                }
            }
            std::task::Poll::Pending
        })
        .await
    }

    /// Out of descriptors: frees the reserve one, accepts the waiting connection and closes
    /// it, and takes the reserve back. Without a reserve, waits a little.
    async fn shed(&self, error: &std::io::Error) {
        let mut closed = false;
        if self.reserve.release() {
            let accepted = tokio::time::timeout(Duration::from_millis(100), self.accept()).await;
            closed = matches!(accepted, Ok(Ok(_)));
            self.reserve.refill();
        }
        if let Some(count) = self.exhausted.due() {
            warn!(%error, count, "out of file descriptors: connections closed at once");
        }
        if !closed {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl From<TcpListener> for Listeners {
    fn from(listener: TcpListener) -> Listeners {
        Listeners::with_config(vec![listener], &ListenConfig::default())
    }
}

/// A listening socket on `addr` with `backlog`.
fn listen(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog.max(1))
}

/// The next connection on `listener` that its caps admit. A connection over a cap is
/// accepted and closed at once (logged at debug, and in a warning every 10 s). Out of file
/// descriptors, the waiting connection is closed through the reserve descriptor; other
/// accept errors are logged and retried after a short pause instead of spinning.
pub async fn accept(listener: &Listeners) -> (Conn, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => match listener.gate.admit(peer.ip()) {
                Ok(permit) => return (Conn::new(stream, permit), peer),
                Err(refusal) => {
                    drop(stream);
                    debug!(%peer, %refusal, "connection refused");
                    if let Some(count) = listener.refused.due() {
                        let addr = listener.local_addr().ok();
                        let limits = listener.gate.limits();
                        warn!(?addr, %refusal, count, max_total = limits.max_total,
                            max_per_ip = limits.max_per_source, "connections refused");
                    }
                }
            },
            Err(error) if out_of_descriptors(&error) => listener.shed(&error).await,
            Err(error) => {
                warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Serves an accepted connection as link `id` on its own task, in a span named `name`.
pub fn spawn_serve<Id: Copy + Send + fmt::Debug + 'static>(
    name: &'static str,
    conn: Conn,
    peer: SocketAddr,
    id: Id,
    config: LinkConfig,
    events: mpsc::Sender<LinkEvent<Id>>,
    shutdown: Shutdown,
) {
    let span = tracing::info_span!("link", kind = name, ?id, %peer);
    let (stream, permit) = conn.into_parts();
    tokio::spawn(
        async move {
            serve(stream, id, config, events, shutdown).await;
            drop(permit);
        }
        .instrument(span),
    );
}

/// The original's reconnect delays (base/ServInfo.h): 4, 8, 16, 32, 64 s, then 4 again; a
/// successful connection starts over at the first.
#[derive(Clone, Debug)]
pub struct Backoff {
    first: Duration,
    steps: u32,
    step: u32,
}

impl Backoff {
    /// 4 s doubling to 64 s.
    pub fn original() -> Backoff {
        Backoff::new(Duration::from_secs(4), 5)
    }

    /// Starts at `first`, doubles `steps - 1` times, then wraps.
    pub fn new(first: Duration, steps: u32) -> Backoff {
        Backoff {
            first,
            steps: steps.max(1),
            step: 0,
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.first * 2u32.saturating_pow(self.step);
        self.step = (self.step + 1) % self.steps;
        delay
    }

    /// A connection succeeded.
    pub fn reset(&mut self) {
        self.step = 0;
    }
}

/// Keeps a link to `addr` up until `shutdown`: connects, serves it as link `id` (reporting
/// [`LinkEvent::Opened`] … [`LinkEvent::Closed`] for every connection), and after a failure
/// or a close waits per `backoff` before the next attempt.
pub async fn dial<Id: Copy + Send + fmt::Debug + 'static>(
    addr: SocketAddr,
    id: Id,
    config: LinkConfig,
    mut backoff: Backoff,
    events: mpsc::Sender<LinkEvent<Id>>,
    mut shutdown: Shutdown,
) {
    let span = tracing::info_span!("upstream", ?id, %addr);
    async move {
        loop {
            let connect = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr));
            let connected = tokio::select! {
                result = connect => result,
                _ = shutdown.wait() => return,
            };
            match connected {
                Ok(Ok(stream)) => {
                    info!("connected");
                    backoff.reset();
                    serve(stream, id, config.clone(), events.clone(), shutdown.clone()).await;
                    info!("disconnected");
                }
                Ok(Err(error)) => debug!(%error, "connect failed"),
                Err(_) => debug!("connect timed out"),
            }
            if shutdown.is_triggered() || events.is_closed() {
                return;
            }
            let delay = backoff.next_delay();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.wait() => return,
            }
        }
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_wraps() {
        let mut b = Backoff::original();
        let delays: Vec<u64> = (0..7).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(delays, vec![4, 8, 16, 32, 64, 4, 8]);
        b.reset();
        assert_eq!(b.next_delay().as_secs(), 4);
    }
}
#[cfg(test)]
mod size_probe {
    /// Every idle client connection holds one of these futures: keep it small (the memory per
    /// idle connection is a published benchmark, docs/benchmarks.md).
    #[tokio::test]
    async fn the_connection_future_stays_small() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let s = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        let (_t, sd) = crate::shutdown::channel();
        let f = super::serve(s, 1u32, super::LinkConfig::client(), tx, sd);
        let size = std::mem::size_of_val(&f);
        assert!(size <= 1088, "link::serve's future grew to {size} bytes");
    }
}
