//! Framed TCP links: one task per connection that reads frames with the core's decoder, writes what
//! the owner queues, and keeps heartbeats and idle timeouts (docs/protocol.md § Heartbeats and
//! timeouts).
//!
//! A server owns its links through a hub task: every link reports [`LinkEvent`]s on one
//! channel (bounded: a busy hub slows the readers down, which fills TCP windows — real
//! backpressure), and the hub answers through each link's [`Outbox`] (bounded too: a peer that
//! does not read is disconnected instead of growing memory). [`dial`] keeps an outgoing link
//! up with the original's reconnect backoff.
//!
//! Roles of one process link through [`memory`] instead: the same events, outbox and bounds,
//! frames handed over in memory.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use teamtalk_core::limits::ConnGate;
use teamtalk_core::link::{LinkAction, LinkTimer, SERVER_HEARTBEAT_INTERVAL_MS, SERVER_TIMEOUT_MS};
use teamtalk_core::pdu::DEFAULT_MAX_FRAME_LEN;
use teamtalk_core::proto::other::ImHeartBeat;
use teamtalk_core::time::{Epoch, Machine};
use teamtalk_core::{CommandId, Pdu, PduDecoder};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn, Instrument};

use crate::limits::{out_of_descriptors, Reserve, WarnEvery};
pub use crate::limits::{Conn, HttpTimeouts, ListenConfig};
pub use crate::link_stream::LinkStream;
use crate::link_write::WriteBuf;
use crate::shutdown::Shutdown;

pub mod memory;
pub use memory::{LinkTarget, MemoryConnector, MemoryEnd, IN_PROCESS};

/// How a link behaves.
#[derive(Clone, Debug)]
pub struct LinkConfig {
    /// Largest accepted frame; a longer (or shorter than 16 bytes) length field closes the
    /// link. Default 1 MiB.
    pub max_frame_len: u32,
    /// Frames queued for sending; a full queue means the peer does not keep up. Default 1024.
    pub outbox: usize,
    /// Bytes queued for sending: above half of it the link stops reading the peer (its
    /// requests wait in its TCP window), above all of it a send fails like a full queue
    /// (owners then close the link). Default 64 MiB; client links 16 MiB: twice what a
    /// client's budget of requests in flight (at most 8, each answer at most a 1 MiB frame) can bring
    /// in after reading stopped, so only a peer that keeps not reading is closed.
    pub outbox_bytes: usize,
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
    /// [`dial`] speaks TLS with this identity (cargo feature `tls`). Default: plain TCP.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::TlsConnector>,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            outbox: 1024,
            outbox_bytes: 64 << 20,
            heartbeat: Some(Duration::from_millis(SERVER_HEARTBEAT_INTERVAL_MS)),
            timeout: Some(Duration::from_millis(SERVER_TIMEOUT_MS)),
            report_heartbeats: false,
            drain_on_shutdown: false,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl LinkConfig {
    /// A link to a client: no heartbeats of our own, no timeout (the owner applies the
    /// device's), heartbeats reported; a smaller outbox.
    pub fn client() -> LinkConfig {
        LinkConfig {
            outbox: 256,
            outbox_bytes: 16 << 20,
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
    /// Wakes the link: frames arrived, the owner paused or resumed reading, or the last
    /// outbox went away.
    ready: tokio::sync::Notify,
    /// Wakes senders waiting for room.
    room: tokio::sync::Notify,
    capacity: usize,
    /// Bytes of queued frames beyond which [`Outbox::send`] refuses (one frame is always
    /// accepted into an empty queue); above half of it the link stops reading.
    max_bytes: usize,
}

#[derive(Default)]
struct QueueState {
    frames: std::collections::VecDeque<Bytes>,
    /// Bytes of `frames`.
    bytes: usize,
    /// Live [`Outbox`] clones.
    owners: usize,
    /// The link task ended.
    closed: bool,
    /// The owner asked the link not to hand out frames ([`Outbox::pause_reading`]).
    paused: bool,
    /// `paused` changed since the link last looked.
    control: bool,
}

/// What [`Queue::next_batch`] found.
enum Next {
    /// Frames were appended to the write buffer.
    Frames,
    /// The owner paused or resumed reading.
    Control,
    /// The queue is empty and every outbox is gone: the owner closed the link.
    Closed,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An empty queue with one owner, bounded as `config` says.
    fn new(config: &LinkConfig) -> Arc<Queue> {
        Arc::new(Queue {
            state: std::sync::Mutex::new(QueueState {
                owners: 1,
                ..QueueState::default()
            }),
            ready: tokio::sync::Notify::new(),
            room: tokio::sync::Notify::new(),
            capacity: config.outbox.max(1),
            max_bytes: config.outbox_bytes.max(1),
        })
    }

    /// Hands up to `max` frames to `out`, or reports a change of the owner's wishes.
    async fn next_batch(&self, max: usize, mut out: impl FnMut(Bytes)) -> Next {
        loop {
            let ready = self.ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            {
                let mut state = self.lock();
                if state.control {
                    state.control = false;
                    return Next::Control;
                }
                if !state.frames.is_empty() {
                    let n = state.frames.len().min(max);
                    let mut taken = 0;
                    for frame in state.frames.drain(..n) {
                        taken += frame.len();
                        out(frame);
                    }
                    state.bytes = state.bytes.saturating_sub(taken);
                    if state.frames.is_empty() && state.frames.capacity() > 16 {
                        state.frames = std::collections::VecDeque::new(); // give a burst back
                    }
                    drop(state);
                    self.room.notify_waiters();
                    return Next::Frames;
                }
                if state.owners == 0 {
                    return Next::Closed;
                }
            }
            ready.await;
        }
    }

    /// Whether the link may read and hand out frames: the owner did not pause it and the
    /// peer's answers waiting here are under half the byte budget (a peer that does not read
    /// what it asked for stops being read; if the answers in flight still overflow the
    /// budget, the owner's next send fails and it closes the link).
    fn may_read(&self) -> bool {
        let state = self.lock();
        !state.paused && state.bytes <= self.max_bytes / 2
    }

    fn paused(&self) -> bool {
        self.lock().paused
    }

    /// Takes every queued frame (the link is closing).
    fn take_all(&self, mut out: impl FnMut(Bytes)) {
        let mut state = self.lock();
        for frame in state.frames.drain(..) {
            out(frame);
        }
        state.bytes = 0;
        drop(state);
        self.room.notify_waiters();
    }

    fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.frames.clear();
        state.bytes = 0;
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
    /// The queue is full (frames or bytes): the peer does not read fast enough.
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
        let over_bytes =
            !state.frames.is_empty() && state.bytes.saturating_add(frame.len()) > self.0.max_bytes;
        if state.frames.len() >= self.0.capacity || over_bytes {
            return Err(SendError::Full);
        }
        state.bytes += frame.len();
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

    /// Asks the link to stop (`true`) or resume (`false`) handing out frames: while paused
    /// it reads nothing more, so the peer's requests wait in its own TCP window. Sending,
    /// heartbeats and the idle timeout go on (a paused peer still counts as heard from when
    /// it had data for us; the owner decides how long a pause may last).
    pub fn pause_reading(&self, paused: bool) {
        let mut state = self.0.lock();
        if state.paused == paused {
            return;
        }
        state.paused = paused;
        state.control = true;
        drop(state);
        self.0.ready.notify_one();
    }

    /// Whether the link is gone.
    pub fn is_closed(&self) -> bool {
        self.0.lock().closed
    }
}

/// What the write arm of [`serve`] did.
enum Io {
    /// Took frames from the queue (or saw a change of the owner's wishes).
    Next(Next),
    /// Wrote part of the write buffer.
    Written(std::io::Result<usize>),
    /// Flushed the TLS buffer.
    Flushed(std::io::Result<()>),
}

/// Serves `stream` as link `id` until it closes, reporting to `events`. Reports
/// [`LinkEvent::Opened`] first and [`LinkEvent::Closed`] last. Returns when the link is
/// closed; `shutdown` closes it after flushing the queued frames.
///
/// Reading, writing and the timers never wait on each other: one `select!` over
/// - reading, only while nothing is held back (below), the owner did not pause the link and
///   the queued answers are within half their byte budget;
/// - handing a held-back frame to the owner: a decoded frame the owner's channel has no room
///   for is held (one at most, the rest stays undecoded in the read buffer) and reading
///   pauses until the channel takes it — the peer then waits in its TCP window, which is the
///   backpressure, while our answers keep flowing. (Awaiting the channel inside the read arm
///   instead deadlocks when the owner itself waits for this link to drain its queue.)
/// - writing the write buffer (a batch of at most 64 queued frames) with vectored writes —
///   large frames straight from their shared `Bytes`, not copied per link — and refilling it
///   from the queue when it is empty;
/// - the heartbeat / idle / write-stall deadline;
/// - shutdown.
pub async fn serve<Id: Copy + Send + fmt::Debug + 'static>(
    stream: impl Into<LinkStream>,
    id: Id,
    config: LinkConfig,
    events: mpsc::Sender<LinkEvent<Id>>,
    mut shutdown: Shutdown,
) {
    // A TLS handshake still to be made is made here, on the link's task, before the owner
    // hears of the link.
    let stream = match stream.into().established().await {
        Ok(stream) => stream,
        Err(error) => {
            info!(%error, "TLS handshake failed, closing");
            return;
        }
    };
    let stream = match stream {
        // Boxed: its state would otherwise grow every TCP link's future.
        LinkStream::Memory(end) => {
            return Box::pin(memory::serve(end, id, config, events, shutdown)).await;
        }
        stream => stream,
    };
    let queue = Queue::new(&config);
    if events
        .send(LinkEvent::Opened(id, Outbox(queue.clone())))
        .await
        .is_err()
    {
        return;
    }
    let (mut reader, mut writer) = stream.split();
    let epoch = Epoch::start();
    let never = u64::MAX / 4;
    let mut timer = LinkTimer::with_intervals(
        epoch.now(),
        config.heartbeat.map_or(never, millis),
        config.timeout.map_or(never, millis),
    );
    let mut decoder = PduDecoder::new(config.max_frame_len);
    let mut buf = BytesMut::new();
    // Boxed like the reservation below: the rare case pays, not every idle connection.
    let mut held: Option<Box<Pdu>> = None;
    let mut out = WriteBuf::default();
    // When the peer must have taken the write buffer's next bytes.
    let mut write_deadline: Option<Instant> = None;
    // No more reading (shutdown).
    let mut draining = false;
    // No more taking from the queue: write what is buffered, then end.
    let mut closing = false;
    // A closing link ends by then whatever the peer reads (set once, never pushed back: a
    // peer that takes a few bytes now and then cannot keep a closing link alive).
    let mut close_by: Option<Instant> = None;
    'link: loop {
        if held.is_none() && !buf.is_empty() && !queue.paused() {
            match hand_out(&mut decoder, &mut buf, id, &config, &events, &queue) {
                Ok(h) => held = h,
                Err(()) => break 'link,
            }
        }
        if closing && out.is_empty() {
            break 'link;
        }
        if out.is_empty() && !writer.unflushed() {
            write_deadline = None;
        } else if write_deadline.is_none() {
            write_deadline = Some(Instant::now() + WRITE_TIMEOUT);
        }
        let reading = !draining && held.is_none() && queue.may_read();
        let timers = timer
            .poll_timeout()
            .map(|ms| Instant::from_std(epoch.instant_at(ms)));
        let deadline = [timers, write_deadline, close_by]
            .into_iter()
            .flatten()
            .fold(Instant::now() + Duration::from_secs(3600), Instant::min);
        tokio::select! {
            read = std::future::poll_fn(|cx| reader.poll_read_into(cx, &mut buf)), if reading => match read {
                Ok(0) => break 'link,
                Ok(_) => timer.handle_received(epoch.now()),
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(error) => {
                    debug!(%error, "read failed");
                    break 'link;
                }
            },
            // Boxed: allocated only while a frame is held, which keeps every idle connection small.
            permit = Box::pin(events.reserve()), if held.is_some() => match (permit, held.take()) {
                (Ok(permit), Some(pdu)) => permit.send(LinkEvent::Frame(id, *pdu)),
                _ => break 'link,
            },
            // Writing and refilling the write buffer share one arm (they never run at once):
            // write what is buffered, else take the next frames from the queue.
            io = async {
                if out.is_empty() && writer.unflushed() {
                    // TLS records still buffered: out before the link calls itself idle.
                    Io::Flushed(std::future::poll_fn(|cx| std::pin::Pin::new(&mut writer).poll_flush(cx)).await)
                } else if out.is_empty() {
                    Io::Next(queue.next_batch(64, |frame| out.push(frame)).await)
                } else {
                    Io::Written(std::future::poll_fn(|cx| out.poll_write(cx, &mut writer)).await)
                }
            }, if !closing || !out.is_empty() => match io {
                Io::Written(Ok(0)) => break 'link,
                Io::Written(Ok(n)) => {
                    out.advance(n); // an emptied buffer frees its memory
                    write_deadline = None;
                    timer.handle_sent(epoch.now());
                }
                Io::Written(Err(error)) | Io::Flushed(Err(error)) => {
                    debug!(%error, "write failed");
                    break 'link;
                }
                Io::Flushed(Ok(())) => timer.handle_sent(epoch.now()),
                Io::Next(Next::Frames | Next::Control) => {}
                Io::Next(Next::Closed) => {
                    // The owner dropped the outbox: write what is buffered, within bounds.
                    closing = true;
                    close_by.get_or_insert(Instant::now() + WRITE_TIMEOUT);
                }
            },
            _ = tokio::time::sleep_until(deadline) => {
                if close_by.is_some_and(|c| c <= Instant::now()) {
                    debug!("closing link not flushed in time, closed");
                    break 'link;
                }
                if write_deadline.is_some_and(|w| w <= Instant::now()) {
                    info!("peer does not read, closing the link");
                    break 'link;
                }
                let now = epoch.now();
                timer.handle_timeout(now);
                while let Some(action) = timer.poll_output() {
                    match action {
                        LinkAction::SendHeartbeat => {
                            if out.is_empty() {
                                out.push(Pdu::encode_message(&ImHeartBeat {}, 0).to_bytes());
                            }
                            // Bytes on their way count as sent: the write deadline watches them.
                            timer.handle_sent(now);
                        }
                        LinkAction::Close => {
                            info!("link silent for too long, closing");
                            break 'link;
                        }
                    }
                }
            },
            _ = shutdown.wait(), if !draining => {
                draining = true;
                if !config.drain_on_shutdown {
                    // Flush what is queued (within a short time), then close.
                    queue.take_all(|frame| out.push(frame));
                    closing = true;
                    close_by = Some(Instant::now() + SHUTDOWN_FLUSH);
                }
                // Draining: no more reading; the owner closes the outbox when done.
            }
        }
    }
    queue.close();
    let _ = tokio::time::timeout(SHUTDOWN_FLUSH, writer.shutdown()).await;
    let _ = events.send(LinkEvent::Closed(id)).await;
}

/// Decodes the frames in `buf` and hands them to the owner while its channel has room and it
/// did not pause the link. Returns the frame that found no room (to be held), `Err` when the
/// link must close (framing error, owner gone).
fn hand_out<Id: Copy>(
    decoder: &mut PduDecoder,
    buf: &mut BytesMut,
    id: Id,
    config: &LinkConfig,
    events: &mpsc::Sender<LinkEvent<Id>>,
    queue: &Queue,
) -> Result<Option<Box<Pdu>>, ()> {
    let result = loop {
        if queue.paused() {
            break Ok(None);
        }
        match decoder.decode(buf) {
            Ok(Some(pdu)) => {
                if pdu.command() == CommandId::OTHER_HEARTBEAT && !config.report_heartbeats {
                    continue;
                }
                match events.try_send(LinkEvent::Frame(id, pdu)) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(LinkEvent::Frame(_, pdu))) => {
                        break Ok(Some(Box::new(pdu)));
                    }
                    Err(_) => break Err(()),
                }
            }
            Ok(None) => break Ok(None),
            Err(error) => {
                info!(%error, "framing error, closing the link");
                break Err(());
            }
        }
    };
    if buf.is_empty() {
        // An idle connection keeps no buffer (frames handed out keep theirs).
        *buf = BytesMut::new();
    }
    result
}

/// Reads what the socket has into `buf` through a stack buffer, so that idle connections
/// hold no read buffer of their own. `Ok(0)`: the peer closed.
pub(crate) fn read_into(
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

/// A peer that takes longer than this to accept the next bytes we have for it is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// On shutdown a link writes what is queued for at most this long before closing.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 4)
}

/// The listening sockets of one server: a role's `ListenIP` may name several addresses
/// (`;`-separated, docs/deploy.md), and every one is served. They share one table of
/// connection caps ([`ListenConfig::limits`]) and the role's HTTP timeouts; an internal port
/// also has an allow-list of peers ([`Listeners::guarded`]) and, with the cargo feature
/// `tls`, mutual TLS (`Listeners::with_tls`).
#[derive(Debug)]
pub struct Listeners {
    listeners: Vec<TcpListener>,
    /// Where the next accept starts looking, so no address starves the others.
    next: std::sync::atomic::AtomicUsize,
    /// Caps of connections held at once, in total and per source address.
    gate: ConnGate,
    /// Who may connect; `None`: anyone (client-facing ports).
    peers: Option<Arc<crate::trust::PeerGate>>,
    /// Links accepted by [`accept_link`] speak TLS with client certificates.
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::TlsAcceptor>,
    http: HttpTimeouts,
    reserve: Reserve,
    /// In-process links of this process's other roles ([`Listeners::connector`]).
    door: memory::Door,
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
            peers: None,
            #[cfg(feature = "tls")]
            tls: None,
            http: config.http,
            reserve: Reserve::open(),
            door: memory::Door::new(),
            refused: WarnEvery::default(),
            exhausted: WarnEvery::default(),
        }
    }

    /// Opens in-process links to this listener: what comes through it is taken by
    /// [`accept_link`] beside the TCP connections (see [`memory`]).
    pub fn connector(&self) -> MemoryConnector {
        self.door.connector()
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

    /// Links accepted by [`accept_link`] must speak TLS and present a client certificate of
    /// the acceptor's CA (the handshake is made on each link's task).
    #[cfg(feature = "tls")]
    pub fn with_tls(mut self, acceptor: crate::tls::TlsAcceptor) -> Listeners {
        self.tls = Some(acceptor);
        self
    }

    /// Only peers that `gate` admits are handed out by [`Listeners::accept`]; the others are
    /// closed at once (an internal port, docs/deploy.md "Trust model").
    pub fn guarded(mut self, gate: crate::trust::PeerGate) -> Listeners {
        gate.warn_if_unreachable(&self.local_addrs());
        self.peers = Some(Arc::new(gate));
        self
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

    /// The next connection on any of the sockets from a peer the allow-list (if any) admits;
    /// refused peers are closed without a byte read. Connection caps are not applied here
    /// (see [`accept`]).
    pub async fn accept(&self) -> std::io::Result<(TcpStream, SocketAddr)> {
        loop {
            let (stream, peer) = self.accept_any().await?;
            match &self.peers {
                Some(gate) if !gate.admit(peer) => drop(stream),
                _ => return Ok((stream, peer)),
            }
        }
    }

    async fn accept_any(&self) -> std::io::Result<(TcpStream, SocketAddr)> {
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
            let accepted =
                tokio::time::timeout(Duration::from_millis(100), self.accept_any()).await;
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

/// The next connection on `listener` that its allow-list and caps admit. A connection over
/// a cap is accepted and closed at once (logged at debug, and in a warning every 10 s). Out
/// of file descriptors, the waiting connection is closed through the reserve descriptor;
/// other accept errors are logged and retried after a short pause instead of spinning.
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

/// An accepted connection ready to be served as a link: its stream and, when it came from
/// [`accept`] or [`accept_link`], its slot in the listener's caps (given back when the link
/// ends).
#[derive(Debug)]
pub struct Accepted {
    stream: LinkStream,
    permit: Option<teamtalk_core::limits::ConnPermit>,
}

impl Accepted {
    /// The stream and the slot (keep the slot as long as the stream is served).
    pub fn into_parts(self) -> (LinkStream, Option<teamtalk_core::limits::ConnPermit>) {
        (self.stream, self.permit)
    }
}

impl From<Conn> for Accepted {
    fn from(conn: Conn) -> Accepted {
        let (stream, permit) = conn.into_parts();
        Accepted {
            stream: LinkStream::Plain(stream),
            permit: Some(permit),
        }
    }
}

impl From<LinkStream> for Accepted {
    fn from(stream: LinkStream) -> Accepted {
        Accepted {
            stream,
            permit: None,
        }
    }
}

impl From<TcpStream> for Accepted {
    fn from(stream: TcpStream) -> Accepted {
        Accepted::from(LinkStream::Plain(stream))
    }
}

/// The next link on `listener` (an internal port): as [`accept`], with the TLS handshake
/// still to be made when the listeners have TLS (`Listeners::with_tls`, cargo feature `tls`).
///
/// In-process links ([`Listeners::connector`]) come out of it too, with the peer address
/// [`IN_PROCESS`], no TLS and no slot in the caps.
pub async fn accept_link(listener: &Listeners) -> (Accepted, SocketAddr) {
    let (conn, peer) = tokio::select! {
        accepted = accept(listener) => accepted,
        end = listener.door.accept() => return (Accepted::from(end), IN_PROCESS),
    };
    #[cfg(feature = "tls")]
    if let Some(tls) = &listener.tls {
        let (stream, permit) = conn.into_parts();
        let accepted = Accepted {
            stream: LinkStream::TlsPending(stream, tls.clone()),
            permit: Some(permit),
        };
        return (accepted, peer);
    }
    (Accepted::from(conn), peer)
}

/// Serves an accepted connection as link `id` on its own task, in a span named `name`; its
/// slot in the listener's caps is given back when the link ends.
pub fn spawn_serve<Id: Copy + Send + fmt::Debug + 'static>(
    name: &'static str,
    conn: impl Into<Accepted>,
    peer: SocketAddr,
    id: Id,
    config: LinkConfig,
    events: mpsc::Sender<LinkEvent<Id>>,
    shutdown: Shutdown,
) {
    let span = tracing::info_span!("link", kind = name, ?id, %peer);
    let (stream, permit) = conn.into().into_parts();
    tokio::spawn(
        async move {
            serve(stream, id, config, events, shutdown).await;
            drop(permit);
        }
        .instrument(span),
    );
}

/// Reconnect delays: the original's (base/ServInfo.h) 4, 8, 16, 32, 64 s, then 4 again, or
/// a capped one (msg_server → db_proxy: 100 ms doubling to 4 s, docs/compatibility.md); a
/// successful connection starts over at the first.
#[derive(Clone, Debug)]
pub struct Backoff {
    first: Duration,
    steps: u32,
    step: u32,
    /// `Some`: double up to this and stay; `None`: wrap after `steps`.
    cap: Option<Duration>,
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
            cap: None,
        }
    }

    /// Starts at `first` and doubles on every failed attempt up to `cap` (at least
    /// `first`), then stays there.
    pub fn capped(first: Duration, cap: Duration) -> Backoff {
        Backoff {
            first,
            steps: 1,
            step: 0,
            cap: Some(cap.max(first)),
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.first.saturating_mul(2u32.saturating_pow(self.step));
        match self.cap {
            Some(cap) => {
                self.step = (self.step + 1).min(31);
                delay.min(cap)
            }
            None => {
                self.step = (self.step + 1) % self.steps;
                delay
            }
        }
    }

    /// A connection succeeded.
    pub fn reset(&mut self) {
        self.step = 0;
    }
}

/// Keeps a link to `target` (an address, or an in-process listener) up until `shutdown`:
/// connects, serves it as link `id` (reporting [`LinkEvent::Opened`] … [`LinkEvent::Closed`]
/// for every connection), and after a failure or a close waits per `backoff` before the next
/// attempt.
pub async fn dial<Id: Copy + Send + fmt::Debug + 'static>(
    target: impl Into<LinkTarget>,
    id: Id,
    config: LinkConfig,
    mut backoff: Backoff,
    events: mpsc::Sender<LinkEvent<Id>>,
    mut shutdown: Shutdown,
) {
    let target = target.into();
    let span = tracing::info_span!("upstream", ?id, %target);
    async move {
        loop {
            let connected = tokio::select! {
                stream = connect(&target, &config) => stream,
                _ = shutdown.wait() => return,
            };
            if let Some(stream) = connected {
                info!("connected");
                backoff.reset();
                serve(stream, id, config.clone(), events.clone(), shutdown.clone()).await;
                info!("disconnected");
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

/// One attempt to reach `target` (TCP connections time out after 5 s; TLS per `config`).
/// Failures are logged at debug.
async fn connect(target: &LinkTarget, config: &LinkConfig) -> Option<LinkStream> {
    let addr = match target {
        LinkTarget::Tcp(addr) => *addr,
        LinkTarget::Memory(connector) => {
            return match connector.connect().await {
                Ok(end) => Some(LinkStream::Memory(end)),
                Err(error) => {
                    debug!(%error, "connect failed");
                    None
                }
            };
        }
    };
    let stream = match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            debug!(%error, "connect failed");
            return None;
        }
        Err(_) => {
            debug!("connect timed out");
            return None;
        }
    };
    #[cfg(feature = "tls")]
    if let Some(tls) = &config.tls {
        return match LinkStream::connect_tls(stream, addr.ip(), tls).await {
            Ok(stream) => Some(stream),
            Err(error) => {
                info!(%error, "TLS handshake failed");
                None
            }
        };
    }
    #[cfg(not(feature = "tls"))]
    let _ = config;
    Some(LinkStream::from(stream))
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

    #[test]
    fn a_capped_backoff_retries_fast_first_and_stays_at_the_cap() {
        let mut b = Backoff::capped(Duration::from_millis(100), Duration::from_secs(4));
        let delays: Vec<u64> = (0..9)
            .map(|_| u64::try_from(b.next_delay().as_millis()).unwrap())
            .collect();
        assert_eq!(
            delays,
            vec![100, 200, 400, 800, 1600, 3200, 4000, 4000, 4000]
        );
        for _ in 0..100 {
            b.next_delay();
        }
        assert_eq!(b.next_delay(), Duration::from_secs(4), "no overflow");
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    fn queue(capacity: usize, max_bytes: usize) -> Outbox {
        Outbox(Arc::new(Queue {
            state: std::sync::Mutex::new(QueueState {
                owners: 1,
                ..QueueState::default()
            }),
            ready: tokio::sync::Notify::new(),
            room: tokio::sync::Notify::new(),
            capacity,
            max_bytes,
        }))
    }

    #[test]
    fn the_outbox_refuses_beyond_its_byte_budget() {
        let outbox = queue(100, 1000);
        let frame = Bytes::from(vec![0u8; 400]);
        assert_eq!(outbox.send(frame.clone()), Ok(()));
        assert_eq!(outbox.send(frame.clone()), Ok(()));
        assert_eq!(outbox.send(frame.clone()), Err(SendError::Full));
        assert!(
            !outbox.0.may_read(),
            "above half the budget the link stops reading"
        );
        let big = queue(100, 10);
        assert_eq!(
            big.send(frame),
            Ok(()),
            "one frame always fits an empty queue"
        );
    }

    /// A peer that takes a few bytes now and then cannot keep a link alive past its shutdown
    /// flush (each write used to push the deadline back by another 30 s).
    #[tokio::test]
    async fn shutdown_ends_a_link_whose_peer_trickles() {
        use tokio::io::AsyncReadExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (trigger, shutdown) = crate::shutdown::channel();
        let (events_tx, mut events) = mpsc::channel(16);
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            serve(stream, 1u32, LinkConfig::default(), events_tx, shutdown).await;
        });
        let peer = TcpStream::connect(addr).await.unwrap();
        let Some(LinkEvent::Opened(_, outbox)) = events.recv().await else {
            panic!("no Opened");
        };
        // Far more than the socket buffers hold.
        for _ in 0..48 {
            let frame = Pdu::new(
                CommandId::OTHER_HEARTBEAT,
                0,
                Bytes::from(vec![0u8; 1 << 20]),
            );
            outbox.send(frame.to_bytes()).unwrap();
        }
        let trickle = tokio::spawn(async move {
            let mut peer = peer;
            // Enough now and then for the sender to make progress, 1 MiB/s: 48 s for it all.
            let mut chunk = vec![0u8; 256 * 1024];
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let mut got = 0;
                while got < chunk.len() {
                    match peer.read(&mut chunk[got..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got += n,
                    }
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        trigger.trigger();
        // The flush takes 2 s; the whole queue would take 48 s.
        let closed = tokio::time::timeout(Duration::from_secs(15), async {
            while let Some(event) = events.recv().await {
                if matches!(event, LinkEvent::Closed(_)) {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(closed, Ok(true), "the link outlived its shutdown flush");
        trickle.abort();
    }

    /// The owner pauses the link: frames wait in the peer's TCP window until it resumes.
    #[tokio::test]
    async fn a_paused_link_hands_out_nothing_until_resumed() {
        use tokio::io::AsyncWriteExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_trigger, shutdown) = crate::shutdown::channel();
        let (events_tx, mut events) = mpsc::channel(16);
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            serve(stream, 1u32, LinkConfig::client(), events_tx, shutdown).await;
        });
        let mut peer = TcpStream::connect(addr).await.unwrap();
        let Some(LinkEvent::Opened(_, outbox)) = events.recv().await else {
            panic!("no Opened");
        };
        outbox.pause_reading(true);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let frame = Pdu::new(CommandId::BUDDY_LIST_ALL_USER_REQUEST, 1, Bytes::new()).to_bytes();
        peer.write_all(&frame).await.unwrap();
        let early = tokio::time::timeout(Duration::from_millis(500), events.recv()).await;
        assert!(early.is_err(), "a paused link handed out {early:?}");
        outbox.pause_reading(false);
        let event = tokio::time::timeout(Duration::from_secs(10), events.recv()).await;
        assert!(
            matches!(event, Ok(Some(LinkEvent::Frame(1, _)))),
            "{event:?}"
        );
    }

    /// A db_proxy-like owner: takes one request at a time and waits for room in the link's
    /// outbox to queue its (large) answer. The peer writes far more requests than the
    /// channel, the outbox and the socket buffers hold before reading any answer, then reads
    /// slowly. A link that awaits the owner's channel inside its read arm stops draining its
    /// own outbox and the three wait on each other for ever; ours keeps writing.
    #[tokio::test]
    async fn a_peer_that_floods_and_reads_slowly_gets_every_answer() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        const REQUESTS: usize = 2000;
        const ANSWER: usize = 4096;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_trigger, shutdown) = crate::shutdown::channel();
        let (events_tx, mut events) = mpsc::channel(1);
        let config = LinkConfig {
            outbox: 2,
            ..LinkConfig::default()
        };
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            serve(stream, 1u32, config, events_tx, shutdown).await;
        });
        tokio::spawn(async move {
            let mut outbox = None;
            while let Some(event) = events.recv().await {
                match event {
                    LinkEvent::Opened(_, o) => outbox = Some(o),
                    LinkEvent::Frame(_, pdu) => {
                        let Some(o) = &outbox else { break };
                        let body = Bytes::from(vec![7u8; ANSWER]);
                        let answer = Pdu::new(pdu.command(), pdu.seq_num(), body);
                        if o.send_wait(answer.to_bytes()).await.is_err() {
                            break;
                        }
                    }
                    LinkEvent::Closed(_) => break,
                }
            }
        });
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut read, mut write) = stream.into_split();
        let writer = tokio::spawn(async move {
            let request = Pdu::new(
                CommandId::BUDDY_LIST_ALL_USER_REQUEST,
                1,
                Bytes::from_static(&[0u8; 64]),
            )
            .to_bytes();
            for _ in 0..REQUESTS {
                write.write_all(&request).await.unwrap();
            }
            write
        });
        let expected = REQUESTS * (ANSWER + 16);
        let reading = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let mut got = 0;
            let mut chunk = vec![0u8; 16 * 1024];
            while got < expected {
                let n = read.read(&mut chunk).await.unwrap();
                assert!(n > 0, "the link closed after {got} of {expected} bytes");
                got += n;
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            got
        };
        let got = tokio::time::timeout(Duration::from_secs(60), reading)
            .await
            .expect(
                "the link stopped answering (reading waits on the owner, the owner on writing)",
            );
        assert_eq!(got, expected);
        let _write = writer.await.unwrap();
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
