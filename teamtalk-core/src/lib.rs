//! The TeamTalk protocol core: framing, ids, message dispatch and (later) domain logic, with
//! **no I/O, no async runtime and no clock reads**. Everything here takes inputs and returns
//! outputs; time, sockets and storage belong to the caller. That makes it usable from any
//! runtime (or none) and testable without sockets.
//!
//! Third parties can write their own TeamTalk servers, bots and tools on it; our servers
//! (`teamtalk-servers`) are thin shells over it.
//!
//! # Reading a frame
//!
//! ```
//! use bytes::BytesMut;
//! use teamtalk_core::{proto::message::ImMsgData, AnyMessage, CommandId, Pdu, PduDecoder};
//!
//! let msg = ImMsgData { from_user_id: 1, to_session_id: 2, msg_type: 1,
//!                       msg_data: "aGVsbG8=".into(), ..Default::default() };
//! let mut buf = BytesMut::from(&Pdu::encode_message(&msg, 5).to_bytes()[..]);
//!
//! let pdu = PduDecoder::default().decode(&mut buf)?.expect("one whole frame");
//! assert_eq!(pdu.command(), CommandId::MSG_DATA);
//! match pdu.decode_any()? {
//!     AnyMessage::MsgData(data) => assert_eq!(data.to_session_id, 2),
//!     other => panic!("unexpected {other:?}"),
//! }
//! # Ok::<(), teamtalk_core::PduError>(())
//! ```
//!
//! # Layout
//!
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
