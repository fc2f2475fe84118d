//! In-process links: roles of one process (`teamtalk serve`'s push_server, file_server and
//! http_msg_server beside its msg_servers, route hub and db_proxy) linked without sockets.
//!
//! An in-process link is served by [`super::serve`] like a TCP one, so the roles cannot tell
//! the difference: the owner hears [`LinkEvent::Opened`], [`LinkEvent::Frame`]s and
//! [`LinkEvent::Closed`], and sends through its [`Outbox`] with the same bounds (frames and
//! bytes queued, reading paused at half the byte budget, the largest frame, a peer that takes
//! nothing for 30 s is dropped). What changes is the path of a frame: the encoded frame the
//! owner queued — a shared `Bytes` — is handed to the other end as it is, in order, and the
//! other end reads its 16-byte header again ([`PduDecoder::decode_frame`]); no byte is
//! copied, no system call made, and no body decoded on the way. An in-process peer cannot
//! vanish without its end closing, so no heartbeats are sent and no idle timeout applies.
//!
//! A listener has a door for in-process links besides its TCP sockets:
//! [`Listeners::connector`] hands out a [`MemoryConnector`], and [`super::accept_link`] takes
//! what comes through the door like a TCP connection (peer address [`IN_PROCESS`]; the
//! allow-list, TLS and connection caps are for the network and do not apply). A dialling role
//! names its peer as a [`LinkTarget`]: an address, or a connector ([`super::dial`] keeps
//! either up with the same backoff).
//!
//! [`Listeners::connector`]: super::Listeners::connector
//! [`Outbox`]: super::Outbox

use std::collections::VecDeque;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};

use bytes::Bytes;
use teamtalk_core::{CommandId, Pdu, PduDecoder};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info};

use super::{LinkConfig, LinkEvent, Next, Outbox, Queue, SHUTDOWN_FLUSH, WRITE_TIMEOUT};
use crate::shutdown::Shutdown;

/// The peer address reported for in-process links (`0.0.0.0:0`: no network peer).
pub const IN_PROCESS: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

/// Frames on their way from one end to the other (beyond them, frames wait in the sender's
/// outbox, whose bounds then apply as over TCP).
const IN_FLIGHT: usize = 64;

/// Connections waiting at a listener's door.
const DOOR: usize = 64;

/// One end of an in-process link: serve it with [`super::serve`] (or hand it to
/// [`super::spawn_serve`]) as a [`super::LinkStream::Memory`].
pub struct MemoryEnd {
    to_peer: mpsc::Sender<Bytes>,
    from_peer: mpsc::Receiver<Bytes>,
}

impl fmt::Debug for MemoryEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryEnd")
            .field("peer_closed", &self.to_peer.is_closed())
            .finish()
    }
}

impl From<MemoryEnd> for super::LinkStream {
    fn from(end: MemoryEnd) -> super::LinkStream {
        super::LinkStream::Memory(end)
    }
}

impl From<MemoryEnd> for super::Accepted {
    fn from(end: MemoryEnd) -> super::Accepted {
        super::Accepted::from(super::LinkStream::Memory(end))
    }
}

/// The two ends of a new in-process link.
pub fn pair() -> (MemoryEnd, MemoryEnd) {
    let (a_tx, a_rx) = mpsc::channel(IN_FLIGHT);
    let (b_tx, b_rx) = mpsc::channel(IN_FLIGHT);
    (
        MemoryEnd {
            to_peer: a_tx,
            from_peer: b_rx,
        },
        MemoryEnd {
            to_peer: b_tx,
            from_peer: a_rx,
        },
    )
}

/// Opens in-process links to one listener ([`super::Listeners::connector`]).
#[derive(Clone)]
pub struct MemoryConnector {
    door: mpsc::Sender<MemoryEnd>,
}

impl fmt::Debug for MemoryConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryConnector")
            .field("open", &!self.door.is_closed())
            .finish()
    }
}

impl MemoryConnector {
    /// A new link to the listener: this end, the other one waiting at its door. Refused
    /// (`ConnectionRefused`) once the listener is gone.
    pub async fn connect(&self) -> std::io::Result<MemoryEnd> {
        let (ours, theirs) = pair();
        self.door.send(theirs).await.map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "the in-process listener is gone",
            )
        })?;
        Ok(ours)
    }
}

/// The in-process door of a listener.
pub(super) struct Door {
    tx: mpsc::Sender<MemoryEnd>,
    rx: tokio::sync::Mutex<mpsc::Receiver<MemoryEnd>>,
}

impl Door {
    pub(super) fn new() -> Door {
        let (tx, rx) = mpsc::channel(DOOR);
        Door {
            tx,
            rx: tokio::sync::Mutex::new(rx),
        }
    }

    pub(super) fn connector(&self) -> MemoryConnector {
        MemoryConnector {
            door: self.tx.clone(),
        }
    }

    /// The next in-process link. Cancel-safe.
    pub(super) async fn accept(&self) -> MemoryEnd {
        let mut rx = self.rx.lock().await;
        match rx.recv().await {
            Some(end) => end,
            // The door holds a sender itself: never closed while it exists.
            None => std::future::pending().await,
        }
    }
}

impl fmt::Debug for Door {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Door").finish_non_exhaustive()
    }
}

/// Where a dialling role finds its peer: an address (TCP, TLS with the `tls` feature), or a
/// listener of the same process.
#[derive(Clone, Debug)]
pub enum LinkTarget {
    /// Over the network.
    Tcp(SocketAddr),
    /// In memory.
    Memory(MemoryConnector),
}

impl From<SocketAddr> for LinkTarget {
    fn from(addr: SocketAddr) -> LinkTarget {
        LinkTarget::Tcp(addr)
    }
}

impl From<MemoryConnector> for LinkTarget {
    fn from(connector: MemoryConnector) -> LinkTarget {
        LinkTarget::Memory(connector)
    }
}

impl fmt::Display for LinkTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkTarget::Tcp(addr) => write!(f, "{addr}"),
            LinkTarget::Memory(_) => f.write_str("in-process"),
        }
    }
}

/// What the sending arm of [`serve`] did.
enum Io<'a> {
    Next(Next),
    /// Room at the other end for the next frame (`Err`: the other end is gone).
    Room(Result<mpsc::Permit<'a, Bytes>, mpsc::error::SendError<()>>),
}

/// Serves an in-process end as link `id` (see the module documentation); the counterpart of
/// [`super::serve`]'s socket loop, with the same events, bounds and shutdown behaviour.
pub(super) async fn serve<Id: Copy + Send + fmt::Debug + 'static>(
    end: MemoryEnd,
    id: Id,
    config: LinkConfig,
    events: mpsc::Sender<LinkEvent<Id>>,
    mut shutdown: Shutdown,
) {
    let queue = Queue::new(&config);
    if events
        .send(LinkEvent::Opened(id, Outbox(queue.clone())))
        .await
        .is_err()
    {
        return;
    }
    let MemoryEnd {
        to_peer,
        mut from_peer,
    } = end;
    let decoder = PduDecoder::new(config.max_frame_len);
    // Taken from the queue, not yet handed to the other end.
    let mut out: VecDeque<Bytes> = VecDeque::new();
    // A frame from the other end the owner's channel had no room for (reading waits).
    let mut held: Option<Box<Pdu>> = None;
    let mut write_deadline: Option<Instant> = None;
    let mut draining = false;
    let mut closing = false;
    let mut close_by: Option<Instant> = None;
    'link: loop {
        if closing && out.is_empty() {
            break 'link;
        }
        if out.is_empty() {
            write_deadline = None;
        } else if write_deadline.is_none() {
            write_deadline = Some(Instant::now() + WRITE_TIMEOUT);
        }
        let reading = !draining && held.is_none() && queue.may_read();
        let deadline = [write_deadline, close_by].into_iter().flatten().min();
        tokio::select! {
            frame = from_peer.recv(), if reading => {
                let Some(frame) = frame else { break 'link };
                let pdu = match decoder.decode_frame(frame) {
                    Ok(pdu) => pdu,
                    Err(error) => {
                        info!(%error, "framing error, closing the link");
                        break 'link;
                    }
                };
                if pdu.command() == CommandId::OTHER_HEARTBEAT && !config.report_heartbeats {
                    continue 'link;
                }
                match events.try_send(LinkEvent::Frame(id, pdu)) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(LinkEvent::Frame(_, pdu))) => {
                        held = Some(Box::new(pdu));
                    }
                    Err(_) => break 'link,
                }
            }
            permit = Box::pin(events.reserve()), if held.is_some() => match (permit, held.take()) {
                (Ok(permit), Some(pdu)) => permit.send(LinkEvent::Frame(id, *pdu)),
                _ => break 'link,
            },
            io = async {
                if out.is_empty() {
                    Io::Next(queue.next_batch(64, |frame| out.push_back(frame)).await)
                } else {
                    Io::Room(to_peer.reserve().await)
                }
            }, if !closing || !out.is_empty() => match io {
                Io::Next(Next::Frames | Next::Control) => {}
                Io::Next(Next::Closed) => {
                    closing = true;
                    close_by.get_or_insert(Instant::now() + WRITE_TIMEOUT);
                }
                Io::Room(Ok(permit)) => {
                    if let Some(frame) = out.pop_front() {
                        permit.send(frame);
                    }
                    write_deadline = None;
                }
                Io::Room(Err(_)) => break 'link,
            },
            () = sleep_until(deadline), if deadline.is_some() => {
                if close_by.is_some_and(|c| c <= Instant::now()) {
                    debug!("closing link not flushed in time, closed");
                    break 'link;
                }
                if write_deadline.is_some_and(|w| w <= Instant::now()) {
                    info!("in-process peer does not read, closing the link");
                    break 'link;
                }
            }
            _ = shutdown.wait(), if !draining => {
                draining = true;
                if !config.drain_on_shutdown {
                    queue.take_all(|frame| out.push_back(frame));
                    closing = true;
                    close_by = Some(Instant::now() + SHUTDOWN_FLUSH);
                }
            }
        }
    }
    queue.close();
    // Dropping both channel ends tells the other end: its next receive or send fails.
    drop((to_peer, from_peer));
    let _ = events.send(LinkEvent::Closed(id)).await;
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
