//! Secrets and unguessable ids: password salts, the generated admin API key, file transfer
//! task ids. Every byte comes from the operating system's random source (`getrandom`); when
//! that source fails, the caller gets [`SecretError`], never a predictable value or a panic.

/// The operating system's random source failed (or is unavailable on this platform).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The operating system refused random bytes.
    #[error("the operating system's random source failed: {0}")]
    RandomSource(#[source] getrandom::Error),
}

/// Fills a buffer with random bytes; [`os_fill`] in production, a fake in tests.
pub type Fill = fn(&mut [u8]) -> Result<(), getrandom::Error>;

/// The operating system's random source.
pub fn os_fill(dest: &mut [u8]) -> Result<(), getrandom::Error> {
    getrandom::fill(dest)
}

/// `N` random bytes.
pub fn random_bytes<const N: usize>(fill: Fill) -> Result<[u8; N], SecretError> {
    let mut bytes = [0u8; N];
    fill(&mut bytes).map_err(SecretError::RandomSource)?;
    Ok(bytes)
}

/// A password salt as the original's: a decimal number below 10000 (1–4 digits), uniformly
/// distributed.
pub fn salt(fill: Fill) -> Result<String, SecretError> {
    // The largest multiple of 10000 that fits in a u32: values at or above it are redrawn, so
    // every salt is equally likely.
    const LIMIT: u32 = u32::MAX - u32::MAX % 10_000;
    loop {
        let value = u32::from_be_bytes(random_bytes(fill)?);
        if value < LIMIT {
            return Ok((value % 10_000).to_string());
        }
    }
}

/// An admin API key: 256 random bits as 64 lowercase hex digits.
pub fn api_key(fill: Fill) -> Result<String, SecretError> {
    Ok(hex(&random_bytes::<32>(fill)?))
}

/// A file transfer task id: 128 random bits in the UUID text form
/// (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, lowercase hex), as the original's task ids look.
pub fn task_id(fill: Fill) -> Result<String, SecretError> {
    let hex = hex(&random_bytes::<16>(fill)?);
    let part = |range: std::ops::Range<usize>| hex.get(range).unwrap_or_default();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        part(0..8),
        part(8..12),
        part(12..16),
        part(16..20),
        part(20..32)
    ))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broken(_: &mut [u8]) -> Result<(), getrandom::Error> {
        Err(getrandom::Error::UNSUPPORTED)
    }

    #[test]
    fn salts_have_the_original_shape_and_vary() {
        let salts: std::collections::HashSet<String> =
            (0..200).map(|_| salt(os_fill).unwrap()).collect();
        for salt in &salts {
            assert!(
                (1..=4).contains(&salt.len()) && salt.bytes().all(|b| b.is_ascii_digit()),
                "{salt:?}"
            );
            assert!(salt.parse::<u32>().unwrap() < 10_000);
        }
        // 200 draws from 10000 values: far more than 100 distinct ones unless the source is
        // broken (the old clock-derived salts repeated within the same microsecond).
        assert!(salts.len() > 150, "only {} distinct salts", salts.len());
    }

    #[test]
    fn api_keys_are_256_bits_of_hex_and_differ() {
        let a = api_key(os_fill).unwrap();
        let b = api_key(os_fill).unwrap();
        assert_eq!(a.len(), 64);
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(a, b);
    }

    #[test]
    fn task_ids_look_like_uuids_and_differ() {
        let a = task_id(os_fill).unwrap();
        let b = task_id(os_fill).unwrap();
        let groups: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{a}");
        assert!(a.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn a_failing_random_source_is_an_error() {
        assert!(matches!(salt(broken), Err(SecretError::RandomSource(_))));
        assert!(matches!(api_key(broken), Err(SecretError::RandomSource(_))));
        assert!(matches!(task_id(broken), Err(SecretError::RandomSource(_))));
        let shown = salt(broken).unwrap_err().to_string();
        assert!(shown.contains("random source"), "{shown}");
    }
}
