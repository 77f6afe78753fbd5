//! Client secrets: generated with the system CSPRNG, stored only as a salted PBKDF2 hash,
//! verified in constant time.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_lc_rs::pbkdf2;
use zeroize::Zeroizing;

use crate::CryptoError;

const VERSION: u8 = 1;
const SALT_LEN: usize = 16;
const HASH_LEN: usize = 32;
/// PBKDF2-HMAC-SHA256 iterations. Secrets are 256-bit random strings, so this is defence in
/// depth against a stolen database, not the only protection.
const ITERATIONS: u32 = 10_000;

/// PBKDF2 derivations run by [`hash_secret`] and [`verify_secret`] in this process.
static DERIVATIONS: AtomicU64 = AtomicU64::new(0);

/// How many PBKDF2 derivations ([`hash_secret`], and every [`verify_secret`] of a well-formed
/// hash) this process has run: a statistic, and what lets tests check that an unknown client
/// and a known one with a wrong secret cost the same work.
pub fn pbkdf2_derivations() -> u64 {
    DERIVATIONS.load(Ordering::Relaxed)
}

/// A well-formed hash (same version, salt and hash lengths, and iteration count as
/// [`hash_secret`]'s) that no secret matches: a fixed all-zero salt and an all-zero hash, which
/// would need a PBKDF2 preimage. Verifying a secret against it runs the same PBKDF2 derivation
/// and constant-time comparison as a real hash, so a credential check for an unknown client
/// does the same work as one for a known client with a wrong secret.
pub fn dummy_secret_hash() -> Vec<u8> {
    let mut out = vec![0u8; 1 + SALT_LEN + HASH_LEN];
    out[0] = VERSION;
    out
}

/// Makes a new client secret: 32 random bytes, base64url (43 characters).
pub fn generate_client_secret() -> Result<Zeroizing<String>, CryptoError> {
    use base64::Engine;
    let bytes = Zeroizing::new(crate::random_bytes(32)?);
    Ok(Zeroizing::new(
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes.as_slice()),
    ))
}

/// Hashes a secret: `0x01 ‖ salt(16) ‖ PBKDF2-HMAC-SHA256(secret, salt, 10,000)(32)`.
pub fn hash_secret(secret: &str) -> Result<Vec<u8>, CryptoError> {
    let salt = crate::random_bytes(SALT_LEN)?;
    let mut hash = [0u8; HASH_LEN];
    let iterations = NonZeroU32::new(ITERATIONS).ok_or(CryptoError::Crypto)?;
    DERIVATIONS.fetch_add(1, Ordering::Relaxed);
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        &salt,
        secret.as_bytes(),
        &mut hash,
    );
    let mut out = Vec::with_capacity(1 + SALT_LEN + HASH_LEN);
    out.push(VERSION);
    out.extend_from_slice(&salt);
    out.extend_from_slice(&hash);
    Ok(out)
}

/// Checks a secret against a stored hash in constant time; false on any malformed hash.
pub fn verify_secret(secret: &str, stored: &[u8]) -> bool {
    if stored.len() != 1 + SALT_LEN + HASH_LEN || stored[0] != VERSION {
        return false;
    }
    let (salt, hash) = stored[1..].split_at(SALT_LEN);
    let Some(iterations) = NonZeroU32::new(ITERATIONS) else {
        return false;
    };
    DERIVATIONS.fetch_add(1, Ordering::Relaxed);
    // Derives and compares in constant time.
    pbkdf2::verify(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        secret.as_bytes(),
        hash,
    )
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let s = generate_client_secret().unwrap();
        assert_eq!(s.len(), 43);
        let h = hash_secret(&s).unwrap();
        assert!(verify_secret(&s, &h));
        assert!(!verify_secret("wrong", &h));
        // Same secret, different salt.
        assert_ne!(h, hash_secret(&s).unwrap());
        let mut bad = h.clone();
        bad[20] ^= 1;
        assert!(!verify_secret(&s, &bad));
        assert!(!verify_secret(&s, &h[..10]));
    }

    #[test]
    fn the_dummy_hash_has_the_format_of_a_real_one() {
        let real = hash_secret("some secret").unwrap();
        let dummy = dummy_secret_hash();
        assert_eq!(dummy.len(), real.len());
        assert_eq!(
            dummy[0], real[0],
            "same version, hence the same iteration count"
        );
        assert!(!verify_secret("", &dummy));
        assert!(!verify_secret("some secret", &dummy));
    }
}
