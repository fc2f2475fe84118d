//! attach_data (field 20) layouts: the routing context a stateless server (db_proxy, route,
//! file) copies verbatim from a request into its response (docs/protocol.md § attach_data).
//!
//! ```text
//! DbAttach (12 bytes):   | type u32 | handle u32 | service_type u32 |
//! PduAttach (16 + N):    | type u32 | handle u32 | service_type u32 | N u32 | N bytes of body |
//! ValidateAttach (12 or 21 or 33):
//!                        | DbAttach | "TTIP" | family u8 (4 or 6) | 4 or 16 address bytes |
//! ```
//!
//! [`ValidateAttach`] is ours: our msg_server appends the client's address to the
//! [`DbAttach`] of a login check so that db_proxy can count failed logins per source
//! (docs/compatibility.md, "Login lockout"). Any db_proxy echoes it (the original copies the
//! blob verbatim), and everything that routes the answer reads only the first 12 bytes, so
//! original servers on either side of the link keep working.
//!
//! All integers are big-endian. Decoding reads only what the layout needs (as the original
//! does, so a [`DbAttach`] can be read off a [`PduAttach`]) and reports a short blob as
//! [`AttachError::Truncated`]; the original closed the whole server link there (Q-42), we fail
//! only the response that carried it.

use core::fmt;
use std::net::IpAddr;

use bytes::{BufMut, Bytes, BytesMut};

/// What the attach data routes back to (docs/protocol.md § Attach types).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AttachType(pub u32);

impl AttachType {
    /// 1 `ATTACH_TYPE_HANDLE`: route the response to the client connection `handle`.
    pub const HANDLE: AttachType = AttachType(1);
    /// 2 `ATTACH_TYPE_PDU`: defined, unused.
    pub const PDU: AttachType = AttachType(2);
    /// 3 `ATTACH_TYPE_HANDLE_AND_PDU`: group-message fan-out (msg_server) / HTTP caller
    /// (http_msg_server).
    pub const HANDLE_AND_PDU: AttachType = AttachType(3);
    /// 4 `ATTACH_TYPE_PDU_FOR_PUSH`: status query before pushing; the body is an
    /// `IMPushToUserReq`.
    pub const PDU_FOR_PUSH: AttachType = AttachType(4);
    /// 5 `ATTACH_TYPE_HANDLE_AND_PDU_FOR_FILE`: status query deciding online vs offline file
    /// transfer; the body is an `IMFileTransferReq`.
    pub const HANDLE_AND_PDU_FOR_FILE: AttachType = AttachType(5);

    /// The msg_server name of the value, or `None` for an undefined one.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            1 => "ATTACH_TYPE_HANDLE",
            2 => "ATTACH_TYPE_PDU",
            3 => "ATTACH_TYPE_HANDLE_AND_PDU",
            4 => "ATTACH_TYPE_PDU_FOR_PUSH",
            5 => "ATTACH_TYPE_HANDLE_AND_PDU_FOR_FILE",
            _ => return None,
        })
    }
}

impl fmt::Debug for AttachType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "AttachType({})", self.0),
        }
    }
}

/// Attach data that is too short for its layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttachError {
    /// Fewer bytes than the layout (or its announced body length) requires.
    #[error("attach data holds {available} bytes, its layout needs {needed}")]
    Truncated {
        /// Bytes the layout needs.
        needed: usize,
        /// Bytes present.
        available: usize,
    },
}

/// `CDbAttachData`: 12 bytes naming the connection a response goes back to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DbAttach {
    /// Attach type; [`AttachType::HANDLE`] for ordinary requests.
    pub attach_type: AttachType,
    /// The requester's connection handle.
    pub handle: u32,
    /// Always 0 in the original.
    pub service_type: u32,
}

impl DbAttach {
    /// Encoded size.
    pub const LEN: usize = 12;

    /// Attach data for connection `handle` (service_type 0).
    pub const fn new(attach_type: AttachType, handle: u32) -> DbAttach {
        DbAttach {
            attach_type,
            handle,
            service_type: 0,
        }
    }

    /// Appends the 12 bytes to `dst`.
    pub fn encode(&self, dst: &mut impl BufMut) {
        dst.put_u32(self.attach_type.0);
        dst.put_u32(self.handle);
        dst.put_u32(self.service_type);
    }

    /// The encoding as a buffer, ready for an `attach_data` field.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(Self::LEN);
        self.encode(&mut buf);
        buf.freeze()
    }

    /// Reads the first 12 bytes of `src`; bytes after them are ignored.
    pub fn decode(src: &[u8]) -> Result<DbAttach, AttachError> {
        let [t0, t1, t2, t3, h0, h1, h2, h3, s0, s1, s2, s3, ..] = *src else {
            return Err(AttachError::Truncated {
                needed: Self::LEN,
                available: src.len(),
            });
        };
        Ok(DbAttach {
            attach_type: AttachType(u32::from_be_bytes([t0, t1, t2, t3])),
            handle: u32::from_be_bytes([h0, h1, h2, h3]),
            service_type: u32::from_be_bytes([s0, s1, s2, s3]),
        })
    }
}

/// `CPduAttachData`: a [`DbAttach`] followed by an embedded protobuf body (no PDU header).
///
/// `Debug` shows the body's length only: it may hold a message's content.
#[derive(Clone, PartialEq, Eq)]
pub struct PduAttach {
    /// Type, handle and service type.
    pub head: DbAttach,
    /// The embedded serialized message (may be empty).
    pub pdu: Bytes,
}

impl PduAttach {
    /// Size of the fixed part (type, handle, service type, body length).
    pub const HEAD_LEN: usize = 16;

    /// Attach data for connection `handle` carrying `pdu`.
    pub fn new(attach_type: AttachType, handle: u32, pdu: Bytes) -> PduAttach {
        PduAttach {
            head: DbAttach::new(attach_type, handle),
            pdu,
        }
    }

    /// Encoded size.
    pub fn encoded_len(&self) -> usize {
        Self::HEAD_LEN + self.pdu.len()
    }

    /// Appends the encoding to `dst`. A body longer than 4 GiB cannot be announced and is
    /// written with a saturated length (no peer accepts such a frame anyway).
    pub fn encode(&self, dst: &mut impl BufMut) {
        self.head.encode(dst);
        dst.put_u32(u32::try_from(self.pdu.len()).unwrap_or(u32::MAX));
        dst.put_slice(&self.pdu);
    }

    /// The encoding as a buffer, ready for an `attach_data` field.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut buf);
        buf.freeze()
    }

    /// Reads the layout off the front of `src`; the body is a slice of `src`, not a copy.
    /// Bytes after the announced body are ignored.
    pub fn decode(src: &Bytes) -> Result<PduAttach, AttachError> {
        let head = DbAttach::decode(src)?;
        let Some(&[l0, l1, l2, l3]) = src.get(DbAttach::LEN..Self::HEAD_LEN) else {
            return Err(AttachError::Truncated {
                needed: Self::HEAD_LEN,
                available: src.len(),
            });
        };
        let body_len = u32::from_be_bytes([l0, l1, l2, l3]) as usize;
        let end = Self::HEAD_LEN.saturating_add(body_len);
        if src.len() < end {
            return Err(AttachError::Truncated {
                needed: end,
                available: src.len(),
            });
        }
        Ok(PduAttach {
            head,
            pdu: src.slice(Self::HEAD_LEN..end),
        })
    }
}

/// The attach data of a validate request (CID_OTHER_VALIDATE_REQ): the [`DbAttach`] naming the
/// client connection, and, when our msg_server sent it, the client's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValidateAttach {
    /// Type (1), connection handle, service type.
    pub head: DbAttach,
    /// The client's address; `None` from an original msg_server.
    pub client: Option<IpAddr>,
}

impl ValidateAttach {
    /// Marks the address extension after the 12 bytes of the [`DbAttach`].
    pub const MAGIC: [u8; 4] = *b"TTIP";

    /// Appends the encoding to `dst`.
    pub fn encode(&self, dst: &mut impl BufMut) {
        self.head.encode(dst);
        let Some(client) = self.client else { return };
        dst.put_slice(&Self::MAGIC);
        match client {
            IpAddr::V4(v4) => {
                dst.put_u8(4);
                dst.put_slice(&v4.octets());
            }
            IpAddr::V6(v6) => {
                dst.put_u8(6);
                dst.put_slice(&v6.octets());
            }
        }
    }

    /// The encoding as a buffer, ready for an `attach_data` field.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(DbAttach::LEN + 21);
        self.encode(&mut buf);
        buf.freeze()
    }

    /// Reads the head and, when a well-formed extension follows it, the client address; any
    /// other trailing bytes mean "no address" (they are not ours to judge).
    pub fn decode(src: &[u8]) -> Result<ValidateAttach, AttachError> {
        let head = DbAttach::decode(src)?;
        let client = src.get(DbAttach::LEN..).and_then(|rest| {
            let rest = rest.strip_prefix(&Self::MAGIC)?;
            match rest.split_first()? {
                (4, &[a, b, c, d, ..]) => Some(IpAddr::from([a, b, c, d])),
                (6, address) => {
                    let octets: [u8; 16] = address.get(..16)?.try_into().ok()?;
                    Some(IpAddr::from(octets))
                }
                _ => None,
            }
        });
        Ok(ValidateAttach { head, client })
    }
}

impl fmt::Debug for PduAttach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PduAttach")
            .field("head", &self.head)
            .field("pdu_len", &self.pdu.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn db_attach_golden_bytes() {
        let attach = DbAttach::new(AttachType::HANDLE, 0x0102_0304);
        let bytes = attach.to_bytes();
        assert_eq!(&bytes[..], &[0, 0, 0, 1, 1, 2, 3, 4, 0, 0, 0, 0]);
        assert_eq!(DbAttach::decode(&bytes), Ok(attach));
    }

    #[test]
    fn pdu_attach_golden_bytes_and_zero_copy_body() {
        let attach = PduAttach::new(
            AttachType::HANDLE_AND_PDU,
            9,
            Bytes::from_static(b"\x08\x01"),
        );
        let bytes = attach.to_bytes();
        assert_eq!(
            &bytes[..],
            &[0, 0, 0, 3, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 2, 8, 1]
        );
        let decoded = PduAttach::decode(&bytes).unwrap();
        assert_eq!(decoded, attach);
        assert_eq!(
            decoded.pdu.as_ptr(),
            bytes[16..].as_ptr(),
            "body is a slice, not a copy"
        );
    }

    #[test]
    fn db_attach_reads_the_head_of_a_pdu_attach() {
        let attach = PduAttach::new(AttachType::PDU_FOR_PUSH, 0, Bytes::from_static(b"xyz"));
        assert_eq!(DbAttach::decode(&attach.to_bytes()), Ok(attach.head));
    }

    #[test]
    fn truncation_is_an_error_not_a_panic() {
        for len in 0..12 {
            assert_eq!(
                DbAttach::decode(&[0u8; 12][..len]),
                Err(AttachError::Truncated {
                    needed: 12,
                    available: len
                })
            );
        }
        let short_head = Bytes::from_static(&[0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            PduAttach::decode(&short_head),
            Err(AttachError::Truncated {
                needed: 16,
                available: 14
            })
        );
        // announces 0xffffffff body bytes, holds 1
        let huge = Bytes::from_static(&[0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 0, 255, 255, 255, 255, 7]);
        assert_eq!(
            PduAttach::decode(&huge),
            Err(AttachError::Truncated {
                needed: 16 + 0xffff_ffff,
                available: 17
            })
        );
    }

    #[test]
    fn validate_attach_carries_the_client_address_behind_the_db_attach() {
        let head = DbAttach::new(AttachType::HANDLE, 0x0102_0304);
        for client in ["192.0.2.7", "2001:db8::1"] {
            let attach = ValidateAttach {
                head,
                client: Some(client.parse().unwrap()),
            };
            let bytes = attach.to_bytes();
            assert_eq!(
                &bytes[..12],
                &head.to_bytes()[..],
                "an original reader sees the head"
            );
            assert_eq!(&bytes[12..16], b"TTIP");
            assert_eq!(DbAttach::decode(&bytes), Ok(head));
            assert_eq!(ValidateAttach::decode(&bytes), Ok(attach));
        }
        let v4 = ValidateAttach {
            head,
            client: Some("192.0.2.7".parse().unwrap()),
        };
        assert_eq!(
            &v4.to_bytes()[..],
            &[0, 0, 0, 1, 1, 2, 3, 4, 0, 0, 0, 0, b'T', b'T', b'I', b'P', 4, 192, 0, 2, 7]
        );
        // What an original msg_server sends: the 12 bytes alone.
        let plain = ValidateAttach::decode(&head.to_bytes()).unwrap();
        assert_eq!(plain.client, None);
        assert_eq!(
            ValidateAttach { head, client: None }.to_bytes(),
            head.to_bytes()
        );
        // Foreign or cut trailers are no address, never an error or a panic.
        let full = v4.to_bytes();
        for len in 12..full.len() {
            assert_eq!(
                ValidateAttach::decode(&full[..len]).unwrap().client,
                None,
                "{len}"
            );
        }
        let mut foreign = head.to_bytes().to_vec();
        foreign.extend_from_slice(b"TTIP\x05abcd");
        assert_eq!(ValidateAttach::decode(&foreign).unwrap().client, None);
        assert!(ValidateAttach::decode(&full[..11]).is_err());
    }

    #[test]
    fn debug_hides_the_embedded_body() {
        let attach = PduAttach::new(AttachType::HANDLE_AND_PDU, 1, Bytes::from_static(b"secret"));
        let shown = format!("{attach:?}");
        assert!(
            !shown.contains("secret") && shown.contains("pdu_len: 6"),
            "{shown}"
        );
        assert!(shown.contains("ATTACH_TYPE_HANDLE_AND_PDU"), "{shown}");
    }
}
