//! Property tests of the framing and message decoding.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use teamtalk_core::{AnyMessage, CommandId, Pdu, PduDecoder, PduHeader, ServiceId};

fn header() -> impl Strategy<Value = PduHeader> {
    (any::<[u16; 6]>()).prop_map(
        |[version, flag, service, command, seq_num, reserved]| PduHeader {
            version,
            flag,
            service_id: ServiceId(service),
            command_id: CommandId(command),
            seq_num,
            reserved,
        },
    )
}

fn pdu() -> impl Strategy<Value = Pdu> {
    (header(), proptest::collection::vec(any::<u8>(), 0..300)).prop_map(|(header, body)| Pdu {
        header,
        body: Bytes::from(body),
    })
}

/// Feeds `wire` to a decoder in chunks ending at `cuts` and collects every frame.
fn decode_in_chunks(
    decoder: &mut PduDecoder,
    wire: &[u8],
    cuts: &[usize],
) -> Result<Vec<Pdu>, teamtalk_core::FrameError> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    points.push(wire.len());
    points.sort_unstable();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut start = 0;
    for end in points {
        buf.extend_from_slice(&wire[start..end]);
        start = end;
        while let Some(pdu) = decoder.decode(&mut buf)? {
            frames.push(pdu);
        }
    }
    Ok(frames)
}

proptest! {
    #[test]
    fn header_round_trips(header in header(), length in any::<u32>()) {
        let mut out = Vec::new();
        header.encode(length, &mut out);
        prop_assert_eq!(out.len(), 16);
        let array: [u8; 16] = out.try_into().unwrap();
        prop_assert_eq!(PduHeader::decode(&array), (length, header));
    }

    #[test]
    fn any_split_of_a_stream_yields_the_same_frames(
        frames in proptest::collection::vec(pdu(), 0..12),
        cuts in proptest::collection::vec(any::<usize>(), 0..40),
    ) {
        let mut wire = BytesMut::new();
        for frame in &frames {
            frame.encode(&mut wire);
        }
        let decoded = decode_in_chunks(&mut PduDecoder::default(), &wire, &cuts).unwrap();
        prop_assert_eq!(decoded, frames);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(
        wire in proptest::collection::vec(any::<u8>(), 0..600),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
        max in prop_oneof![Just(teamtalk_core::pdu::DEFAULT_MAX_FRAME_LEN), 0u32..200],
    ) {
        let mut decoder = PduDecoder::new(max);
        if let Ok(frames) = decode_in_chunks(&mut decoder, &wire, &cuts) {
            for frame in frames {
                prop_assert!(frame.frame_len() >= 16 && frame.frame_len() as u64 <= u64::from(max));
                let _ = frame.decode_any();
            }
        }
    }

    #[test]
    fn a_frame_handed_over_whole_reads_as_the_stream_decoder_reads_it(
        frame in pdu(),
        wire in proptest::collection::vec(any::<u8>(), 0..64),
        max in prop_oneof![Just(teamtalk_core::pdu::DEFAULT_MAX_FRAME_LEN), 0u32..200],
    ) {
        // An encoded frame: the same PDU, sharing the frame's memory.
        let bytes = frame.to_bytes();
        let whole = PduDecoder::default().decode_frame(bytes.clone()).unwrap();
        prop_assert_eq!(&whole, &frame);
        // Arbitrary bytes: accepted exactly when the stream decoder finds one frame in them
        // and nothing after it.
        let decoder = PduDecoder::new(max);
        let mut buf = BytesMut::from(&wire[..]);
        let mut streaming = decoder;
        let streamed = streaming.decode(&mut buf);
        let expected = match streamed {
            Ok(Some(pdu)) if buf.is_empty() => Some(pdu),
            _ => None,
        };
        prop_assert_eq!(decoder.decode_frame(Bytes::from(wire)).ok(), expected);
    }

    #[test]
    fn arbitrary_bodies_never_panic_any_message_decode(
        command in prop_oneof![
            proptest::sample::select(CommandId::ALL.to_vec()),
            any::<u16>().prop_map(CommandId),
        ],
        body in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        if let Ok(message) = AnyMessage::decode(command, Bytes::from(body)) {
            // whatever decoded, re-encoding and decoding again is stable
            let again = AnyMessage::decode(command, Bytes::from(message.encode_to_vec())).unwrap();
            prop_assert_eq!(again, message);
        }
    }
}
