//! AES key wrap (RFC 3394) and key wrap with padding (RFC 5649).
//!
//! AES-128 and AES-256 go through `aws_lc_rs::key_wrap`. aws-lc-rs does not expose a 192-bit
//! key-encryption key, so AES-192 calls the same aws-lc functions (`AES_wrap_key`,
//! `AES_unwrap_key`, `AES_wrap_key_padded`, `AES_unwrap_key_padded`) through `aws-lc-sys`,
//! exactly as aws-lc-rs does internally for the other sizes.

use crate::error::CryptoError;
use aws_lc_rs::key_wrap::{self, KeyEncryptionKey, KeyWrap, KeyWrapPadded};
use core::mem::MaybeUninit;
use zeroize::{Zeroize, Zeroizing};

/// Which RFC.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Mode {
    /// RFC 3394, input a multiple of 8 bytes, at least 16.
    Kw,
    /// RFC 5649, any non-empty input.
    Kwp,
}

/// Largest input accepted for wrapping (aws-lc limits to INT_MAX, RFC 5649 to 2^32-1).
const MAX_WRAP_INPUT: usize = 1 << 30;

/// Checks the wrap input length; `alg` names the algorithm in messages.
fn check_wrap_len(alg: &str, mode: Mode, len: usize) -> Result<(), CryptoError> {
    match mode {
        Mode::Kw if len < 16 || len.checked_rem(8) != Some(0) || len > MAX_WRAP_INPUT => {
            Err(CryptoError::input(format!(
                "{alg} needs input of at least 16 bytes in a multiple of 8 bytes; got {len} bytes \
                 (use CKM_AES_KEY_WRAP_PAD for other lengths)"
            )))
        }
        Mode::Kwp if len == 0 || len > MAX_WRAP_INPUT => Err(CryptoError::input(format!(
            "{alg} needs non-empty input; got {len} bytes"
        ))),
        _ => Ok(()),
    }
}

/// Checks the unwrap input length.
fn check_unwrap_len(alg: &str, mode: Mode, len: usize) -> Result<(), CryptoError> {
    let min = match mode {
        Mode::Kw => 24,
        Mode::Kwp => 16,
    };
    if len < min || len.checked_rem(8) != Some(0) || len > MAX_WRAP_INPUT + 8 {
        return Err(CryptoError::input(format!(
            "{alg} wrapped input must be at least {min} bytes in a multiple of 8 bytes; got {len} bytes"
        )));
    }
    Ok(())
}

/// An aws-lc-rs key-encryption key for a 16- or 32-byte `kek` (AES-128 or AES-256).
fn aws_lc_kek(kek: &[u8]) -> Result<KeyEncryptionKey<key_wrap::AesBlockCipher>, CryptoError> {
    let cipher = if kek.len() == 16 {
        &key_wrap::AES_128
    } else {
        &key_wrap::AES_256
    };
    Ok(KeyEncryptionKey::new(cipher, kek)?)
}

/// Wraps `input` under `kek` (16, 24 or 32 bytes).
pub(crate) fn wrap(
    alg: &str,
    mode: Mode,
    kek: &[u8],
    input: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    check_wrap_len(alg, mode, input.len())?;
    // KW output is input+8; KWP output is input rounded up to 8, plus 8.
    let out_cap = input
        .len()
        .checked_add(7 + 8)
        .map(|v| v & !7)
        .ok_or_else(|| CryptoError::input("input too long"))?;
    let mut out = vec![0u8; out_cap];
    let written = match kek.len() {
        16 | 32 => {
            let k = aws_lc_kek(kek)?;
            let res = match mode {
                Mode::Kw => k.wrap(input, &mut out),
                Mode::Kwp => k.wrap_with_padding(input, &mut out),
            };
            res.map_err(|_| CryptoError::Crypto)?.len()
        }
        24 => aes192::wrap(mode, kek, input, &mut out)?,
        _ => return Err(CryptoError::Crypto),
    };
    out.truncate(written);
    Ok(out)
}

/// Unwraps `input` under `kek`; an integrity failure is [`CryptoError::DecryptionFailed`].
pub(crate) fn unwrap(
    alg: &str,
    mode: Mode,
    kek: &[u8],
    input: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    check_unwrap_len(alg, mode, input.len())?;
    let mut out = Zeroizing::new(vec![0u8; input.len()]);
    let written = match kek.len() {
        16 | 32 => {
            let k = aws_lc_kek(kek)?;
            let res = match mode {
                Mode::Kw => k.unwrap(input, &mut out),
                Mode::Kwp => k.unwrap_with_padding(input, &mut out),
            };
            res.map_err(|_| CryptoError::DecryptionFailed)?.len()
        }
        24 => aes192::unwrap(mode, kek, input, &mut out)?,
        _ => return Err(CryptoError::Crypto),
    };
    out.truncate(written);
    Ok(out)
}

/// AES-192 through aws-lc-sys. All lengths are validated by the callers above before any FFI
/// call; the functions below re-check the buffer sizes they rely on.
mod aes192 {
    use super::*;
    use aws_lc_sys::{
        AES_set_decrypt_key, AES_set_encrypt_key, AES_unwrap_key, AES_unwrap_key_padded,
        AES_wrap_key, AES_wrap_key_padded, AES_KEY,
    };

    /// An expanded AES key schedule that is wiped when dropped.
    struct Schedule(AES_KEY);

    impl Drop for Schedule {
        fn drop(&mut self) {
            self.0.rd_key.zeroize();
            self.0.rounds.zeroize();
        }
    }

    fn schedule(kek: &[u8], encrypt: bool) -> Result<Schedule, CryptoError> {
        if kek.len() != 24 {
            return Err(CryptoError::Crypto);
        }
        let mut key = MaybeUninit::<AES_KEY>::uninit();
        // SAFETY: `kek` is 24 readable bytes (192 bits); `key` is writable AES_KEY storage.
        let rc = unsafe {
            if encrypt {
                AES_set_encrypt_key(kek.as_ptr(), 192, key.as_mut_ptr())
            } else {
                AES_set_decrypt_key(kek.as_ptr(), 192, key.as_mut_ptr())
            }
        };
        if rc != 0 {
            return Err(CryptoError::Crypto);
        }
        // SAFETY: AES_set_*_key returned 0, so it fully initialised the schedule.
        Ok(Schedule(unsafe { key.assume_init() }))
    }

    pub(super) fn wrap(
        mode: Mode,
        kek: &[u8],
        input: &[u8],
        out: &mut [u8],
    ) -> Result<usize, CryptoError> {
        let key = schedule(kek, true)?;
        match mode {
            Mode::Kw => {
                if out.len() < input.len().saturating_add(8) {
                    return Err(CryptoError::Crypto);
                }
                // SAFETY: `out` holds at least input.len()+8 bytes, the most AES_wrap_key writes;
                // a null IV selects the RFC 3394 default IV.
                let n = unsafe {
                    AES_wrap_key(
                        &key.0,
                        core::ptr::null(),
                        out.as_mut_ptr(),
                        input.as_ptr(),
                        input.len(),
                    )
                };
                usize::try_from(n).map_err(|_| CryptoError::Crypto)
            }
            Mode::Kwp => {
                let mut out_len = 0usize;
                // SAFETY: AES_wrap_key_padded writes at most `max_out` = out.len() bytes.
                let ok = unsafe {
                    AES_wrap_key_padded(
                        &key.0,
                        out.as_mut_ptr(),
                        &mut out_len,
                        out.len(),
                        input.as_ptr(),
                        input.len(),
                    )
                };
                if ok != 1 || out_len > out.len() {
                    return Err(CryptoError::Crypto);
                }
                Ok(out_len)
            }
        }
    }

    pub(super) fn unwrap(
        mode: Mode,
        kek: &[u8],
        input: &[u8],
        out: &mut [u8],
    ) -> Result<usize, CryptoError> {
        let key = schedule(kek, false)?;
        match mode {
            Mode::Kw => {
                if input.len() < 24 || out.len() < input.len() - 8 {
                    return Err(CryptoError::Crypto);
                }
                // SAFETY: AES_unwrap_key writes input.len()-8 bytes; `out` is at least that long.
                let n = unsafe {
                    AES_unwrap_key(
                        &key.0,
                        core::ptr::null(),
                        out.as_mut_ptr(),
                        input.as_ptr(),
                        input.len(),
                    )
                };
                usize::try_from(n).map_err(|_| CryptoError::DecryptionFailed)
            }
            Mode::Kwp => {
                if input.len() < 16
                    || input.len().checked_rem(8) != Some(0)
                    || out.len() < input.len() - 8
                {
                    return Err(CryptoError::Crypto);
                }
                let mut out_len = 0usize;
                // SAFETY: AES_unwrap_key_padded writes at most `max_out` = out.len() bytes and
                // requires max_out >= input.len()-8, checked above.
                let ok = unsafe {
                    AES_unwrap_key_padded(
                        &key.0,
                        out.as_mut_ptr(),
                        &mut out_len,
                        out.len(),
                        input.as_ptr(),
                        input.len(),
                    )
                };
                if ok != 1 || out_len > out.len() {
                    return Err(CryptoError::DecryptionFailed);
                }
                Ok(out_len)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 3394 section 4 test vectors (4.1, 4.3, 4.4 cover all three KEK sizes).
    #[test]
    fn rfc3394_vectors() {
        let cases = [
            (
                "000102030405060708090A0B0C0D0E0F",
                "00112233445566778899AABBCCDDEEFF",
                "1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5",
            ),
            (
                "000102030405060708090A0B0C0D0E0F1011121314151617",
                "00112233445566778899AABBCCDDEEFF",
                "96778B25AE6CA435F92B5B97C050AED2468AB8A17AD84E5D",
            ),
            (
                "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F",
                "00112233445566778899AABBCCDDEEFF",
                "64E8C3F9CE0F5BA263E9777905818A2A93C8191E7D6E8AE7",
            ),
            (
                "000102030405060708090A0B0C0D0E0F1011121314151617",
                "00112233445566778899AABBCCDDEEFF0001020304050607",
                "031D33264E15D33268F24EC260743EDCE1C6C7DDEE725A936BA814915C6762D2",
            ),
        ];
        for (kek, pt, ct) in cases {
            let (kek, pt, ct) = (hex(kek), hex(pt), hex(ct));
            assert_eq!(wrap("t", Mode::Kw, &kek, &pt).unwrap(), ct);
            assert_eq!(*unwrap("t", Mode::Kw, &kek, &ct).unwrap(), pt);
            let mut bad = ct.clone();
            bad[3] ^= 1;
            assert!(matches!(
                unwrap("t", Mode::Kw, &kek, &bad),
                Err(CryptoError::DecryptionFailed)
            ));
        }
    }

    /// RFC 5649 section 6 test vectors (192-bit KEK).
    #[test]
    fn rfc5649_vectors() {
        let kek = hex("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8");
        let cases = [
            (
                "c37b7e6492584340bed12207808941155068f738",
                "138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a",
            ),
            ("466f7250617369", "afbeb0f07dfbf5419200f2ccb50bb24f"),
        ];
        for (pt, ct) in cases {
            let (pt, ct) = (hex(pt), hex(ct));
            assert_eq!(wrap("t", Mode::Kwp, &kek, &pt).unwrap(), ct);
            assert_eq!(*unwrap("t", Mode::Kwp, &kek, &ct).unwrap(), pt);
            let mut bad = ct.clone();
            bad[0] ^= 0x80;
            assert!(matches!(
                unwrap("t", Mode::Kwp, &kek, &bad),
                Err(CryptoError::DecryptionFailed)
            ));
        }
    }

    #[test]
    fn kwp_all_sizes_and_odd_lengths() {
        for kek_len in [16, 24, 32] {
            let kek = vec![7u8; kek_len];
            for len in [1usize, 7, 8, 9, 15, 16, 17, 31, 33, 100] {
                let pt: Vec<u8> = (0..len as u8).collect();
                let ct = wrap("t", Mode::Kwp, &kek, &pt).unwrap();
                assert_eq!(*unwrap("t", Mode::Kwp, &kek, &ct).unwrap(), pt);
            }
        }
    }

    #[test]
    fn length_errors() {
        let kek = [1u8; 24];
        assert!(matches!(
            wrap("A192KW", Mode::Kw, &kek, &[0; 8]),
            Err(CryptoError::InvalidInput(_))
        ));
        assert!(matches!(
            wrap("A192KW", Mode::Kw, &kek, &[0; 17]),
            Err(CryptoError::InvalidInput(_))
        ));
        assert!(matches!(
            wrap("x", Mode::Kwp, &kek, &[]),
            Err(CryptoError::InvalidInput(_))
        ));
        assert!(matches!(
            unwrap("x", Mode::Kw, &kek, &[0; 16]),
            Err(CryptoError::InvalidInput(_))
        ));
        assert!(matches!(
            unwrap("x", Mode::Kw, &kek, &[0; 25]),
            Err(CryptoError::InvalidInput(_))
        ));
        assert!(matches!(
            unwrap("x", Mode::Kwp, &kek, &[0; 8]),
            Err(CryptoError::InvalidInput(_))
        ));
        assert!(matches!(
            unwrap("x", Mode::Kwp, &kek, &[0; 20]),
            Err(CryptoError::InvalidInput(_))
        ));
        for l in 0..40 {
            let _ = unwrap("x", Mode::Kwp, &kek, &vec![0u8; l]);
            let _ = unwrap("x", Mode::Kw, &[2u8; 16], &vec![0u8; l]);
        }
    }
}
