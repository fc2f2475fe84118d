//! The TeamTalk password scheme (docs/storage.md § Password scheme).
//!
//! Clients send `md5hex(plain)` (32 lowercase hex characters). IMUser stores
//! `md5hex(md5hex(plain) ‖ salt)` with a 1–4 digit decimal salt. A login is accepted when
//! `md5hex(received ‖ salt)` equals the stored value exactly; the original had the comparison
//! commented out and accepted any password.

use core::fmt::Write;

use md5::{Digest, Md5};

/// Lowercase hex MD5 of `parts` concatenated.
fn md5_hex(parts: &[&[u8]]) -> String {
    let mut hasher = Md5::new();
    for part in parts {
        hasher.update(part);
    }
    let digest = hasher.finalize();
    let mut out = String::with_capacity(32);
    for byte in digest.iter() {
        // Writing to a String cannot fail.
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// What a client sends in `IMLoginReq.password` for the plain password `plain`.
pub fn client_password(plain: &str) -> String {
    md5_hex(&[plain.as_bytes()])
}

/// The value stored in IMUser.password for a client password and a salt.
pub fn stored_password(client_password: &str, salt: &str) -> String {
    md5_hex(&[client_password.as_bytes(), salt.as_bytes()])
}

/// Whether `client_password` (as received) matches the stored hash and salt. The comparison
/// takes the same time wherever the strings differ.
pub fn verify_password(client_password: &str, salt: &str, stored: &str) -> bool {
    let computed = stored_password(client_password, salt);
    computed.len() == stored.len()
        && computed
            .bytes()
            .zip(stored.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        // md5("123456"), what every TeamTalk client sends for that password
        assert_eq!(
            client_password("123456"),
            "e10adc3949ba59abbe56e057f20f883e"
        );
        // md5("e10adc3949ba59abbe56e057f20f883e" + "1234"), as the PHP admin stores it
        let stored = stored_password("e10adc3949ba59abbe56e057f20f883e", "1234");
        assert_eq!(stored, md5_hex(&[b"e10adc3949ba59abbe56e057f20f883e1234"]));
        assert_eq!(md5_hex(&[b""]), "d41d8cd98f00b204e9800998ecf8427e");
    }

    #[test]
    fn verification() {
        let p1 = client_password("secret");
        let stored = stored_password(&p1, "42");
        assert!(verify_password(&p1, "42", &stored));
        assert!(!verify_password(&p1, "43", &stored));
        assert!(!verify_password(&client_password("Secret"), "42", &stored));
        assert!(
            !verify_password(&p1, "42", &stored.to_uppercase()),
            "exact comparison"
        );
        assert!(!verify_password(&p1, "42", ""));
    }
}
