//! Arbitrary bytes, cut into arbitrary chunks, through the streaming PDU decoder; every frame
//! body through `AnyMessage::decode`.
//!
//! Input layout: byte 0 = number of cut points k (mod 16), then k big-endian u16 cut
//! positions, then the byte stream. A seed that starts with 0 is a plain stream of frames.
//!
//! Asserts: chunking never changes what is decoded (same frames, same error); a decoded frame
//! respects the length limits; decode → encode → decode of every body is stable.

#![no_main]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use teamtalk_core::{AnyMessage, FrameError, Pdu, PduDecoder};

/// A small limit so that the too-long path is reached as often as the normal one.
const MAX_FRAME_LEN: u32 = 4096;

fn split_input(data: &[u8]) -> (Vec<usize>, &[u8]) {
    let Some((&k, rest)) = data.split_first() else {
        return (Vec::new(), data);
    };
    let k = usize::from(k % 16).min(rest.len() / 2);
    let (cuts, stream) = rest.split_at(k * 2);
    let mut points: Vec<usize> = cuts
        .chunks_exact(2)
        .map(|c| usize::from(u16::from_be_bytes([c[0], c[1]])) % (stream.len() + 1))
        .collect();
    points.push(stream.len());
    points.sort_unstable();
    (points, stream)
}

/// Decodes `stream` fed in chunks ending at `points`; stops at the first error.
fn decode(stream: &[u8], points: &[usize]) -> (Vec<Pdu>, Option<FrameError>) {
    let mut decoder = PduDecoder::new(MAX_FRAME_LEN);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut start = 0;
    for &end in points {
        buf.extend_from_slice(&stream[start..end]);
        start = end;
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(pdu)) => frames.push(pdu),
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

fuzz_target!(|data: &[u8]| {
    let (points, stream) = split_input(data);
    let (frames, error) = decode(stream, &points);
    let whole = decode(stream, &[stream.len()]);
    assert_eq!(
        (&frames, &error),
        (&whole.0, &whole.1),
        "chunking changed the result"
    );

    for pdu in frames {
        assert!(pdu.frame_len() >= 16 && pdu.frame_len() <= MAX_FRAME_LEN as usize);
        let Ok(first) = pdu.decode_any() else {
            continue;
        };
        let encoded = first.encode_to_vec();
        let second =
            AnyMessage::decode(pdu.command(), &encoded[..]).expect("our own encoding decodes");
        assert_eq!(
            first, second,
            "decode → encode → decode changed the message"
        );
        assert_eq!(second.encode_to_vec(), encoded, "encoding is not stable");
    }
});
