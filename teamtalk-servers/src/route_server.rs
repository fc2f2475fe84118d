//! route_server: the global presence table and the relay between msg_servers
//! a shell over [`teamtalk_core::routing::RouteHub`].

use std::collections::HashMap;

use teamtalk_core::routing::{RouteHub, RouteLink, Transmit};
use teamtalk_core::time::{Epoch, Machine};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::link::{self, LinkConfig, LinkEvent, Listeners, Outbox};
use crate::shutdown::Shutdown;

/// Settings of the route_server shell.
#[derive(Clone, Debug, Default)]
pub struct RouteServerConfig {
    /// The msg_server links (heartbeat 5 s, timeout 30 s by default).
    pub link: LinkConfig,
}

/// Serves msg_server links accepted on `listener` until `shutdown`.
pub async fn run(
    config: RouteServerConfig,
    listener: impl Into<Listeners>,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    let listener: Listeners = listener.into();
    info!(addr = ?listener.local_addrs(), "route_server listening");
    let (events_tx, mut events) = mpsc::channel::<LinkEvent<u64>>(4096);
    let epoch = Epoch::start();
    let mut hub = RouteHub::new();
    // The link task's id (given at accept) → the hub's id of the link.
    let mut ids: HashMap<u64, RouteLink> = HashMap::new();
    let mut outboxes: HashMap<RouteLink, Outbox> = HashMap::new();
    let mut next_id = 0u64;
    loop {
        tokio::select! {
            (stream, peer) = link::accept_link(&listener) => {
                next_id += 1;
                link::spawn_serve("route", stream, peer, next_id, config.link.clone(), events_tx.clone(), shutdown.clone());
            }
            Some(event) = events.recv() => {
                let now = epoch.now();
                match event {
                    LinkEvent::Opened(id, outbox) => {
                        let link = hub.handle_link_opened(now);
                        info!(id, %link, "msg_server link opened");
                        ids.insert(id, link);
                        outboxes.insert(link, outbox);
                    }
                    LinkEvent::Frame(id, pdu) => {
                        if let Some(&link) = ids.get(&id) {
                            hub.handle_frame(now, link, &pdu);
                        }
                    }
                    LinkEvent::Closed(id) => {
                        if let Some(link) = ids.remove(&id) {
                            info!(id, %link, "msg_server link closed");
                            outboxes.remove(&link);
                            hub.handle_link_closed(now, link);
                        }
                    }
                }
                // The hub arms no timer (poll_timeout is always None): draining after each
                // input is the whole run loop.
                while let Some(Transmit { link, frame }) = hub.poll_output() {
                    if let Some(outbox) = outboxes.get(&link) {
                        if let Err(error) = outbox.send(frame) {
                            warn!(%link, %error, "relay dropped");
                        }
                    }
                }
            }
            _ = shutdown.wait() => break,
        }
    }
    Ok(())
}
