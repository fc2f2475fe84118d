//! The TeamTalk message encryption (docs/protocol.md § Message encryption): what clients apply to
//! text messages and what servers need for push alert text and the audio preview (`"[语音]"`).
//!
//! AES-256 in ECB mode with the 32 ASCII bytes of the deployment's `aesKey` (the default
//! `12345678901234567890123456789012` is hard-coded in the clients). The plaintext is copied into a
//! zeroed buffer of B × 16 bytes, B = ⌈len / 16⌉ plus one block when `len % 16` is 0 or above 12,
//! whose last 4 bytes hold `len` big-endian; each block is encrypted on its own and the result is
//! standard Base64 with padding. This is not real confidentiality (docs/compatibility.md Q-11); it
//! is kept because stored messages and clients depend on it.

use aes::cipher::{Array, BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use aes::Aes256;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// The key the original clients and configurations ship with.
pub const DEFAULT_KEY: &str = "12345678901234567890123456789012";

/// Why a message could not be decrypted (or a key not used).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptError {
    /// `aesKey` must be exactly 32 bytes.
    #[error("the message key must be 32 bytes, got {0}")]
    KeyLength(usize),
    /// The text is not Base64.
    #[error("not Base64")]
    NotBase64,
    /// The decoded data is empty or not a whole number of 16-byte blocks.
    #[error("{0} bytes are not whole AES blocks")]
    NotBlocks(usize),
    /// The length stored in the last block does not fit the data.
    #[error("stored length {stored} does not fit {available} bytes")]
    BadLength {
        /// The length read from the data.
        stored: u32,
        /// The bytes available for it.
        available: usize,
    },
}

/// A deployment's message key.
#[derive(Clone)]
pub struct MessageKey(Aes256);

impl core::fmt::Debug for MessageKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("MessageKey(<redacted>)")
    }
}

impl MessageKey {
    /// The key from the 32 characters of `aesKey`.
    pub fn new(key: &str) -> Result<MessageKey, CryptError> {
        Aes256::new_from_slice(key.as_bytes())
            .map(MessageKey)
            .map_err(|_| CryptError::KeyLength(key.len()))
    }

    /// The key the original clients ship with.
    pub fn default_key() -> MessageKey {
        // 32 ASCII bytes: always a valid AES-256 key.
        MessageKey(Aes256::new(&Array::from(key_bytes(DEFAULT_KEY))))
    }

    /// Encrypts `plain` as clients do; returns the Base64 text.
    pub fn encrypt(&self, plain: &[u8]) -> String {
        let rem = plain.len() % 16;
        let blocks = plain.len().div_ceil(16) + usize::from(rem == 0 || rem > 12);
        let mut buf = vec![0u8; blocks * 16];
        buf.get_mut(..plain.len())
            .unwrap_or_default()
            .copy_from_slice(plain);
        let len = u32::try_from(plain.len()).unwrap_or(u32::MAX).to_be_bytes();
        let tail = buf.len() - 4;
        buf.get_mut(tail..)
            .unwrap_or_default()
            .copy_from_slice(&len);
        for chunk in buf.chunks_exact_mut(16) {
            let mut block = Array::from(<[u8; 16]>::try_from(&*chunk).unwrap_or_default());
            self.0.encrypt_block(&mut block);
            chunk.copy_from_slice(&block);
        }
        STANDARD.encode(buf)
    }

    /// Decrypts a client's Base64 text. Never panics on malformed input.
    pub fn decrypt(&self, text: &[u8]) -> Result<Vec<u8>, CryptError> {
        let mut buf = STANDARD.decode(text).map_err(|_| CryptError::NotBase64)?;
        if buf.is_empty() || buf.len() % 16 != 0 {
            return Err(CryptError::NotBlocks(buf.len()));
        }
        for chunk in buf.chunks_exact_mut(16) {
            let mut block = Array::from(<[u8; 16]>::try_from(&*chunk).unwrap_or_default());
            self.0.decrypt_block(&mut block);
            chunk.copy_from_slice(&block);
        }
        let available = buf.len() - 4;
        let stored = buf
            .get(available..)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map_or(u32::MAX, u32::from_be_bytes);
        if stored as usize > available {
            return Err(CryptError::BadLength { stored, available });
        }
        buf.truncate(stored as usize);
        Ok(buf)
    }
}

fn key_bytes(key: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (o, b) in out.iter_mut().zip(key.bytes()) {
        *o = b;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audio_preview_of_the_default_key() {
        // computed independently with `openssl enc -aes-256-ecb -nopad` over the padded block
        assert_eq!(
            MessageKey::default_key().encrypt("[语音]".as_bytes()),
            "QhGXlpFjvMFUNrtl1aaPzA=="
        );
        assert_eq!(
            crate::service::DEFAULT_AUDIO_PREVIEW,
            MessageKey::default_key()
                .encrypt("[语音]".as_bytes())
                .as_bytes()
        );
    }

    #[test]
    fn padding_and_round_trips() {
        let key = MessageKey::new("abcdefghijklmnopqrstuvwxyz012345").unwrap();
        for len in [0usize, 1, 8, 12, 13, 15, 16, 17, 31, 32, 100] {
            let plain: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let text = key.encrypt(&plain);
            let raw = STANDARD.decode(&text).unwrap();
            let rem = len % 16;
            let blocks = len.div_ceil(16) + usize::from(rem == 0 || rem > 12);
            assert_eq!(raw.len(), blocks * 16, "len {len}");
            assert_eq!(key.decrypt(text.as_bytes()).unwrap(), plain, "len {len}");
        }
    }

    #[test]
    fn malformed_input_is_an_error() {
        let key = MessageKey::default_key();
        assert_eq!(
            key.decrypt(b"not base64!").unwrap_err(),
            CryptError::NotBase64
        );
        assert_eq!(key.decrypt(b"").unwrap_err(), CryptError::NotBlocks(0));
        assert_eq!(key.decrypt(b"AAAA").unwrap_err(), CryptError::NotBlocks(3));
        // One block of garbage decrypts to a length that either fits (at most 12 bytes) or not.
        let garbage = STANDARD.encode([0xffu8; 16]);
        match key.decrypt(garbage.as_bytes()) {
            Ok(plain) => assert!(plain.len() <= 12),
            Err(error) => assert!(matches!(error, CryptError::BadLength { available: 12, .. })),
        }
        assert_eq!(
            MessageKey::new("short").unwrap_err(),
            CryptError::KeyLength(5)
        );
        assert!(!format!("{key:?}").contains("1234"));
    }

    proptest::proptest! {
        #[test]
        fn any_plaintext_round_trips(plain in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let key = MessageKey::default_key();
            proptest::prop_assert_eq!(key.decrypt(key.encrypt(&plain).as_bytes()).unwrap(), plain);
        }

        #[test]
        fn any_input_decrypts_without_panicking(text in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let key = MessageKey::default_key();
            if let Ok(plain) = key.decrypt(&text) {
                proptest::prop_assert!(plain.len() + 4 <= STANDARD.decode(&text).unwrap().len());
            }
        }
    }
}
