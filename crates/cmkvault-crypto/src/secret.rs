//! Client secrets: generated with the system CSPRNG, stored only as a salted PBKDF2 hash,
//! verified in constant time.

use std::num::NonZeroU32;

use aws_lc_rs::pbkdf2;
use zeroize::Zeroizing;

use crate::CryptoError;

const VERSION: u8 = 1;
const SALT_LEN: usize = 16;
const HASH_LEN: usize = 32;
/// PBKDF2-HMAC-SHA256 iterations. Secrets are 256-bit random strings, so this is defence in
/// depth against a stolen database, not the only protection.
const ITERATIONS: u32 = 10_000;

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
}
