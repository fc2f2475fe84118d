//! route_server: the global presence table and the relay between msg_servers
//! (spec/servers.md §4), a shell over [`teamtalk_core::routing::RouteHub`].

use std::collections::HashMap;

use teamtalk_core::routing::{Outgoing, RouteHub, Target};
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
    let mut hub = RouteHub::new();
    let mut links: HashMap<u64, Outbox> = HashMap::new();
    let mut next_id = 0u64;
    let mut out = Vec::new();
    loop {
        tokio::select! {
            (stream, peer) = link::accept_link(&listener) => {
                next_id += 1;
                link::spawn_serve("route", stream, peer, next_id, config.link.clone(), events_tx.clone(), shutdown.clone());
            }
            Some(event) = events.recv() => {
                match event {
                    LinkEvent::Opened(id, outbox) => {
                        info!(id, "msg_server link opened");
                        links.insert(id, outbox);
                    }
                    LinkEvent::Frame(id, pdu) => hub.on_pdu(id, &pdu, &mut out),
                    LinkEvent::Closed(id) => {
                        info!(id, "msg_server link closed");
                        links.remove(&id);
                        hub.on_link_closed(id, &mut out);
                    }
                }
                deliver(&links, &mut out);
            }
            _ = shutdown.wait() => break,
        }
    }
    Ok(())
}

fn deliver(links: &HashMap<u64, Outbox>, out: &mut Vec<Outgoing<u64>>) {
    for Outgoing { to, pdu } in out.drain(..) {
        let frame = pdu.to_bytes();
        let send = |id: &u64, outbox: &Outbox| {
            if let Err(error) = outbox.send(frame.clone()) {
                warn!(id, %error, command = %pdu.command(), "relay dropped");
            }
        };
        match to {
            Target::Link(id) => {
                if let Some(outbox) = links.get(&id) {
                    send(&id, outbox);
                }
            }
            Target::All => links.iter().for_each(|(id, o)| send(id, o)),
            Target::AllBut(source) => links
                .iter()
                .filter(|(id, _)| **id != source)
                .for_each(|(id, o)| send(id, o)),
        }
    }
}
