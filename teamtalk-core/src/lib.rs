#![doc = include_str!("../README.md")]
//!
//! # Write your own server
//!
//! `examples/single_process_server.rs` is a complete TeamTalk server in one process (login,
//! 1:1 and group chat, presence, history, unread) in under 150 lines of tokio over this crate
//! and a store picked at run time; the stock clients, `tt` among them, use it.
//!
//! A login needs three links of its msg_server ([`msg_server::MsgServer`]): a db_proxy link
//! (the store: login check, messages, unread counts; else `REFUSE_REASON_NO_DB_SERVER`), a
//! login_server link (the registry that hands the msg_server's address to clients; else
//! `REFUSE_REASON_NO_LOGIN_SERVER`, unless `MsgServerConfig::require_login_server` is off)
//! and a route_server link (presence and delivery between msg_servers; else
//! `REFUSE_REASON_NO_ROUTE_SERVER`). Separate processes provide them over TCP. In one process
//! a [`local::Node`] provides them in memory: it owns the msg_servers, the route hub
//! ([`routing::RouteHub`]) and the login registry ([`balance::Registry`]), hands the route and
//! login frames between them in order without encoding, and gives each db_proxy request to
//! the shell ([`local::LocalOutput::Db`]), which answers it with a [`service::Handler`]
//! ([`service::DbProxy`] over any [`store::Store`]) and hands the answer back. The shell
//! left is sockets and a timer (docs/architecture.md, "One process").
//!
//! # Run loop
//!
//! Every state machine of this crate is driven the same way, through the [`time::Machine`]
//! trait (the manner of str0m and quinn-proto): [`routing::RouteHub`] (route_server),
//! [`balance::Registry`] (login_server), [`file_transfer::FileTasks`] (file_server),
//! [`client::ClientSession`] (one client connection), [`link::LinkTimer`] (heartbeats and
//! idle timeout of one server link), the msg_server's [`msg_server::MsgServer`], whose inputs are
//! [`handle_client_opened`](msg_server::MsgServer::handle_client_opened),
//! [`handle_client_frame`](msg_server::MsgServer::handle_client_frame),
//! [`handle_client_closed`](msg_server::MsgServer::handle_client_closed),
//! [`handle_upstream_opened`](msg_server::MsgServer::handle_upstream_opened),
//! [`handle_upstream_frame`](msg_server::MsgServer::handle_upstream_frame) and
//! [`handle_upstream_closed`](msg_server::MsgServer::handle_upstream_closed), and whose outputs
//! are [`msg_server::Action`]s; and [`local::Node`], all of them in one process.
//!
//! A machine never blocks, never reads a clock, never touches a socket and never fails an
//! input: bad input is logged and ignored, or answered with an output (often a close). The
//! shell — the code that owns the sockets, the tasks and the clock — must:
//!
//! 1. **Create** the machine (with the [`time::Now`] of its start where it asks for one).
//! 2. **Feed every input with its `now`**, read once per input ([`time::Epoch::now`]), through
//!    the machine's `handle_*` methods: a connection opened (`handle_*_opened`, which returns
//!    the id the machine gives that connection: the core owns link and connection ids, the
//!    shell maps its sockets to them), a frame received (`handle_*_frame`), a connection
//!    closed (`handle_*_closed`), the result of I/O the machine asked for (such as
//!    [`file_transfer::FileTasks::handle_loaded`]).
//! 3. **Drain after every input**: call [`time::Machine::poll_output`] until it returns
//!    `None`, doing what each output says, in order. An output whose execution is itself an
//!    input (a block read from disk) is fed back during the drain; keep draining after it.
//!    Outputs are only ever produced by inputs: a machine that was drained has nothing to say
//!    until the next one.
//! 4. **Sleep until [`time::Machine::poll_timeout`]**, asked again after every drain (each
//!    input can move it earlier or later; `None`: no timer armed, wait for inputs only), then
//!    call [`time::Machine::handle_timeout`] with the current `now` and drain again. There is
//!    no fixed tick; waking late or early is harmless.
//!
//! What to do with each kind of output:
//!
//! - **A frame for a connection** ([`routing::Transmit`], [`file_transfer::FileAction::Send`],
//!   [`client::ClientOutput::Transmit`], the msg_server's `ToClient` and `ToUpstream`): queue
//!   it on that connection's writer, in output order. A frame for a connection the shell no
//!   longer has is dropped. A frame for many connections is encoded once: every output
//!   carries the same `Bytes` (clone the handle, never copy the bytes).
//! - **A close** ([`file_transfer::FileAction::Close`], [`link::LinkAction::Close`], the
//!   msg_server's `Close`): write the frames queued for that connection before the close
//!   (they were output first), within a bounded time, then close the socket, and report it
//!   back with the machine's closed input (`handle_conn_closed`, `handle_link_closed`,
//!   `handle_client_closed`, …). Never feed that connection again: the machine ignores its
//!   frames from the close on, and never reuses its id. A connection that the peer, the
//!   network or a timer closed is reported the same way, once.
//! - **Flow control** (the msg_server's `PauseReading` / `ResumeReading`): stop or resume
//!   reading that socket; writing goes on.
//! - **I/O the machine cannot do** ([`file_transfer::FileAction::Store`], `Load`, `Forget`):
//!   do it, and feed back the results it asks for.
//! - **Events** ([`client::ClientOutput::Answer`], [`client::ClientOutput::Event`],
//!   [`balance::RegistryEvent`], …): hand them to the application, or log them.
//!
//! A shell in a few lines, with a fake clock, driving a server link's [`link::LinkTimer`]
//! until it closes the link:
//!
//! ```
//! use teamtalk_core::link::{LinkAction, LinkTimer};
//! use teamtalk_core::time::{Machine, Now};
//!
//! let mut now = Now::from_ms(0);
//! let mut timer = LinkTimer::new(now); // 1. create
//! let mut heartbeats = Vec::new();
//! let mut open = true;
//!
//! // 2. An input (a frame arrived at 2 s) with its `now`, 3. then a full drain.
//! now = now.plus_ms(2_000);
//! timer.handle_received(now);
//! assert_eq!(timer.poll_output(), None);
//!
//! while open {
//!     // 4. Sleep until the deadline (here: move the fake clock), then fire and drain.
//!     let Some(deadline) = timer.poll_timeout() else { break };
//!     now = now.plus_ms(deadline.saturating_sub(now.ms));
//!     timer.handle_timeout(now);
//!     while let Some(action) = timer.poll_output() {
//!         match action {
//!             LinkAction::SendHeartbeat => {
//!                 heartbeats.push(now.ms); // queue `CID_OTHER_HEARTBEAT` on the writer
//!                 timer.handle_sent(now);
//!             }
//!             // Flush what was queued, close the socket, feed nothing more.
//!             LinkAction::Close => open = false,
//!         }
//!     }
//! }
//! assert_eq!(heartbeats, [5_000, 10_000, 15_000, 20_000, 25_000, 30_000]);
//! assert_eq!(now.ms, 32_000, "closed 30 s after the last frame");
//! assert_eq!(timer.poll_timeout(), None, "a closed link arms no timer");
//! ```
//!
//! # Layout
//!
//! - [`local`]: [`local::Node`], msg_servers, the route hub and the login registry linked in
//!   memory for one process.
//! - [`pdu`]: the 16-byte header, [`Pdu`], the streaming [`PduDecoder`] and [`FrameError`].
//! - [`ids`]: [`ServiceId`] and [`CommandId`], printing their original names.
//! - [`command`]: the command table: every command, its name, its message and who sends it;
//!   [`AnyMessage`]; [`command::requests`]: every request's rules (requester, route, answer,
//!   failure reply) in one table.
//! - [`message`]: the typed path ([`PduMessage`]) and body errors ([`DecodeError`]).
//! - [`attach`]: the attach_data layouts servers use to route responses.
//! - [`error`]: [`PduError`], deciding whether a failure closes the connection.
//! - [`domain`]: typed ids ([`domain::UserId`], [`domain::MsgId`] …), timestamps, the
//!   injected [`domain::Clock`] and the protocol enums as Rust enums.
//! - [`password`]: the TeamTalk password scheme; [`guard`]: the login brute-force rule.
//! - [`crypt`]: the TeamTalk message encryption (push alert text, audio preview).
//! - [`store`]: the storage traits, one per concern, with their invariants.
//! - [`service`]: the db_proxy business over those traits ([`service::DbProxy`]) and the
//!   [`service::Handler`] a server dispatches decoded requests through.
//! - [`client`]: the client side of a connection: seqs, pending requests, heartbeats, events.
//! - [`balance`]: the login_server's msg_server registry and least-loaded choice (silent
//!   msg_servers are skipped).
//! - [`routing`]: the route_server's presence table and relay rules.
//! - [`kick`]: multi-device rules: who a login or a mobile's kick request pushes out.
//! - [`msg_server`]: the msg_server as a state machine: client sessions, login, delivery,
//!   kicks, and its links to db_proxy, route_server and login_server; messages held while
//!   no db_proxy is connected (`msg_server::hold`).
//! - [`file_transfer`]: the file_server's transfer tasks (online relay, offline store).
//! - [`limits`]: connection caps (total and per source address) and the descriptor budget.
//! - [`link`]: heartbeats and idle timeouts of server links, as data.
//! - [`multipart`]: the file part of an msfs upload, read incrementally as the body arrives.
//! - [`time`]: [`time::Now`] (the moment every input carries), the [`time::Machine`] run-loop
//!   trait and the shells' clocks
//!   ([`time::Epoch`], [`time::SystemClock`]).
//! - [`proto`]: the generated protobuf messages (re-export of `teamtalk-proto`).

pub mod attach;
pub mod balance;
pub mod client;
pub mod command;
pub mod crypt;
pub mod domain;
pub mod error;
pub mod file_transfer;
pub mod guard;
pub mod ids;
pub mod kick;
pub mod limits;
pub mod link;
pub mod local;
pub mod message;
pub mod msg_server;
pub mod multipart;
pub mod password;
pub mod pdu;
pub mod routing;
pub mod service;
pub mod store;
pub mod time;

pub use teamtalk_proto as proto;

pub use attach::{AttachError, AttachType, DbAttach, PduAttach, ValidateAttach};
pub use command::AnyMessage;
pub use error::PduError;
pub use ids::{CommandId, ServiceId};
pub use message::{DecodeError, PduMessage};
pub use pdu::{FrameError, Pdu, PduDecoder, PduHeader};

/// The code in docs/protocol.md is compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/protocol.md")]
struct ProtocolDoc;
