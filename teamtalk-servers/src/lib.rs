#![doc = include_str!("../README.md")]
//!
//! # Modules
//!
//! - [`shutdown`]: the shutdown signal every server and connection watches.
//! - [`clock`]: the wall clock handed to the core (the only place that reads it).
//! - [`conf`]: the original servers' `.conf` files, for migrating deployments.
//! - [`db_proxy`]: db_proxy_server: msg_server links dispatched to a core [`Handler`].
//! - [`file_server`]: file_server: online relay and offline files.
//! - [`http_msg`]: http_msg_server: the administration HTTP API.
//! - [`limits`]: connection caps, listen backlog, HTTP timeouts, the descriptor limit.
//! - [`link`]: framed links (heartbeats, timeouts, bounded queues) and reconnecting dials;
//!   [`link::memory`]: the same links between roles of one process, without sockets.
//! - [`login_server`]: login_server: HTTP discovery and the msg_server registry.
//! - [`msfs`]: msfs: the HTTP blob store (images, avatars, audio).
//! - [`msg_server`]: msg_server: client connections and their upstream links.
//! - [`push`]: push_server with a pluggable backend (webhook; APNs with the `apns` feature).
//! - [`route_server`]: route_server: presence and relay between msg_servers.
//! - [`roles`]: each role's original configuration keys, from `.conf` or TOML.
//! - [`secret`]: salts, API keys and task ids from the operating system's random source.
//! - [`serve`]: every role in one process (`teamtalk serve`).
//! - [`db_proxy_conf`]: an original `dbproxyserver.conf` as db_proxy_server settings.
//! - [`trust`]: who may use an internal port (allow-lists of peer addresses).
//! - [`link_stream`]: the stream under a link: plain TCP, TLS, or an in-process end.
//! - `tls` (cargo feature `tls`): mutual TLS between our roles.
//!
//! [`Handler`]: teamtalk_core::service::Handler

pub mod clock;
pub mod conf;
pub mod db_proxy;
pub mod db_proxy_conf;
pub mod file_server;
pub mod http_msg;
pub mod limits;
pub mod link;
pub mod link_stream;
mod link_write;
pub mod local;
pub mod login_server;
pub mod msfs;
pub mod msg_server;
pub mod push;
pub mod roles;
pub mod route_server;
pub mod secret;
pub mod serve;
pub mod shutdown;
#[cfg(feature = "tls")]
pub mod tls;
pub mod trust;
