//! db_proxy_server: accepts links from msg_servers (and http_msg_server) and answers their
//! requests through a core [`Handler`] (spec/servers.md §5).
//!
//! - Many requests are in flight on one link at once (bounded per link); answers may leave in
//!   any order, each echoing its request's `seq_num` (and `attach_data`, copied by the core).
//! - Heartbeats: received ones are dropped; one is sent after 5 s without sending; a link
//!   silent for 30 s is closed (`teamtalk_core::link`).
//! - A framing error closes that link; a body that does not decode fails that request only
//!   (no answer, as the original).
//! - Shutdown: every link gets `CID_OTHER_STOP_RECV_PACKET`, stops reading, finishes the
//!   requests in flight, and closes; then [`run`] returns.

use std::sync::Arc;

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
}

impl Default for DbProxyServerConfig {
    fn default() -> Self {
        DbProxyServerConfig {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            max_in_flight: 256,
            write_queue: 1024,
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
            (stream, peer) = link::accept(&listener) => {
                next_id += 1;
                let span = tracing::info_span!("db_proxy_link", id = next_id, %peer);
                let served = serve_link(stream, next_id, handler.clone(), config.clone(), shutdown.clone());
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
/// each request is answered on its own task, at most `max_in_flight` at once (beyond, the link
/// stops reading). On shutdown the peer gets `CID_OTHER_STOP_RECV_PACKET`, the link stops
/// reading, the requests in flight are answered, then the link closes.
async fn serve_link<H: Handler + 'static>(
    conn: link::Conn,
    id: u64,
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
        drain_on_shutdown: true,
        ..LinkConfig::default()
    };
    let (events_tx, mut events) = mpsc::channel(16);
    let link = tokio::spawn(
        link::serve(stream, id, link_config, events_tx, shutdown.clone()).in_current_span(),
    );
    let in_flight = Arc::new(Semaphore::new(config.max_in_flight.max(1)));
    let mut requests = JoinSet::new();
    let mut outbox: Option<Outbox> = None;
    let stopping = loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(LinkEvent::Opened(_, o)) => outbox = Some(o),
                Some(LinkEvent::Frame(_, pdu)) => {
                    let (Some(o), Ok(permit)) = (&outbox, in_flight.clone().acquire_owned().await) else {
                        break false;
                    };
                    requests.spawn(answer(handler.clone(), pdu, o.clone(), permit).in_current_span());
                }
                Some(LinkEvent::Closed(_)) | None => break false,
            },
            _ = shutdown.wait() => break true,
            Some(_) = requests.join_next(), if !requests.is_empty() => {}
        }
    };
    if let (true, Some(o)) = (stopping, &outbox) {
        let stop = ImStopReceivePacket { result: 0 };
        let _ = o.send_wait(Pdu::encode_message(&stop, 0).to_bytes()).await;
        // Requests already read are still answered; the link reads no more.
        while let Ok(event) = events.try_recv() {
            if let LinkEvent::Frame(_, pdu) = event {
                let Ok(permit) = in_flight.clone().acquire_owned().await else {
                    break;
                };
                requests.spawn(answer(handler.clone(), pdu, o.clone(), permit).in_current_span());
            }
        }
    }
    // Finish what was asked, then let the link flush and close.
    while requests.join_next().await.is_some() {}
    drop(outbox);
    drop(events);
    let _ = link.await;
    info!("link closed");
}

/// Decodes one request, lets the handler answer it, and queues the answer with the request's
/// sequence number; the permit bounds the requests in flight.
async fn answer<H: Handler>(
    handler: Arc<H>,
    pdu: Pdu,
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
    if let Some(reply) = handler.handle(request).await {
        let _ = outbox
            .send_wait(reply.to_pdu(pdu.seq_num()).to_bytes())
            .await;
    }
    drop(permit);
}
