//! db_proxy_server: accepts links from msg_servers (and http_msg_server) and answers their
//! requests through a core [`Handler`] (docs/protocol.md § db_proxy_server).
//!
//! - Many requests are in flight on one link at once (bounded per link); answers may leave in
//!   any order, each echoing its request's `seq_num` (and `attach_data`, copied by the core).
//! - Heartbeats: received ones are dropped; one is sent after 5 s without sending; a link
//!   silent for 30 s is closed (`teamtalk_core::link`).
//! - A framing error closes that link; a body that does not decode fails that request only
//!   (no answer, as the original).
//! - Shutdown: every link gets `CID_OTHER_STOP_RECV_PACKET` and stays open for
//!   [`DbProxyServerConfig::stop_linger`] (4 s, as the original), still answering what it is
//!   asked, unless the peer closes it first; then the link closes (its queued answers get a
//!   short flush) and [`run`] returns. A C++ msg_server depends on that pause: it reads the
//!   notice and a close arriving together as the notice alone, never sees the close and keeps
//!   refusing logins (docs/compatibility.md, "db_proxy_server: budgets and shutdown").
//! - Backpressure: a link's requests are taken from it only while one of its
//!   `max_in_flight` permits is free (the link then stops reading, the peer waits in its TCP
//!   window) and nothing here awaits the link while the link waits for us, so answers keep
//!   flowing however many requests a peer sends.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use teamtalk_core::pdu::DEFAULT_MAX_FRAME_LEN;
use teamtalk_core::proto::server::ImStopReceivePacket;
use teamtalk_core::service::Handler;
use teamtalk_core::Pdu;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, Instrument};

use crate::link::{self, LinkConfig, LinkEvent, Listeners, Outbox};
use crate::shutdown::Shutdown;

/// Settings of the db_proxy_server shell.
#[derive(Clone, Debug)]
pub struct DbProxyServerConfig {
    /// Largest accepted frame in bytes. Default 1 MiB.
    pub max_frame_len: u32,
    /// Requests of one link handled at the same time; reading pauses beyond. Default 256.
    pub max_in_flight: usize,
    /// Frames queued for sending on one link; answering waits beyond. Default 1024.
    pub write_queue: usize,
    /// Bytes of answers queued on one link; answering waits beyond. Default 64 MiB.
    pub write_queue_bytes: usize,
    /// How long a link stays open after `CID_OTHER_STOP_RECV_PACKET` on shutdown, answering
    /// requests, before it is closed. Default 4 s (the original's pause before exiting).
    pub stop_linger: Duration,
}

impl Default for DbProxyServerConfig {
    fn default() -> Self {
        DbProxyServerConfig {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            max_in_flight: 256,
            write_queue: 1024,
            write_queue_bytes: 64 << 20,
            stop_linger: Duration::from_secs(4),
        }
    }
}

/// Serves links accepted on `listener` until `shutdown`, then drains them and returns.
pub async fn run<H: Handler + 'static>(
    config: DbProxyServerConfig,
    listener: impl Into<Listeners>,
    handler: Arc<H>,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    let listener: Listeners = listener.into();
    let mut links = JoinSet::new();
    let mut next_id = 0u64;
    loop {
        tokio::select! {
            (stream, peer) = link::accept_link(&listener) => {
                next_id += 1;
                let span = tracing::info_span!("db_proxy_link", id = next_id, %peer);
                // An in-process link has no network peer to name.
                let ip = (peer != link::IN_PROCESS).then(|| peer.ip());
                let served = serve_link(stream, next_id, ip, handler.clone(), config.clone(), shutdown.clone());
                links.spawn(served.instrument(span));
            }
            _ = shutdown.wait() => break,
            Some(_) = links.join_next(), if !links.is_empty() => {}
        }
    }
    drop(listener);
    while links.join_next().await.is_some() {}
    Ok(())
}

/// One msg_server link: frames come from a [`link`] task (heartbeats, timeouts, framing);
/// each request is answered on its own task, at most `max_in_flight` at once. A frame is
/// taken from the link only once a permit is in hand, so beyond the budget the link stops
/// reading, and no await here waits on the link (which keeps writing answers meanwhile).
/// On shutdown the peer gets `CID_OTHER_STOP_RECV_PACKET`; the link goes on for
/// `stop_linger`, then the requests still unanswered are given up and the link closes.
async fn serve_link<H: Handler + 'static>(
    conn: link::Accepted,
    id: u64,
    peer: Option<IpAddr>,
    handler: Arc<H>,
    config: DbProxyServerConfig,
    mut shutdown: Shutdown,
) {
    info!("link opened");
    // The slot of the listener's caps is held until this link is done.
    let (stream, _permit) = conn.into_parts();
    let link_config = LinkConfig {
        max_frame_len: config.max_frame_len,
        outbox: config.write_queue.max(1),
        outbox_bytes: config.write_queue_bytes.max(1),
        ..LinkConfig::default()
    };
    // The link closes when we say so (after the linger), not at the server's shutdown.
    let (close_link, link_shutdown) = crate::shutdown::channel();
    let (events_tx, mut events) = mpsc::channel(16);
    let link = tokio::spawn(
        link::serve(stream, id, link_config, events_tx, link_shutdown).in_current_span(),
    );
    let in_flight = Arc::new(Semaphore::new(config.max_in_flight.max(1)));
    let mut permit: Option<OwnedSemaphorePermit> = None;
    let mut requests = JoinSet::new();
    let mut outbox: Option<Outbox> = None;
    let mut linger_until: Option<tokio::time::Instant> = None;
    loop {
        let linger =
            linger_until.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            acquired = in_flight.clone().acquire_owned(), if permit.is_none() => match acquired {
                Ok(p) => permit = Some(p),
                Err(_) => break,
            },
            event = events.recv(), if permit.is_some() || outbox.is_none() => match event {
                Some(LinkEvent::Opened(_, o)) => outbox = Some(o),
                Some(LinkEvent::Frame(_, pdu)) => {
                    let (Some(o), Some(p)) = (&outbox, permit.take()) else {
                        break;
                    };
                    requests.spawn(answer(handler.clone(), pdu, peer, o.clone(), p).in_current_span());
                }
                Some(LinkEvent::Closed(_)) | None => break,
            },
            _ = shutdown.wait(), if linger_until.is_none() => {
                linger_until = Some(tokio::time::Instant::now() + config.stop_linger);
                if let Some(o) = &outbox {
                    let stop = ImStopReceivePacket { result: 0 };
                    if o.send_pdu(&Pdu::encode_message(&stop, 0)).is_err() {
                        debug!("the stop notice found no room, closing the link");
                        break;
                    }
                }
            }
            _ = tokio::time::sleep_until(linger), if linger_until.is_some() => break,
            Some(_) = requests.join_next(), if !requests.is_empty() => {}
        }
    }
    // The peer left: its requests in flight still finish (their answers go nowhere, but a
    // message being stored is stored), within the linger once shutting down. The linger is
    // over: what is still unanswered is given up.
    {
        let finish = async { while requests.join_next().await.is_some() {} };
        tokio::pin!(finish);
        // `finish` is polled again only while it has not completed.
        let until = match linger_until {
            Some(until) => Some(until),
            None => tokio::select! {
                () = &mut finish => None, // all done
                _ = shutdown.wait() => Some(tokio::time::Instant::now() + config.stop_linger),
            },
        };
        if let Some(until) = until {
            let _ = tokio::time::timeout_at(until, &mut finish).await;
        }
    }
    requests.shutdown().await;
    drop(outbox);
    drop(events);
    close_link.trigger(); // flush the queued answers (briefly) and close
    let _ = link.await;
    info!("link closed");
}

/// Decodes one request, lets the handler answer it (knowing the link's `peer`), and queues the
/// answer with the request's sequence number; the permit bounds the requests in flight.
async fn answer<H: Handler>(
    handler: Arc<H>,
    pdu: Pdu,
    peer: Option<IpAddr>,
    outbox: Outbox,
    permit: OwnedSemaphorePermit,
) {
    let request = match pdu.decode_any() {
        Ok(request) => request,
        Err(error) => {
            debug!(command = %pdu.command(), %error, "undecodable request body, no answer");
            return;
        }
    };
    if let Some(reply) = handler.handle_from(request, peer).await {
        let _ = outbox
            .send_wait(reply.to_pdu(pdu.seq_num()).to_bytes())
            .await;
    }
    drop(permit);
}
