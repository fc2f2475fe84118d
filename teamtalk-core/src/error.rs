//! [`PduError`]: every way reading a PDU can fail, classified by blast radius in one place.

use crate::attach::AttachError;
use crate::message::DecodeError;
use crate::pdu::FrameError;

/// Any error of reading a PDU: its frame, its body or its attach data.
///
/// [`PduError::closes_connection`] is the one place that decides what a failure costs: a
/// framing error loses the byte stream, so the connection is closed; a bad body or attach data
/// fails that request only.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PduError {
    /// The frame itself is invalid.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The body is not the command's message, or the command is unknown.
    #[error(transparent)]
    Body(#[from] DecodeError),
    /// The attach data of a response is shorter than its layout.
    #[error(transparent)]
    Attach(#[from] AttachError),
}

impl PduError {
    /// Whether the connection must be closed (`true`), or only the request failed (`false`).
    pub fn closes_connection(&self) -> bool {
        match self {
            PduError::Frame(_) => true,
            PduError::Body(_) | PduError::Attach(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CommandId;

    #[test]
    fn only_framing_errors_close_the_connection() {
        assert!(PduError::from(FrameError::TooShort { length: 3 }).closes_connection());
        assert!(PduError::from(FrameError::TooLong { length: 9, max: 8 }).closes_connection());
        let unknown = DecodeError::UnknownCommand {
            command: CommandId(0x070c),
        };
        assert!(!PduError::from(unknown).closes_connection());
        let short = AttachError::Truncated {
            needed: 12,
            available: 3,
        };
        assert!(!PduError::from(short).closes_connection());
    }
}
