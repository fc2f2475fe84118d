//! Framing and message benchmarks: one frame carrying a 100-byte `IMMsgData` (decode, encode),
//! and a stream of 10,000 such frames through the streaming decoder.
//!
//! `cargo bench -p teamtalk-core --bench pdu`; results in docs/benchmarks.md.

#![allow(clippy::unwrap_used)] // a benchmark: a failure should abort loudly

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use teamtalk_core::proto::message::ImMsgData;
use teamtalk_core::{Pdu, PduDecoder};

const STREAM_FRAMES: usize = 10_000;

/// An `IMMsgData` whose `msg_data` is 100 bytes of base64 text, as a client sends it.
fn message() -> ImMsgData {
    ImMsgData {
        from_user_id: 10_001,
        to_session_id: 10_002,
        msg_id: 123_456,
        create_time: 1_700_000_000,
        msg_type: 1,
        msg_data: Bytes::from(vec![b'A'; 100]),
        attach_data: None,
    }
}

fn frame() -> Bytes {
    Pdu::encode_message(&message(), 17).to_bytes()
}

fn stream() -> Bytes {
    let one = frame();
    let mut buf = BytesMut::with_capacity(one.len() * STREAM_FRAMES);
    for _ in 0..STREAM_FRAMES {
        buf.extend_from_slice(&one);
    }
    buf.freeze()
}

fn single_frame(c: &mut Criterion) {
    let wire = frame();
    let mut group = c.benchmark_group("msg_data_frame");
    group.throughput(Throughput::Elements(1));

    group.bench_function("decode_frame_and_body", |b| {
        let mut decoder = PduDecoder::default();
        b.iter_batched_ref(
            || BytesMut::from(&wire[..]),
            |buf| {
                let pdu = decoder.decode(buf).unwrap().unwrap();
                black_box(pdu.decode_body::<ImMsgData>().unwrap())
            },
            criterion::BatchSize::SmallInput,
        )
    });

    group.bench_function("encode_frame", |b| {
        let msg = message();
        let mut out = BytesMut::with_capacity(4096);
        b.iter(|| {
            out.clear();
            Pdu::write_message(black_box(&msg), 17, &mut out);
            black_box(out.len())
        })
    });
    group.finish();
}

fn frame_stream(c: &mut Criterion) {
    let wire = stream();
    let mut decoder = PduDecoder::default();
    let mut run = |decode_bodies: bool| {
        let mut buf = BytesMut::from(&wire[..]);
        let mut n = 0usize;
        while let Some(pdu) = decoder.decode(&mut buf).unwrap() {
            if decode_bodies {
                black_box(pdu.decode_body::<ImMsgData>().unwrap());
            }
            n += 1;
        }
        assert_eq!(n, STREAM_FRAMES);
    };

    let mut group = c.benchmark_group("stream_10k_frames");
    group.throughput(Throughput::Elements(STREAM_FRAMES as u64));
    group.bench_function("frames_only", |b| b.iter(|| run(false)));
    group.bench_function("frames_and_bodies", |b| b.iter(|| run(true)));
    group.finish();

    let mut group = c.benchmark_group("stream_10k_frames_bytes");
    group.throughput(Throughput::Bytes(wire.len() as u64));
    group.bench_function("frames_and_bodies", |b| b.iter(|| run(true)));
    group.finish();
}

criterion_group!(benches, single_frame, frame_stream);
criterion_main!(benches);
