//! Typed PDU bodies: the [`PduMessage`] trait tying each protobuf message to its command, and
//! the body [`DecodeError`]. The dynamic [`crate::AnyMessage`] is built on them in
//! [`crate::command`]; frames ([`crate::Pdu`]) are built on both in [`crate::pdu`], so this
//! module depends on [`crate::ids`] alone.

use bytes::Buf;

use crate::ids::{CommandId, ServiceId};

/// A protobuf message that travels as the body of one command.
///
/// Implemented for every message of the command table; the hot path uses it to build and read
/// PDUs without going through [`crate::AnyMessage`]:
///
/// ```
/// use teamtalk_core::{proto::message::ImMsgDataAck, CommandId, Pdu, PduMessage};
///
/// assert_eq!(ImMsgDataAck::COMMAND, CommandId::MSG_DATA_ACK);
/// let ack = ImMsgDataAck { user_id: 1, session_id: 2, msg_id: 3, session_type: 1 };
/// let pdu = Pdu::encode_message(&ack, 42);
/// assert_eq!(pdu.decode_body::<ImMsgDataAck>().unwrap(), ack);
/// ```
pub trait PduMessage: prost::Message + Default + Sized {
    /// The command this message is sent under.
    const COMMAND: CommandId;
    /// The service of [`Self::COMMAND`], written in the header's `service_id`.
    const SERVICE: ServiceId = Self::COMMAND.service();
}

/// Why a PDU body could not be decoded. Fails that request only; the connection stays open
/// (see [`crate::PduError::closes_connection`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The command has no message in the protocol (or is not known to this version).
    #[error("no message is defined for command {command}")]
    UnknownCommand {
        /// The command of the PDU.
        command: CommandId,
    },
    /// The body is not a valid encoding of the command's message.
    #[error("malformed {command} body: {source}")]
    Malformed {
        /// The command of the PDU.
        command: CommandId,
        /// What protobuf decoding reported.
        source: prost::DecodeError,
    },
    /// [`crate::Pdu::decode_body`] was asked for a message the PDU's command does not carry.
    #[error("expected a {expected} PDU, got {found}")]
    UnexpectedCommand {
        /// The command of the requested message type.
        expected: CommandId,
        /// The command of the PDU.
        found: CommandId,
    },
}

/// Decodes `body` as `M`, naming `M`'s command in the error.
pub(crate) fn decode_as<M: PduMessage>(body: impl Buf) -> Result<M, DecodeError> {
    M::decode(body).map_err(|source| DecodeError::Malformed {
        command: M::COMMAND,
        source,
    })
}
