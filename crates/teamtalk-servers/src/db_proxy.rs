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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use teamtalk_core::link::{LinkAction, LinkTimer};
use teamtalk_core::pdu::DEFAULT_MAX_FRAME_LEN;
use teamtalk_core::proto::other::ImHeartBeat;
use teamtalk_core::proto::server::ImStopReceivePacket;
use teamtalk_core::service::Handler;
use teamtalk_core::{CommandId, Pdu, PduDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, info, warn, Instrument};

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
    listener: TcpListener,
    handler: Arc<H>,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    let mut links = JoinSet::new();
    let mut next_id = 0u64;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    next_id += 1;
                    let span = tracing::info_span!("db_proxy_link", id = next_id, %peer);
                    let link = serve_link(stream, handler.clone(), config.clone(), shutdown.clone());
                    links.spawn(link.instrument(span));
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = shutdown.wait() => break,
            Some(_) = links.join_next(), if !links.is_empty() => {}
        }
    }
    drop(listener);
    while links.join_next().await.is_some() {}
    Ok(())
}

async fn serve_link<H: Handler + 'static>(
    stream: TcpStream,
    handler: Arc<H>,
    config: DbProxyServerConfig,
    mut shutdown: Shutdown,
) {
    info!("link opened");
    let _ = stream.set_nodelay(true);
    let (mut reader, writer) = stream.into_split();
    let started = Instant::now();
    let now_ms = move || u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let last_sent = Arc::new(AtomicU64::new(0));
    let (queue, frames) = mpsc::channel::<Bytes>(config.write_queue.max(1));
    let write_task = tokio::spawn(write_frames(writer, frames, last_sent.clone(), now_ms));

    let mut decoder = PduDecoder::new(config.max_frame_len);
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut timer = LinkTimer::new(0);
    let in_flight = Arc::new(Semaphore::new(config.max_in_flight.max(1)));
    let mut requests = JoinSet::new();
    'link: loop {
        timer.sent(last_sent.load(Ordering::Relaxed));
        let deadline = started + Duration::from_millis(timer.next_deadline());
        tokio::select! {
            read = reader.read_buf(&mut buf) => match read {
                Ok(0) => break 'link,
                Ok(_) => {
                    timer.received(now_ms());
                    loop {
                        match decoder.decode(&mut buf) {
                            Ok(Some(pdu)) => {
                                if pdu.command() == CommandId::OTHER_HEARTBEAT {
                                    continue; // dropped, never echoed
                                }
                                let Ok(permit) = in_flight.clone().acquire_owned().await else { break 'link };
                                let (handler, queue) = (handler.clone(), queue.clone());
                                requests.spawn(async move {
                                    answer(&*handler, pdu, &queue).await;
                                    drop(permit);
                                }.in_current_span());
                            }
                            Ok(None) => break,
                            Err(error) => {
                                debug!(%error, "framing error, closing the link");
                                break 'link;
                            }
                        }
                    }
                }
                Err(error) => {
                    debug!(%error, "read failed");
                    break 'link;
                }
            },
            _ = tokio::time::sleep_until(deadline) => match timer.poll(now_ms()) {
                Some(LinkAction::SendHeartbeat) => {
                    let _ = queue.send(Pdu::encode_message(&ImHeartBeat {}, 0).to_bytes()).await;
                }
                Some(LinkAction::Close) => {
                    info!("link silent for too long, closing");
                    break 'link;
                }
                None => {}
            },
            _ = shutdown.wait() => {
                let stop = ImStopReceivePacket { result: 0 };
                let _ = queue.send(Pdu::encode_message(&stop, 0).to_bytes()).await;
                break 'link;
            }
            Some(_) = requests.join_next(), if !requests.is_empty() => {}
        }
    }
    // Finish what was asked before closing.
    while requests.join_next().await.is_some() {}
    drop(queue);
    let _ = write_task.await;
    info!("link closed");
}

/// Decodes one request, lets the handler answer it, and queues the answer with the request's
/// sequence number.
async fn answer<H: Handler>(handler: &H, pdu: Pdu, queue: &mpsc::Sender<Bytes>) {
    let request = match pdu.decode_any() {
        Ok(request) => request,
        Err(error) => {
            debug!(command = %pdu.command(), %error, "undecodable request body, no answer");
            return;
        }
    };
    if let Some(reply) = handler.handle(request).await {
        let _ = queue.send(reply.to_pdu(pdu.seq_num()).to_bytes()).await;
    }
}

async fn write_frames(
    mut writer: OwnedWriteHalf,
    mut frames: mpsc::Receiver<Bytes>,
    last_sent: Arc<AtomicU64>,
    now_ms: impl Fn() -> u64,
) {
    let mut batch = Vec::new();
    while frames.recv_many(&mut batch, 64).await > 0 {
        for frame in batch.drain(..) {
            if let Err(error) = writer.write_all(&frame).await {
                debug!(%error, "write failed");
                return;
            }
        }
        last_sent.store(now_ms(), Ordering::Relaxed);
    }
    let _ = writer.shutdown().await;
}
