//! PDU framing: the 16-byte header, [`Pdu`], and the streaming [`PduDecoder`].
//!
//! ```text
//!  0               4       6       8       10      12      14      16
//!  +---------------+-------+-------+-------+-------+-------+-------+----------------+
//!  |    length     |version| flag  |service|command|seq_num|reservd| body (protobuf)|
//!  +---------------+-------+-------+-------+-------+-------+-------+----------------+
//!  length = 16 + body length; every header integer is big-endian.
//! ```
//!
//! The decoder follows the contract of tokio-util's `Decoder` without depending on it:
//! `Ok(Some(pdu))` for a complete frame, `Ok(None)` when more bytes are needed (after reserving
//! room for the rest of the announced frame), `Err` for a frame that must close the connection.
//! A length below 16 or above the configured maximum is rejected as soon as its four bytes
//! arrive, before any memory is reserved for it (docs/compatibility.md Q-13).

use core::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::command::AnyMessage;
use crate::ids::{CommandId, ServiceId};
use crate::message::{decode_as, DecodeError, PduMessage};

/// Size of the PDU header in bytes.
pub const HEADER_LEN: usize = 16;

/// Default upper bound on a whole frame (header included): 1 MiB. The largest legitimate
/// bodies are 32 KiB file blocks and short audio messages.
pub const DEFAULT_MAX_FRAME_LEN: u32 = 1 << 20;

/// The `version` the original servers write into the PDUs they build. Never checked on input:
/// Android sends 6, iOS 13.
pub const PDU_VERSION: u16 = 1;

/// The 16-byte PDU header without its length field (the length follows from the body).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PduHeader {
    /// Protocol version; [`PDU_VERSION`] for PDUs we build, kept as is when forwarding.
    pub version: u16,
    /// Unused by the protocol; 0.
    pub flag: u16,
    /// Service of the command (its high byte) for PDUs we build.
    pub service_id: ServiceId,
    /// What the body is: the dispatch key.
    pub command_id: CommandId,
    /// Request/response correlation: a response echoes its request's value, an unsolicited
    /// PDU to a client carries 0 (docs/protocol.md § Sequence numbers).
    pub seq_num: u16,
    /// Unused by the protocol; 0 for PDUs we build (Android sends 0x0030).
    pub reserved: u16,
}

impl PduHeader {
    /// The header of a PDU we build: version 1, flag 0, the command's service, reserved 0.
    pub const fn new(command_id: CommandId, seq_num: u16) -> PduHeader {
        PduHeader {
            version: PDU_VERSION,
            flag: 0,
            service_id: command_id.service(),
            command_id,
            seq_num,
            reserved: 0,
        }
    }

    /// Writes the 16 header bytes with `frame_len` (header included) as the length field.
    pub fn encode(&self, frame_len: u32, dst: &mut impl BufMut) {
        dst.put_u32(frame_len);
        dst.put_u16(self.version);
        dst.put_u16(self.flag);
        dst.put_u16(self.service_id.0);
        dst.put_u16(self.command_id.0);
        dst.put_u16(self.seq_num);
        dst.put_u16(self.reserved);
    }

    /// Reads 16 header bytes: the length field (not validated here) and the header.
    pub fn decode(src: &[u8; HEADER_LEN]) -> (u32, PduHeader) {
        let be16 = |hi: u8, lo: u8| u16::from_be_bytes([hi, lo]);
        let length = u32::from_be_bytes([src[0], src[1], src[2], src[3]]);
        let header = PduHeader {
            version: be16(src[4], src[5]),
            flag: be16(src[6], src[7]),
            service_id: ServiceId(be16(src[8], src[9])),
            command_id: CommandId(be16(src[10], src[11])),
            seq_num: be16(src[12], src[13]),
            reserved: be16(src[14], src[15]),
        };
        (length, header)
    }
}

/// One protocol data unit: a header and a protobuf body.
///
/// The body is a [`Bytes`]: frames produced by [`PduDecoder`] share the read buffer, and
/// decoding their `bytes` fields slices it again, so a message body is never copied on the way
/// through a server. `Debug` shows the body's length only, never its content.
#[derive(Clone, PartialEq, Eq)]
pub struct Pdu {
    /// The header fields.
    pub header: PduHeader,
    /// The serialized protobuf message (may be empty, e.g. a heartbeat).
    pub body: Bytes,
}

impl Pdu {
    /// A PDU with a fresh header ([`PduHeader::new`]) around an already encoded body.
    pub fn new(command_id: CommandId, seq_num: u16, body: Bytes) -> Pdu {
        Pdu {
            header: PduHeader::new(command_id, seq_num),
            body,
        }
    }

    /// A PDU carrying `message` under its command with `seq_num`.
    pub fn encode_message<M: PduMessage>(message: &M, seq_num: u16) -> Pdu {
        Pdu::new(M::COMMAND, seq_num, message.encode_to_vec().into())
    }

    /// Writes header and body of `message` straight into `dst`, without building a [`Pdu`]
    /// first: the cheapest way to send.
    pub fn write_message<M: PduMessage>(message: &M, seq_num: u16, dst: &mut impl BufMut) {
        let body_len = message.encoded_len();
        PduHeader::new(M::COMMAND, seq_num).encode(frame_len(body_len), dst);
        message.encode_raw(dst);
    }

    /// The command of the PDU.
    pub fn command(&self) -> CommandId {
        self.header.command_id
    }

    /// The sequence number of the PDU.
    pub fn seq_num(&self) -> u16 {
        self.header.seq_num
    }

    /// Total encoded size: header plus body.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.body.len()
    }

    /// Appends the encoded frame to `dst`.
    pub fn encode(&self, dst: &mut impl BufMut) {
        self.header.encode(frame_len(self.body.len()), dst);
        dst.put_slice(&self.body);
    }

    /// The encoded frame as a new buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.frame_len());
        self.encode(&mut buf);
        buf.freeze()
    }

    /// Decodes the body as `M`, after checking that the PDU's command carries `M`.
    pub fn decode_body<M: PduMessage>(&self) -> Result<M, DecodeError> {
        if self.header.command_id != M::COMMAND {
            return Err(DecodeError::UnexpectedCommand {
                expected: M::COMMAND,
                found: self.header.command_id,
            });
        }
        decode_as(self.body.clone())
    }

    /// Decodes the body as whatever message the PDU's command carries.
    pub fn decode_any(&self) -> Result<AnyMessage, DecodeError> {
        AnyMessage::decode(self.header.command_id, self.body.clone())
    }
}

impl AnyMessage {
    /// A PDU carrying this message under its command with `seq_num` (version 1, flag 0,
    /// reserved 0).
    pub fn to_pdu(&self, seq_num: u16) -> Pdu {
        Pdu::new(self.command(), seq_num, self.encode_to_vec().into())
    }
}

impl fmt::Debug for Pdu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pdu")
            .field("header", &self.header)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// The length field for a body of `body_len` bytes. Bodies above 4 GiB cannot be framed; the
/// decoders of every peer (ours included) cap frames far below that.
fn frame_len(body_len: usize) -> u32 {
    u32::try_from(HEADER_LEN.saturating_add(body_len)).unwrap_or(u32::MAX)
}

/// A frame that cannot be read. The byte stream has lost its framing: close the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The length field is smaller than the header itself (0 to 15).
    #[error("frame length {length} is shorter than the 16-byte header")]
    TooShort {
        /// The length field read.
        length: u32,
    },
    /// The length field exceeds the configured maximum frame size.
    #[error("frame length {length} exceeds the limit of {max} bytes")]
    TooLong {
        /// The length field read.
        length: u32,
        /// The decoder's limit.
        max: u32,
    },
    /// A frame handed over whole ([`PduDecoder::decode_frame`]) whose length field is not its
    /// length.
    #[error("frame length field {length} does not match the {actual} bytes handed over")]
    LengthMismatch {
        /// The length field read.
        length: u32,
        /// The bytes of the frame.
        actual: usize,
    },
}

/// Streaming PDU decoder over a [`BytesMut`] read buffer.
///
/// Feed it whatever the socket delivered, in any chunking; call [`PduDecoder::decode`] until it
/// returns `Ok(None)`:
///
/// ```
/// use bytes::BytesMut;
/// use teamtalk_core::{proto::other::ImHeartBeat, CommandId, Pdu, PduDecoder};
///
/// let wire = Pdu::encode_message(&ImHeartBeat {}, 7).to_bytes();
/// let mut decoder = PduDecoder::default();
/// let mut buf = BytesMut::new();
///
/// buf.extend_from_slice(&wire[..10]); // half a header
/// assert!(decoder.decode(&mut buf)?.is_none());
/// buf.extend_from_slice(&wire[10..]);
/// let pdu = decoder.decode(&mut buf)?.expect("a whole frame");
/// assert_eq!((pdu.command(), pdu.seq_num()), (CommandId::OTHER_HEARTBEAT, 7));
/// assert!(buf.is_empty());
/// # Ok::<(), teamtalk_core::FrameError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PduDecoder {
    max_frame_len: u32,
}

impl PduDecoder {
    /// A decoder refusing frames longer than `max_frame_len` bytes (header included).
    pub const fn new(max_frame_len: u32) -> PduDecoder {
        PduDecoder { max_frame_len }
    }

    /// The largest frame (header included) this decoder accepts.
    pub const fn max_frame_len(&self) -> u32 {
        self.max_frame_len
    }

    /// Takes the next complete frame off the front of `src`.
    ///
    /// Returns `Ok(None)` when `src` does not hold a whole frame yet; the bytes stay in `src`
    /// and room for the rest of the frame is reserved. Never panics, whatever `src` holds.
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Pdu>, FrameError> {
        let Some(&[a, b, c, d]) = src.get(..4) else {
            return Ok(None);
        };
        let length = self.checked_length([a, b, c, d])? as usize;
        if src.len() < length {
            src.reserve(length - src.len());
            return Ok(None);
        }
        // Checked before anything was reserved; the split frame is read as a whole one.
        self.decode_frame(src.split_to(length).freeze()).map(Some)
    }

    /// The length field `field`, refused below the header or above the limit.
    fn checked_length(&self, field: [u8; 4]) -> Result<u32, FrameError> {
        let length = u32::from_be_bytes(field);
        if length < HEADER_LEN as u32 {
            return Err(FrameError::TooShort { length });
        }
        if length > self.max_frame_len {
            return Err(FrameError::TooLong {
                length,
                max: self.max_frame_len,
            });
        }
        Ok(length)
    }

    /// Reads one whole encoded frame (as [`Pdu::to_bytes`] makes it) handed over in memory,
    /// with the same checks as [`PduDecoder::decode`] plus one: the length field must be the
    /// frame's length. The body shares `frame`'s memory; nothing is copied.
    ///
    /// ```
    /// use teamtalk_core::{proto::other::ImHeartBeat, CommandId, Pdu, PduDecoder};
    ///
    /// let frame = Pdu::encode_message(&ImHeartBeat {}, 3).to_bytes();
    /// let pdu = PduDecoder::default().decode_frame(frame.clone())?;
    /// assert_eq!((pdu.command(), pdu.seq_num()), (CommandId::OTHER_HEARTBEAT, 3));
    /// assert!(PduDecoder::default().decode_frame(frame.slice(..15)).is_err());
    /// # Ok::<(), teamtalk_core::FrameError>(())
    /// ```
    pub fn decode_frame(&self, frame: Bytes) -> Result<Pdu, FrameError> {
        let Some(&[a, b, c, d]) = frame.get(..4) else {
            return Err(FrameError::TooShort {
                length: u32::try_from(frame.len()).unwrap_or(0),
            });
        };
        let length = self.checked_length([a, b, c, d])?;
        if u32::try_from(frame.len()).ok() != Some(length) {
            return Err(FrameError::LengthMismatch {
                length,
                actual: frame.len(),
            });
        }
        let Some(head) = frame
            .get(..HEADER_LEN)
            .and_then(|h| <&[u8; HEADER_LEN]>::try_from(h).ok())
        else {
            // unreachable: the frame is `length` >= HEADER_LEN bytes long
            return Err(FrameError::TooShort { length });
        };
        let (_, header) = PduHeader::decode(head);
        Ok(Pdu {
            header,
            body: frame.slice(HEADER_LEN..),
        })
    }
}

impl Default for PduDecoder {
    /// A decoder with the [`DEFAULT_MAX_FRAME_LEN`] limit of 1 MiB.
    fn default() -> Self {
        PduDecoder::new(DEFAULT_MAX_FRAME_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_bytes(length: u32) -> BytesMut {
        let mut buf = BytesMut::new();
        PduHeader::new(CommandId::OTHER_HEARTBEAT, 0).encode(length, &mut buf);
        buf
    }

    #[test]
    fn lengths_below_the_header_are_framing_errors() {
        for length in 0..16 {
            let mut buf = header_bytes(length);
            assert_eq!(
                PduDecoder::default().decode(&mut buf),
                Err(FrameError::TooShort { length })
            );
        }
    }

    #[test]
    fn oversized_lengths_are_rejected_before_reserving() {
        let mut buf = BytesMut::with_capacity(16);
        buf.extend_from_slice(&u32::MAX.to_be_bytes());
        let err = PduDecoder::default().decode(&mut buf).unwrap_err();
        assert_eq!(
            err,
            FrameError::TooLong {
                length: u32::MAX,
                max: DEFAULT_MAX_FRAME_LEN
            }
        );
        assert!(
            buf.capacity() < 1024,
            "no memory was reserved for the announced frame"
        );

        let mut decoder = PduDecoder::new(100);
        assert_eq!(
            decoder.decode(&mut header_bytes(101)),
            Err(FrameError::TooLong {
                length: 101,
                max: 100
            })
        );
        assert_eq!(
            decoder.decode(&mut header_bytes(100)),
            Ok(None),
            "exactly the limit waits for the body"
        );
    }

    #[test]
    fn a_partial_frame_reserves_its_remainder_and_waits() {
        let mut buf = header_bytes(16 + 5000);
        assert_eq!(PduDecoder::default().decode(&mut buf), Ok(None));
        assert_eq!(buf.len(), 16, "nothing consumed");
        assert!(buf.capacity() >= 16 + 5000);
        let mut short = BytesMut::from(&[0u8, 0, 0][..]);
        assert_eq!(PduDecoder::default().decode(&mut short), Ok(None));
    }

    #[test]
    fn decoded_bodies_share_the_read_buffer() {
        let pdu = Pdu::new(CommandId::MSG_DATA, 1, Bytes::from_static(b"0123456789"));
        let mut buf = BytesMut::new();
        pdu.encode(&mut buf);
        pdu.encode(&mut buf);
        let start = buf.as_ptr() as usize;
        let mut decoder = PduDecoder::default();
        let first = decoder.decode(&mut buf).unwrap().unwrap();
        let second = decoder.decode(&mut buf).unwrap().unwrap();
        assert_eq!(first.body.as_ptr() as usize, start + 16);
        assert_eq!(second.body.as_ptr() as usize, start + 26 + 16);
        assert_eq!((first, second), (pdu.clone(), pdu));
        assert!(buf.is_empty());
    }

    #[test]
    fn decode_body_checks_the_command() {
        use teamtalk_proto::message::ImMsgDataAck;
        let pdu = Pdu::new(CommandId::MSG_DATA, 1, Bytes::new());
        let err = pdu.decode_body::<ImMsgDataAck>().unwrap_err();
        assert!(matches!(
            err,
            DecodeError::UnexpectedCommand {
                expected: CommandId::MSG_DATA_ACK,
                found: CommandId::MSG_DATA
            }
        ));
    }

    #[test]
    fn debug_hides_the_body() {
        let pdu = Pdu::new(CommandId::MSG_DATA, 1, Bytes::from_static(b"secret"));
        let shown = format!("{pdu:?}");
        assert!(
            !shown.contains("secret") && shown.contains("body_len: 6"),
            "{shown}"
        );
        assert!(shown.contains("CID_MSG_DATA"), "{shown}");
    }
}
