//! Symmetric (oct) keys: AES key wrap, AES-GCM, AES-CBC, HMAC.

use crate::alg::{Hash, Kind};
use crate::error::CryptoError;
use crate::kw;
use crate::types::{CipherOutput, CipherRequest};
use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::cipher::{
    self, DecryptingKey, DecryptionContext, EncryptingKey, EncryptionContext,
    PaddedBlockDecryptingKey, PaddedBlockEncryptingKey, UnboundCipherKey,
};
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;
use zeroize::Zeroizing;

/// GCM nonce length (96 bits).
pub(crate) const GCM_IV_LEN: usize = 12;
/// GCM tag length (128 bits).
pub(crate) const GCM_TAG_LEN: usize = 16;
/// AES block / CBC IV length.
const CBC_IV_LEN: usize = 16;

/// A symmetric key of 16, 24 or 32 bytes with its AES-GCM key schedule prepared once.
pub(crate) struct OctKey {
    bytes: Zeroizing<Vec<u8>>,
    gcm: LessSafeKey,
}

impl OctKey {
    /// Builds from raw key bytes (16, 24 or 32).
    pub(crate) fn new(bytes: Zeroizing<Vec<u8>>) -> Result<Self, CryptoError> {
        let gcm_alg = gcm_alg(bytes.len()).ok_or_else(|| {
            CryptoError::key(format!(
                "an oct key must be 16, 24 or 32 bytes (128, 192 or 256 bits); got {} bytes",
                bytes.len()
            ))
        })?;
        let gcm = LessSafeKey::new(UnboundKey::new(gcm_alg, &bytes)?);
        Ok(OctKey { bytes, gcm })
    }

    /// Raw key bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Key size in bits.
    pub(crate) fn bits(&self) -> usize {
        self.bytes.len() * 8
    }

    /// Checks the key length an algorithm needs.
    pub(crate) fn check_size(&self, name: &str, alg: Kind) -> Result<(), CryptoError> {
        let need = match alg {
            Kind::AesKw(Some(n)) | Kind::AesGcm(n) | Kind::AesCbc(n) | Kind::AesCbcPad(n) => n,
            _ => return Ok(()),
        };
        if need != self.bytes.len() {
            return Err(CryptoError::unsupported(
                name,
                format!(
                    "{name} needs a {}-bit key; this key is {}-bit",
                    need * 8,
                    self.bits()
                ),
            ));
        }
        Ok(())
    }

    /// Encrypt (`alg` already resolved and size-checked).
    pub(crate) fn encrypt(
        &self,
        name: &str,
        alg: Kind,
        req: &CipherRequest,
    ) -> Result<CipherOutput, CryptoError> {
        match alg {
            Kind::AesKw(_) | Kind::AesKwp => {
                reject_iv_aad_tag(name, req)?;
                Ok(CipherOutput {
                    value: self.wrap(name, alg, req.value)?,
                    ..CipherOutput::default()
                })
            }
            Kind::AesGcm(_) => self.gcm_encrypt(req),
            Kind::AesCbc(_) | Kind::AesCbcPad(_) => {
                reject(name, "aad", req.aad)?;
                reject(name, "a tag", req.tag)?;
                let iv = cbc_iv(name, req.iv)?;
                let key = self.cipher_key()?;
                let mut buf = req.value.to_vec();
                let ctx = EncryptionContext::Iv128(FixedLength::from(iv));
                if matches!(alg, Kind::AesCbcPad(_)) {
                    PaddedBlockEncryptingKey::cbc_pkcs7(key)?.less_safe_encrypt(&mut buf, ctx)?;
                } else {
                    if buf.is_empty() || buf.len().checked_rem(CBC_IV_LEN) != Some(0) {
                        return Err(CryptoError::input(format!(
                            "{name} (no padding) needs a non-empty value whose length is a \
                             multiple of 16 bytes; got {} bytes (use {name}PAD for other lengths)",
                            buf.len()
                        )));
                    }
                    EncryptingKey::cbc(key)?.less_safe_encrypt(&mut buf, ctx)?;
                }
                Ok(CipherOutput {
                    value: buf,
                    iv: Some(iv.to_vec()),
                    tag: None,
                    aad: None,
                })
            }
            _ => Err(CryptoError::Crypto),
        }
    }

    /// Decrypt (`alg` already resolved and size-checked).
    pub(crate) fn decrypt(
        &self,
        name: &str,
        alg: Kind,
        req: &CipherRequest,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        match alg {
            Kind::AesKw(_) | Kind::AesKwp => {
                reject_iv_aad_tag(name, req)?;
                self.unwrap(name, alg, req.value)
            }
            Kind::AesGcm(_) => self.gcm_decrypt(name, req),
            Kind::AesCbc(_) | Kind::AesCbcPad(_) => {
                reject(name, "aad", req.aad)?;
                reject(name, "a tag", req.tag)?;
                let iv = cbc_iv(name, req.iv)?;
                let len = req.value.len();
                if len == 0 || len.checked_rem(CBC_IV_LEN) != Some(0) {
                    return Err(CryptoError::input(format!(
                        "{name} ciphertext must be a non-empty multiple of 16 bytes; got {len} bytes"
                    )));
                }
                let key = self.cipher_key()?;
                let mut buf = Zeroizing::new(req.value.to_vec());
                let ctx = DecryptionContext::Iv128(FixedLength::from(iv));
                let plain_len = if matches!(alg, Kind::AesCbcPad(_)) {
                    PaddedBlockDecryptingKey::cbc_pkcs7(key)?
                        .decrypt(&mut buf, ctx)
                        .map_err(|_| CryptoError::DecryptionFailed)?
                        .len()
                } else {
                    DecryptingKey::cbc(key)?
                        .decrypt(&mut buf, ctx)
                        .map_err(|_| CryptoError::DecryptionFailed)?
                        .len()
                };
                buf.truncate(plain_len);
                Ok(buf)
            }
            _ => Err(CryptoError::Crypto),
        }
    }

    /// Key wrap (A*KW, CKM_AES_KEY_WRAP, CKM_AES_KEY_WRAP_PAD).
    pub(crate) fn wrap(&self, name: &str, alg: Kind, key: &[u8]) -> Result<Vec<u8>, CryptoError> {
        kw::wrap(name, kw_mode(alg)?, &self.bytes, key)
    }

    /// Key unwrap (A*KW, CKM_AES_KEY_WRAP, CKM_AES_KEY_WRAP_PAD).
    pub(crate) fn unwrap(
        &self,
        name: &str,
        alg: Kind,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        kw::unwrap(name, kw_mode(alg)?, &self.bytes, wrapped)
    }

    /// HMAC over `data`.
    pub(crate) fn hmac_sign(&self, hash: Hash, data: &[u8]) -> Vec<u8> {
        let key = hmac::Key::new(hmac_alg(hash), &self.bytes);
        hmac::sign(&key, data).as_ref().to_vec()
    }

    /// Constant-time HMAC verification.
    pub(crate) fn hmac_verify(&self, hash: Hash, data: &[u8], tag: &[u8]) -> bool {
        let key = hmac::Key::new(hmac_alg(hash), &self.bytes);
        hmac::verify(&key, data, tag).is_ok()
    }

    fn cipher_key(&self) -> Result<UnboundCipherKey, CryptoError> {
        let alg = match self.bytes.len() {
            16 => &cipher::AES_128,
            24 => &cipher::AES_192,
            32 => &cipher::AES_256,
            _ => return Err(CryptoError::Crypto),
        };
        Ok(UnboundCipherKey::new(alg, &self.bytes)?)
    }

    fn gcm_encrypt(&self, req: &CipherRequest) -> Result<CipherOutput, CryptoError> {
        if present(req.iv).is_some() {
            return Err(CryptoError::input(
                "the service generates the IV for AES-GCM; do not pass an iv to encrypt",
            ));
        }
        if present(req.tag).is_some() {
            return Err(CryptoError::input(
                "a tag must not be passed to AES-GCM encrypt; it is produced by the operation",
            ));
        }
        let aad = present(req.aad);
        let mut iv = [0u8; GCM_IV_LEN];
        aws_lc_rs::rand::fill(&mut iv)?;
        let mut buf = req.value.to_vec();
        let tag = self.gcm.seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(iv),
            Aad::from(aad.unwrap_or(&[])),
            &mut buf,
        )?;
        Ok(CipherOutput {
            value: buf,
            iv: Some(iv.to_vec()),
            tag: Some(tag.as_ref().to_vec()),
            aad: aad.map(<[u8]>::to_vec),
        })
    }

    fn gcm_decrypt(
        &self,
        name: &str,
        req: &CipherRequest,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let iv = present(req.iv)
            .ok_or_else(|| CryptoError::input(format!("{name} decrypt needs the iv")))?;
        if iv.len() != GCM_IV_LEN {
            return Err(CryptoError::input(format!(
                "{name} iv must be {GCM_IV_LEN} bytes; got {} bytes",
                iv.len()
            )));
        }
        let tag = present(req.tag).ok_or_else(|| {
            CryptoError::input(format!("{name} decrypt needs the authentication tag"))
        })?;
        if tag.len() != GCM_TAG_LEN {
            return Err(CryptoError::input(format!(
                "{name} authentication tag must be {GCM_TAG_LEN} bytes; got {} bytes",
                tag.len()
            )));
        }
        let nonce = Nonce::try_assume_unique_for_key(iv)?;
        let mut buf = Zeroizing::new(req.value.to_vec());
        self.gcm
            .open_in_place_separate_tag(
                nonce,
                Aad::from(present(req.aad).unwrap_or(&[])),
                tag,
                &mut buf,
            )
            .map_err(|_| CryptoError::DecryptionFailed)?;
        Ok(buf)
    }
}

/// `Some(v)` only if `v` is non-empty.
pub(crate) fn present(v: Option<&[u8]>) -> Option<&[u8]> {
    v.filter(|s| !s.is_empty())
}

/// Refuses an iv, aad or tag for an algorithm (`name`) that takes none of them.
pub(crate) fn reject_iv_aad_tag(name: &str, req: &CipherRequest<'_>) -> Result<(), CryptoError> {
    reject(name, "an iv", req.iv)?;
    reject(name, "aad", req.aad)?;
    reject(name, "a tag", req.tag)
}

/// Error if an unused optional parameter was given.
fn reject(name: &str, what: &str, v: Option<&[u8]>) -> Result<(), CryptoError> {
    if present(v).is_some() {
        return Err(CryptoError::input(format!("{name} does not take {what}")));
    }
    Ok(())
}

fn cbc_iv(name: &str, iv: Option<&[u8]>) -> Result<[u8; CBC_IV_LEN], CryptoError> {
    let iv = present(iv).ok_or_else(|| {
        CryptoError::input(format!("{name} needs a 16-byte iv supplied by the caller"))
    })?;
    <[u8; CBC_IV_LEN]>::try_from(iv).map_err(|_| {
        CryptoError::input(format!(
            "{name} iv must be 16 bytes; got {} bytes",
            iv.len()
        ))
    })
}

fn kw_mode(alg: Kind) -> Result<kw::Mode, CryptoError> {
    match alg {
        Kind::AesKw(_) => Ok(kw::Mode::Kw),
        Kind::AesKwp => Ok(kw::Mode::Kwp),
        _ => Err(CryptoError::Crypto),
    }
}

fn gcm_alg(key_len: usize) -> Option<&'static aead::Algorithm> {
    match key_len {
        16 => Some(&aead::AES_128_GCM),
        24 => Some(&aead::AES_192_GCM),
        32 => Some(&aead::AES_256_GCM),
        _ => None,
    }
}

fn hmac_alg(hash: Hash) -> hmac::Algorithm {
    match hash {
        Hash::Sha256 => hmac::HMAC_SHA256,
        Hash::Sha384 => hmac::HMAC_SHA384,
        Hash::Sha512 => hmac::HMAC_SHA512,
    }
}
