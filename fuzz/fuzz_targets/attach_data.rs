//! Arbitrary bytes as attach_data (both layouts).
//!
//! Asserts: decoding never panics; a decoded layout re-encodes to exactly the bytes it was read
//! from (the prefix of the input it covers) and decodes again to itself.

#![no_main]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use teamtalk_core::{DbAttach, PduAttach};

fuzz_target!(|data: &[u8]| {
    if let Ok(attach) = DbAttach::decode(data) {
        let encoded = attach.to_bytes();
        assert_eq!(&encoded[..], &data[..DbAttach::LEN]);
        assert_eq!(DbAttach::decode(&encoded), Ok(attach));
    }
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(attach) = PduAttach::decode(&bytes) {
        let encoded = attach.to_bytes();
        assert_eq!(&encoded[..], &data[..attach.encoded_len()]);
        assert_eq!(PduAttach::decode(&encoded), Ok(attach));
    }
});
