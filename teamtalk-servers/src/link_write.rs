//! A link's write buffer: the queued frames on their way to the socket.
//!
//! A frame is encoded once and shared (`Bytes`) by every link it goes to, so the buffer keeps
//! a large frame as that shared `Bytes` and writes it from there (vectored, with the frames
//! around it) instead of copying it per link. Small frames are copied together into one
//! owned chunk: many tiny slices make poor writes (and one TLS record each), and copying a
//! few bytes costs less than the slice bookkeeping.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};

/// Frames shorter than this are copied into the buffer's owned chunk; longer ones are kept
/// as the shared `Bytes` they came in.
pub(crate) const COPY_BELOW: usize = 1024;

/// Slices handed to one vectored write at most (well under every platform's `IOV_MAX`).
const MAX_SLICES: usize = 64;

/// The bytes a link still has to write, in order: `chunks`, then `tail`.
#[derive(Debug, Default)]
pub(crate) struct WriteBuf {
    /// Written first, front to back: shared large frames and frozen runs of small ones.
    chunks: VecDeque<Bytes>,
    /// Small frames copied together, written after `chunks`.
    tail: BytesMut,
}

impl WriteBuf {
    /// Whether nothing is left to write.
    pub(crate) fn is_empty(&self) -> bool {
        self.chunks.is_empty() && self.tail.is_empty()
    }

    /// Bytes left to write.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum::<usize>() + self.tail.len()
    }

    /// Bytes the buffer owns (copied frames and spare capacity), not counting the shared
    /// frames it refers to.
    #[cfg(test)]
    pub(crate) fn owned_capacity(&self) -> usize {
        self.tail.capacity()
    }

    /// Appends `frame`: copied when small, kept as the shared `Bytes` otherwise.
    pub(crate) fn push(&mut self, frame: Bytes) {
        if frame.is_empty() {
            return;
        }
        if frame.len() < COPY_BELOW {
            self.tail.extend_from_slice(&frame);
            return;
        }
        if !self.tail.is_empty() {
            // The small frames before this one go first.
            self.chunks.push_back(self.tail.split().freeze());
        }
        self.chunks.push_back(frame);
    }

    /// Fills `slices` with the next bytes to write, in order; returns how many it filled.
    pub(crate) fn slices<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        let next = self
            .chunks
            .iter()
            .map(|chunk| &chunk[..])
            .chain(std::iter::once(&self.tail[..]))
            .filter(|bytes| !bytes.is_empty());
        for (slot, bytes) in slices.iter_mut().zip(next) {
            *slot = IoSlice::new(bytes);
            n += 1;
        }
        n
    }

    /// Drops the first `n` bytes (a write took them); a write never reports more than it
    /// was given, and more than is buffered empties the buffer.
    pub(crate) fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            if n < front.len() {
                front.advance(n);
                return;
            }
            n -= front.len();
            self.chunks.pop_front();
        }
        let n = n.min(self.tail.len());
        self.tail.advance(n);
        if self.is_empty() {
            // An idle connection keeps no write buffer.
            *self = WriteBuf::default();
        }
    }

    /// Writes the next bytes to `writer` with one (vectored) write; `Ok(n)` bytes were taken
    /// (advance by them).
    pub(crate) fn poll_write<W: tokio::io::AsyncWrite + Unpin>(
        &self,
        cx: &mut std::task::Context<'_>,
        writer: &mut W,
    ) -> std::task::Poll<std::io::Result<usize>> {
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let n = self.slices(&mut slices);
        let slices = slices.get(..n).unwrap_or_default();
        std::pin::Pin::new(writer).poll_write_vectored(cx, slices)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(buf: &WriteBuf) -> Vec<u8> {
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let n = buf.slices(&mut slices);
        slices
            .iter()
            .take(n)
            .flat_map(|s| s.iter().copied())
            .collect()
    }

    #[test]
    fn a_large_frame_is_written_from_the_shared_bytes_not_copied() {
        let frame = Bytes::from(vec![7u8; 64 * 1024]);
        let mut buf = WriteBuf::default();
        buf.push(Bytes::from_static(b"small"));
        buf.push(frame.clone());
        buf.push(Bytes::from_static(b"after"));
        // The buffer owns only the small frames, never the large one's bytes.
        assert!(
            buf.owned_capacity() < COPY_BELOW,
            "{}",
            buf.owned_capacity()
        );
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let n = buf.slices(&mut slices);
        assert_eq!(n, 3);
        // The second slice is the shared frame itself.
        assert_eq!(slices[1].as_ptr(), frame.as_ptr());
        assert_eq!(buf.len(), 5 + frame.len() + 5);
    }

    #[test]
    fn partial_writes_resume_in_order_across_chunks() {
        let mut buf = WriteBuf::default();
        let mut expected = Vec::new();
        for i in 0..10u8 {
            let frame = vec![i; if i % 3 == 0 { 3000 } else { 10 }];
            expected.extend_from_slice(&frame);
            buf.push(Bytes::from(frame));
        }
        let mut got = Vec::new();
        // Take odd amounts, splitting chunks and crossing their ends.
        for step in [1, 2999, 7, 3001, 1, 5000].iter().cycle() {
            if buf.is_empty() {
                break;
            }
            let bytes = written(&buf);
            let n = (*step).min(bytes.len());
            got.extend_from_slice(&bytes[..n]);
            buf.advance(n);
        }
        assert_eq!(got, expected);
        assert_eq!(buf.owned_capacity(), 0, "an emptied buffer keeps no memory");
    }
}
